/**
 * The transport settings a job keeps so that `bits resume` and `bits cancel`
 * talk to the server the way the first run did: a record of this program's
 * own, not any command-line parser's. Never a secret: no password (the proxy
 * URL keeps its user name only), no header value that may be a secret (its
 * name only). Credentials are recorded
 * by where they came from (CredentialSource) and asked for again on resume.
 */
import { parseRateText } from '../units.js';
import { isSecretHeader, redactUrl } from './secrets.js';

export type StoredCredentialSource = {
  kind: 'env' | 'prompt' | 'flag';
  user: string;
};

export type TransportSettings = {
  requestTimeoutMs?: number;
  responseTimeoutMs?: number;
  connectTimeoutMs?: number;
  /** Proxy URL with its user name but never a password; '' = no proxy even if the environment names one. */
  proxy?: string;
  /** The proxy's user (--proxy-user, or the proxy URL's user name). */
  proxyUser?: string;
  /** Absolute paths: a resume may run from another folder. */
  cacert?: string;
  cert?: string;
  key?: string;
  insecure?: boolean;
  /** Bytes per second; 0 or absent = unlimited. */
  limitRateBytesPerSec?: number;
  /** The server user name (the password is asked again). */
  user?: string;
  /** Extra request headers whose values are known to be harmless (Accept, User-Agent, …). */
  headers?: { [name: string]: string };
  /** Every other extra header, by name only: resume reads its value from BITS_HEADER_<NAME> (src/store/secrets.ts). */
  secretHeaders?: string[];
  /** Where the server and proxy passwords came from, so resume asks the same way. */
  credentialSource?: StoredCredentialSource;
  proxyCredentialSource?: StoredCredentialSource;
  /** --redirects (download): absent = follow. */
  redirects?: 'follow' | 'report' | 'refuse' | 'allow-https-to-http';
};

/** The settings safe to persist: no proxy password, no secret header. Applied by the store on every write. */
export function sanitizeTransportSettings(t: TransportSettings): TransportSettings {
  const out: TransportSettings = { ...t };
  // The user name stays: resume needs it to ask for the password.
  if (out.proxy) out.proxy = redactUrl(out.proxy);
  if (out.headers) {
    const secret = Object.keys(out.headers).filter(isSecretHeader);
    if (secret.length) {
      out.headers = Object.fromEntries(Object.entries(out.headers).filter(([k]) => !isSecretHeader(k)));
      const names = new Map((out.secretHeaders ?? []).map((n) => [n.toLowerCase(), n]));
      for (const n of secret) names.set(n.toLowerCase(), n);
      out.secretHeaders = [...names.values()];
    }
    if (Object.keys(out.headers).length === 0) delete out.headers;
  }
  return out;
}

/**
 * Settings with `override` laid over `stored`: what `bits resume --proxy …`
 * changes. A changed server user drops the stored credential source (it named
 * the old user); likewise for the proxy.
 */
export function overrideTransportSettings(stored: TransportSettings, override: TransportSettings): TransportSettings {
  const out: TransportSettings = { ...stored };
  for (const [k, v] of Object.entries(override) as Array<[keyof TransportSettings, unknown]>) {
    if (v !== undefined) (out as Record<string, unknown>)[k] = v;
  }
  if (override.user !== undefined && override.credentialSource === undefined) delete out.credentialSource;
  if ((override.proxyUser !== undefined || override.proxy !== undefined) && override.proxyCredentialSource === undefined) delete out.proxyCredentialSource;
  if (override.headers) out.headers = { ...stored.headers, ...override.headers };
  return out;
}

/**
 * Jobs written before TransportSettings existed kept a command-line flag
 * record (`options.transport`, timeouts in `options.timeouts`); read it once
 * so such a job resumes with its settings.
 */
export function legacyTransportSettings(options: { [key: string]: unknown } | undefined, credentialSource?: { kind: StoredCredentialSource['kind']; user?: string }): TransportSettings {
  const out: TransportSettings = {};
  const t = options?.['transport'];
  const flags = t && typeof t === 'object' && !Array.isArray(t) ? (t as Record<string, unknown>) : {};
  const timeouts = (options?.['timeouts'] ?? {}) as Record<string, unknown>;
  const ms = (k: string, flag: string): number | undefined => {
    if (typeof timeouts[k] === 'number') return timeouts[k] as number;
    const n = Number(flags[flag]);
    return Number.isFinite(n) && n > 0 ? n * 1000 : undefined;
  };
  const set = <K extends keyof TransportSettings>(k: K, v: TransportSettings[K] | undefined) => {
    if (v !== undefined) out[k] = v;
  };
  set('requestTimeoutMs', ms('request', 'requestTimeout'));
  set('responseTimeoutMs', ms('response', 'responseTimeout'));
  set('connectTimeoutMs', ms('connect', 'connectTimeout'));
  for (const k of ['proxy', 'proxyUser', 'cacert', 'cert', 'key', 'user'] as const) if (typeof flags[k] === 'string') out[k] = flags[k] as string;
  if (flags['insecure'] === true) out.insecure = true;
  const rate = flags['limitRate'];
  const bps = typeof rate === 'number' ? rate : typeof rate === 'string' ? parseRateText(rate) : undefined;
  if (bps !== undefined && bps > 0) out.limitRateBytesPerSec = bps;
  const headers = options?.['headers'];
  if (headers && typeof headers === 'object') out.headers = { ...(headers as Record<string, string>) };
  if (credentialSource?.user !== undefined) {
    out.credentialSource = { kind: credentialSource.kind, user: credentialSource.user };
    out.user ??= credentialSource.user;
  }
  return sanitizeTransportSettings(out);
}
