/**
 * MC-BUP §3.1 — the HTTPUploader as a pure state machine.
 *
 * `next(uploader, outcome, now)` takes what just happened (the Ack of the
 * message sent, a transport error, a higher-layer event) and returns the new
 * uploader and the one thing the driver must do next (send a message, get the
 * reply, report an error, suspend, or stop). The driver (src/client/upload.ts)
 * does the I/O; everything the spec decides — which message, to which host,
 * which offset, when to restart or fall back — is decided here, with time
 * passed in as data so that timers (§3.1.2.3 host fallback) are testable.
 *
 * The transitions follow §3.1.5.1 line by line; each branch quotes its section.
 * No I/O, no clocks, no randomness.
 */
import type { Ack } from './ack.js';
import { FALLBACK_TIMEOUT_INFINITE } from './ack.js';
import { parseRetryAfter } from './failure.js';
import { HRESULT } from './hresult.js';
import { applyHostId, resolveReplyUrl } from './urls.js';

/** §3.1.1.2 HTTPUploader states. */
export type UploaderStateName =
  | 'STATE_INIT'
  | 'STATE_CREATE_SESSION'
  | 'STATE_PING'
  | 'STATE_FRAGMENT'
  | 'STATE_COMPLETE'
  | 'STATE_CANCEL'
  | 'STATE_ERROR'
  | 'STATE_GET_REPLY'
  | 'STATE_SUSPEND';

/** §6 notes 10/16: Windows never reduces a fragment below 5 KB after a 413. */
export const MIN_FRAGMENT_SIZE = 5 * 1024;
/**
 * BG_E_SESSION_NOT_FOUND restarts made at once while nothing moves beyond the
 * high-water mark; after that each restart waits for the retry delay, so a
 * server that loses every session costs a request every few seconds, not
 * thousands a minute, until the no-progress deadline ends the job (resumable).
 */
export const DEFAULT_MAX_SESSION_RESTARTS = 3;
/**
 * Acks whose BITS-Received-Content-Range differs from what we sent are legal
 * (§2.2.6 lists why), but a server that keeps moving the offset without ever
 * confirming a new byte would make us loop without a retry delay: after this
 * many such Acks, each further one is a transient error (retry delay, then the
 * no-progress deadline).
 */
export const MAX_CONSECUTIVE_RESYNCS = 8;

/** §3.1.1.1 UploadEntityInfo (the source itself is the driver's business). */
export interface UploadEntityInfo {
  /** Destination URL (absolute href) as the higher layer gave it. */
  destination: string;
  /** SourceEntityName: the Content-Name value we send (already encoded). */
  sourceEntityName: string;
  /** SourceEntitySize. */
  sourceEntitySize: number;
  /** The source's mtime: with the size, which version of the file this upload sends (BG_E_LOCAL_FILE_CHANGED). */
  sourceMtimeMs: number;
}

export type ErrorKind =
  /** Retry after the retry delay: what src/protocol/failure.ts calls 'retry', and a server that makes no progress. */
  | 'transient'
  /** The server refused; retrying will not help. */
  | 'permanent'
  /** 401/407 the credentials could not satisfy. */
  | 'auth'
  /** The server's answer is not valid BITS. */
  | 'protocol';

/** What §3.1.5.1.7 returns to the higher-layer protocol: HTTPStatusCode, BitsErrorCode, BitsErrorContext, and why. */
export interface UploadErrorInfo {
  kind: ErrorKind;
  /** 0 when no HTTP response was received. */
  httpStatus: number;
  bitsError?: number;
  bitsErrorContext?: number;
  /** The message that failed, e.g. `FRAGMENT`. */
  request?: string;
  url?: string;
  /** Human detail when there is no HTTP status to describe it. */
  message?: string;
  /** HRESULT of a transport failure (WinINet code). */
  hresult?: number;
  /** The answer's Retry-After, in ms. */
  retryAfterMs?: number;
}

