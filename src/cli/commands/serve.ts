/**
 * `bits serve`: a BITS upload server (MC-BUP §3.2, with the back-end
 * notifications of §3.3) and a range download server (§3.5) for one folder.
 * Settings come from flags, then the --config file, then the built-in defaults.
 * The server code is imported only when the command runs, so other commands
 * start without loading it.
 */
import { Option, type Command } from 'commander';
import { readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import { runAction } from '../run.js';
import { UsageError } from '../../errors.js';
import { parseDurationSeconds, parseInteger, parseSize } from '../parse.js';
import type { DirectoryConfig, DurabilityConfig, NotificationType, ServeOptions as ApiServeOptions, ServerConfigFile, ServerLimits } from '../../api/serve.js';

/** What serveOptionsFrom settles: where to listen is always decided by then. */
type ServeOptions = ApiServeOptions & { root: string; host: string; port: number };

interface ServeFlags {
  root: string;
  host: string;
  port: string;
  config?: string;
  uploads: boolean;
  maxUploadSize: string;
  overwrite: boolean;
  hostId?: string;
  hostIdFallbackTimeout?: string;
  notificationType: NotificationType;
  notificationUrl?: string;
  sessionTimeout: string;
  maxFragmentSize: string;
  maxSessions: string;
  maxSessionsPerClient?: string;
  sessionsPerMinute?: string;
  emptySessionTimeout?: string;
  maxConnections?: string;
  headerTimeout?: string;
  keepAliveTimeout?: string;
  minRate?: string;
  rateGrace?: string;
  tlsHandshakeTimeout?: string;
  durability?: 'group' | 'ack';
  syncEvery?: string;
  syncInterval?: string;
  basicAuth?: string;
  tlsCert?: string;
  tlsKey?: string;
  quiet?: boolean;
  json?: boolean;
}

const EXAMPLES = `
Examples:
  # Serve ./share on http://127.0.0.1:8080/ (uploads and range downloads)
  $ bits serve --root ./share

  # Downloads only, on every interface, any free port; print the URL as JSON
  $ bits serve --root /srv/files --no-uploads --host 0.0.0.0 --port 0 --json

  # Uploads up to 2 GiB, never overwrite, Basic auth from the environment, HTTPS,
  # and a back-end application notified with each finished upload (upload-reply)
  $ BITS_SERVE_USER=alice BITS_SERVE_PASSWORD=secret bits serve --root ./incoming \\
      --max-upload-size 2G --no-overwrite --tls-cert cert.pem --tls-key key.pem \\
      --notification-type by-reference --notification-url http://127.0.0.1:9000/notify

Uploads in progress are kept under <folder>/BITS-Sessions/Requests and are never
served; upload-reply replies under BITS-Sessions/Replies are. Settings from
--config apply per URL folder; flags override the file's defaults. SIGINT or
SIGTERM stops the server gracefully (exit 0).`;

export function register(program: Command): void {
  program
    .command('serve')
    .summary('serve a folder: BITS uploads and resumable range downloads')
    .description(
      'Serve a folder over HTTP(S): BITS uploads (BITS_POST, MC-BUP §3.2) into it and\n' +
        'GET/HEAD range downloads (§3.5, RFC 7233) from it, on one port.',
    )
    .addOption(new Option('-r, --root <dir>', 'folder to serve').default('.'))
    .addOption(new Option('--host <address>', 'address to listen on').default('127.0.0.1'))
    .addOption(new Option('-p, --port <port>', 'port to listen on (0 = any free port)').default('8080'))
    .addOption(new Option('-c, --config <file>', 'JSON settings file (per-folder settings, limits); flags override it'))
    .addOption(new Option('--no-uploads', 'refuse BITS uploads: serve downloads only (UploadEnabled)'))
    .addOption(
      new Option('--max-upload-size <size>', 'largest file one upload may create, e.g. 500M, 2G (MaximumUploadSize)').default('unlimited'),
    )
    .addOption(new Option('--no-overwrite', 'refuse uploads that would replace an existing file (AllowOverwrites)'))
    .addOption(new Option('--host-id <host>', 'server name clients should use for the rest of an upload (BITSHostId)'))
    .addOption(
      new Option('--host-id-fallback-timeout <seconds>', 'how long clients try --host-id before falling back (BITSHostIdFallbackTimeout)'),
    )
    .addOption(
      new Option('--notification-type <type>', 'tell a back-end application about finished uploads (NotificationType)')
        .choices(['none', 'by-reference', 'by-value'])
        .default('none'),
    )
    .addOption(new Option('--notification-url <url>', 'where notifications are POSTed (NotificationURL)'))
    .addOption(
      new Option('--session-timeout <seconds>', 'drop upload sessions idle this long (s, or with m/h/d)').default('1209600', '1209600 = 14 days'),
    )
    .addOption(new Option('--max-fragment-size <size>', 'largest FRAGMENT body accepted; larger gets 413').default('64M'))
    .addOption(new Option('--max-sessions <n>', 'most upload sessions kept at once').default('10000'))
    .addOption(new Option('--max-sessions-per-client <n>', 'most open sessions of one user or address (default 200)'))
    .addOption(new Option('--sessions-per-minute <n>', 'most sessions one user or address creates per minute (default 120)'))
    .addOption(new Option('--empty-session-timeout <seconds>', 'drop sessions that never received a byte after this long (default 15m)'))
    .addOption(new Option('--max-connections <n>', 'most connections at once; beyond it 503 + Retry-After (default 2048)'))
    .addOption(new Option('--header-timeout <seconds>', 'time to send a request head (default 20)'))
    .addOption(new Option('--keep-alive-timeout <seconds>', 'close connections idle this long between requests (default 30)'))
    .addOption(new Option('--min-rate <bytes/s>', 'cut bodies sent and responses read slower than this (default 500)'))
    .addOption(new Option('--rate-grace <seconds>', 'grace period and window of --min-rate (default 10)'))
    .addOption(new Option('--tls-handshake-timeout <seconds>', 'time to complete a TLS handshake (default 10)'))
    .addOption(
      new Option('--durability <mode>', 'group: sync every --sync-every/--sync-interval and at the end (default); ack: before every Ack').choices([
        'group',
        'ack',
      ]),
    )
    .addOption(new Option('--sync-every <size>', 'group durability: sync after this many acknowledged bytes (default 64M)'))
    .addOption(new Option('--sync-interval <seconds>', 'group durability: sync an acknowledged byte within this long (default 1)'))
    .addOption(
      new Option('--basic-auth <user:password>', 'require HTTP Basic auth (or set BITS_SERVE_USER and BITS_SERVE_PASSWORD)'),
    )
    .addOption(new Option('--tls-cert <file>', 'serve HTTPS with this PEM certificate (with --tls-key)'))
    .addOption(new Option('--tls-key <file>', 'PEM private key for --tls-cert'))
    .addOption(new Option('-q, --quiet', 'do not log requests'))
    .addOption(new Option('--json', 'print {"type":"listening",...} on stdout once listening'))
    .addHelpText('after', EXAMPLES)
    .action(async (flags: ServeFlags, cmd: Command) => {
      await runAction({ json: flags.json, quiet: flags.quiet }, () => serve(flags, cmd));
      // Anything still holding the event loop after a graceful close must not keep the process alive.
      setTimeout(() => process.exit(), 1000).unref();
    });
}

async function loadConfigFile(file: string): Promise<ServerConfigFile> {
  const { loadServeConfig } = await import('../../api/serve.js');
  try {
    return await loadServeConfig(file);
  } catch (err) {
    // The loader's messages are already one line naming the file and key.
    throw new UsageError(`--config: ${(err as Error).message}`);
  }
}

/** Builds and validates every setting; UsageError (exit 2) names the first bad one. */
export async function serveOptionsFrom(flags: ServeFlags, given: (key: keyof ServeFlags) => boolean): Promise<ServeOptions> {
  // The file holds directory settings and limits; where to listen comes from flags only.
  const file: ServerConfigFile = flags.config ? await loadConfigFile(flags.config) : {};

  const rootArg = flags.root;
  const root = path.resolve(rootArg);
  const st = await stat(root).catch(() => undefined);
  if (!st) throw new UsageError(`--root: ${rootArg}: no such folder`);
  if (!st.isDirectory()) throw new UsageError(`--root: ${rootArg}: not a folder`);

  const host = flags.host.trim();
  if (host === '') throw new UsageError('--host: must not be empty');
  const port = parseInteger(flags.port, '--port', 0, 65535);

  // Per-directory defaults: file defaults, overridden by flags given on the command line.
  const defaults: Partial<DirectoryConfig> = { ...(file.defaults ?? {}) };
  if (given('uploads')) defaults.uploadsEnabled = flags.uploads;
  if (given('overwrite')) defaults.allowOverwrites = flags.overwrite;
  if (given('maxUploadSize') || defaults.maxUploadSize === undefined) {
    defaults.maxUploadSize = /^\s*(unlimited|none)\s*$/i.test(flags.maxUploadSize)
      ? Number.POSITIVE_INFINITY
      : parseSize(flags.maxUploadSize, '--max-upload-size');
  }
  if (flags.hostId !== undefined) {
    if (!/^[A-Za-z0-9.:[\]-]+$/.test(flags.hostId)) throw new UsageError(`--host-id: not a host name or address: ${JSON.stringify(flags.hostId)}`);
    defaults.hostId = flags.hostId;
  }
  if (flags.hostIdFallbackTimeout !== undefined) {
    defaults.hostIdFallbackTimeout = parseDurationSeconds(flags.hostIdFallbackTimeout, '--host-id-fallback-timeout', { allowZero: true });
  }
  if (given('notificationType')) defaults.notificationType = flags.notificationType;
  if (flags.notificationUrl !== undefined) {
    let u: URL;
    try {
      u = new URL(flags.notificationUrl);
    } catch {
      throw new UsageError(`--notification-url: not a URL: ${JSON.stringify(flags.notificationUrl)}`);
    }
    if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new UsageError('--notification-url: must be an http:// or https:// URL');
    defaults.notificationUrl = flags.notificationUrl;
  }
  const notificationType = defaults.notificationType ?? 'none';
  if (notificationType !== 'none' && !defaults.notificationUrl) {
    throw new UsageError(`--notification-type ${notificationType} needs --notification-url`);
  }
  if (given('sessionTimeout') || defaults.sessionTimeoutSeconds === undefined) {
    defaults.sessionTimeoutSeconds = parseDurationSeconds(flags.sessionTimeout, '--session-timeout');
  }

  const limits: Partial<ServerLimits> = { ...(file.limits ?? {}) };
  if (given('maxFragmentSize') || limits.maxFragmentBytes === undefined) {
    limits.maxFragmentBytes = parseSize(flags.maxFragmentSize, '--max-fragment-size');
    if (limits.maxFragmentBytes < 1) throw new UsageError('--max-fragment-size: must be at least 1 byte');
  }
  if (given('maxSessions') || limits.maxSessions === undefined) {
    limits.maxSessions = parseInteger(flags.maxSessions, '--max-sessions', 1, 10_000_000);
  }

  // Hardening limits: a flag overrides the file, the file the built-in default (server/config.ts).
  const count = (flag: string | undefined, name: string, key: 'maxSessionsPerClient' | 'sessionsPerMinutePerClient' | 'maxConnections'): void => {
    if (flag !== undefined) limits[key] = parseInteger(flag, name, 1, 10_000_000);
  };
  count(flags.maxSessionsPerClient, '--max-sessions-per-client', 'maxSessionsPerClient');
  count(flags.sessionsPerMinute, '--sessions-per-minute', 'sessionsPerMinutePerClient');
  count(flags.maxConnections, '--max-connections', 'maxConnections');
  const seconds = (
    flag: string | undefined,
    name: string,
    key: 'emptySessionTimeoutSeconds' | 'headersTimeoutSeconds' | 'keepAliveTimeoutSeconds' | 'rateGraceSeconds' | 'tlsHandshakeTimeoutSeconds',
  ): void => {
    if (flag !== undefined) limits[key] = parseDurationSeconds(flag, name);
  };
  seconds(flags.emptySessionTimeout, '--empty-session-timeout', 'emptySessionTimeoutSeconds');
  seconds(flags.headerTimeout, '--header-timeout', 'headersTimeoutSeconds');
  seconds(flags.keepAliveTimeout, '--keep-alive-timeout', 'keepAliveTimeoutSeconds');
  seconds(flags.rateGrace, '--rate-grace', 'rateGraceSeconds');
  seconds(flags.tlsHandshakeTimeout, '--tls-handshake-timeout', 'tlsHandshakeTimeoutSeconds');
  if (flags.minRate !== undefined) limits.minRateBytesPerSec = parseInteger(flags.minRate, '--min-rate', 1, 1_000_000_000);

  // Durability: flags over the file's "durability" section over the built-in default (server/config.ts).
  const durability: Partial<DurabilityConfig> = { ...(file.durability ?? {}) };
  if (flags.durability !== undefined) durability.mode = flags.durability;
  if (flags.syncEvery !== undefined) {
    durability.syncEveryBytes = parseSize(flags.syncEvery, '--sync-every');
    if (durability.syncEveryBytes < 1) throw new UsageError('--sync-every: must be at least 1 byte');
  }
  if (flags.syncInterval !== undefined) durability.syncEverySeconds = parseDurationSeconds(flags.syncInterval, '--sync-interval');

  const opts: ServeOptions = { root, host, port, defaults, limits, durability };
  if (file.directories) opts.directories = file.directories;

  const basicAuth = basicAuthFrom(flags.basicAuth);
  if (basicAuth) opts.basicAuth = basicAuth;

  if (flags.tlsCert !== undefined || flags.tlsKey !== undefined) {
    if (flags.tlsCert === undefined || flags.tlsKey === undefined) throw new UsageError('--tls-cert and --tls-key go together');
    opts.tls = { cert: await readPem(flags.tlsCert, '--tls-cert'), key: await readPem(flags.tlsKey, '--tls-key') };
  }
  return opts;
}

function basicAuthFrom(flag: string | undefined): ServeOptions['basicAuth'] {
  if (flag !== undefined) {
    // RFC 7617: the user-id cannot contain a colon, the password can.
    const i = flag.indexOf(':');
    if (i <= 0) throw new UsageError('--basic-auth: expected USER:PASSWORD');
    return { user: flag.slice(0, i), password: flag.slice(i + 1) };
  }
  const user = process.env.BITS_SERVE_USER;
  const password = process.env.BITS_SERVE_PASSWORD;
  if (user === undefined && password === undefined) return undefined;
  if (!user || password === undefined) throw new UsageError('set both BITS_SERVE_USER and BITS_SERVE_PASSWORD, or neither');
  if (user.includes(':')) throw new UsageError('BITS_SERVE_USER must not contain a colon');
  return { user, password };
}

async function readPem(file: string, name: string): Promise<Buffer> {
  try {
    return await readFile(file);
  } catch (err) {
    throw new UsageError(`${name}: cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
}

async function serve(flags: ServeFlags, cmd: Command): Promise<number> {
  const given = (key: keyof ServeFlags): boolean => cmd.getOptionValueSource(key) === 'cli';
  // Where to listen: flags > `bits config set serve.port|serve.root|serve.host` > built-in defaults.
  const { resolveCommandOption } = await import('../user-config.js');
  flags = {
    ...flags,
    root: String(await resolveCommandOption(cmd, 'root', 'serve.root', flags.root)),
    host: String(await resolveCommandOption(cmd, 'host', 'serve.host', flags.host)),
    port: String(await resolveCommandOption(cmd, 'port', 'serve.port', Number(flags.port))),
  };
  const opts = await serveOptionsFrom(flags, given);
  if (!flags.quiet) opts.log = (line) => process.stderr.write(`${line}\n`);

  const { serve: startServing } = await import('../../api/serve.js');
  let server: Awaited<ReturnType<typeof startServing>>;
  try {
    server = await startServing(opts);
  } catch (err) {
    throw listenError(err, opts);
  }

  // Listen for the stop signals before saying "listening": whoever waits for that line may signal at once.
  const stopped = new Promise<NodeJS.Signals>((resolve) => {
    process.once('SIGINT', resolve);
    process.once('SIGTERM', resolve);
  });
  process.stderr.write(`bits serve: listening on ${server.url}/ (root ${opts.root})\n`);
  if (flags.json) process.stdout.write(`${JSON.stringify({ type: 'listening', url: server.url, root: opts.root })}\n`);

  const signal = await stopped;
  // A second signal while closing means "now".
  const force = (): never => process.exit(0);
  process.once('SIGINT', force);
  process.once('SIGTERM', force);
  if (!flags.quiet) process.stderr.write(`bits serve: ${signal}: closing\n`);
  await server.close();
  if (flags.json) process.stdout.write(`${JSON.stringify({ type: 'closed', signal })}\n`);
  return 0;
}

/** Listening failures are the operator's to fix: one clear line, exit 2. */
function listenError(err: unknown, opts: ServeOptions): unknown {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  const where = `${opts.host}:${opts.port}`;
  switch (code) {
    case 'EADDRINUSE':
      return new UsageError(`cannot listen on ${where}: address already in use (choose another --port, or 0 for any)`);
    case 'EACCES':
    case 'EPERM':
      return new UsageError(`cannot listen on ${where}: permission denied (ports below 1024 need privileges)`);
    case 'EADDRNOTAVAIL':
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
      return new UsageError(`cannot listen on ${where}: no such local address (--host)`);
    default:
      if (err instanceof Error && /certificate|key|PEM|asn1/i.test(err.message)) {
        return new UsageError(`--tls-cert/--tls-key: ${err.message}`);
      }
      return err;
  }
}
