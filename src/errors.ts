/**
 * Typed errors. Every failure that reaches the user is one of these: it carries
 * what a script needs (a stable exit code, whether the job can be resumed) and
 * what a person needs (one line naming the HTTP status, the BITS-Error HRESULT
 * with its Windows name, its context, and what to do).
 */
import {
  describeErrorContext,
  describeHresult,
  formatHresult,
  hresultFromHttpStatus,
  httpReason,
  HRESULT,
} from './protocol/hresult.js';
import { classifyHttpFailure, type Disposition } from './protocol/failure.js';
export type { Disposition } from './protocol/failure.js';

/** Stable process exit codes; documented in the README. */
export const ExitCode = {
  OK: 0,
  /** A bug in bits: an unexpected exception. */
  INTERNAL: 1,
  /** Bad command line: unknown option, bad value, malformed URL, unknown job id. */
  USAGE: 2,
  /** A local file problem: missing or unreadable source, full disk, destination exists. */
  LOCAL_FILE: 3,
  /** The network gave up (connection, DNS, timeout, no progress): the job is resumable. */
  NETWORK: 4,
  /** The server refused: an HTTP error or a BITS-Error HRESULT that retrying will not fix. */
  SERVER: 5,
  /** Authentication failed (401/407 with the credentials given). */
  AUTH: 6,
  /** The server answered something that is not valid BITS/HTTP. */
  PROTOCOL: 7,
  /** The job store is corrupt, unreadable or locked. */
  STORE: 8,
  /** The source changed during the transfer (local file or remote content). */
  SOURCE_CHANGED: 9,
  /** Interrupted by SIGINT/SIGTERM: the job is suspended and resumable. */
  INTERRUPTED: 10,
  /** The job was cancelled. */
  CANCELLED: 11,
  /** TLS: the certificate or handshake was rejected. */
  TLS: 12,
} as const;
export type ExitCode = (typeof ExitCode)[keyof typeof ExitCode];

export interface ErrorJson {
  code: string;
  exitCode: number;
  message: string;
  resumable: boolean;
  httpStatus?: number;
  hresult?: string;
  hresultName?: string;
  context?: string;
}

export abstract class BitsError extends Error {
  abstract readonly exitCode: ExitCode;
  /** Whether `bits resume` can finish the job after this error. */
  resumable = false;
  /** HTTP status when the error came from a response. */
  httpStatus?: number;
  /** The HRESULT Windows would report for this failure. */
  hresult?: number;
  /** BITS-Error-Context, when the server sent one. */
  errorContext?: number;

  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
  }

  /**
   * What this failure means for the transfer (src/protocol/failure.ts): retry,
   * suspend (resumable), fail for good (job state `error`) or cancel. The one
   * place every driver and the job layer ask.
   */
  get disposition(): Disposition {
    return 'fail';
  }

  /** Stable machine-readable name, e.g. `ServerError`. */
  get code(): string {
    return this.name;
  }

  toJSON(): ErrorJson {
    const j: ErrorJson = { code: this.code, exitCode: this.exitCode, message: this.message, resumable: this.resumable };
    if (this.httpStatus !== undefined) j.httpStatus = this.httpStatus;
    if (this.hresult !== undefined) {
      j.hresult = formatHresult(this.hresult);
      j.hresultName = describeHresult(this.hresult).name;
    }
    const ctx = describeErrorContext(this.errorContext);
    if (ctx) j.context = ctx;
    return j;
  }
}

export class UsageError extends BitsError {
  readonly exitCode = ExitCode.USAGE;
}

export class LocalFileError extends BitsError {
  readonly exitCode = ExitCode.LOCAL_FILE;
  constructor(
    message: string,
    readonly path?: string,
    options?: { cause?: unknown; resumable?: boolean },
  ) {
    super(message, options);
    this.resumable = options?.resumable ?? false;
  }

  /** A full disk is suspended (free space, then resume); anything else is the user's to fix. */
  override get disposition(): Disposition {
    return this.resumable ? 'suspend' : 'fail';
  }
}

/** §3.1.7.1 ERROR_TRANSPORT: a lower layer failed. Transient: retried, then resumable. */
export class TransportError extends BitsError {
  readonly exitCode: ExitCode = ExitCode.NETWORK;
  constructor(message: string, options?: { cause?: unknown; hresult?: number }) {
    super(message, options);
    this.resumable = true;
    this.hresult = options?.hresult ?? HRESULT.ERROR_INTERNET_CONNECTION_RESET;
  }

  override get disposition(): Disposition {
    return 'retry';
  }
}

/** §3.1.6 / §3.6.6: the request or response timer expired (ERROR_TIMEOUT). */
export class TimeoutError extends TransportError {
  constructor(
    message: string,
    readonly timer: 'request' | 'response' | 'connect' | 'no-progress',
    options?: { cause?: unknown },
  ) {
    super(message, { ...options, hresult: timer === 'no-progress' ? HRESULT.BG_E_NO_PROGRESS : HRESULT.ERROR_TIMEOUT });
  }

  /** The no-progress deadline is the end of retrying: the job is suspended, resumable. */
  override get disposition(): Disposition {
    return this.timer === 'no-progress' ? 'suspend' : 'retry';
  }
}

export class TlsError extends BitsError {
  readonly exitCode = ExitCode.TLS;
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.hresult = HRESULT.ERROR_INTERNET_SECURE_FAILURE;
  }
}

export interface ServerErrorInfo {
  httpStatus: number;
  /** BITS-Error, when present. */
  bitsError?: number;
  /** BITS-Error-Context, when present. */
  bitsErrorContext?: number;
  /** What we sent: `FRAGMENT`, `GET`, … */
  request?: string;
  url?: string;
  /**
   * Overrides the failure table (src/protocol/failure.ts) where the caller knows
   * better; by default classifyHttpFailure(httpStatus, bitsError) decides.
   */
  transient?: boolean;
  /** Retry-After of the answer, in ms. */
  retryAfterMs?: number;
}

