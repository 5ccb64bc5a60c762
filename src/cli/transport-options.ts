/**
 * Options every transferring command shares (upload, download, resume): timers,
 * extra headers, authentication, proxy, TLS and rate limit.
 * Commands call addTransportOptions(cmd), then settingsFromFlags(opts): the
 * one place these flags are checked (one message each, exit 2) and turned into
 * the job's TransportSettings (src/store/transport-settings.ts) plus this
 * run's passwords, which stay in memory. src/jobs/transport.ts turns the
 * settings into the clients' transport, asking for passwords again on resume.
 */
import path from 'node:path';
import { Option, type Command } from 'commander';
import type { TransportOptions } from '../transport/http.js';
import { UsageError } from '../errors.js';
import { checkHeaderValue } from '../protocol/validate.js';
import { credentialSourceFrom, parseUserOption, type PromptIO } from '../transport/credentials.js';
import { parseProxyUrl } from '../transport/proxy.js';
import { parseRate } from '../transport/throttle.js';
import { isSecretHeader, type TransportSettings } from '../store/index.js';
import { transportFromSettings, type TransportSecrets } from '../jobs/transport.js';

export function addTransportOptions(cmd: Command): Command {
  return cmd
    // No commander .default() where `bits config` supplies one: the help would show a default the config overrides.
    .addOption(new Option('--request-timeout <seconds>', 'time allowed to send each request (§3.1.2.1) (default: config request-timeout, else 120)'))
    .addOption(new Option('--response-timeout <seconds>', 'time allowed to wait for each response (§3.1.2.2) (default: config response-timeout, else 300)'))
    .addOption(new Option('--connect-timeout <seconds>', 'time allowed to connect (TCP, proxy tunnel and TLS) (default: 30)'))
    .addOption(new Option('-H, --header <name:value>', 'extra request header (repeatable)').argParser(collect).default([]))
    .addOption(
      new Option('--user <name[:password]>', 'server credentials for Basic, Digest, NTLM or Negotiate; DOMAIN\\name for NTLM; password prompted if omitted (default: $BITS_USER / $BITS_PASSWORD)'),
    )
    .addOption(new Option('--proxy <url>', 'HTTP proxy, http://[user:pass@]host:port; "" for none (default: $HTTPS_PROXY / $HTTP_PROXY / $ALL_PROXY, minus $NO_PROXY)'))
    .addOption(new Option('--proxy-user <name[:password]>', 'proxy credentials (Basic, Digest, NTLM); password prompted if omitted'))
    .addOption(new Option('--cacert <file>', 'trust the CA certificates in this PEM file instead of the system store (default: system store)'))
    .addOption(new Option('--cert <file>', 'client certificate (PEM) for TLS client authentication'))
    .addOption(new Option('--key <file>', 'private key (PEM) for --cert (default: read from the --cert file)'))
    .addOption(new Option('--insecure', 'do not verify the server certificate (prints a warning)').default(false))
    .addOption(new Option('--limit-rate <rate>', 'cap bandwidth in bytes/s, e.g. 500K or 2M (K/M/G = 1024^n); 0 = unlimited (default: config limit-rate, else 0)'));
}

/** Not configurable: TCP, a proxy tunnel and a TLS handshake that take longer are not going to finish. */
const CONNECT_TIMEOUT_SECONDS = 30;

function collect(value: string, previous: string[]): string[] {
  return [...previous, value];
}

/**
 * `--no-progress-timeout <seconds>`. commander reads any `--no-*` flag as the
 * negation of `--*` (a boolean `progressTimeout`, true by default, with the
 * seconds lost); this is a plain option whose name happens to start with "no-".
 */
export function noProgressTimeoutOption(description: string): Option {
  const opt = new Option('--no-progress-timeout <seconds>', `${description} (default: config no-progress-timeout, else 300)`);
  opt.negate = false;
  return opt;
}

/** What resolveCommandOption needs of a commander Command. */
interface OptionSource {
  getOptionValue(name: string): unknown;
  getOptionValueSource(name: string): string | undefined;
}

/**
 * Fills the transport flags a user did not give from `bits config`
 * (flags > config > built-in defaults), so `bits config set limit-rate 1M`
 * applies to every transfer. The result is what a job stores, so a resumed job
 * keeps the settings it started with.
 */
export async function withConfigDefaults(cmd: OptionSource, opts: Record<string, unknown>): Promise<Record<string, unknown>> {
  const { resolveCommandOption, resolveOption } = await import('./user-config.js');
  const out = { ...opts };
  out.requestTimeout = await resolveCommandOption(cmd, 'requestTimeout', 'request-timeout', 120);
  out.responseTimeout = await resolveCommandOption(cmd, 'responseTimeout', 'response-timeout', 300);
  out.limitRate = await resolveCommandOption(cmd, 'limitRate', 'limit-rate', 0);
  out.connectTimeout ??= CONNECT_TIMEOUT_SECONDS;
  if (cmd.getOptionValueSource('proxy') === undefined) {
    const proxy = await resolveOption(undefined, 'proxy', '');
    if (proxy) out.proxy = proxy;
  }
  return out;
}

