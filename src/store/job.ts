/**
 * The persistent job record and the on-disk shape of the job store, with a
 * small hand-written validator. Hand-written rather than conf's ajv schema
 * because the messages matter more than generality: a damaged store must be
 * reported as one line a person can act on (`job k3x9qa: state "x" is not one
 * of …`), and validating a few hundred small records by hand costs microseconds
 * on every read, with no schema compilation at start-up.
 */
import type { ErrorJson } from '../errors.js';
import type { UploadCheckpoint } from '../protocol/uploader.js';
import type { AppRange, TocRow } from '../protocol/download-ranges.js';
import type { Validators } from '../protocol/download-validate.js';
import type { SourceState } from '../protocol/downloader.js';
import { isSecretHeader, redactUrl } from './secrets.js';
import { sanitizeTransportSettings, type TransportSettings } from './transport-settings.js';

export const STORE_SCHEMA_VERSION = 1;

export const JOB_STATES = ['queued', 'transferring', 'suspended', 'error', 'complete', 'cancelled'] as const;
export type JobState = (typeof JOB_STATES)[number];

export const JOB_KINDS = ['upload', 'download'] as const;
export type JobKind = (typeof JOB_KINDS)[number];

export type JsonValue = null | boolean | number | string | JsonValue[] | { [key: string]: JsonValue };
export type JsonObject = { [key: string]: JsonValue };

/**
 * The last failure, as `BitsError.toJSON()` produces it (hresult as `0x…` hex,
 * hresultName, context), plus when it happened.
 */
export type JobError = ErrorJson & { at?: string };

/**
 * Where the credentials came from, so `bits resume` can ask for them again.
 * The secret itself is never stored.
 */
export type CredentialSource = {
  kind: 'env' | 'prompt' | 'flag';
  user?: string;
};

/** Timeouts of the transfer itself (the transport's are in TransportSettings), in milliseconds. */
export type JobTimeouts = { [key: string]: number };

/**
 * What `bits resume` needs to continue the transfer as it was asked for
 * (the transport's settings are the job's `transport`).
 */
export type JobOptions = {
  fragmentSize?: number;
  timeouts?: JobTimeouts;
  /** Only in jobs written before `transport` existed (see legacyTransportSettings). */
  headers?: { [name: string]: string };
  /** Upload: where the reply goes (`-` = stdout) and whether one is required. */
  replyFile?: string;
  requireReply?: boolean;
  /** Download: the output as asked for (absolute), the folder it was asked in, and the choices made. */
  output?: string;
  cwd?: string;
  force?: boolean;
  ranges?: string;
  segments?: number;
  mirrors?: string[];
  sha256?: string;
  [key: string]: JsonValue | undefined;
};

/**
 * Upload checkpoint [MC-BUP]: the one schema, defined with the uploader
 * (src/protocol/uploader.ts) and stored as the client reports it.
 */
export type { UploadCheckpoint } from '../protocol/uploader.js';

/** BitsHostIDFallbackTimeout's initial value (§3.1.1.2): infinite. */
const FALLBACK_INFINITE = 0xffffffff;

/**
 * Reads a job's `upload` record, whichever release wrote it: this schema, or
 * the previous release's (sessionId, confirmedOffset, hostId,
 * hostIdFallbackDeadlineMs, contentName, sourceSize, and a replyFile that now
 * lives in the job's options). undefined when the record says nothing usable
 * (no source identity): the upload then starts a new session.
 */
export function upgradeUploadCheckpoint(raw: unknown): UploadCheckpoint | undefined {
  if (!isObject(raw)) return undefined;
  const n = (v: unknown): number | undefined => (typeof v === 'number' && Number.isFinite(v) ? v : undefined);
  const t = (v: unknown): string | undefined => (typeof v === 'string' && v !== '' ? v : undefined);
  const size = n(raw.sourceEntitySize) ?? n(raw.sourceSize);
  const mtime = n(raw.sourceMtimeMs);
  if (size === undefined || mtime === undefined) return undefined;
  const session = t(raw.bitsSessionId) ?? t(raw.sessionId) ?? null;
  const offset = n(raw.bytesTransferred) ?? n(raw.confirmedOffset) ?? n(raw.offset) ?? 0;
  return {
    bitsSessionId: session,
    bytesTransferred: session === null ? 0 : offset,
    highWaterMark: Math.max(n(raw.highWaterMark) ?? 0, offset),
    bitsHostId: t(raw.bitsHostId) ?? t(raw.hostId) ?? null,
    bitsHostIdFallbackTimeout: n(raw.bitsHostIdFallbackTimeout) ?? n(raw.hostIdFallbackTimeout) ?? FALLBACK_INFINITE,
    hostIdFallbackDeadline: n(raw.hostIdFallbackDeadline) ?? n(raw.hostIdFallbackDeadlineMs) ?? null,
    fragmentSize: n(raw.fragmentSize) ?? 0,
    replyUrl: t(raw.replyUrl) ?? null,
    sourceEntityName: t(raw.sourceEntityName) ?? t(raw.contentName) ?? '',
    sourceEntitySize: size,
    sourceMtimeMs: mtime,
  };
}