/** §3.1.1.2 HTTPUploader state elements (plus what an implementation needs to follow them). */
export interface HttpUploader {
  state: UploaderStateName;
  entity: UploadEntityInfo;
  /** FRAGMENT-START-OFFSET: where the next fragment starts; only an Ack moves it. */
  fragmentStartOffset: number;
  /** FRAGMENT-LENGTH of the fragment in flight (0 when none). */
  fragmentLength: number;
  /** The length we aim for ("implementation dependent means", §3.1.5.1.4); halved on 413. */
  fragmentSize: number;
  minFragmentSize: number;
  /** HTTPStatusCode of the last failure (0 = none / no response). */
  httpStatusCode: number;
  /** BitsErrorCode: BITS-Error of the last failure, 0 if none. */
  bitsErrorCode: number;
  /** BitsErrorContext: BITS-Error-Context of the last failure, 0 if none. */
  bitsErrorContext: number;
  /** BytesTransferred: bytes the server has confirmed (BITS-Received-Content-Range). */
  bytesTransferred: number;
  /**
   * The highest offset any server ever confirmed for this upload. Only an Ack
   * beyond it is progress: it alone resets sessionRestarts and consecutiveResyncs
   * (and, in the driver, the no-progress deadline), so a server that takes us
   * back again and again cannot keep an upload alive.
   */
  highWaterMark: number;
  /**
   * Restored from a checkpoint that may lag what earlier runs sent: the job store
   * checkpoints about once a second, not per fragment, because the server's offset
   * wins on resume (§3.1.4.3). Until the first FRAGMENT Ack of this run, an Ack beyond
   * the fragment in flight (but within the file) is the server holding bytes an earlier
   * run sent, not a lie; after it, the over-acknowledgement check is exact again.
   */
  earlierRunsMayHaveSentMore: boolean;
  /** Origin server: the host of the destination URL. */
  originServer: string;
  /** BITSSessionId. */
  bitsSessionId: string | null;
  /** BitsHostID: NULL until a CREATE-SESSION Ack carries BITS-Host-Id; NULL again after fallback (§3.1.6.3). */
  bitsHostId: string | null;
  /** BitsHostIDFallbackTimeout in seconds; 0xFFFFFFFF = infinite (§3.1.2.3). */
  bitsHostIdFallbackTimeout: number;
  /** The HostIdFallback timer as data: epoch ms when it fires, null when not started. */
  hostIdFallbackDeadline: number | null;
  /** Reply URL: the BITS-Reply-URL resolved against the destination URL. */
  replyUrl: string | null;
  /** UploadSuspended. */
  uploadSuspended: boolean;
  /** Upload-reply mode requested: a final Ack without BITS-Reply-URL is an error (§3.1.5.2.4). */
  requireReply: boolean;
  /** AuthCredentials: none given, given but not yet sent, or already sent (§3.1.5.1.7). */
  auth: 'none' | 'available' | 'supplied';
  /** BG_E_SESSION_NOT_FOUND restarts since the last progress beyond the high-water mark. */
  sessionRestarts: number;
  maxSessionRestarts: number;
  /** Acks that moved the offset somewhere we did not ask for, since the last progress beyond the high-water mark. */
  consecutiveResyncs: number;
  /** The message that failed, for "resend the previous message" (§3.1.5.1.7, 401/407). */
  lastSent: SendAction | null;
  /** The state that sent lastSent. */
  lastSentState: UploaderStateName | null;
  lastError: UploadErrorInfo | null;
  /** Set once STATE_COMPLETE or STATE_CANCEL got its Ack. */
  finished: 'complete' | 'cancelled' | null;
}

export type SendAction =
  | { type: 'CREATE-SESSION'; url: string; contentName: string; withCredentials: boolean }
  | { type: 'PING'; url: string; withCredentials: boolean }
  | {
      type: 'FRAGMENT';
      url: string;
      sessionId: string;
      contentName: string;
      offset: number;
      length: number;
      total: number;
      withCredentials: boolean;
    }
  | { type: 'CLOSE-SESSION'; url: string; sessionId: string; contentName: string; withCredentials: boolean }
  | { type: 'CANCEL-SESSION'; url: string; sessionId: string; withCredentials: boolean };

export type UploaderAction =
  | SendAction
  /** §3.1.5.1.8: the higher layer downloads the reply (from the origin host). */
  | { type: 'GET-REPLY'; url: string }
  /** §3.1.5.1.7: "Return the error info … to the higher-layer protocol". */
  | { type: 'REPORT-ERROR'; error: UploadErrorInfo }
  /** §3.1.5.1.9: return to the higher layer; resume with outcome `resume`. */
  | { type: 'SUSPEND' }
  /** Terminal: CLOSE-SESSION or CANCEL-SESSION acknowledged. */
  | { type: 'DONE'; result: 'complete' | 'cancelled' };

/** Things the driver may want to tell the user; they never change what happens next. */
export type UploaderNote =
  | { type: 'resync'; from: number; to: number }
  | { type: 'host-id'; hostId: string; fallbackSeconds: number | null }
  | { type: 'host-fallback'; hostId: string }
  | { type: 'fragment-size'; from: number; to: number }
  | { type: 'session-restart'; count: number }
  | { type: 'warning'; message: string };

export type UploaderOutcome =
  /** STATE_INIT: run §3.1.5.1.1. */
  | { type: 'start' }
  /** The classified response to the SendAction just performed. */
  | { type: 'ack'; ack: Ack }
  /** No usable HTTP response: connection refused/reset, timeout, DNS, TLS … */
  | { type: 'transport-error'; message: string; retryable: boolean; hresult?: number }
  | { type: 'reply-downloaded' }
  | { type: 'reply-failed'; message: string; retryable: boolean; httpStatus?: number; retryAfterMs?: number }
  /** §3.1.4.2 Pause Existing Upload. */
  | { type: 'suspend' }
  /** §3.1.4.3 Resume Existing Upload (also after an error returned to the higher layer). */
  | { type: 'resume' }
  /** §3.1.4.4 Cancel Existing Upload. */
  | { type: 'cancel' };