/**
 * The server answered with an error status. Printed as, for example:
 * `server refused FRAGMENT: HTTP 500 (0x801901F4), BITS-Error 0x80200020 BG_E_TOO_LARGE
 *  [server]: the file is larger than the server accepts for this directory; ask …`
 */
export class ServerError extends BitsError {
  readonly exitCode: ExitCode = ExitCode.SERVER;
  readonly bitsError?: number;
  readonly transient: boolean;
  readonly request?: string;
  readonly url?: string;
  /** The server's Retry-After, in ms: nextRetryDelay() waits this long instead of backing off. */
  readonly retryAfterMs?: number;

  constructor(info: ServerErrorInfo, message?: string) {
    super(message ?? ServerError.describe(info));
    this.httpStatus = info.httpStatus;
    this.bitsError = info.bitsError;
    this.errorContext = info.bitsErrorContext;
    this.hresult = info.bitsError ?? hresultFromHttpStatus(info.httpStatus);
    this.transient = info.transient ?? classifyHttpFailure(info.httpStatus, info.bitsError) === 'retry';
    // A server-side refusal never loses local state: `bits resume ID` may try again once it is fixed.
    this.resumable = true;
    this.request = info.request;
    this.url = info.url;
    this.retryAfterMs = info.retryAfterMs;
  }

  override get disposition(): Disposition {
    return this.transient ? 'retry' : 'fail';
  }

  static describe(info: ServerErrorInfo): string {
    const reason = httpReason(info.httpStatus);
    let s = `server refused ${info.request ?? 'the request'}: HTTP ${info.httpStatus}${reason ? ' ' + reason : ''} (${formatHresult(hresultFromHttpStatus(info.httpStatus))})`;
    if (info.bitsError !== undefined) {
      const d = describeHresult(info.bitsError);
      const ctx = describeErrorContext(info.bitsErrorContext);
      s += `, BITS-Error ${formatHresult(info.bitsError)} ${d.name}${ctx ? ` [${ctx}]` : ''}: ${d.meaning}`;
      if (d.advice) s += `; ${d.advice}`;
    }
    return s;
  }
}

/** 401/407 that the credentials given could not satisfy (§3.1.5.1.7). */
export class AuthError extends ServerError {
  override readonly exitCode: ExitCode = ExitCode.AUTH;

  override get disposition(): Disposition {
    return 'fail';
  }
}

/** The server's answer is not valid BITS/HTTP (BG_E_INVALID_SERVER_RESPONSE). */
export class ProtocolError extends BitsError {
  readonly exitCode = ExitCode.PROTOCOL;
  constructor(message: string, options?: { cause?: unknown; httpStatus?: number }) {
    super(message, options);
    this.hresult = HRESULT.BG_E_INVALID_SERVER_RESPONSE;
    this.httpStatus = options?.httpStatus;
    this.resumable = true;
  }
}

/** The source changed under us: BG_E_LOCAL_FILE_CHANGED or BG_E_REMOTE_FILE_CHANGED. */
export class SourceChangedError extends BitsError {
  readonly exitCode = ExitCode.SOURCE_CHANGED;
  constructor(message: string, readonly where: 'local' | 'remote') {
    super(message);
    this.hresult = where === 'local' ? HRESULT.BG_E_LOCAL_FILE_CHANGED : HRESULT.BG_E_REMOTE_FILE_CHANGED;
  }
}

export class StoreError extends BitsError {
  readonly exitCode = ExitCode.STORE;
  constructor(message: string, readonly file?: string, options?: { cause?: unknown }) {
    super(message, options);
  }
}

export class InterruptedError extends BitsError {
  readonly exitCode = ExitCode.INTERRUPTED;
  constructor(message = 'interrupted') {
    super(message);
    this.resumable = true;
  }

  override get disposition(): Disposition {
    return 'suspend';
  }
}

export class CancelledError extends BitsError {
  readonly exitCode = ExitCode.CANCELLED;

  override get disposition(): Disposition {
    return 'cancel';
  }
}

/** Maps any thrown value to a BitsError without losing information. */
export function toBitsError(err: unknown): BitsError {
  if (err instanceof BitsError) return err;
  const e = err as NodeJS.ErrnoException | undefined;
  if (e && typeof e === 'object' && typeof e.code === 'string') {
    switch (e.code) {
      case 'ENOENT':
      case 'EACCES':
      case 'EPERM':
      case 'EISDIR':
      case 'ENOTDIR':
      case 'EROFS':
        return new LocalFileError(`${e.path ?? 'file'}: ${errnoText(e.code)}`, e.path, { cause: e });
      case 'ENOSPC':
      case 'EDQUOT':
        return new LocalFileError(`${e.path ?? 'disk'}: no space left on device`, e.path, { cause: e, resumable: true });
    }
  }
  class InternalError extends BitsError {
    readonly exitCode = ExitCode.INTERNAL;
  }
  return new InternalError(err instanceof Error ? err.message : String(err), { cause: err });
}

function errnoText(code: string): string {
  switch (code) {
    case 'ENOENT': return 'no such file or directory';
    case 'EACCES':
    case 'EPERM': return 'permission denied';
    case 'EISDIR': return 'is a directory';
    case 'ENOTDIR': return 'not a directory';
    case 'EROFS': return 'read-only file system';
    default: return code;
  }
}

/** The one line a user sees. */
export function formatErrorLine(err: BitsError): string {
  return err.message.replace(/\s*\n\s*/g, ' ');
}
