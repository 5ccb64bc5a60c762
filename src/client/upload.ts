/**
 * The upload client: runs the pure HTTPUploader of src/protocol/uploader.ts
 * (MC-BUP §3.1) over a Transport, playing the "higher-layer protocol" of the
 * spec: it reads the source file, waits and resumes after transient errors
 * (§3.1.4.3 resume = PING, then FRAGMENT), downloads the reply (§3.1.5.1.8),
 * saves checkpoints for the job store and turns the machine's errors into the
 * typed errors of src/errors.ts.
 *
 * Retrying is the one policy: what a failure means is src/protocol/failure.ts
 * (through BitsError.disposition), the wait and the no-progress deadline are
 * src/client/retry.ts. The deadline is measured against the high-water mark and
 * its signal goes to every request, so it ends a connect, a body being sent, a
 * wait for a response and a body being read alike.
 *
 * One keep-alive connection per host (connections: 1), as Windows does: a
 * BITS session may be tied to its TCP connection (NTLM always is).
 *
 * Helpers: upload/messages.ts (request headers), upload/fragments.ts (reading
 * the source), upload/errors.ts (typed errors), upload/reply.ts (the reply GET).
 */
import { basename } from 'node:path';
import type { Readable } from 'node:stream';
import { BitsError, InterruptedError, toBitsError } from '../errors.js';
import { formatBytes } from '../units.js';
import { assertSourceUnchanged, statSourceFile, type SourceIdentity } from '../io/source-file.js';
import { classifyAck } from '../protocol/ack.js';
import { DEFAULT_RETRY_POLICY, type RetryPolicy } from '../protocol/failure.js';
import { encodeContentName } from '../protocol/validate.js';
import { parseDestinationUrl } from '../protocol/urls.js';
import {
  createUploader,
  next,
  restoreUploader,
  snapshot,
  type SendAction,
  type Step,
  type UploadCheckpoint,
  type UploaderNote,
  type UploaderOutcome,
} from '../protocol/uploader.js';
import { upgradeUploadCheckpoint } from '../store/job.js';
import { HttpTransport, type RequestBody, type Transport, type TransportOptions } from '../transport/http.js';
import type { TransferEvent, TransferListener } from './events.js';
import { ProgressDeadline, RetryBudget } from './retry.js';
import { errorFromInfo } from './upload/errors.js';
import { BUFFERED_FRAGMENT_MAX, bufferBody, FragmentBuffers, fragmentBody } from './upload/fragments.js';
import { bitsPostMethod, bitsRequestHeaders, PHASE_OF } from './upload/messages.js';
import { getReply } from './upload/reply.js';

export type { UploadCheckpoint } from '../protocol/uploader.js';
export { bitsRequestHeaders } from './upload/messages.js';
export { BUFFERED_FRAGMENT_MAX } from './upload/fragments.js';

/** Default FRAGMENT-LENGTH: within Windows' 5 KB–13 MB (§6 note 10) and large enough that loopback is disk-bound. */
export const DEFAULT_FRAGMENT_SIZE = 8 * 1024 * 1024;
/**
 * Give up after this long without a single byte confirmed beyond the
 * high-water mark (Windows' BITS default no-progress timeout is 14 days; an
 * interactive CLI should not hang that long — the job stays resumable).
 */
export const DEFAULT_NO_PROGRESS_TIMEOUT_MS = 5 * 60_000;
/** How long cancelUpload keeps retrying a CANCEL-SESSION that failed transiently. */
export const DEFAULT_CANCEL_TIMEOUT_MS = 5_000;

export interface UploadOptions {
  /** Local source file. */
  file: string;
  /** Send every BITS message as POST with X-Http-Method-Override: BITS_POST (bitsPostMethod). */
  methodOverride?: boolean;
  /** Destination URL. */
  url: string | URL;
  fragmentSize?: number;
  /** Smallest fragment after 413s (default 5 KiB, §6 note 10). */
  minFragmentSize?: number;
  /** Save the reply (§1.3.3) here; `-` = stdout. Implies requireReply. */
  replyFile?: string;
  /** Upload-reply mode: a final Ack without BITS-Reply-URL is an error (§3.1.5.2.4). */
  requireReply?: boolean;
  /** Give up (TimeoutError 'no-progress', resumable) after this long without a byte confirmed beyond the high-water mark. */
  noProgressTimeoutMs?: number;
  /** First retry delay and largest one (src/protocol/failure.ts DEFAULT_RETRY_POLICY: 1 s, 30 s). */
  retryBaseMs?: number;
  retryMaxMs?: number;
  /** BG_E_SESSION_NOT_FOUND restarts made at once without progress before they wait for the retry delay (default 3). */
  maxSessionRestarts?: number;
  transport?: TransportOptions;
  /** The HTTP stack itself (tests: test/helpers/scripted-transport.ts); `transport` is then unused. Not closed by the upload. */
  httpTransport?: Transport;
  /** A checkpoint to continue from (also a job record of the previous release, see upgradeUploadCheckpoint). */
  resume?: UploadCheckpoint;
  /** Called (and awaited) after CREATE-SESSION and after every acknowledged fragment. */
  onCheckpoint?: (cp: UploadCheckpoint) => void | Promise<void>;
  onEvent?: TransferListener;
  /** Abort = suspend: stop, leave the session on the server, throw InterruptedError. */
  signal?: AbortSignal;
  /** Injected for tests: [0,1) random source for backoff jitter, and the clock. */
  random?: () => number;
  now?: () => number;
}

