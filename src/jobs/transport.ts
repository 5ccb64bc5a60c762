/**
 * A job's stored TransportSettings turned back into the transport the clients
 * take. Passwords were never stored: this run's ones come in `secrets` (a new
 * `bits upload --user name:pw` has them in memory), else they are asked for
 * again the way they were first given (BITS_PASSWORD / BITS_PROXY_PASSWORD, or
 * a prompt on the terminal), lazily, when a server first challenges.
 */
import { UsageError } from '../errors.js';
import type { TransportOptions } from '../transport/http.js';
import { credentialProvider, PROXY_PASSWORD_VARIABLE, registerSecret, type CredentialSource, type PromptIO } from '../transport/credentials.js';
import { loadTlsFiles } from '../transport/tls.js';
import type { Job, TransportSettings } from '../store/index.js';
import { legacyTransportSettings, secretHeaderValues } from '../store/index.js';

export interface TransportSecrets {
  /** The server password given on this run's command line or environment. */
  password?: string;
  /** The proxy password given on this run (--proxy-user name:pw, or the --proxy URL). */
  proxyPassword?: string;
}

export interface TransportIO extends PromptIO {
  secrets?: TransportSecrets;
}

/** The settings a job runs with: its own record, or the one read from an older job's flag record. */
export function settingsOf(job: Pick<Job, 'transport' | 'options' | 'credentialSource'>): TransportSettings {
  if (job.transport) return job.transport;
  return legacyTransportSettings(job.options, job.credentialSource);
}

/**
 * Throws UsageError (exit 2) before anything runs when a password will be
 * needed and there is no way to get one: a job must not fail half-way on a prompt that cannot appear.
 */
function requirePassword(source: CredentialSource, password: string | undefined, canPrompt: boolean, envPassword: string | undefined, flag: string, envName: string): void {
  if (password !== undefined || canPrompt || envPassword) return;
  throw new UsageError(`${flag} ${source.user} has no password and there is no terminal to ask on: use ${flag} NAME:PASSWORD or set ${envName}`);
}

export function transportFromSettings(s: TransportSettings, io: TransportIO = {}): TransportOptions {
  const env = io.env ?? process.env;
  const canPrompt = !!(io.input ?? process.stdin).isTTY;
  const secrets = io.secrets ?? {};
  const result: TransportOptions = {
    requestTimeoutMs: s.requestTimeoutMs ?? 120_000,
    responseTimeoutMs: s.responseTimeoutMs ?? 300_000,
    connectTimeoutMs: s.connectTimeoutMs ?? 30_000,
    headers: { ...(s.headers ?? {}) },
  };
  // Headers stored by name only: this run's -H, else BITS_HEADER_<NAME>, else refused before anything is sent.
  const restored = secretHeaderValues(s.secretHeaders ?? [], result.headers!, env);
  for (const v of Object.values(restored)) registerSecret(v);
  Object.assign(result.headers!, restored);
  // Only when given: process.env holds BITS_PASSWORD and must not ride along in a record someone may serialise.
  if (io.env) result.env = io.env;

  const source = serverCredentialSource(s, env);
  if (source) {
    requirePassword(source, secrets.password, canPrompt, env['BITS_PASSWORD'], '--user', 'BITS_PASSWORD');
    result.credentialSource = source;
    result.credentials = credentialProvider(source, { ...io, env, password: secrets.password });
  }

  if (s.proxy !== undefined) result.proxy = s.proxy === '' ? false : s.proxy;
  const proxyUser = s.proxyCredentialSource?.user ?? s.proxyUser ?? proxyUrlUser(s.proxy);
  if (proxyUser !== undefined) {
    const source: CredentialSource = s.proxyCredentialSource ?? { kind: secrets.proxyPassword !== undefined ? 'flag' : 'prompt', user: proxyUser };
    // BITS_PASSWORD is the server's; the proxy's comes from the flag, BITS_PROXY_PASSWORD or the prompt.
    const envPassword = env[PROXY_PASSWORD_VARIABLE] || undefined;
    if (envPassword) registerSecret(envPassword);
    requirePassword(source, secrets.proxyPassword, canPrompt, envPassword, '--proxy-user', 'BITS_PROXY_PASSWORD');
    result.proxyCredentialSource = source;
    result.proxyCredentials = credentialProvider(source, { ...io, env: {}, password: secrets.proxyPassword ?? envPassword, what: 'Proxy password' });
  }

  result.tls = loadTlsFiles({ cacert: s.cacert, cert: s.cert, key: s.key, insecure: s.insecure === true });
  if (s.limitRateBytesPerSec !== undefined && s.limitRateBytesPerSec > 0) result.limitRateBytesPerSec = s.limitRateBytesPerSec;
  if (s.redirects !== undefined) result.redirects = s.redirects;
  return result;
}

/** The stored source, else the stored user (asked for), else BITS_USER of this run's environment. */
function serverCredentialSource(s: TransportSettings, env: NodeJS.ProcessEnv): CredentialSource | undefined {
  if (s.credentialSource) return s.credentialSource;
  if (s.user !== undefined) return { kind: 'prompt', user: s.user };
  const user = env['BITS_USER'];
  return user ? { kind: env['BITS_PASSWORD'] ? 'env' : 'prompt', user } : undefined;
}

function proxyUrlUser(proxy: string | undefined): string | undefined {
  if (!proxy) return undefined;
  try {
    const u = new URL(proxy);
    return u.username ? decodeURIComponent(u.username) : undefined;
  } catch {
    return undefined;
  }
}

/** The transport for a stored job: its settings, credentials asked for again. */
export function transportForJob(job: Pick<Job, 'transport' | 'options' | 'credentialSource'>, io: TransportIO = {}): TransportOptions {
  return transportFromSettings(settingsOf(job), io);
}

/** A transport for a quick cancel: the same settings, short timers. */
export function shortTimers(t: TransportOptions, ms = 5000): TransportOptions {
  const cap = (v: number | undefined) => Math.min(v ?? ms, ms);
  return { ...t, requestTimeoutMs: cap(t.requestTimeoutMs), responseTimeoutMs: cap(t.responseTimeoutMs), connectTimeoutMs: cap(t.connectTimeoutMs) };
}
