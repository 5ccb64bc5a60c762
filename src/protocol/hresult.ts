/**
 * MC-BUP §2.2.1.2 — BITS-Error HRESULTs and BITS-Error-Context, with the names
 * Windows uses (bitsmsg.h, winerror.h) so that what we print is what users search
 * for. Pure: no I/O.
 */

/** §2.2.1.2 BITS-Error-Context values. */
export const ErrorContext = {
  /** CONTEXT_SERVER: the error arose while the BITS server processed the message. */
  Server: 0x5,
  /** CONTEXT_REMOTE_APPLICATION: the server application (§3.4) returned the error. */
  RemoteApplication: 0x7,
} as const;
export type ErrorContext = (typeof ErrorContext)[keyof typeof ErrorContext];

export const HRESULT = {
  S_OK: 0x00000000,
  E_FAIL: 0x80004005,
  E_ACCESSDENIED: 0x80070005,
  E_OUTOFMEMORY: 0x8007000e,
  E_INVALIDARG: 0x80070057,
  /** HRESULT_FROM_WIN32(ERROR_FILE_NOT_FOUND) */
  ERROR_FILE_NOT_FOUND: 0x80070002,
  /** HRESULT_FROM_WIN32(ERROR_PATH_NOT_FOUND) */
  ERROR_PATH_NOT_FOUND: 0x80070003,
  /**
   * The value §2.2.1.2 and §3.3.6 give for ERROR_DISK_FULL. (Win32 ERROR_DISK_FULL is
   * 112 decimal, so HRESULT_FROM_WIN32 would be 0x80070070; the spec writes 0x112.
   * Servers send the spec's value; we accept both.)
   */
  ERROR_DISK_FULL: 0x80070112,
  ERROR_DISK_FULL_WIN32: 0x80070070,
  /** HRESULT_FROM_WIN32(ERROR_TIMEOUT): §3.1.2 timers. */
  ERROR_TIMEOUT: 0x800705b4,
  // WinINet errors: what Windows BITS reports for transport failures (§3.1.7.1 ERROR_TRANSPORT).
  ERROR_INTERNET_TIMEOUT: 0x80072ee2,
  ERROR_INTERNET_NAME_NOT_RESOLVED: 0x80072ee7,
  ERROR_INTERNET_CANNOT_CONNECT: 0x80072efd,
  ERROR_INTERNET_CONNECTION_ABORTED: 0x80072efe,
  ERROR_INTERNET_CONNECTION_RESET: 0x80072eff,
  ERROR_INTERNET_SECURE_FAILURE: 0x80072f8f,
  // bitsmsg.h
  BG_E_NETWORK_DISCONNECTED: 0x80200010,
  BG_E_MISSING_FILE_SIZE: 0x80200011,
  BG_E_INSUFFICIENT_HTTP_SUPPORT: 0x80200012,
  BG_E_INSUFFICIENT_RANGE_SUPPORT: 0x80200013,
  BG_E_INVALID_SERVER_RESPONSE: 0x8020001b,
  BG_E_LOCAL_FILE_CHANGED: 0x8020001d,
  BG_E_ERROR_CONTEXT_REMOTE_APPLICATION: 0x8020001e,
  BG_E_SESSION_NOT_FOUND: 0x8020001f,
  BG_E_TOO_LARGE: 0x80200020,
  BG_E_STRING_TOO_LONG: 0x80200021,
  BG_E_CLIENT_SERVER_PROTOCOL_MISMATCH: 0x80200022,
  BG_E_SERVER_EXECUTE_ENABLE: 0x80200023,
  BG_E_NO_PROGRESS: 0x80200024,
  BG_E_INVALID_AUTH_SCHEME: 0x80200028,
  BG_E_FILE_NOT_FOUND: 0x80200029,
  BG_E_INVALID_RANGE: 0x8020002b,
  BG_E_OVERLAPPING_RANGES: 0x8020002c,
  BG_E_CONNECT_FAILURE: 0x8020002d,
  BG_E_CONNECTION_CLOSED: 0x8020002e,
  BG_E_INVALID_CREDENTIALS: 0x80200040,
  BG_E_REMOTE_FILE_CHANGED: 0x80200073,
} as const;
export type HresultName = keyof typeof HRESULT;