/**
 * Download checkpoint [MC-BUP §3.6], the one schema of client and store: the
 * download client (src/client/download/) writes it after each durable write
 * batch and takes it back to resume (§3.6.4.2); names follow §3.6.1.
 * Version 1 is also what the previous release wrote (same fields), so its
 * jobs resume as they are; any other version restarts the download from zero.
 */
export type DownloadCheckpoint = {
  version: 1;
  /** The origin URL and the mirrors serving the same content (the Sources). */
  url: string;
  mirrors: string[];
  outputPath: string;
  /** `outputPath` + `.bits-partial`: DATA_BUFFER on disk. */
  partialPath: string;
  /** DATA_LENGTH (`length`), DATA_TIMESTAMP (`lastModified`) and the ETag of the origin. */
  validators: Validators;
  /** `--range` as typed, if any. */
  rangeText?: string;
  /** APPLICATION_RANGES, resolved against DATA_LENGTH (empty until the length is known). */
  applicationRanges: AppRange[];
  /** The Table of Contents: a row per range and segment, with its Source and `done`, the bytes fsynced before the checkpoint. */
  toc: TocRow[];
  /** Every Source with its own validators, SINGLE_RANGE_ONLY flag and why it was dropped. */
  sources: SourceState[];
  /** SINGLE_RANGE_ONLY of the origin. */
  singleRangeOnly: boolean;
  /** Segments asked for (parallel connections). */
  segments: number;
  sha256?: string;
  force: boolean;
  /** Bytes durable in the partial file (the sum of the rows' `done`). */
  bytesDone: number;
  /** The size of DATA_BUFFER; absent while the length is unknown. */
  totalBytes?: number;
};

/** The process transferring the job right now; a job whose runner is alive is running. */
export type JobRunner = { pid: number; host: string; since: string };

export interface Job {
  /** Short id a person can type: 6 lowercase Crockford base32 characters. */
  id: string;
  kind: JobKind;
  /** Local path (upload) or URL (download); URLs never carry a password. */
  source: string;
  /** URL (upload) or local path (download). */
  destination: string;
  state: JobState;
  bytesDone: number;
  totalBytes?: number;
  /** ISO 8601. */
  createdAt: string;
  updatedAt: string;
  lastError?: JobError;
  options?: JobOptions;
  /** How to reach the server again: timeouts, proxy, TLS files, rate, user, non-secret headers. */
  transport?: TransportSettings;
  credentialSource?: CredentialSource;
  runner?: JobRunner;
  /** `bits cancel --force` asked the running process to cancel the job (ISO time); cleared when a run starts or the job is cancelled. */
  cancelRequested?: string;
  upload?: UploadCheckpoint;
  download?: DownloadCheckpoint;
  /** Set: a background job, run by the per-user agent (src/jobs/agent.ts) in this order; absent: a foreground job. */
  priority?: BackgroundPriority;
  /** Command lines the user chose to run through the shell when the job ends (BITS SetNotifyCmdLine). */
  notify?: JobNotify;
  /** The agent retries a transient failure no earlier than this (ISO; BITS MinimumRetryDelay). */
  retryAt?: string;
  /** Since when the job has made no progress across the agent's retries (ISO), with the bytes it then had. */
  stalledSince?: string;
  stalledBytes?: number;
  /** `bits suspend` asked the agent to stop running this job (ISO time). */
  suspendRequested?: string;
}

export const BACKGROUND_PRIORITIES = ['high', 'normal', 'low'] as const;
export type BackgroundPriority = (typeof BACKGROUND_PRIORITIES)[number];
export type JobNotify = { onComplete?: string; onError?: string };

/** What `JobStore.create` takes: the store fills in id, timestamps, and defaults. */
export type NewJob = Omit<Job, 'id' | 'createdAt' | 'updatedAt' | 'state' | 'bytesDone'> & {
  state?: JobState;
  bytesDone?: number;
};

/**
 * A patch for `JobStore.update`. A key set to `undefined` removes that field
 * (e.g. `{ runner: undefined, lastError: undefined }`).
 */
export type JobPatch = { [K in Exclude<keyof Job, 'id' | 'kind' | 'createdAt'>]?: Job[K] | undefined };

export interface StoreData {
  schemaVersion: typeof STORE_SCHEMA_VERSION;
  jobs: { [id: string]: Job };
}