export interface Step {
  state: HttpUploader;
  action: UploaderAction;
  notes: UploaderNote[];
}

export interface UploaderOptions {
  /** Preferred FRAGMENT-LENGTH. */
  fragmentSize: number;
  minFragmentSize?: number;
  requireReply?: boolean;
  /** Whether the higher layer supplied AuthCredentials the transport has not sent yet. */
  credentials?: boolean;
  maxSessionRestarts?: number;
}

/** §3.1.4.1 New Upload Request: a new HTTPUploader in STATE_INIT. */
export function createUploader(entity: UploadEntityInfo, opts: UploaderOptions): HttpUploader {
  if (!Number.isSafeInteger(entity.sourceEntitySize) || entity.sourceEntitySize < 0) {
    throw new RangeError(`invalid SourceEntitySize ${entity.sourceEntitySize}`);
  }
  const min = opts.minFragmentSize ?? MIN_FRAGMENT_SIZE;
  if (!Number.isSafeInteger(opts.fragmentSize) || opts.fragmentSize < 1) throw new RangeError(`invalid fragment size ${opts.fragmentSize}`);
  return {
    state: 'STATE_INIT',
    entity: { ...entity },
    fragmentStartOffset: 0,
    fragmentLength: 0,
    fragmentSize: opts.fragmentSize,
    minFragmentSize: Math.min(min, opts.fragmentSize),
    httpStatusCode: 0,
    bitsErrorCode: 0,
    bitsErrorContext: 0,
    bytesTransferred: 0,
    highWaterMark: 0,
    originServer: new URL(entity.destination).host,
    bitsSessionId: null,
    bitsHostId: null,
    bitsHostIdFallbackTimeout: FALLBACK_TIMEOUT_INFINITE,
    hostIdFallbackDeadline: null,
    replyUrl: null,
    uploadSuspended: false,
    requireReply: opts.requireReply ?? false,
    auth: opts.credentials ? 'available' : 'none',
    sessionRestarts: 0,
    maxSessionRestarts: opts.maxSessionRestarts ?? DEFAULT_MAX_SESSION_RESTARTS,
    consecutiveResyncs: 0,
    lastSent: null,
    earlierRunsMayHaveSentMore: false,
    lastSentState: null,
    lastError: null,
    finished: null,
  };
}

/**
 * The one upload checkpoint: what a job store keeps to resume an upload in
 * another process (§3.1.4.3), named after the §3.1.1.1/§3.1.1.2 state elements.
 * The uploader's snapshot, the client's onCheckpoint and the job store's
 * `upload` record are this very object; src/store re-exports it and reads
 * records of the previous release with upgradeUploadCheckpoint.
 */
export type UploadCheckpoint = {
  /** BITSSessionId; null before a CREATE-SESSION was acknowledged (resume then creates one). */
  bitsSessionId: string | null;
  /** BytesTransferred: the offset the server confirmed last (BITS-Received-Content-Range). */
  bytesTransferred: number;
  /** The highest offset ever confirmed (see HttpUploader.highWaterMark). */
  highWaterMark: number;
  /** BitsHostID in use; null if none, or after falling back to the origin (§3.1.6.3). */
  bitsHostId: string | null;
  /** BitsHostIDFallbackTimeout in seconds; 0xFFFFFFFF = infinite. */
  bitsHostIdFallbackTimeout: number;
  /** When the HostIdFallback timer fires (epoch ms); null when it is not running. */
  hostIdFallbackDeadline: number | null;
  /** FRAGMENT-LENGTH aimed for (after any 413 shrink). */
  fragmentSize: number;
  /** Reply URL, resolved, once the last Ack carried BITS-Reply-URL. */
  replyUrl: string | null;
  /** SourceEntityName: the Content-Name sent; a resumed session must send the same. */
  sourceEntityName: string;
  /** SourceEntitySize and the source's mtime when the upload began (BG_E_LOCAL_FILE_CHANGED). */
  sourceEntitySize: number;
  sourceMtimeMs: number;
};

export function snapshot(u: HttpUploader): UploadCheckpoint {
  return {
    bitsSessionId: u.bitsSessionId,
    bytesTransferred: u.bytesTransferred,
    highWaterMark: u.highWaterMark,
    bitsHostId: u.bitsHostId,
    bitsHostIdFallbackTimeout: u.bitsHostIdFallbackTimeout,
    hostIdFallbackDeadline: u.hostIdFallbackDeadline,
    fragmentSize: u.fragmentSize,
    replyUrl: u.replyUrl,
    sourceEntityName: u.entity.sourceEntityName,
    sourceEntitySize: u.entity.sourceEntitySize,
    sourceMtimeMs: u.entity.sourceMtimeMs,
  };
}

/**
 * An uploader restored from a checkpoint, suspended: feed it `resume` (§3.1.4.3:
 * PING, then FRAGMENT from the saved offset; the server corrects us with 416).
 * Without a session, `resume` creates one.
 */