export interface UploadResult {
  bytes: number;
  /** Destination URL (origin). */
  destination: string;
  sessionId: string;
  replyUrl?: string;
  replyFile?: string;
  replyBytes?: number;
  /** Retries after transient errors. */
  retries: number;
}

function retryPolicy(opts: { retryBaseMs?: number; retryMaxMs?: number }): RetryPolicy {
  return {
    ...DEFAULT_RETRY_POLICY,
    ...(opts.retryBaseMs !== undefined ? { baseMs: opts.retryBaseMs } : {}),
    ...(opts.retryMaxMs !== undefined ? { maxMs: opts.retryMaxMs } : {}),
  };
}

/** The checkpoint of an upload that has no session yet: what a job store writes before the first request. */
export async function newUploadCheckpoint(file: string, fragmentSize = DEFAULT_FRAGMENT_SIZE): Promise<UploadCheckpoint> {
  const src = await statSourceFile(file);
  return snapshot(
    createUploader(
      { destination: 'http://localhost/', sourceEntityName: encodeContentName(basename(file)), sourceEntitySize: src.size, sourceMtimeMs: src.mtimeMs },
      { fragmentSize },
    ),
  );
}

/** The uploader to run: a new one, or one restored from a checkpoint after checking the source is the same file. */
async function initialStep(opts: UploadOptions, destination: string, src: SourceIdentity, now: number): Promise<Step> {
  const requireReply = opts.requireReply ?? opts.replyFile !== undefined;
  const machine = { requireReply, minFragmentSize: opts.minFragmentSize, maxSessionRestarts: opts.maxSessionRestarts };
  const fragmentSize = opts.fragmentSize ?? DEFAULT_FRAGMENT_SIZE;
  const contentName = encodeContentName(basename(opts.file));
  const cp = opts.resume ? upgradeUploadCheckpoint(opts.resume) : undefined;
  if (cp) {
    // Never mix bytes of two versions of a file into one session.
    await assertSourceUnchanged(opts.file, { size: cp.sourceEntitySize, mtimeMs: cp.sourceMtimeMs });
    const u = restoreUploader(destination, { ...cp, sourceEntityName: cp.sourceEntityName || contentName }, { ...machine, fragmentSize });
    return next(u, { type: 'resume' }, now);
  }
  const u = createUploader(
    { destination, sourceEntityName: contentName, sourceEntitySize: src.size, sourceMtimeMs: src.mtimeMs },
    { ...machine, fragmentSize },
  );
  return next(u, { type: 'start' }, now);
}

/** The one-line description of each uploader note, as the user sees it. */
function noteEvent(n: UploaderNote, origin: string): TransferEvent {
  switch (n.type) {
    case 'resync':
      return { type: 'resync', from: n.from, to: n.to };
    case 'host-id':
      return {
        type: 'info',
        message: `server redirects this upload to host ${n.hostId}${n.fallbackSeconds !== null ? ` (fallback to the origin after ${n.fallbackSeconds} s without progress)` : ''}`,
      };
    case 'host-fallback':
      return { type: 'phase', phase: 'waiting-host-fallback', detail: `host ${n.hostId} made no progress; falling back to ${origin}` };
    case 'fragment-size':
      return { type: 'info', message: `server refused a fragment as too large (413); fragment size ${formatBytes(n.from)} -> ${formatBytes(n.to)}` };
    case 'session-restart':
      return { type: 'warning', message: `the server lost the upload session (BG_E_SESSION_NOT_FOUND); restarting from byte 0 (${n.count})` };
    case 'warning':
      return { type: 'warning', message: n.message };
  }
}