export interface HresultInfo {
  name: string;
  /** What the code means, in one sentence. */
  meaning: string;
  /** What the user can do about it, when there is something to say. */
  advice?: string;
  /** The HTTP status §2.2.1.2 pairs with it on the wire, when the spec fixes one. */
  httpStatus?: number;
}

const INFO: Record<number, HresultInfo> = {
  [HRESULT.S_OK]: { name: 'S_OK', meaning: 'success' },
  [HRESULT.E_FAIL]: { name: 'E_FAIL', meaning: 'unspecified failure' },
  [HRESULT.BG_E_SESSION_NOT_FOUND]: {
    name: 'BG_E_SESSION_NOT_FOUND',
    meaning: 'the server has no record of this upload session',
    advice: 'the upload restarts from byte 0 with a new session',
    httpStatus: 500,
  },
  [HRESULT.E_ACCESSDENIED]: {
    name: 'E_ACCESSDENIED',
    meaning: 'access denied: the destination exists and cannot be overwritten, you are not authorised, or uploads are not enabled on this virtual directory',
    advice: 'check your credentials, choose another destination name, or ask the administrator to enable BITS uploads for the directory',
    httpStatus: 403,
  },
  [HRESULT.E_INVALIDARG]: {
    name: 'E_INVALIDARG',
    meaning: 'the server rejected a header of the request as invalid',
    advice: 'the destination may be a directory, or a header is too long; check the URL',
    httpStatus: 400,
  },
  [HRESULT.BG_E_TOO_LARGE]: {
    name: 'BG_E_TOO_LARGE',
    meaning: 'the file is larger than the server accepts for this directory',
    advice: 'ask the administrator to raise the maximum upload size, or split the file',
    httpStatus: 500,
  },
  [HRESULT.ERROR_DISK_FULL]: {
    name: 'ERROR_DISK_FULL',
    meaning: 'the server is out of disk space',
    advice: 'free space on the server, then `bits resume` the job',
    httpStatus: 500,
  },
  [HRESULT.ERROR_DISK_FULL_WIN32]: {
    name: 'ERROR_DISK_FULL',
    meaning: 'out of disk space',
    advice: 'free space, then `bits resume` the job',
  },
  [HRESULT.E_OUTOFMEMORY]: { name: 'E_OUTOFMEMORY', meaning: 'the server ran out of memory' },
  [HRESULT.ERROR_FILE_NOT_FOUND]: { name: 'ERROR_FILE_NOT_FOUND', meaning: 'file not found' },
  [HRESULT.ERROR_PATH_NOT_FOUND]: { name: 'ERROR_PATH_NOT_FOUND', meaning: 'path not found' },
  [HRESULT.ERROR_TIMEOUT]: {
    name: 'ERROR_TIMEOUT',
    meaning: 'a request was not sent, or its response not received, within the time limit',
    advice: '`bits resume` the job, or raise --request-timeout / --response-timeout',
  },
  [HRESULT.ERROR_INTERNET_TIMEOUT]: { name: 'ERROR_INTERNET_TIMEOUT', meaning: 'the connection timed out' },
  [HRESULT.ERROR_INTERNET_NAME_NOT_RESOLVED]: {
    name: 'ERROR_INTERNET_NAME_NOT_RESOLVED',
    meaning: 'the server name could not be resolved',
    advice: 'check the host name in the URL and your DNS',
  },
  [HRESULT.ERROR_INTERNET_CANNOT_CONNECT]: {
    name: 'ERROR_INTERNET_CANNOT_CONNECT',
    meaning: 'could not connect to the server',
    advice: 'check that the server is up and the port is right',
  },
  [HRESULT.ERROR_INTERNET_CONNECTION_ABORTED]: { name: 'ERROR_INTERNET_CONNECTION_ABORTED', meaning: 'the connection was aborted' },
  [HRESULT.ERROR_INTERNET_CONNECTION_RESET]: { name: 'ERROR_INTERNET_CONNECTION_RESET', meaning: 'the connection was reset' },
  [HRESULT.ERROR_INTERNET_SECURE_FAILURE]: {
    name: 'ERROR_INTERNET_SECURE_FAILURE',
    meaning: 'the TLS handshake or certificate check failed',
    advice: 'use --cacert for a private CA',
  },
  [HRESULT.BG_E_NETWORK_DISCONNECTED]: { name: 'BG_E_NETWORK_DISCONNECTED', meaning: 'the network is disconnected' },
  [HRESULT.BG_E_MISSING_FILE_SIZE]: { name: 'BG_E_MISSING_FILE_SIZE', meaning: 'the server did not return the file size' },
  [HRESULT.BG_E_INSUFFICIENT_HTTP_SUPPORT]: { name: 'BG_E_INSUFFICIENT_HTTP_SUPPORT', meaning: 'the server does not support HTTP 1.1' },
  [HRESULT.BG_E_INSUFFICIENT_RANGE_SUPPORT]: { name: 'BG_E_INSUFFICIENT_RANGE_SUPPORT', meaning: 'the server does not support the Range header' },
  [HRESULT.BG_E_INVALID_SERVER_RESPONSE]: {
    name: 'BG_E_INVALID_SERVER_RESPONSE',
    meaning: 'the server response was not valid BITS',
    advice: 'check that the URL points at a BITS upload directory',
  },
  [HRESULT.BG_E_LOCAL_FILE_CHANGED]: {
    name: 'BG_E_LOCAL_FILE_CHANGED',
    meaning: 'the local file changed during the transfer',
    advice: 'cancel the job and start a new one',
  },
  [HRESULT.BG_E_ERROR_CONTEXT_REMOTE_APPLICATION]: {
    name: 'BG_E_ERROR_CONTEXT_REMOTE_APPLICATION',
    meaning: 'the program on the remote server reported the error',
  },
  [HRESULT.BG_E_STRING_TOO_LONG]: { name: 'BG_E_STRING_TOO_LONG', meaning: 'a string is too long' },
  [HRESULT.BG_E_CLIENT_SERVER_PROTOCOL_MISMATCH]: {
    name: 'BG_E_CLIENT_SERVER_PROTOCOL_MISMATCH',
    meaning: 'the client and server BITS protocol versions are incompatible',
  },
  [HRESULT.BG_E_SERVER_EXECUTE_ENABLE]: { name: 'BG_E_SERVER_EXECUTE_ENABLE', meaning: 'scripting or execute permissions are enabled on the upload directory' },
  [HRESULT.BG_E_NO_PROGRESS]: {
    name: 'BG_E_NO_PROGRESS',
    meaning: 'no progress was made within the no-progress timeout',
    advice: '`bits resume` the job when the network is back',
  },
  [HRESULT.BG_E_INVALID_AUTH_SCHEME]: { name: 'BG_E_INVALID_AUTH_SCHEME', meaning: 'the server asked for an authentication scheme bits does not support' },
  [HRESULT.BG_E_FILE_NOT_FOUND]: { name: 'BG_E_FILE_NOT_FOUND', meaning: 'the file was not found' },
  [HRESULT.BG_E_INVALID_RANGE]: { name: 'BG_E_INVALID_RANGE', meaning: 'a byte range is invalid' },
  [HRESULT.BG_E_OVERLAPPING_RANGES]: { name: 'BG_E_OVERLAPPING_RANGES', meaning: 'byte ranges overlap' },
  [HRESULT.BG_E_CONNECT_FAILURE]: { name: 'BG_E_CONNECT_FAILURE', meaning: 'the connection to the server failed' },
  [HRESULT.BG_E_CONNECTION_CLOSED]: { name: 'BG_E_CONNECTION_CLOSED', meaning: 'the connection was closed' },
  [HRESULT.BG_E_INVALID_CREDENTIALS]: {
    name: 'BG_E_INVALID_CREDENTIALS',
    meaning: 'the credentials were rejected',
    advice: 'check --user or BITS_USER / BITS_PASSWORD',
  },
  [HRESULT.BG_E_REMOTE_FILE_CHANGED]: {
    name: 'BG_E_REMOTE_FILE_CHANGED',
    meaning: 'the remote file changed during the transfer',
  },
};