/** Crockford base32 in lower case: no i, l, o, u, so ids survive being read aloud or retyped. */
export const ID_ALPHABET = '0123456789abcdefghjkmnpqrstvwxyz';
export const ID_LENGTH = 6;
const ID_RE = /^[0-9a-hjkmnp-tv-z]{6}$/;

export { isSecretHeader, redactUrl, headerVariable, secretHeaderNote, secretHeaderValues, unredactUrl, hasRedactedQuery, FULL_URL_VARIABLE } from './secrets.js';

/**
 * Makes a record safe to persist: no secret headers, no URL passwords. The
 * store applies this to every write, so a bug elsewhere cannot leak a secret
 * into the file.
 */
export function sanitizeJob(job: Job): Job {
  const out: Job = { ...job, source: redactUrl(job.source), destination: redactUrl(job.destination) };
  const headers = job.options?.headers;
  if (headers && Object.keys(headers).some(isSecretHeader)) {
    const kept: { [name: string]: string } = {};
    for (const [k, v] of Object.entries(headers)) if (!isSecretHeader(k)) kept[k] = v;
    out.options = { ...job.options, headers: kept };
  }
  if (job.transport) out.transport = sanitizeTransportSettings(job.transport);
  if (out.upload?.replyUrl) out.upload = { ...out.upload, replyUrl: redactUrl(out.upload.replyUrl) };
  return out;
}

// ---------------------------------------------------------------------------
// Validation. Each check throws a ShapeError whose message is a short phrase;
// the store prefixes the file name and the recovery advice.