/**
 * Issue 12.11: an empty file is CREATE-SESSION then CLOSE-SESSION — a
 * zero-length FRAGMENT cannot be written (§2.2.6.1 Content-Range), and
 * §3.1.5.1.4 sends none when FRAGMENT-START-OFFSET already equals the size.
 * `bits serve` and IIS create the file on CLOSE-SESSION; some third-party
 * servers create files only on a FRAGMENT. No Ack says which, so ask once
 * (HEAD) and warn when the server does not show a 0-byte entity.
 */
async function confirmEmptyEntity(transport: Transport, destination: string, signal: AbortSignal, emit: (e: TransferEvent) => void): Promise<void> {
  let why: string;
  try {
    const res = await transport.request({ method: 'HEAD', url: new URL(destination), headers: { Accept: '*/*' }, signal });
    await res.discard();
    const len = res.headers['content-length'];
    if (res.status === 200 && (len === undefined || len.trim() === '0')) return;
    why = `HEAD answers HTTP ${res.status}${res.status === 200 ? ` with Content-Length ${len}` : ''}`;
  } catch (e) {
    if (signal.aborted) throw e;
    why = `HEAD failed: ${toBitsError(e).message}`;
  }
  emit({
    type: 'warning',
    message: `the server closed the session of an empty file but gave no sign it holds one (${why}); some servers create a file only when a fragment arrives`,
  });
}

/**
 * The URL a file is uploaded to: a destination ending in `/` names a folder, and
 * the file's name is appended percent-encoded, as curl -T does (issue 18.14).
 * `contentName` is the Content-Name the session carries (encodeContentName), so a
 * cancel, which knows only the checkpoint's name, reaches the same URL.
 */
export function uploadUrlFor(url: string | URL, contentName: string): URL {
  const u = parseDestinationUrl(typeof url === 'string' ? url : url.href);
  if (!u.pathname.endsWith('/')) return u;
  let name: string;
  try {
    name = decodeURIComponent(contentName);
  } catch {
    name = contentName;
  }
  u.pathname += encodeURIComponent(name);
  return u;
}

/**
 * Uploads one file over BITS. Resolves when CLOSE-SESSION is acknowledged;
 * throws a BitsError otherwise (resumable ones leave the session on the server
 * and the last checkpoint valid).
 */
