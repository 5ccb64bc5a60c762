/**
 * §3.2.1.1 BITSDirectoryConfig: per-virtual-directory settings, and the
 * server-wide limits. Every URL folder under the root is a virtual directory;
 * settings are looked up by the longest matching path prefix.
 */
import { readFile } from 'node:fs/promises';
import { parseSizeText } from '../units.js';

export type NotificationType = 'none' | 'by-reference' | 'by-value';

export interface DirectoryConfig {
  /** UploadEnabled */
  uploadsEnabled: boolean;
  /** MaximumUploadSize in bytes (request entity); Infinity = no limit. */
  maxUploadSize: number;
  /** AllowOverwrites */
  allowOverwrites: boolean;
  /** BITSHostId: returned as BITS-Host-Id in the CREATE-SESSION Ack when set. */
  hostId?: string;
  /** BITSHostIdFallbackTimeout (seconds): returned as BITS-Host-Id-Fallback-Timeout when set. */
  hostIdFallbackTimeout?: number;
  /** NotificationType */
  notificationType: NotificationType;
  /** NotificationURL: required unless notificationType is 'none'. */
  notificationUrl?: string;
  /** §3.2.2.1 BITS session timeout, seconds. Default 14 days. */
  sessionTimeoutSeconds: number;
  /** §3.3.2 notification send / receive / receive-response timers, seconds each. Default 300. */
  notificationTimeoutSeconds?: number;
}

export interface ServerLimits {
  /** Largest FRAGMENT body accepted; larger gets 413 (§3.1.5.2.4). */
  maxFragmentBytes: number;
  /** Most sessions kept at once (§3.2.7); CREATE-SESSION beyond it gets 500. */
  maxSessions: number;
  /**
   * Most open sessions of one client (the authenticated user, else the client address);
   * CREATE-SESSION beyond it gets 503 + Retry-After with BITS-Error E_OUTOFMEMORY.
   */
  maxSessionsPerClient: number;
  /** Most CREATE-SESSIONs one client may make per minute; beyond it 429 + Retry-After, E_OUTOFMEMORY. */
  sessionsPerMinutePerClient: number;
  /** A session that never received a byte expires after this many seconds (far below the session timeout). */
  emptySessionTimeoutSeconds: number;
  /** Most connections open at once; beyond it a request gets 503 with Retry-After. */
  maxConnections: number;
  /** Time to receive a request head, from its first byte (and for a new connection, from the connect). */
  headersTimeoutSeconds: number;
  /** A connection idle this long between requests is closed. */
  keepAliveTimeoutSeconds: number;
  /** Minimum bytes/s of a request body being read and of a response being sent, per window (mod_reqtimeout MinRate). */
  minRateBytesPerSec: number;
  /** Grace period and measuring window of minRateBytesPerSec, seconds. */
  rateGraceSeconds: number;
  /** Time a TLS client gets to complete its handshake. */
  tlsHandshakeTimeoutSeconds: number;
}

/**
 * When a FRAGMENT's bytes reach the disk. A client always continues from the offset the
 * server reports (§3.1.4.3), so what matters is that a restarted server reports only what
 * is durable:
 * - `group` (default): an Ack means the bytes are written (in the page cache). The request
 *   file is fdatasynced every syncEveryBytes or syncEverySeconds, whichever comes first, and
 *   always before the final fragment's Ack; after each sync the session record stores the
 *   durable length, and a (re)loaded session is cut back to it. A power cut loses at most
 *   the Acks since the last sync: the client resyncs backwards and resends them.
 * - `ack`: every Ack waits for an fdatasync of its fragment; nothing acknowledged is lost.
 */
export type DurabilityMode = 'group' | 'ack';

export interface DurabilityConfig {
  mode: DurabilityMode;
  /** group: bytes acknowledged since the last sync that start the next one. */
  syncEveryBytes: number;
  /** group: longest time an acknowledged byte waits for its sync, seconds. */
  syncEverySeconds: number;
}

export interface ServerConfig {
  defaults: DirectoryConfig;
  /** Keyed by URL path prefix, e.g. `/upload` or `/replies/app`. */
  directories: Record<string, Partial<DirectoryConfig>>;
  limits: ServerLimits;
  durability: DurabilityConfig;
}

export const DEFAULT_DIRECTORY_CONFIG: DirectoryConfig = {
  uploadsEnabled: true,
  maxUploadSize: Number.POSITIVE_INFINITY,
  allowOverwrites: true,
  notificationType: 'none',
  sessionTimeoutSeconds: 14 * 24 * 3600,
};