export function restoreUploader(destination: string, cp: UploadCheckpoint, opts: Omit<UploaderOptions, 'fragmentSize'> & { fragmentSize?: number }): HttpUploader {
  const entity: UploadEntityInfo = {
    destination,
    sourceEntityName: cp.sourceEntityName,
    sourceEntitySize: cp.sourceEntitySize,
    sourceMtimeMs: cp.sourceMtimeMs,
  };
  const u = createUploader(entity, { ...opts, fragmentSize: cp.fragmentSize || opts.fragmentSize || 0 });
  if (cp.bytesTransferred < 0 || cp.bytesTransferred > entity.sourceEntitySize) {
    throw new RangeError(`saved offset ${cp.bytesTransferred} is outside 0..${entity.sourceEntitySize}`);
  }
  const session = cp.bitsSessionId !== null;
  return {
    ...u,
    state: 'STATE_SUSPEND',
    uploadSuspended: true,
    bitsSessionId: cp.bitsSessionId,
    bitsHostId: session ? cp.bitsHostId : null,
    bitsHostIdFallbackTimeout: cp.bitsHostIdFallbackTimeout,
    hostIdFallbackDeadline: session ? cp.hostIdFallbackDeadline : null,
    fragmentStartOffset: session ? cp.bytesTransferred : 0,
    bytesTransferred: session ? cp.bytesTransferred : 0,
    highWaterMark: Math.min(entity.sourceEntitySize, Math.max(cp.highWaterMark || 0, cp.bytesTransferred)),
    earlierRunsMayHaveSentMore: session,
    replyUrl: session ? cp.replyUrl : null,
  };
}

/**
 * §3.1.5.1.4 "Determine the size of the fragment … by implementation dependent
 * means": as much as the preferred size allows, never past the end, and never
 * empty (a zero-length Content-Range cannot be written, §2.2.6.1). Returns 0
 * when nothing is left to send.
 */
export function planFragmentLength(offset: number, size: number, fragmentSize: number): number {
  if (offset >= size) return 0;
  return Math.min(fragmentSize, size - offset);
}

/** §3.1.5.2.4 / §6 note 16: after a 413, halve the fragment, never below the minimum. */
export function shrinkFragmentSize(current: number, min = MIN_FRAGMENT_SIZE): number {
  return Math.max(min, Math.floor(current / 2));
}

/** The URL messages go to now: BitsHostId if set (§1.3.4.2), else the origin. */
export function messageUrl(u: HttpUploader): string {
  if (u.bitsHostId !== null) {
    const alt = applyHostId(new URL(u.entity.destination), u.bitsHostId);
    if (alt) return alt.href;
  }
  return u.entity.destination;
}

/**
 * Runs one transition. `now` is epoch milliseconds (only the host fallback
 * timer reads it).
 */