export async function uploadFile(opts: UploadOptions): Promise<UploadResult> {
  const emit = (e: TransferEvent) => opts.onEvent?.(e);
  const now = opts.now ?? Date.now;
  const destination = uploadUrlFor(opts.url, encodeContentName(basename(opts.file))).href;
  const origin = new URL(destination).host;
  const src = await statSourceFile(opts.file);
  let step = await initialStep(opts, destination, src, now());

  // The credentials are for the upload server: never for a reply URL on another origin.
  const transport: Transport = opts.httpTransport ?? new HttpTransport({ ...opts.transport, credentialOrigins: opts.transport?.credentialOrigins ?? [destination], connections: 1 });
  const buffers = new FragmentBuffers(opts.file);
  // A checkpoint without a session (a job stopped before CREATE-SESSION) starts from scratch: nothing to resume at.
  const resumedAt = opts.resume && step.state.bitsSessionId !== null ? step.state.bytesTransferred : undefined;
  emit({ type: 'start', kind: 'upload', source: opts.file, destination, totalBytes: src.size, ...(resumedAt !== undefined ? { resumedAt } : {}) });

  const deadline = new ProgressDeadline(opts.noProgressTimeoutMs ?? DEFAULT_NO_PROGRESS_TIMEOUT_MS, step.state.highWaterMark, now, opts.signal);
  const budget = new RetryBudget(deadline, {
    userSignal: opts.signal,
    policy: retryPolicy(opts),
    random: opts.random,
    onRetry: (r) => {
      emit({ type: 'retry', attempt: r.attempt, delayMs: r.delayMs, reason: r.reason });
      emit({ type: 'phase', phase: 'retrying' });
    },
  });
  let lastTransportError: unknown;
  /** The transport's explanation of the last refusal (HttpResponse.hint), added to the error the user sees. */
  let lastHint: string | undefined;
  let replyBytes: number | undefined;
  let lastProgressEmit = 0;
  let lastCheckpointJson = '';

  const checkpoint = async (force: boolean) => {
    if (!opts.onCheckpoint) return;
    const cp = snapshot(step.state);
    const json = JSON.stringify(cp);
    if (!force && json === lastCheckpointJson) return;
    lastCheckpointJson = json;
    await opts.onCheckpoint(cp);
  };
  const report = (notes: UploaderNote[]) => {
    for (const n of notes) emit(noteEvent(n, origin));
  };
  const interrupted: () => never = () => {
    step = next(step.state, { type: 'suspend' }, now());
    emit({ type: 'phase', phase: 'suspended' });
    throw new InterruptedError('upload interrupted; the session is kept on the server and the upload can be resumed');
  };
  /** What a failed request or wait ends the upload with once a signal fired: Ctrl-C suspends, the deadline times out. */
  const stopped = (e: unknown): never => {
    if (opts.signal?.aborted) interrupted();
    throw budget.abortReason(e);
  };

  try {
    report(step.notes);
    for (;;) {
      if (opts.signal?.aborted) interrupted();
      if (deadline.expired) stopped(undefined);
      const action = step.action;
      let outcome: UploaderOutcome;

      switch (action.type) {
        case 'DONE': {
          const bytes = step.state.entity.sourceEntitySize;
          if (bytes === 0 && action.result === 'complete') await confirmEmptyEntity(transport, destination, deadline.signal, emit).catch(stopped);
          emit({ type: 'progress', bytesDone: bytes, totalBytes: bytes });
          emit({ type: 'complete', bytes, destination, ...(opts.replyFile && opts.replyFile !== '-' ? { replyFile: opts.replyFile } : {}) });
          return {
            bytes,
            destination,
            sessionId: step.state.bitsSessionId ?? '',
            retries: budget.retries,
            ...(step.state.replyUrl ? { replyUrl: step.state.replyUrl } : {}),
            ...(opts.replyFile ? { replyFile: opts.replyFile } : {}),
            ...(replyBytes !== undefined ? { replyBytes } : {}),
          };
        }

        case 'SUSPEND':
          interrupted();
          break;

        case 'REPORT-ERROR': {
          // The one retry wait: throws unless the failure is worth retrying and the deadline allows.
          try {
            await budget.wait(errorFromInfo(action.error, lastTransportError, lastHint));
          } catch (e) {
            if (opts.signal?.aborted) interrupted();
            throw e;
          }
          // §3.1.4.3: the higher layer resumes the upload: PING, then FRAGMENT.
          step = next(step.state, { type: 'resume' }, now());
          report(step.notes);
          await checkpoint(false);
          continue;
        }

        case 'GET-REPLY': {
          emit({ type: 'phase', phase: 'getting-reply' });
          outcome = await getReply(transport, action.url, { replyFile: opts.replyFile, signal: deadline.signal, now, destination }, emit, (n) => (replyBytes = n)).catch(stopped);
          if (outcome.type === 'reply-downloaded') deadline.touch();
          break;
        }

        default:
          outcome = await sendMessage(action);
      }

      const sentType = action.type;
      step = next(step.state, outcome, now());
      report(step.notes);
      const s = step.state;
      if (outcome.type === 'ack' && (outcome.ack.kind === 'ok' || outcome.ack.kind === 'resync')) {
        if (sentType === 'CREATE-SESSION' || sentType === 'FRAGMENT') await checkpoint(true);
        if (sentType === 'FRAGMENT') emit({ type: 'progress', bytesDone: s.bytesTransferred, totalBytes: src.size });
        // Progress is only a byte beyond the high-water mark; the final Ack ends the transfer.
        budget.progress(s.highWaterMark);
        if (sentType === 'CLOSE-SESSION') deadline.touch();
      } else {
        await checkpoint(false);
      }
    }
  } finally {
    deadline.dispose();
    if (!opts.httpTransport) await transport.close().catch(() => undefined);
    await buffers.close();
  }

  /** One BITS message over the transport, under the no-progress deadline. */
  async function sendMessage(action: SendAction): Promise<UploaderOutcome> {
    emit(PHASE_OF[action.type]);
    const headers = bitsRequestHeaders(action);
    let body: RequestBody | (() => RequestBody) = '';
    const opened: Readable[] = [];
    const identity = { size: src.size, mtimeMs: src.mtimeMs };
    if (action.type === 'FRAGMENT') {
      // Never send mixed data: the file must be the one the session started with.
      await assertSourceUnchanged(opts.file, identity);
      const base = action.offset;
      let sent = 0;
      const onBytes = (n: number) => {
        sent += n;
        const t = now();
        if (t - lastProgressEmit >= 200) {
          lastProgressEmit = t;
          emit({ type: 'progress', bytesDone: base + sent, totalBytes: src.size });
        }
      };
      // A factory, so the transport can send the range again after a 401 challenge.
      if (action.length <= BUFFERED_FRAGMENT_MAX) {
        const buf = await buffers.load(action.offset, action.length);
        const nextOffset = action.offset + action.length;
        buffers.readAhead(nextOffset, Math.min(action.length, src.size - nextOffset));
        body = () => {
          sent = 0;
          return bufferBody(buf, onBytes);
        };
      } else {
        body = () => {
          sent = 0;
          const rs = fragmentBody(opts.file, action.offset, action.length, onBytes);
          opened.push(rs);
          return rs;
        };
      }
    }
    let outcome: UploaderOutcome;
    try {
      // Only the destination and the host BITS-Host-ID moves the session to get BITS_POST; both are the upload server's.
      transport.trustOrigin?.(new URL(action.url));
      const res = await transport.request({ method: bitsPostMethod(headers, opts.methodOverride), url: new URL(action.url), headers, body, signal: deadline.signal });
      await res.discard();
      lastHint = res.status >= 400 ? res.hint : undefined;
      const ack = classifyAck({
        request: action.type,
        status: res.status,
        headers: res.headers,
        sentSessionId: 'sessionId' in action ? action.sessionId : undefined,
      });
      outcome = { type: 'ack', ack };
    } catch (e) {
      if (deadline.signal.aborted) stopped(e);
      if (!(e instanceof BitsError)) throw e;
      lastTransportError = e;
      outcome = { type: 'transport-error', message: e.message, retryable: e.disposition === 'retry', hresult: e.hresult };
    } finally {
      for (const rs of opened) rs.destroy();
    }
    if (action.type === 'FRAGMENT') await assertSourceUnchanged(opts.file, identity);
    return outcome;
  }
}

