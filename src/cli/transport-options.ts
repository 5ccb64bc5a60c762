/**
 * Options every transferring command shares (upload, download, resume): timers,
 * extra headers, authentication, proxy, TLS and rate limit.
 * Commands call addTransportOptions(cmd) and transportOptionsFrom(opts).
 *
 * Secrets: `--user name:pass` and `--proxy-user name:pass` passwords stay in memory.
 * A job store persists `persistableTransportOptions(opts)` (the same record with the
 * passwords removed); `transportOptionsFrom` on that record asks for the password
 * again (BITS_PASSWORD, or a prompt on the terminal) when a server first challenges.
 */
import { Option, type Command } from 'commander';
import type { TransportOptions } from '../transport/http.js';
import { UsageError } from '../errors.js';
import { checkHeaderValue } from '../protocol/validate.js';
import { credentialProvider, credentialSourceFrom, parseUserOption, stripUrlCredentials, type CredentialSource, type PromptIO } from '../transport/credentials.js';
import { parseProxyUrl } from '../transport/proxy.js';
import { parseRate } from '../transport/throttle.js';
import { loadTlsFiles } from '../transport/tls.js';

export function addTransportOptions(cmd: Command): Command {
  return cmd
    .addOption(new Option('--request-timeout <seconds>', 'time allowed to send each request (§3.1.2.1)').default('120'))
    .addOption(new Option('--response-timeout <seconds>', 'time allowed to wait for each response (§3.1.2.2)').default('300'))
    .addOption(new Option('--connect-timeout <seconds>', 'time allowed to connect (TCP, proxy tunnel and TLS)').default('30'))
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
    .addOption(new Option('--limit-rate <rate>', 'cap bandwidth in bytes/s, e.g. 500K or 2M (K/M/G = 1024^n); 0 = unlimited').default('0'));
}

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

/** The option record without passwords: what a job store may keep. */
export function persistableTransportOptions(opts: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = { ...opts };
  for (const k of ['user', 'proxyUser'] as const) {
    if (typeof out[k] === 'string') out[k] = parseUserOption(out[k] as string, k === 'user' ? '--user' : '--proxy-user').user;
  }
  if (typeof out['proxy'] === 'string' && out['proxy']) out['proxy'] = stripUrlCredentials(parseProxyUrl(out['proxy'] as string).href);
  return out;
}

export function transportOptionsFrom(opts: Record<string, unknown>, io: PromptIO = {}): TransportOptions {
  const env = io.env ?? process.env;
  const headers: Record<string, string> = {};
  for (const h of (opts.header as string[] | undefined) ?? []) {
    const i = h.indexOf(':');
    if (i <= 0) throw new UsageError(`--header must be NAME:VALUE, got ${JSON.stringify(h)}`);
    const name = h.slice(0, i).trim();
    const value = h.slice(i + 1).trim();
    if (!/^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/.test(name)) throw new UsageError(`--header name is not a valid token: ${JSON.stringify(name)}`);
    const ok = checkHeaderValue(value);
    if (!ok.ok) throw new UsageError(`--header ${name}: value ${ok.reason}`);
    if (/^(proxy-)?authorization$/i.test(name) && (opts.user !== undefined || env['BITS_USER'])) {
      throw new UsageError(`--header ${name} cannot be combined with --user / BITS_USER`);
    }
    headers[name] = value;
  }
  const input = io.input ?? process.stdin;
  const canPrompt = !!input.isTTY;
  const result: TransportOptions = {
    requestTimeoutMs: parseSeconds('--request-timeout', opts.requestTimeout ?? 120) * 1000,
    responseTimeoutMs: parseSeconds('--response-timeout', opts.responseTimeout ?? 300) * 1000,
    connectTimeoutMs: parseSeconds('--connect-timeout', opts.connectTimeout ?? 30) * 1000,
    headers,
  };
  // Only when given: process.env holds BITS_PASSWORD and must not ride along in a record someone may serialise.
  if (io.env) result.env = io.env;

  const server = credentialSourceFrom(typeof opts.user === 'string' ? opts.user : undefined, env);
  if (server) {
    requirePasswordSource(server.source, server.password, canPrompt, env, '--user');
    result.credentialSource = server.source;
    result.credentials = credentialProvider(server.source, { ...io, env, password: server.password });
  }

  if (typeof opts.proxy === 'string') {
    result.proxy = opts.proxy === '' ? false : parseProxyUrl(opts.proxy).href;
  }
  if (typeof opts.proxyUser === 'string') {
    const { user, password } = parseUserOption(opts.proxyUser, '--proxy-user');
    const source: CredentialSource = { kind: password !== undefined ? 'flag' : 'prompt', user };
    // BITS_PASSWORD is the server's; a proxy password comes from the flag or the prompt only.
    if (password === undefined && !canPrompt) {
      throw new UsageError('--proxy-user has no password and there is no terminal to ask on: use --proxy-user NAME:PASSWORD');
    }
    result.proxyCredentialSource = source;
    result.proxyCredentials = credentialProvider(source, { ...io, env: {}, password, what: 'Proxy password' });
  }

  result.tls = loadTlsFiles({
    cacert: opts.cacert as string | undefined,
    cert: opts.cert as string | undefined,
    key: opts.key as string | undefined,
    insecure: opts.insecure === true,
  });
  const rate = parseRate((opts.limitRate as string | number | undefined) ?? 0);
  if (rate > 0) result.limitRateBytesPerSec = rate;
  return result;
}

function requirePasswordSource(source: CredentialSource, password: string | undefined, canPrompt: boolean, env: NodeJS.ProcessEnv, flag: string): void {
  if (password !== undefined || canPrompt || env['BITS_PASSWORD']) return;
  throw new UsageError(`${flag} ${source.user} has no password and there is no terminal to ask on: use ${flag} NAME:PASSWORD or set BITS_PASSWORD`);
}