export function next(u0: HttpUploader, outcome: UploaderOutcome, now: number): Step {
  const notes: UploaderNote[] = [];
  let u: HttpUploader = { ...u0 };

  switch (outcome.type) {
    case 'start': {
      if (u.state !== 'STATE_INIT') throw new Error(`start in ${u.state}`);
      // §3.1.5.1.1 STATE_INIT
      u = {
        ...u,
        fragmentStartOffset: 0, // Set FRAGMENT-START-OFFSET to 0
        fragmentLength: 0, // Set FRAGMENT-LENGTH to 0
        httpStatusCode: 0, // Set HTTPStatusCode to 0
        bitsErrorCode: 0, // Set BitsErrorCode to 0
        bitsErrorContext: 0, // Set BitsErrorContext to 0
        bytesTransferred: 0, // Set BytesTransferred to 0.
        originServer: new URL(u.entity.destination).host, // Set Origin server to host in destination URL
        bitsSessionId: null, // Set BITSSessionId to NULL.
        bitsHostId: null, // Set BitsHostID to NULL.
        bitsHostIdFallbackTimeout: FALLBACK_TIMEOUT_INFINITE, // Set BitsHostIDFallbackTimeout to 0xFFFFFFFF
        hostIdFallbackDeadline: null,
        replyUrl: null, // Set Reply URL to NULL
        uploadSuspended: false, // Set UploadSuspended to FALSE
        state: 'STATE_CREATE_SESSION', // Set state to CREATE_SESSION
      };
      return enter(u, now, notes);
    }

    case 'suspend': {
      if (u.finished) return { state: u, action: { type: 'DONE', result: u.finished }, notes };
      // §3.1.4.2: set UploadSuspended and wait for STATE_SUSPEND. The driver has
      // already stopped the message in flight, so every state's first line
      // ("If UploadSuspended is TRUE, set state to SUSPEND") applies at once.
      u.uploadSuspended = true;
      u.fragmentLength = 0;
      u.state = 'STATE_SUSPEND';
      return { state: u, action: { type: 'SUSPEND' }, notes };
    }

    case 'resume': {
      if (u.finished) return { state: u, action: { type: 'DONE', result: u.finished }, notes };
      // §3.1.4.3 Resume Existing Upload: Set UploadSuspended to FALSE; Set State to PING.
      // Without a session there is nothing to PING about: create one.
      u.uploadSuspended = false;
      u.state = u.bitsSessionId === null ? 'STATE_CREATE_SESSION' : 'STATE_PING';
      return enter(u, now, notes);
    }

    case 'cancel': {
      if (u.finished) return { state: u, action: { type: 'DONE', result: u.finished }, notes };
      // §3.1.4.4: Set UploadSuspended to FALSE; Set State to CANCEL.
      u.uploadSuspended = false;
      u.state = 'STATE_CANCEL';
      return enter(u, now, notes);
    }

    case 'transport-error': {
      // "If (error encountered in send / while receiving …) Set State to ERROR" (§3.1.5.1.2-6).
      assertSending(u);
      u.httpStatusCode = 0;
      u.bitsErrorCode = 0;
      u.bitsErrorContext = 0;
      u.lastError = {
        kind: outcome.retryable ? 'transient' : 'permanent',
        httpStatus: 0,
        request: u.lastSent?.type,
        url: u.lastSent?.url,
        message: outcome.message,
        hresult: outcome.hresult,
      };
      u.state = 'STATE_ERROR';
      return enter(u, now, notes);
    }

    case 'reply-downloaded': {
      if (u.state !== 'STATE_GET_REPLY') throw new Error(`reply-downloaded in ${u.state}`);
      // §3.1.5.1.8: "If (higher-layer protocol passes a success code) Set State to COMPLETE"
      u.state = 'STATE_COMPLETE';
      return enter(u, now, notes);
    }

    case 'reply-failed': {
      if (u.state !== 'STATE_GET_REPLY') throw new Error(`reply-failed in ${u.state}`);
      // §3.1.5.1.8: "If (higher-layer protocol passes an error) Set State to ERROR"
      u.httpStatusCode = outcome.httpStatus ?? 0;
      u.bitsErrorCode = 0;
      u.bitsErrorContext = 0;
      u.lastError = {
        kind: outcome.retryable ? 'transient' : 'permanent',
        httpStatus: outcome.httpStatus ?? 0,
        request: 'GET (reply)',
        url: u.replyUrl ?? undefined,
        message: outcome.message,
        retryAfterMs: outcome.retryAfterMs,
      };
      u.state = 'STATE_ERROR';
      return enter(u, now, notes);
    }

    case 'ack':
      return onAck(u, outcome.ack, now, notes);
  }
}

const REQUEST_OF_STATE: Partial<Record<UploaderStateName, SendAction['type']>> = {
  STATE_CREATE_SESSION: 'CREATE-SESSION',
  STATE_PING: 'PING',
  STATE_FRAGMENT: 'FRAGMENT',
  STATE_COMPLETE: 'CLOSE-SESSION',
  STATE_CANCEL: 'CANCEL-SESSION',
};

function assertSending(u: HttpUploader): void {
  if (!REQUEST_OF_STATE[u.state] || u.finished) throw new Error(`no message in flight in ${u.state}`);
}

function fail(u: HttpUploader, ack: Ack, now: number, notes: UploaderNote[], err?: Partial<UploadErrorInfo>): Step {
  u.httpStatusCode = ack.status;
  u.bitsErrorCode = ack.bitsError ?? 0;
  u.bitsErrorContext = ack.bitsErrorContext ?? 0;
  const kind: ErrorKind =
    ack.kind === 'transient' ? 'transient' : ack.kind === 'auth' ? 'auth' : ack.kind === 'invalid' ? 'protocol' : 'permanent';
  u.lastError = {
    kind,
    httpStatus: ack.status,
    bitsError: ack.bitsError,
    bitsErrorContext: ack.bitsErrorContext,
    request: ack.request,
    url: u.lastSent?.url,
    message: ack.problem,
    retryAfterMs: parseRetryAfter(ack.retryAfter, now),
    ...err,
  };
  u.state = 'STATE_ERROR';
  return enter(u, now, notes);
}