export interface CancelUploadOptions {
  transport?: TransportOptions;
  /** Send CANCEL-SESSION as POST with X-Http-Method-Override: BITS_POST. */
  methodOverride?: boolean;
  /** The HTTP stack itself (tests); not closed. */
  httpTransport?: Transport;
  /** How long transient failures are retried (default DEFAULT_CANCEL_TIMEOUT_MS). */
  noProgressTimeoutMs?: number;
  retryBaseMs?: number;
  retryMaxMs?: number;
  signal?: AbortSignal;
}

/**
 * §3.1.4.4 Cancel Existing Upload: CANCEL-SESSION for a saved session. A session
 * the server no longer knows counts as cancelled (§3.1.5.2.1). Transient
 * failures are retried under the one policy for a few seconds; then the error
 * is thrown so the caller can keep the job.
 */
export async function cancelUpload(url: string | URL, cp: UploadCheckpoint, opts: CancelUploadOptions = {}): Promise<void> {
  const checkpointNow = upgradeUploadCheckpoint(cp);
  if (!checkpointNow || checkpointNow.bitsSessionId === null) return; // nothing exists on the server
  const destination = uploadUrlFor(url, checkpointNow.sourceEntityName).href;
  const transport: Transport = opts.httpTransport ?? new HttpTransport({ ...opts.transport, credentialOrigins: opts.transport?.credentialOrigins ?? [destination], connections: 1 });
  const deadline = new ProgressDeadline(opts.noProgressTimeoutMs ?? DEFAULT_CANCEL_TIMEOUT_MS, checkpointNow.highWaterMark, Date.now, opts.signal);
  const budget = new RetryBudget(deadline, { userSignal: opts.signal, policy: retryPolicy(opts) });
  let lastTransportError: unknown;
  try {
    let step = next(restoreUploader(destination, checkpointNow, { requireReply: false, fragmentSize: DEFAULT_FRAGMENT_SIZE }), { type: 'cancel' }, Date.now());
    for (;;) {
      const action = step.action;
      if (action.type === 'DONE') return;
      if (action.type === 'REPORT-ERROR') {
        await budget.wait(errorFromInfo(action.error, lastTransportError));
        step = next(step.state, { type: 'cancel' }, Date.now());
        continue;
      }
      if (action.type !== 'CANCEL-SESSION') throw new Error(`unexpected ${action.type} while cancelling`);
      let outcome: UploaderOutcome;
      try {
        const headers = bitsRequestHeaders(action);
        const res = await transport.request({ method: bitsPostMethod(headers, opts.methodOverride), url: new URL(action.url), headers, body: '', signal: deadline.signal });
        await res.discard();
        outcome = { type: 'ack', ack: classifyAck({ request: 'CANCEL-SESSION', status: res.status, headers: res.headers, sentSessionId: action.sessionId }) };
      } catch (e) {
        if (deadline.signal.aborted) throw budget.abortReason(e);
        if (!(e instanceof BitsError)) throw e;
        lastTransportError = e;
        outcome = { type: 'transport-error', message: e.message, retryable: e.disposition === 'retry', hresult: e.hresult };
      }
      step = next(step.state, outcome, Date.now());
    }
  } finally {
    deadline.dispose();
    if (!opts.httpTransport) await transport.close().catch(() => undefined);
  }
}