export const DEFAULT_LIMITS: ServerLimits = {
  maxFragmentBytes: 64 * 1024 * 1024,
  maxSessions: 10_000,
  maxSessionsPerClient: 200,
  sessionsPerMinutePerClient: 120,
  emptySessionTimeoutSeconds: 15 * 60,
  maxConnections: 2048,
  headersTimeoutSeconds: 20,
  keepAliveTimeoutSeconds: 30,
  minRateBytesPerSec: 500,
  rateGraceSeconds: 10,
  tlsHandshakeTimeoutSeconds: 10,
};

export const DEFAULT_DURABILITY: DurabilityConfig = {
  mode: 'group',
  syncEveryBytes: 64 * 1024 * 1024,
  syncEverySeconds: 1,
};

/** Settings for the virtual directory that holds `urlPath` (longest prefix wins). */
export function directoryConfigFor(config: ServerConfig, urlPath: string): DirectoryConfig {
  let best: string | undefined;
  for (const prefix of Object.keys(config.directories)) {
    const p = prefix.endsWith('/') ? prefix.slice(0, -1) : prefix;
    if (urlPath === p || urlPath.startsWith(p + '/') || p === '') {
      if (best === undefined || p.length > best.length) best = prefix;
    }
  }
  return { ...config.defaults, ...(best !== undefined ? config.directories[best] : {}) };
}

// ---------------------------------------------------------------------------
// `bits serve --config FILE`: a JSON file with defaults, per-directory settings and limits.

export interface ServerConfigFile {
  defaults?: Partial<DirectoryConfig>;
  directories?: Record<string, Partial<DirectoryConfig>>;
  limits?: Partial<ServerLimits>;
  durability?: Partial<DurabilityConfig>;
}

/** `2G`, `512M`, `100KiB`, `1.5GB` (binary units), a plain byte count, or `unlimited`/`Infinity`. */
export function parseServerSize(value: string): number | undefined {
  if (/^\s*(unlimited|infinity|none)\s*$/i.test(value)) return Number.POSITIVE_INFINITY;
  return parseSizeText(value);
}

type Check = (v: unknown) => unknown | undefined;

const positiveNumber: Check = (v) => (typeof v === 'number' && Number.isFinite(v) && v > 0 ? v : undefined);
const positiveInt: Check = (v) => (typeof v === 'number' && Number.isSafeInteger(v) && v > 0 ? v : undefined);
const bool: Check = (v) => (typeof v === 'boolean' ? v : undefined);
const size: Check = (v) => {
  if (typeof v === 'number' && (v === Number.POSITIVE_INFINITY || (Number.isSafeInteger(v) && v >= 0))) return v;
  return typeof v === 'string' ? parseServerSize(v) : undefined;
};