function onAck(u: HttpUploader, ack: Ack, now: number, notes: UploaderNote[]): Step {
  assertSending(u);
  if (REQUEST_OF_STATE[u.state] !== ack.request) throw new Error(`Ack for ${ack.request} in ${u.state}`);
  if (ack.kind !== 'ok' && ack.kind !== 'resync') return fail(u, ack, now, notes);

  switch (u.state) {
    case 'STATE_CREATE_SESSION': {
      // §3.1.5.1.2: "Update BITSSessionId, BitsHostId, BitsHostIdFallbackTimeout with
      // the values received from the server."
      u.bitsSessionId = ack.sessionId!;
      u.fragmentStartOffset = 0; // a new session starts at byte 0
      u.bytesTransferred = 0;
      u.replyUrl = null;
      u.hostIdFallbackDeadline = null;
      u.bitsHostId = null;
      u.bitsHostIdFallbackTimeout = ack.hostIdFallbackTimeout ?? FALLBACK_TIMEOUT_INFINITE;
      if (ack.hostId !== undefined) {
        if (applyHostId(new URL(u.entity.destination), ack.hostId)) {
          u.bitsHostId = ack.hostId;
          notes.push({
            type: 'host-id',
            hostId: ack.hostId,
            fallbackSeconds: u.bitsHostIdFallbackTimeout === FALLBACK_TIMEOUT_INFINITE ? null : u.bitsHostIdFallbackTimeout,
          });
        } else {
          notes.push({ type: 'warning', message: `ignoring BITS-Host-Id ${JSON.stringify(ack.hostId)}: not a host name or address` });
        }
      }
      // "If BitsHostId is not empty Set State to PING" (§3.1.5.2.2: validate the host can be contacted).
      u.state = u.bitsHostId !== null ? 'STATE_PING' : 'STATE_FRAGMENT';
      return enter(u, now, notes);
    }

    case 'STATE_PING':
      // §3.1.5.1.3: "Set state to FRAGMENT"
      u.state = 'STATE_FRAGMENT';
      return enter(u, now, notes);

    case 'STATE_FRAGMENT':
      return onFragmentAck(u, ack, now, notes);

    case 'STATE_COMPLETE':
      // §3.1.5.1.5: CLOSE-SESSION acknowledged — terminal.
      u.finished = 'complete';
      u.fragmentLength = 0;
      return { state: u, action: { type: 'DONE', result: 'complete' }, notes };

    case 'STATE_CANCEL':
      // §3.1.5.1.6: CANCEL-SESSION acknowledged — terminal.
      u.finished = 'cancelled';
      u.fragmentLength = 0;
      return { state: u, action: { type: 'DONE', result: 'cancelled' }, notes };

    default:
      throw new Error(`Ack in ${u.state}`);
  }
}

function onFragmentAck(u: HttpUploader, ack: Ack, now: number, notes: UploaderNote[]): Step {
  const size = u.entity.sourceEntitySize;
  const sent = u.lastSent?.type === 'FRAGMENT' ? u.lastSent : undefined;
  const sentOffset = sent?.offset ?? u.fragmentStartOffset;
  const expected = sentOffset + (sent?.length ?? u.fragmentLength);
  const received = ack.receivedContentRange!;

  // §3.1.5.2.4: "perform necessary checks on the value received through BITS-Received-Content-Range".
  // The server's offset wins (§3.1.4.3), but no honest server holds bytes it was
  // never sent: believing it would complete an upload with a hole in it.
  const earlierRun = u.earlierRunsMayHaveSentMore && received <= size;
  u.earlierRunsMayHaveSentMore = false;
  if (received > expected && !earlierRun) {
    return fail(u, ack, now, notes, {
      kind: 'protocol',
      message: `server acknowledged ${received} bytes, but bits had sent only ${expected} of ${size}`,
    });
  }
  if (ack.kind === 'resync' && received === sentOffset) {
    return fail(u, ack, now, notes, {
      kind: 'protocol',
      message: `server answered 416 to a fragment at ${sentOffset} but says it expects ${received}`,
    });
  }

  // §3.1.5.1.4: "If (HostIdFallback timer has been set) Reset the HostIdFallback timer"
  u.hostIdFallbackDeadline = null;

  // "If (value of BITS-Received-Content-Range … is not equal to FRAGMENT-START-OFFSET +
  // FRAGMENT-LENGTH) Set FRAGMENT-START-OFFSET to value of BITS-Received-Content-Range"
  // (a 416 naming exactly the end of what we sent is an Ack whose 200 got lost on a retry).
  u.fragmentStartOffset = received;
  u.bytesTransferred = received;
  u.fragmentLength = 0;
  if (received > u.highWaterMark) {
    // Progress: the only thing that forgives earlier restarts and resyncs.
    u.highWaterMark = received;
    u.sessionRestarts = 0;
    u.consecutiveResyncs = 0;
  }
  if (received !== expected) {
    u.consecutiveResyncs++;
    notes.push({ type: 'resync', from: expected, to: received });
    if (u.consecutiveResyncs > MAX_CONSECUTIVE_RESYNCS) {
      return fail(u, ack, now, notes, {
        kind: 'transient',
        message: `the server moved the upload offset ${u.consecutiveResyncs} times without confirming a byte beyond ${u.highWaterMark} (last to ${received})`,
      });
    }
  }

  // "If(FRAGMENT-START-OFFSET is equal to UploadEntityInfo.SourceEntitySize)"
  if (u.fragmentStartOffset === size) return finalFragment(u, ack, now, notes);
  // "Set State to FRAGMENT"
  u.state = 'STATE_FRAGMENT';
  return enter(u, now, notes);
}