export function parseSeconds(name: string, v: unknown): number {
  const n = Number(v);
  if (!Number.isFinite(n) || n <= 0) throw new UsageError(`${name} must be a positive number of seconds, got ${JSON.stringify(v)}`);
  return n;
}

export interface FlagSettings {
  settings: TransportSettings;
  /** This run's passwords (never stored). */
  secrets: TransportSecrets;
  /** Secret headers given with -H: sent on this run, not stored with the job. */
  droppedHeaders: string[];
}

export interface FromFlagsOptions {
  /** Relative TLS paths are made absolute against this; default process.cwd(). */
  cwd?: string;
  env?: NodeJS.ProcessEnv;
  /**
   * Only flags for which this says true are read (bits resume: only what the
   * user gave overrides what the job stored); default every flag.
   */
  given?: (attribute: string) => boolean;
}

/** The transport flags -> TransportSettings + this run's passwords. Throws UsageError (exit 2) naming the flag. */
export function settingsFromFlags(opts: Record<string, unknown>, o: FromFlagsOptions = {}): FlagSettings {
  const env = o.env ?? process.env;
  const given = o.given ?? (() => true);
  const cwd = o.cwd ?? process.cwd();
  const settings: TransportSettings = {};
  const secrets: TransportSecrets = {};
  const droppedHeaders: string[] = [];
  const has = (k: string) => given(k) && opts[k] !== undefined;

  if (has('requestTimeout')) settings.requestTimeoutMs = parseSeconds('--request-timeout', opts.requestTimeout) * 1000;
  if (has('responseTimeout')) settings.responseTimeoutMs = parseSeconds('--response-timeout', opts.responseTimeout) * 1000;
  if (has('connectTimeout')) settings.connectTimeoutMs = parseSeconds('--connect-timeout', opts.connectTimeout) * 1000;

  const userGiven = has('user') ? (opts.user as string) : undefined;
  if (given('header')) {
    const headers: Record<string, string> = {};
    for (const h of (opts.header as string[] | undefined) ?? []) {
      const i = h.indexOf(':');
      if (i <= 0) throw new UsageError(`--header must be NAME:VALUE, got ${JSON.stringify(h)}`);
      const name = h.slice(0, i).trim();
      const value = h.slice(i + 1).trim();
      if (!/^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/.test(name)) throw new UsageError(`--header name is not a valid token: ${JSON.stringify(name)}`);
      const ok = checkHeaderValue(value);
      if (!ok.ok) throw new UsageError(`--header ${name}: value ${ok.reason}`);
      if (/^(proxy-)?authorization$/i.test(name) && (userGiven !== undefined || env['BITS_USER'])) {
        throw new UsageError(`--header ${name} cannot be combined with --user / BITS_USER`);
      }
      headers[name] = value;
      if (isSecretHeader(name)) droppedHeaders.push(name);
    }
    if (Object.keys(headers).length) settings.headers = headers;
  }

  // --user wins over BITS_USER; on resume BITS_USER is read again by src/jobs/transport.ts.
  const server = userGiven !== undefined || o.given === undefined ? credentialSourceFrom(userGiven, env) : undefined;
  if (server) {
    settings.user = server.source.user;
    settings.credentialSource = { kind: server.source.kind, user: server.source.user };
    if (server.password !== undefined) secrets.password = server.password;
  }

  if (has('proxy')) {
    const raw = opts.proxy as string;
    if (raw === '') settings.proxy = '';
    else {
      const u = parseProxyUrl(raw);
      if (u.password) secrets.proxyPassword = decodeURIComponent(u.password);
      if (u.username) {
        settings.proxyUser = decodeURIComponent(u.username);
        settings.proxyCredentialSource = { kind: u.password ? 'flag' : 'prompt', user: settings.proxyUser };
      }
      u.password = '';
      settings.proxy = u.href;
    }
  }
  if (has('proxyUser')) {
    const { user, password } = parseUserOption(opts.proxyUser as string, '--proxy-user');
    settings.proxyUser = user;
    settings.proxyCredentialSource = { kind: password !== undefined ? 'flag' : 'prompt', user };
    if (password !== undefined) secrets.proxyPassword = password;
  }

  for (const k of ['cacert', 'cert', 'key'] as const) if (has(k)) settings[k] = path.resolve(cwd, opts[k] as string);
  if (has('insecure') && opts.insecure === true) settings.insecure = true;
  // 0 is kept: on `bits resume --limit-rate 0` it lifts a stored limit.
  if (has('limitRate')) settings.limitRateBytesPerSec = parseRate(opts.limitRate as string | number);
  return { settings, secrets, droppedHeaders };
}

/** The flags straight to a transport, for a transfer that is not a job (`bits download -o -`). */
export function transportOptionsFrom(opts: Record<string, unknown>, io: PromptIO = {}): TransportOptions {
  const { settings, secrets } = settingsFromFlags(opts, io.env ? { env: io.env } : {});
  return transportFromSettings(settings, { ...io, secrets });
}