const DIRECTORY_KEYS: Record<keyof DirectoryConfig, { check: Check; expect: string }> = {
  uploadsEnabled: { check: bool, expect: 'true or false' },
  maxUploadSize: { check: size, expect: 'a byte count or a size like "2G"' },
  allowOverwrites: { check: bool, expect: 'true or false' },
  hostId: {
    check: (v) => (typeof v === 'string' && v.trim() !== '' && !/[\s/\\?#@]/.test(v) ? v.trim() : undefined),
    expect: 'a host name or IP address',
  },
  hostIdFallbackTimeout: { check: positiveInt, expect: 'a positive whole number of seconds' },
  notificationType: {
    check: (v) => (v === 'none' || v === 'by-reference' || v === 'by-value' ? v : undefined),
    expect: '"none", "by-reference" or "by-value"',
  },
  notificationUrl: {
    check: (v) => {
      if (typeof v !== 'string') return undefined;
      try {
        const u = new URL(v);
        return u.protocol === 'http:' || u.protocol === 'https:' ? v : undefined;
      } catch {
        return undefined;
      }
    },
    expect: 'an absolute http(s) URL',
  },
  sessionTimeoutSeconds: { check: positiveNumber, expect: 'a positive number of seconds' },
  notificationTimeoutSeconds: { check: positiveNumber, expect: 'a positive number of seconds' },
};

const LIMIT_KEYS: Record<keyof ServerLimits, { check: Check; expect: string }> = {
  maxFragmentBytes: {
    check: (v) => {
      const n = size(v);
      return typeof n === 'number' && Number.isSafeInteger(n) && n > 0 ? n : undefined;
    },
    expect: 'a byte count or a size like "64M"',
  },
  maxSessions: { check: positiveInt, expect: 'a positive whole number' },
  maxSessionsPerClient: { check: positiveInt, expect: 'a positive whole number' },
  sessionsPerMinutePerClient: { check: positiveInt, expect: 'a positive whole number' },
  emptySessionTimeoutSeconds: { check: positiveNumber, expect: 'a positive number of seconds' },
  maxConnections: { check: positiveInt, expect: 'a positive whole number' },
  headersTimeoutSeconds: { check: positiveNumber, expect: 'a positive number of seconds' },
  keepAliveTimeoutSeconds: { check: positiveNumber, expect: 'a positive number of seconds' },
  minRateBytesPerSec: { check: positiveNumber, expect: 'a positive number of bytes per second' },
  rateGraceSeconds: { check: positiveNumber, expect: 'a positive number of seconds' },
  tlsHandshakeTimeoutSeconds: { check: positiveNumber, expect: 'a positive number of seconds' },
};

const DURABILITY_KEYS: Record<keyof DurabilityConfig, { check: Check; expect: string }> = {
  mode: { check: (v) => (v === 'group' || v === 'ack' ? v : undefined), expect: '"group" or "ack"' },
  syncEveryBytes: {
    check: (v) => {
      const n = size(v);
      return typeof n === 'number' && Number.isSafeInteger(n) && n > 0 ? n : undefined;
    },
    expect: 'a byte count or a size like "64M"',
  },
  syncEverySeconds: { check: positiveNumber, expect: 'a positive number of seconds' },
};

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function validateSection<T>(
  file: string,
  where: string,
  value: unknown,
  keys: Record<string, { check: Check; expect: string }>,
): Partial<T> {
  if (!isPlainObject(value)) throw new Error(`${file}: "${where}" must be an object`);
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(value)) {
    const spec = keys[k];
    if (!spec) throw new Error(`${file}: unknown key "${where}.${k}" (known: ${Object.keys(keys).join(', ')})`);
    const ok = spec.check(v);
    if (ok === undefined) throw new Error(`${file}: "${where}.${k}" must be ${spec.expect}, got ${JSON.stringify(v)}`);
    out[k] = ok;
  }
  return out as Partial<T>;
}

/** A notification type other than none needs a URL (§3.2.1.1 NotificationURL). */
function checkNotification(file: string, where: string, d: Partial<DirectoryConfig>, inherited?: Partial<DirectoryConfig>): void {
  const type = d.notificationType ?? inherited?.notificationType;
  const url = d.notificationUrl ?? inherited?.notificationUrl;
  if (type !== undefined && type !== 'none' && !url) {
    throw new Error(`${file}: "${where}.notificationUrl" is required when notificationType is "${type}"`);
  }
}

/**
 * Reads and validates a server config file. Errors are one line naming the file
 * and the offending key.
 */
export async function loadServerConfigFile(file: string): Promise<ServerConfigFile> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    throw new Error(`${file}: cannot read the config file (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (err) {
    throw new Error(`${file}: not valid JSON (${(err as Error).message})`);
  }
  if (!isPlainObject(parsed)) throw new Error(`${file}: the top level must be a JSON object`);
  const out: ServerConfigFile = {};
  for (const [k, v] of Object.entries(parsed)) {
    if (k === 'defaults') {
      out.defaults = validateSection<DirectoryConfig>(file, 'defaults', v, DIRECTORY_KEYS);
      checkNotification(file, 'defaults', out.defaults);
    } else if (k === 'limits') {
      out.limits = validateSection<ServerLimits>(file, 'limits', v, LIMIT_KEYS);
    } else if (k === 'durability') {
      out.durability = validateSection<DurabilityConfig>(file, 'durability', v, DURABILITY_KEYS);
    } else if (k === 'directories') {
      if (!isPlainObject(v)) throw new Error(`${file}: "directories" must be an object keyed by URL path`);
      out.directories = {};
      for (const [prefix, d] of Object.entries(v)) {
        if (!prefix.startsWith('/')) throw new Error(`${file}: directory "${prefix}" must be a URL path starting with /`);
        const where = `directories.${prefix}`;
        const dir = validateSection<DirectoryConfig>(file, where, d, DIRECTORY_KEYS);
        out.directories[prefix] = dir;
      }
    } else if (k !== '$schema' && k !== 'comment') {
      throw new Error(`${file}: unknown key "${k}" (known: defaults, directories, limits, durability)`);
    }
  }
  for (const [prefix, d] of Object.entries(out.directories ?? {})) {
    checkNotification(file, `directories.${prefix}`, d, out.defaults);
  }
  return out;
}