function finalFragment(u: HttpUploader, ack: Ack | undefined, now: number, notes: UploaderNote[]): Step {
  // "If(BITS-Reply-URL header field is present and the size is not 0) Update
  // UploadEntityInfo.ReplyURL; Set State to GET-REPLY"
  if (ack?.replyUrl) {
    try {
      // §4.2-19: the reply is fetched from the origin, relative to the destination URL.
      u.replyUrl = resolveReplyUrl(u.entity.destination, ack.replyUrl).href;
    } catch (e) {
      return fail(u, ack, now, notes, { kind: 'protocol', message: `unusable BITS-Reply-URL ${JSON.stringify(ack.replyUrl)}: ${(e as Error).message}` });
    }
  }
  if (u.replyUrl !== null) {
    u.state = 'STATE_GET_REPLY';
    return enter(u, now, notes);
  }
  if (u.requireReply) {
    // §3.1.5.2.4: "If the server does not send Reply-URL, the client MUST report the error".
    const msg = 'the server did not send BITS-Reply-URL after the last fragment (is the directory configured for upload-reply?)';
    if (ack) return fail(u, ack, now, notes, { kind: 'protocol', message: msg });
    u.lastError = { kind: 'protocol', httpStatus: 0, request: 'FRAGMENT', message: msg };
    u.state = 'STATE_ERROR';
    return enter(u, now, notes);
  }
  // "Set State to COMPLETE"
  u.state = 'STATE_COMPLETE';
  return enter(u, now, notes);
}

/** Runs the first lines of the state the uploader is in, up to the message it sends. */
function enter(u: HttpUploader, now: number, notes: UploaderNote[]): Step {
  // Every state but ERROR and SUSPEND starts with "If (UploadSuspended is TRUE) Set
  // state to SUSPEND"; STATE_ERROR does too (§3.1.5.1.7).
  if (u.uploadSuspended && u.state !== 'STATE_SUSPEND' && u.state !== 'STATE_INIT') {
    u.state = 'STATE_SUSPEND';
    u.fragmentLength = 0;
    return { state: u, action: { type: 'SUSPEND' }, notes };
  }
  const withCredentials = u.auth === 'supplied';

  switch (u.state) {
    case 'STATE_INIT':
      throw new Error('STATE_INIT: send the start outcome');

    case 'STATE_SUSPEND':
      // §3.1.5.1.9: return to the higher-layer protocol.
      return { state: u, action: { type: 'SUSPEND' }, notes };

    case 'STATE_CREATE_SESSION': {
      // §3.1.5.1.2: "Obtain the host from BitsHostId (if not NULL) or Origin server"
      checkFallback(u, now, notes);
      return send(u, { type: 'CREATE-SESSION', url: messageUrl(u), contentName: u.entity.sourceEntityName, withCredentials }, notes);
    }

    case 'STATE_PING': {
      if (u.bitsSessionId === null) {
        u.state = 'STATE_CREATE_SESSION';
        return enter(u, now, notes);
      }
      // §3.1.5.1.3: "Obtain the host from BitsHostId (if not NULL) or Origin server"
      checkFallback(u, now, notes);
      return send(u, { type: 'PING', url: messageUrl(u), withCredentials }, notes);
    }

    case 'STATE_FRAGMENT': {
      if (u.bitsSessionId === null) {
        u.state = 'STATE_CREATE_SESSION';
        return enter(u, now, notes);
      }
      const size = u.entity.sourceEntitySize;
      // The server already holds every byte (an empty file, or a resume after the
      // last Ack): never send an empty fragment — go where the final Ack leads.
      if (u.fragmentStartOffset >= size) return finalFragment(u, undefined, now, notes);
      checkFallback(u, now, notes);
      // §3.1.5.1.4: "Determine the size of the fragment …"; "The content-range MUST be
      // FRAGMENT-START-OFFSET to FRAGMENT-START-OFFSET+FRAGMENT-LENGTH-1."
      u.fragmentLength = planFragmentLength(u.fragmentStartOffset, size, u.fragmentSize);
      return send(
        u,
        {
          type: 'FRAGMENT',
          url: messageUrl(u),
          sessionId: u.bitsSessionId,
          contentName: u.entity.sourceEntityName,
          offset: u.fragmentStartOffset,
          length: u.fragmentLength,
          total: size,
          withCredentials,
        },
        notes,
      );
    }

    case 'STATE_COMPLETE': {
      if (u.bitsSessionId === null) {
        u.state = 'STATE_CREATE_SESSION';
        return enter(u, now, notes);
      }
      checkFallback(u, now, notes);
      // §3.1.5.1.5: "Send CLOSE-SESSION message to the server."
      return send(
        u,
        { type: 'CLOSE-SESSION', url: messageUrl(u), sessionId: u.bitsSessionId, contentName: u.entity.sourceEntityName, withCredentials },
        notes,
      );
    }

    case 'STATE_CANCEL': {
      if (u.bitsSessionId === null) {
        // Nothing exists on the server to cancel.
        u.finished = 'cancelled';
        return { state: u, action: { type: 'DONE', result: 'cancelled' }, notes };
      }
      checkFallback(u, now, notes);
      // §3.1.5.1.6: "Send CANCEL-SESSION message to the server."
      return send(u, { type: 'CANCEL-SESSION', url: messageUrl(u), sessionId: u.bitsSessionId, withCredentials }, notes);
    }

    case 'STATE_GET_REPLY':
      // §3.1.5.1.8: "The higher-layer protocol MUST download the UploadEntityInfo.ReplyURL"
      return { state: u, action: { type: 'GET-REPLY', url: u.replyUrl! }, notes };

    case 'STATE_ERROR':
      return onError(u, now, notes);
  }
}