export class ShapeError extends Error {
  /** 'newer': a later bits wrote the file; the advice is to upgrade, not to move the file aside. */
  constructor(message: string, readonly reason: 'invalid' | 'newer' = 'invalid') {
    super(message);
  }
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function describe(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'an array';
  if (typeof v === 'string') return JSON.stringify(v.length > 40 ? v.slice(0, 40) + '…' : v);
  if (typeof v === 'object') return 'an object';
  return String(v);
}

type Check = (v: unknown) => string | undefined;
const str: Check = (v) => (typeof v === 'string' ? undefined : 'a string');
const nonNegInt: Check = (v) => (typeof v === 'number' && Number.isSafeInteger(v) && v >= 0 ? undefined : 'a non-negative integer');
const num: Check = (v) => (typeof v === 'number' && Number.isFinite(v) ? undefined : 'a number');
const bool: Check = (v) => (typeof v === 'boolean' ? undefined : 'true or false');
const isoDate: Check = (v) => (typeof v === 'string' && !Number.isNaN(Date.parse(v)) ? undefined : 'an ISO date');
const oneOf = (values: readonly string[]): Check => (v) =>
  typeof v === 'string' && values.includes(v) ? undefined : `one of ${values.join('|')}`;
const jsonObject: Check = (v) => (isObject(v) ? undefined : 'a JSON object');
const stringMap: Check = (v) =>
  isObject(v) && Object.values(v).every((x) => typeof x === 'string') ? undefined : 'an object of strings';
const stringList: Check = (v) => (Array.isArray(v) && v.every((x) => typeof x === 'string') ? undefined : 'a list of strings');
const numberMap: Check = (v) =>
  isObject(v) && Object.values(v).every((x) => typeof x === 'number' && Number.isFinite(x)) ? undefined : 'an object of numbers';

function checkFields(where: string, obj: Record<string, unknown>, fields: Record<string, Check>, required: readonly string[]): void {
  for (const key of required) {
    if (obj[key] === undefined) throw new ShapeError(`${where}: "${key}" is missing`);
  }
  for (const [key, check] of Object.entries(fields)) {
    const v = obj[key];
    if (v === undefined) continue;
    const want = check(v);
    if (want) throw new ShapeError(`${where}: "${key}" is ${describe(v)}, expected ${want}`);
  }
}

const JOB_FIELDS: Record<string, Check> = {
  id: (v) => (typeof v === 'string' && ID_RE.test(v) ? undefined : `${ID_LENGTH} characters of ${ID_ALPHABET}`),
  kind: oneOf(JOB_KINDS),
  source: str,
  destination: str,
  state: oneOf(JOB_STATES),
  bytesDone: nonNegInt,
  totalBytes: nonNegInt,
  createdAt: isoDate,
  updatedAt: isoDate,
  lastError: jsonObject,
  options: jsonObject,
  transport: jsonObject,
  credentialSource: jsonObject,
  runner: jsonObject,
  cancelRequested: isoDate,
  upload: jsonObject,
  download: jsonObject,
  priority: oneOf(BACKGROUND_PRIORITIES),
  notify: stringMap,
  retryAt: isoDate,
  stalledSince: isoDate,
  stalledBytes: nonNegInt,
  suspendRequested: isoDate,
};
const JOB_REQUIRED = ['id', 'kind', 'source', 'destination', 'state', 'bytesDone', 'createdAt', 'updatedAt'] as const;

/** Throws ShapeError naming the first problem; returns the value typed as a Job. */
export function validateJob(v: unknown, where = 'job'): Job {
  if (!isObject(v)) throw new ShapeError(`${where} is ${describe(v)}, expected an object`);
  checkFields(where, v, JOB_FIELDS, JOB_REQUIRED);
  if (v.lastError !== undefined) {
    checkFields(`${where} lastError`, v.lastError as Record<string, unknown>,
      { code: str, message: str, exitCode: nonNegInt, resumable: bool, httpStatus: nonNegInt, hresult: str, hresultName: str, context: str, at: isoDate },
      ['code', 'message', 'exitCode']);
  }
  if (v.options !== undefined) {
    checkFields(`${where} options`, v.options as Record<string, unknown>, { fragmentSize: nonNegInt, timeouts: numberMap, headers: stringMap }, []);
  }
  if (v.transport !== undefined) {
    const t = v.transport as Record<string, unknown>;
    checkFields(`${where} transport`, t, {
      requestTimeoutMs: nonNegInt, responseTimeoutMs: nonNegInt, connectTimeoutMs: nonNegInt, proxy: str, proxyUser: str,
      cacert: str, cert: str, key: str, insecure: bool, limitRateBytesPerSec: nonNegInt, user: str, headers: stringMap, secretHeaders: stringList,
      credentialSource: jsonObject, proxyCredentialSource: jsonObject, redirects: oneOf(['follow', 'report', 'refuse', 'allow-https-to-http']),
    }, []);
    for (const k of ['credentialSource', 'proxyCredentialSource'] as const) {
      if (t[k] !== undefined) checkFields(`${where} transport ${k}`, t[k] as Record<string, unknown>, { kind: oneOf(['env', 'prompt', 'flag']), user: str }, ['kind', 'user']);
    }
  }
  if (v.credentialSource !== undefined) {
    checkFields(`${where} credentialSource`, v.credentialSource as Record<string, unknown>, { kind: oneOf(['env', 'prompt', 'flag']), user: str }, ['kind']);
  }
  if (v.runner !== undefined) {
    checkFields(`${where} runner`, v.runner as Record<string, unknown>, { pid: nonNegInt, host: str, since: isoDate }, ['pid', 'host']);
  }
  if (v.upload !== undefined) {
    const strOrNull: Check = (x) => (x === null ? undefined : str(x));
    const numOrNull: Check = (x) => (x === null ? undefined : num(x));
    checkFields(`${where} upload`, v.upload as Record<string, unknown>, {
      bitsSessionId: strOrNull, bytesTransferred: nonNegInt, highWaterMark: nonNegInt, bitsHostId: strOrNull,
      bitsHostIdFallbackTimeout: nonNegInt, hostIdFallbackDeadline: numOrNull, fragmentSize: nonNegInt,
      replyUrl: strOrNull, sourceEntityName: str, sourceEntitySize: nonNegInt, sourceMtimeMs: num,
      // Written by the previous release (read through upgradeUploadCheckpoint).
      sourceSize: nonNegInt, sessionId: str, hostId: str, hostIdFallbackDeadlineMs: num,
      confirmedOffset: nonNegInt, replyFile: str, contentName: str, hostIdFallbackTimeout: nonNegInt,
    }, []);
  }
  if (v.download !== undefined) {
    checkFields(`${where} download`, v.download as Record<string, unknown>, { outputPath: str, partialPath: str, validators: jsonObject }, []);
  }
  return v as unknown as Job;
}

/** Validates a whole store file after JSON.parse. */
export function validateStoreData(v: unknown): StoreData {
  if (!isObject(v)) throw new ShapeError(`the top level is ${describe(v)}, expected an object`);
  if (v.schemaVersion === undefined) throw new ShapeError('"schemaVersion" is missing');
  if (typeof v.schemaVersion === 'number' && Number.isInteger(v.schemaVersion) && v.schemaVersion > STORE_SCHEMA_VERSION) {
    throw new ShapeError(`schema version ${v.schemaVersion}; this bits reads version ${STORE_SCHEMA_VERSION}`, 'newer');
  }
  if (v.schemaVersion !== STORE_SCHEMA_VERSION) throw new ShapeError(`"schemaVersion" is ${describe(v.schemaVersion)}, expected ${STORE_SCHEMA_VERSION}`);
  if (!isObject(v.jobs)) throw new ShapeError(`"jobs" is ${describe(v.jobs)}, expected an object`);
  for (const [id, job] of Object.entries(v.jobs)) {
    const j = validateJob(job, `job ${JSON.stringify(id)}`);
    if (j.id !== id) throw new ShapeError(`job ${JSON.stringify(id)}: its "id" is ${JSON.stringify(j.id)}`);
  }
  return v as unknown as StoreData;
}