/** BG_E_HTTP_ERROR_nnn: Windows reports an HTTP status as 0x8019_0000 + status (0x80190194 = 404). */
export const HTTP_ERROR_BASE = 0x80190000;

export function hresultFromHttpStatus(status: number): number {
  return (HTTP_ERROR_BASE + status) >>> 0;
}

export function httpStatusFromHresult(hr: number): number | undefined {
  const u = hr >>> 0;
  return u >= HTTP_ERROR_BASE && u < HTTP_ERROR_BASE + 0x1000 ? u - HTTP_ERROR_BASE : undefined;
}

const HTTP_REASON: Record<number, string> = {
  400: 'bad request', 401: 'unauthorized', 403: 'forbidden', 404: 'not found', 405: 'method not allowed',
  407: 'proxy authentication required', 408: 'request timeout', 409: 'conflict', 410: 'gone',
  411: 'length required', 412: 'precondition failed', 413: 'request entity too large',
  414: 'URI too long', 415: 'unsupported media type', 416: 'range not satisfiable', 429: 'too many requests',
  500: 'internal server error', 501: 'not implemented', 502: 'bad gateway', 503: 'service unavailable',
  504: 'gateway timeout', 505: 'HTTP version not supported',
};

/** Everything we know about an HRESULT; unknown codes get a generic description, never a throw. */
export function describeHresult(hr: number): HresultInfo {
  const u = hr >>> 0;
  const known = INFO[u];
  if (known) return known;
  const status = httpStatusFromHresult(u);
  if (status !== undefined) {
    return { name: `BG_E_HTTP_ERROR_${status}`, meaning: `HTTP ${status} ${HTTP_REASON[status] ?? 'error'}`.trim() };
  }
  if ((u & 0x20000000) !== 0) return { name: 'customer-defined HRESULT', meaning: 'an error code defined by the server vendor (§1.8)' };
  if (((u & 0xffff0000) >>> 0) === 0x80070000) return { name: `HRESULT_FROM_WIN32(${u & 0xffff})`, meaning: `Windows error ${u & 0xffff}` };
  return { name: 'unknown HRESULT', meaning: 'an error code bits does not know' };
}