/** §3.1.5.1.7 STATE_ERROR */
function onError(u: HttpUploader, now: number, notes: UploaderNote[]): Step {
  const err = u.lastError ?? { kind: 'transient' as const, httpStatus: u.httpStatusCode };

  // "If (BITSErrorCode is BG_E_SESSION_NOT_FOUND) Set State to CREATE-SESSION"
  // (§3.1.5.2.1: "restart the upload with a CREATE-SESSION message"). The new
  // session starts from byte 0: the old one's bytes are gone with it.
  if (u.bitsErrorCode === HRESULT.BG_E_SESSION_NOT_FOUND && u.lastSent?.type !== 'CANCEL-SESSION') {
    u.sessionRestarts++;
    u.bitsSessionId = null;
    u.fragmentStartOffset = 0;
    u.fragmentLength = 0;
    u.bytesTransferred = 0;
    u.replyUrl = null;
    u.state = 'STATE_CREATE_SESSION';
    if (u.sessionRestarts > u.maxSessionRestarts) {
      // Not at once any more: the higher layer waits its retry delay, then `resume` creates the session.
      u.state = 'STATE_ERROR';
      const message = `the server lost the upload session ${u.sessionRestarts} times without confirming a byte beyond ${u.highWaterMark}`;
      return { state: u, action: { type: 'REPORT-ERROR', error: { ...err, kind: 'transient', message } }, notes };
    }
    notes.push({ type: 'session-restart', count: u.sessionRestarts });
    return enter(u, now, notes);
  }

  // "If (HTTPStatusCode is 401 or 407)"
  if (u.httpStatusCode === 401 || u.httpStatusCode === 407) {
    // "If (AuthCredentials were not already supplied) Add AuthCredentials to the
    // request; Resend the previous message that failed with this error."
    if (u.auth === 'available' && u.lastSent && u.lastSentState) {
      u.auth = 'supplied';
      u.state = u.lastSentState;
      return send(u, { ...u.lastSent, withCredentials: true }, notes);
    }
    // "If (AuthCredentials were already supplied) Return the error info"
    return { state: u, action: { type: 'REPORT-ERROR', error: { ...err, kind: 'auth' } }, notes };
  }

  // "If (HTTPStatusCode is 413) Reduce the FRAGMENT-LENGTH …; Set State to FRAGMENT."
  if (u.httpStatusCode === 413 && u.lastSent?.type === 'FRAGMENT') {
    const current = Math.min(u.fragmentSize, u.lastSent.length);
    if (current <= u.minFragmentSize) {
      // §6 note 10: "The fragment size is not reduced to less than 5 kilobytes."
      return {
        state: u,
        action: {
          type: 'REPORT-ERROR',
          error: { ...err, kind: 'permanent', message: `the server refuses fragments of ${current} bytes, and bits sends no smaller than ${u.minFragmentSize}` },
        },
        notes,
      };
    }
    const smaller = shrinkFragmentSize(current, u.minFragmentSize);
    notes.push({ type: 'fragment-size', from: u.fragmentSize, to: smaller });
    u.fragmentSize = smaller;
    u.state = 'STATE_FRAGMENT';
    return enter(u, now, notes);
  }

  // "If (HostIdFallback timer has not already started) If (BitsHostId is not empty)
  // Start the HostIdFallback timer with BitsHostIdFallbackTimeout"
  if (u.hostIdFallbackDeadline === null && u.bitsHostId !== null && u.bitsHostIdFallbackTimeout !== FALLBACK_TIMEOUT_INFINITE) {
    u.hostIdFallbackDeadline = now + u.bitsHostIdFallbackTimeout * 1000;
  }
  // "Return the error info (HTTPStatusCode, BITSErrorCode and BITSErrorContext) to the higher-layer protocol"
  return { state: u, action: { type: 'REPORT-ERROR', error: err }, notes };
}

/** §3.1.6.3 Host Fallback Timeout: future messages go to the origin, not BitsHostID. */
function checkFallback(u: HttpUploader, now: number, notes: UploaderNote[]): void {
  if (u.bitsHostId !== null && u.hostIdFallbackDeadline !== null && now >= u.hostIdFallbackDeadline) {
    notes.push({ type: 'host-fallback', hostId: u.bitsHostId });
    u.bitsHostId = null;
    u.hostIdFallbackDeadline = null;
  }
}

function send(u: HttpUploader, action: SendAction, notes: UploaderNote[]): Step {
  u.lastSent = action;
  u.lastSentState = u.state;
  return { state: u, action, notes };
}