export function httpReason(status: number): string {
  return HTTP_REASON[status] ?? '';
}

/** `0x8020001F`: eight upper-case hex digits, the way Windows prints them. */
export function formatHresult(hr: number): string {
  return `0x${(hr >>> 0).toString(16).toUpperCase().padStart(8, '0')}`;
}

/**
 * BITS-Error is an HRESULT; IIS sends `0x8020001F`, the spec writes `x8020001F`,
 * some servers send signed decimal. Returns undefined for anything else.
 */
export function parseHresult(value: string | null | undefined): number | undefined {
  if (value == null) return undefined;
  const v = value.trim();
  let m = /^(?:0x|x)([0-9a-fA-F]{1,8})$/.exec(v);
  if (m) return parseInt(m[1]!, 16) >>> 0;
  m = /^-?\d{1,10}$/.exec(v);
  if (m) {
    const n = Number(v);
    if (n >= -0x80000000 && n <= 0xffffffff) return n >>> 0;
  }
  return undefined;
}

/** BITS-Error-Context: `0x5` / `0x7` (also `5`, `x5`). */
export function parseErrorContext(value: string | null | undefined): number | undefined {
  if (value == null) return undefined;
  const v = value.trim();
  const m = /^(?:0x|x)?([0-9a-fA-F]{1,8})$/.exec(v);
  return m ? parseInt(m[1]!, 16) : undefined;
}

export function formatErrorContext(ctx: number): string {
  return `0x${ctx.toString(16)}`;
}

export function describeErrorContext(ctx: number | undefined): string | undefined {
  if (ctx === ErrorContext.Server) return 'server';
  if (ctx === ErrorContext.RemoteApplication) return 'remote application';
  return ctx === undefined ? undefined : `context ${formatErrorContext(ctx)}`;
}

export function isDiskFull(hr: number | undefined): boolean {
  return hr !== undefined && (hr >>> 0 === HRESULT.ERROR_DISK_FULL || hr >>> 0 === HRESULT.ERROR_DISK_FULL_WIN32);
}
