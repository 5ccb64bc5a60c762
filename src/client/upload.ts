/**
 * The upload client: runs the pure HTTPUploader of src/protocol/uploader.ts
 * (MC-BUP §3.1) over HttpTransport, playing the "higher-layer protocol" of the
 * spec: it reads the source file, retries transient errors with backoff
 * (§3.1.4.3 resume = PING, then FRAGMENT), downloads the reply (§3.1.5.1.8),
 * saves checkpoints for the job store and turns the machine's errors into the
 * typed errors of src/errors.ts.
 *
 * One keep-alive connection per host (connections: 1), as Windows does: a
 * BITS session may be tied to its TCP connection (NTLM always is).
 */
import { createReadStream, createWriteStream, promises as fsp } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import { basename } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { Transform, type Readable, type Writable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  AuthError,
  BitsError,
  InterruptedError,
  LocalFileError,
  ProtocolError,
  ServerError,
  SourceChangedError,
  TimeoutError,
  TlsError,
  TransportError,
  type ServerErrorInfo,
} from '../errors.js';
import { HttpTransport, type RequestBody, type TransportOptions } from '../transport/http.js';
import { classifyAck } from '../protocol/ack.js';
import { H, PROTOCOL_GUID, WIRE_PACKET_TYPE } from '../protocol/headers.js';
import { formatContentRange } from '../protocol/content-range.js';
import { encodeContentName } from '../protocol/validate.js';
import { parseDestinationUrl } from '../protocol/urls.js';
import {
  createUploader,
  next,
  restoreUploader,
  retryDelayMs,
  snapshot,
  type HttpUploader,
  type SendAction,
  type Step,
  type UploadErrorInfo,
  type UploaderNote,
  type UploaderOutcome,
} from '../protocol/uploader.js';
import type { TransferEvent, TransferListener } from './events.js';

/** Default FRAGMENT-LENGTH: within Windows' 5 KB–13 MB (§6 note 10) and large enough that loopback is disk-bound. */
export const DEFAULT_FRAGMENT_SIZE = 8 * 1024 * 1024;
/**
 * Give up after this long without a single acknowledged byte (Windows' BITS
 * default no-progress timeout is 14 days; an interactive CLI should not hang
 * that long — the job stays resumable).
 */
export const DEFAULT_NO_PROGRESS_TIMEOUT_MS = 5 * 60_000;
export const DEFAULT_RETRY_BASE_MS = 500;
export const DEFAULT_RETRY_MAX_MS = 30_000;

/** Everything needed to resume an upload in another process; the job store persists it. */
export interface UploadCheckpoint {
  /** Destination URL as given (origin host). */
  destination: string;
  /** BITS-Session-Id, null before CREATE-SESSION succeeded. */
  sessionId: string | null;
  /** BITS-Host-Id in use, null if none (or after falling back to the origin). */
  hostId: string | null;
  /** BITS-Host-Id-Fallback-Timeout in seconds (0xFFFFFFFF = infinite). */
  hostIdFallbackTimeout: number;
  /** When the host-id fallback timer fires (epoch ms), null when not running. */
  hostIdFallbackDeadline: number | null;
  /** Bytes the server has confirmed (BITS-Received-Content-Range). */
  offset: number;
  fragmentSize: number;
  /** Reply URL (resolved, absolute) once the last Ack carried one. */
  replyUrl: string | null;
  sourceSize: number;
  sourceMtimeMs: number;
  /** Content-Name sent. */
  contentName: string;
}

export interface UploadOptions {
  /** Local source file. */
  file: string;
  /** Destination URL. */
  url: string | URL;
  fragmentSize?: number;
  /** Smallest fragment after 413s (default 5 KiB, §6 note 10). */
  minFragmentSize?: number;
  /** Save the reply (§1.3.3) here; `-` = stdout. Implies requireReply. */
  replyFile?: string;
  /** Upload-reply mode: a final Ack without BITS-Reply-URL is an error (§3.1.5.2.4). */
  requireReply?: boolean;
  /** Give up after this long without an acknowledged byte (TimeoutError 'no-progress'). */
  noProgressTimeoutMs?: number;
  retryBaseMs?: number;
  retryMaxMs?: number;
  /** BG_E_SESSION_NOT_FOUND restarts allowed in a row without progress (default 3). */
  maxSessionRestarts?: number;
  transport?: TransportOptions;
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

interface SourceInfo {
  size: number;
  mtimeMs: number;
}

async function statSource(file: string): Promise<SourceInfo> {
  let st;
  try {
    st = await fsp.stat(file);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw new LocalFileError(`${file}: no such file`, file, { cause: e });
    if (code === 'EACCES' || code === 'EPERM') throw new LocalFileError(`${file}: permission denied`, file, { cause: e });
    throw new LocalFileError(`${file}: ${(e as Error).message}`, file, { cause: e });
  }
  if (!st.isFile()) throw new LocalFileError(`${file}: not a regular file`, file);
  return { size: st.size, mtimeMs: st.mtimeMs };
}

/** Checks the source has not changed since the upload began (BG_E_LOCAL_FILE_CHANGED). */
async function assertUnchanged(file: string, src: SourceInfo): Promise<void> {
  let st;
  try {
    st = await fsp.stat(file);
  } catch {
    throw new SourceChangedError(`${file} was removed during the upload`, 'local');
  }
  if (st.size !== src.size || st.mtimeMs !== src.mtimeMs) {
    throw new SourceChangedError(
      `${file} changed during the upload (size ${src.size} -> ${st.size}${st.mtimeMs !== src.mtimeMs ? ', modified' : ''}); cancel the job and upload again`,
      'local',
    );
  }
}

function toCheckpoint(u: HttpUploader, src: SourceInfo): UploadCheckpoint {
  const s = snapshot(u);
  return {
    destination: u.entity.destination,
    sessionId: s.bitsSessionId,
    hostId: s.bitsHostId,
    hostIdFallbackTimeout: s.bitsHostIdFallbackTimeout,
    hostIdFallbackDeadline: s.hostIdFallbackDeadline,
    offset: s.bytesTransferred,
    fragmentSize: s.fragmentSize,
    replyUrl: s.replyUrl,
    sourceSize: src.size,
    sourceMtimeMs: src.mtimeMs,
    contentName: u.entity.sourceEntityName,
  };
}

function fromCheckpoint(cp: UploadCheckpoint, opts: { requireReply: boolean; minFragmentSize?: number; maxSessionRestarts?: number }): HttpUploader {
  return restoreUploader(
    { destination: cp.destination, sourceEntityName: cp.contentName, sourceEntitySize: cp.sourceSize },
    { fragmentSize: cp.fragmentSize, requireReply: opts.requireReply, minFragmentSize: opts.minFragmentSize, maxSessionRestarts: opts.maxSessionRestarts },
    {
      bitsSessionId: cp.sessionId,
      bitsHostId: cp.hostId,
      bitsHostIdFallbackTimeout: cp.hostIdFallbackTimeout,
      hostIdFallbackDeadline: cp.hostIdFallbackDeadline,
      bytesTransferred: cp.offset,
      fragmentSize: cp.fragmentSize,
      replyUrl: cp.replyUrl,
    },
  );
}

/** Request headers of a BITS message, spelled as a Windows client spells them (§4). */
export function bitsRequestHeaders(a: SendAction): Record<string, string> {
  const h: Record<string, string> = { Accept: '*/*', [H.PacketType]: WIRE_PACKET_TYPE[a.type] };
  switch (a.type) {
    case 'CREATE-SESSION':
      h[H.SupportedProtocols] = PROTOCOL_GUID;
      h[H.ContentName] = a.contentName;
      h[H.ContentLength] = '0';
      break;
    case 'PING':
      // §4.1-06 / §4.2-12: a PING carries no session id.
      h[H.ContentLength] = '0';
      break;
    case 'FRAGMENT':
      h[H.SessionId] = a.sessionId;
      h[H.ContentName] = a.contentName; // §6 note 11: Windows sends it with every fragment
      h[H.ContentRange] = formatContentRange(a.offset, a.length, a.total);
      h[H.ContentLength] = String(a.length);
      break;
    case 'CLOSE-SESSION':
      h[H.SessionId] = a.sessionId;
      h[H.ContentName] = a.contentName;
      h[H.ContentLength] = '0';
      break;
    case 'CANCEL-SESSION':
      h[H.SessionId] = a.sessionId;
      h[H.ContentLength] = '0';
      break;
  }
  return h;
}

const PHASE_OF: Record<SendAction['type'], TransferEvent & { type: 'phase' }> = {
  'CREATE-SESSION': { type: 'phase', phase: 'creating-session' },
  PING: { type: 'phase', phase: 'pinging' },
  FRAGMENT: { type: 'phase', phase: 'transferring' },
  'CLOSE-SESSION': { type: 'phase', phase: 'closing' },
  'CANCEL-SESSION': { type: 'phase', phase: 'cancelling' },
};

function isTransientTransport(e: unknown): boolean {
  if (e instanceof TlsError) return false;
  return e instanceof TransportError; // includes TimeoutError
}

/** Builds the typed error the user sees from what §3.1.5.1.7 returned. */
function errorFromInfo(info: UploadErrorInfo, transportError: unknown): BitsError {
  if (info.httpStatus === 0 && transportError instanceof BitsError && info.kind !== 'protocol') return transportError;
  const sinfo: ServerErrorInfo = {
    httpStatus: info.httpStatus,
    bitsError: info.bitsError,
    bitsErrorContext: info.bitsErrorContext,
    request: info.request,
    url: info.url,
    transient: info.kind === 'transient',
  };
  switch (info.kind) {
    case 'auth':
      return new AuthError(sinfo);
    case 'protocol': {
      const where = info.request ? ` to ${info.request}` : '';
      const status = info.httpStatus ? ` (HTTP ${info.httpStatus})` : '';
      return new ProtocolError(`invalid server response${where}${status}: ${info.message ?? 'not a BITS Ack'}`, {
        httpStatus: info.httpStatus || undefined,
      });
    }
    default:
      if (info.httpStatus === 0) return new TransportError(info.message ?? 'transfer failed', { hresult: info.hresult });
      return new ServerError(sinfo, info.message ? `${ServerError.describe(sinfo)} (${info.message})` : undefined);
  }
}

/**
 * Fragments up to this size are read whole into one of two reused buffers (see
 * FragmentBuffers); larger ones are streamed from the file.
 */
export const BUFFERED_FRAGMENT_MAX = 16 * 1024 * 1024;
/** Size of the views a buffered fragment is handed to the transport in (progress granularity). */
const BODY_SLICE = 1024 * 1024;

/** Streams bytes [offset, offset+length) of the file, reporting how many went out. */
function fragmentBody(file: string, offset: number, length: number, onBytes: (n: number) => void): Readable {
  const counter = new Transform({
    transform(chunk: Buffer, _enc, cb) {
      onBytes(chunk.length);
      cb(null, chunk);
    },
  });
  const rs = createReadStream(file, { start: offset, end: offset + length - 1, highWaterMark: BODY_SLICE });
  rs.on('error', (e) => counter.destroy(e));
  return rs.pipe(counter);
}

/** A buffered fragment as views of its buffer (no copies), counting what the transport took. */
async function* bufferBody(buf: Buffer, onBytes: (n: number) => void): AsyncGenerator<Buffer> {
  for (let off = 0; off < buf.length; off += BODY_SLICE) {
    const part = buf.subarray(off, Math.min(buf.length, off + BODY_SLICE));
    yield part;
    onBytes(part.length);
  }
}

interface Slot {
  buf: Buffer;
  offset: number;
  length: number;
  /** The read into buf in progress (resolves false if it failed), or undefined. */
  loading: Promise<boolean> | undefined;
}

/**
 * Two fragment-sized buffers, reused for the whole upload: the fragment in flight
 * is sent from one while the next is read ahead into the other.
 *
 * WHY: a fresh buffer per read chunk costs a page-faulted allocation per chunk and
 * lets tens of MB of dead buffers pile up until V8 collects them (RSS); reading the
 * file into the same memory costs neither. Reuse is safe because a buffer is only
 * refilled for a LATER fragment, and the next fragment is not started before the
 * previous request finished: an Ack can only come after the server received every
 * byte, so nothing in the transport still reads the old bytes (an early error answer
 * ends that request; its connection is either drained or closed before reuse).
 */
class FragmentBuffers {
  private fh: FileHandle | undefined;
  private readonly slots: Slot[] = [];
  private current: Slot | undefined;

  constructor(private readonly file: string) {}

  /** The bytes [offset, offset+length) of the file: read ahead already, or read now. */
  async load(offset: number, length: number): Promise<Buffer> {
    const ahead = this.slots.find((s) => s.loading && s.offset === offset && s.length === length);
    if (ahead && (await ahead.loading)) {
      ahead.loading = undefined;
      this.current = ahead;
      return ahead.buf.subarray(0, length);
    }
    // No read may still be filling a buffer we are about to pick.
    await Promise.all(this.slots.map((s) => s.loading));
    for (const s of this.slots) s.loading = undefined;
    const slot = this.slotFor(length, undefined)!;
    await this.readInto(slot, offset, length);
    this.current = slot;
    return slot.buf.subarray(0, length);
  }

  /** Starts reading the likely next fragment into the buffer not in flight; errors surface at load(). */
  readAhead(offset: number, length: number): void {
    if (length <= 0) return;
    const slot = this.slotFor(length, this.current);
    if (!slot || slot.loading) return;
    slot.loading = this.readInto(slot, offset, length).then(
      () => true,
      () => false,
    );
  }

  async close(): Promise<void> {
    await Promise.all(this.slots.map((s) => s.loading));
    await this.fh?.close().catch(() => undefined);
    this.fh = undefined;
  }

  /** A slot other than `busy` with room for length bytes (grown if needed; not while it is being filled). */
  private slotFor(length: number, busy: Slot | undefined): Slot | undefined {
    let slot = this.slots.find((s) => s !== busy);
    if (!slot) {
      if (this.slots.length >= 2) return undefined;
      slot = { buf: Buffer.allocUnsafeSlow(length), offset: -1, length: 0, loading: undefined };
      this.slots.push(slot);
    } else if (slot.buf.length < length) {
      if (slot.loading) return undefined;
      slot.buf = Buffer.allocUnsafeSlow(length);
    }
    return slot;
  }

  private async readInto(slot: Slot, offset: number, length: number): Promise<void> {
    slot.offset = offset;
    slot.length = length;
    try {
      this.fh ??= await fsp.open(this.file, 'r');
      let done = 0;
      while (done < length) {
        const { bytesRead } = await this.fh.read(slot.buf, done, length - done, offset + done);
        if (bytesRead === 0) throw new SourceChangedError(`${this.file} became shorter during the upload; cancel the job and upload again`, 'local');
        done += bytesRead;
      }
    } catch (e) {
      slot.offset = -1;
      if (e instanceof BitsError) throw e;
      const code = (e as NodeJS.ErrnoException).code;
      const what = code === 'ENOENT' ? 'no such file' : code === 'EACCES' || code === 'EPERM' ? 'permission denied' : (e as Error).message;
      throw new LocalFileError(`${this.file}: ${what}`, this.file, { cause: e });
    }
  }
}

/**
 * Uploads one file over BITS. Resolves when CLOSE-SESSION is acknowledged;
 * throws a BitsError otherwise (resumable ones leave the session on the server
 * and the last checkpoint valid).
 */
export async function uploadFile(opts: UploadOptions): Promise<UploadResult> {
  const emit = (e: TransferEvent) => opts.onEvent?.(e);
  const now = opts.now ?? Date.now;
  const random = opts.random ?? Math.random;
  const destination = parseDestinationUrl(typeof opts.url === 'string' ? opts.url : opts.url.href).href;
  const requireReply = opts.requireReply ?? opts.replyFile !== undefined;
  const noProgressMs = opts.noProgressTimeoutMs ?? DEFAULT_NO_PROGRESS_TIMEOUT_MS;
  const src = await statSource(opts.file);

  let u: HttpUploader;
  let step: Step;
  if (opts.resume) {
    const cp = opts.resume;
    if (cp.sourceSize !== src.size || cp.sourceMtimeMs !== src.mtimeMs) {
      throw new SourceChangedError(`${opts.file} changed since the upload began (size ${cp.sourceSize} -> ${src.size}); cancel the job and upload again`, 'local');
    }
    u = fromCheckpoint({ ...cp, destination }, { requireReply, minFragmentSize: opts.minFragmentSize, maxSessionRestarts: opts.maxSessionRestarts });
    step = next(u, { type: 'resume' }, now());
  } else {
    u = createUploader(
      { destination, sourceEntityName: encodeContentName(basename(opts.file)), sourceEntitySize: src.size },
      {
        fragmentSize: opts.fragmentSize ?? DEFAULT_FRAGMENT_SIZE,
        minFragmentSize: opts.minFragmentSize,
        requireReply,
        maxSessionRestarts: opts.maxSessionRestarts,
      },
    );
    step = next(u, { type: 'start' }, now());
  }

  const transport = new HttpTransport({ ...opts.transport, connections: 1 });
  const buffers = new FragmentBuffers(opts.file);
  emit({ type: 'start', kind: 'upload', source: opts.file, destination, totalBytes: src.size, ...(opts.resume ? { resumedAt: opts.resume.offset } : {}) });

  let lastProgressAt = now();
  let attempt = 0;
  let retries = 0;
  let lastTransportError: unknown;
  let replyBytes: number | undefined;
  let lastProgressEmit = 0;
  let lastCheckpointJson = '';

  const checkpoint = async (force: boolean) => {
    if (!opts.onCheckpoint) return;
    const cp = toCheckpoint(step.state, src);
    const json = JSON.stringify(cp);
    if (!force && json === lastCheckpointJson) return;
    lastCheckpointJson = json;
    await opts.onCheckpoint(cp);
  };

  const report = (notes: UploaderNote[]) => {
    for (const n of notes) {
      switch (n.type) {
        case 'resync':
          emit({ type: 'resync', from: n.from, to: n.to });
          break;
        case 'host-id':
          emit({ type: 'info', message: `server redirects this upload to host ${n.hostId}${n.fallbackSeconds !== null ? ` (fallback to the origin after ${n.fallbackSeconds} s without progress)` : ''}` });
          break;
        case 'host-fallback':
          emit({ type: 'phase', phase: 'waiting-host-fallback', detail: `host ${n.hostId} made no progress; falling back to ${new URL(destination).host}` });
          break;
        case 'fragment-size':
          emit({ type: 'info', message: `server refused a fragment as too large (413); fragment size ${n.from} -> ${n.to} bytes` });
          break;
        case 'session-restart':
          emit({ type: 'warning', message: `the server lost the upload session (BG_E_SESSION_NOT_FOUND); restarting from byte 0 (${n.count})` });
          break;
        case 'warning':
          emit({ type: 'warning', message: n.message });
          break;
      }
    }
  };

  const interrupted: () => never = () => {
    step = next(step.state, { type: 'suspend' }, now());
    emit({ type: 'phase', phase: 'suspended' });
    throw new InterruptedError('upload interrupted; the session is kept on the server and the upload can be resumed');
  };

  try {
    report(step.notes);
    for (;;) {
      if (opts.signal?.aborted) interrupted();
      const action = step.action;
      let outcome: UploaderOutcome;

      switch (action.type) {
        case 'DONE': {
          const bytes = step.state.entity.sourceEntitySize;
          emit({ type: 'progress', bytesDone: bytes, totalBytes: bytes });
          emit({ type: 'complete', bytes, destination, ...(opts.replyFile && opts.replyFile !== '-' ? { replyFile: opts.replyFile } : {}) });
          return {
            bytes,
            destination,
            sessionId: step.state.bitsSessionId ?? '',
            retries,
            ...(step.state.replyUrl ? { replyUrl: step.state.replyUrl } : {}),
            ...(opts.replyFile ? { replyFile: opts.replyFile } : {}),
            ...(replyBytes !== undefined ? { replyBytes } : {}),
          };
        }

        case 'SUSPEND':
          interrupted();
          break;

        case 'REPORT-ERROR': {
          const info = action.error;
          if (info.kind !== 'transient') throw errorFromInfo(info, lastTransportError);
          const elapsed = now() - lastProgressAt;
          if (elapsed >= noProgressMs) {
            const last = errorFromInfo(info, lastTransportError);
            throw new TimeoutError(
              `no progress for ${Math.round(elapsed / 1000)} s (last error: ${last.message}); the upload can be resumed`,
              'no-progress',
              { cause: last },
            );
          }
          const delay = Math.min(
            retryDelayMs(attempt, random(), opts.retryBaseMs ?? DEFAULT_RETRY_BASE_MS, opts.retryMaxMs ?? DEFAULT_RETRY_MAX_MS),
            Math.max(0, noProgressMs - elapsed),
          );
          attempt++;
          retries++;
          emit({ type: 'retry', attempt, delayMs: delay, reason: errorFromInfo(info, lastTransportError).message });
          emit({ type: 'phase', phase: 'retrying' });
          try {
            await sleep(delay, undefined, { signal: opts.signal });
          } catch {
            interrupted();
          }
          // §3.1.4.3: the higher layer resumes the upload: PING, then FRAGMENT.
          step = next(step.state, { type: 'resume' }, now());
          report(step.notes);
          await checkpoint(false);
          continue;
        }

        case 'GET-REPLY': {
          emit({ type: 'phase', phase: 'getting-reply' });
          outcome = await getReply(transport, action.url, opts, emit, (n) => (replyBytes = n));
          break;
        }

        default: {
          // A BITS message.
          emit(PHASE_OF[action.type]);
          const headers = bitsRequestHeaders(action);
          let body: RequestBody | (() => RequestBody) = '';
          const opened: Readable[] = [];
          if (action.type === 'FRAGMENT') {
            // Never send mixed data: the file must be the one the session started with.
            await assertUnchanged(opts.file, src);
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
          try {
            const res = await transport.request({ method: 'BITS_POST', url: new URL(action.url), headers, body, signal: opts.signal });
            await res.discard();
            const ack = classifyAck({
              request: action.type,
              status: res.status,
              headers: res.headers,
              sentSessionId: 'sessionId' in action ? action.sessionId : undefined,
            });
            outcome = { type: 'ack', ack };
          } catch (e) {
            if (opts.signal?.aborted) interrupted();
            if (!(e instanceof BitsError)) throw e;
            lastTransportError = e;
            outcome = { type: 'transport-error', message: e.message, retryable: isTransientTransport(e), hresult: e.hresult };
          } finally {
            for (const rs of opened) rs.destroy();
          }
          if (action.type === 'FRAGMENT') await assertUnchanged(opts.file, src);
        }
      }

      const before = step.state.bytesTransferred;
      const sentType = action.type;
      step = next(step.state, outcome, now());
      report(step.notes);
      const s = step.state;
      if (outcome.type === 'ack' && (outcome.ack.kind === 'ok' || outcome.ack.kind === 'resync')) {
        if (sentType === 'CREATE-SESSION' || sentType === 'FRAGMENT') await checkpoint(true);
        if (sentType === 'FRAGMENT') emit({ type: 'progress', bytesDone: s.bytesTransferred, totalBytes: src.size });
        if (s.bytesTransferred > before || sentType === 'CLOSE-SESSION') {
          lastProgressAt = now();
          attempt = 0;
        }
      } else {
        await checkpoint(false);
      }
    }
  } finally {
    await transport.close().catch(() => undefined);
    await buffers.close();
  }
}

async function getReply(
  transport: HttpTransport,
  url: string,
  opts: UploadOptions,
  emit: (e: TransferEvent) => void,
  setBytes: (n: number) => void,
): Promise<UploaderOutcome> {
  if (opts.replyFile === undefined) {
    emit({ type: 'warning', message: `the server sent a reply (${url}); pass --reply-file PATH to save it` });
    return { type: 'reply-downloaded' };
  }
  try {
    const res = await transport.request({ method: 'GET', url: new URL(url), headers: { Accept: '*/*', 'Accept-Encoding': 'identity' }, signal: opts.signal });
    if (res.status !== 200) {
      await res.discard();
      const retryable = res.status === 408 || res.status === 429 || res.status >= 500;
      return { type: 'reply-failed', message: `GET ${url}: HTTP ${res.status}`, retryable, httpStatus: res.status };
    }
    let n = 0;
    const count = new Transform({
      transform(chunk: Buffer, _e, cb) {
        n += chunk.length;
        cb(null, chunk);
      },
    });
    if (opts.replyFile === '-') {
      await pipeline(res.body, count, process.stdout as unknown as Writable, { end: false });
    } else {
      await pipeline(res.body, count, createWriteStream(opts.replyFile));
    }
    setBytes(n);
    return { type: 'reply-downloaded' };
  } catch (e) {
    if (opts.signal?.aborted) throw e;
    if (e instanceof BitsError) {
      return { type: 'reply-failed', message: e.message, retryable: isTransientTransport(e) };
    }
    const code = (e as NodeJS.ErrnoException).code;
    if (code && /^E[A-Z]+$/.test(code) && (e as NodeJS.ErrnoException).path) {
      throw new LocalFileError(`${opts.replyFile}: cannot write the reply: ${(e as Error).message}`, opts.replyFile, { cause: e });
    }
    return { type: 'reply-failed', message: (e as Error).message, retryable: true };
  }
}

/**
 * §3.1.4.4 Cancel Existing Upload: CANCEL-SESSION for a saved session. A session
 * the server no longer knows counts as cancelled (§3.1.5.2.1).
 */
export async function cancelUpload(cp: UploadCheckpoint, transportOpts: TransportOptions = {}): Promise<void> {
  const transport = new HttpTransport({ ...transportOpts, connections: 1 });
  try {
    let step = next(fromCheckpoint(cp, { requireReply: false }), { type: 'cancel' }, Date.now());
    for (;;) {
      const action = step.action;
      if (action.type === 'DONE') return;
      if (action.type === 'REPORT-ERROR') throw errorFromInfo(action.error, undefined);
      if (action.type !== 'CANCEL-SESSION') throw new Error(`unexpected ${action.type} while cancelling`);
      const res = await transport.request({ method: 'BITS_POST', url: new URL(action.url), headers: bitsRequestHeaders(action), body: '' });
      await res.discard();
      const ack = classifyAck({ request: 'CANCEL-SESSION', status: res.status, headers: res.headers, sentSessionId: action.sessionId });
      step = next(step.state, { type: 'ack', ack }, Date.now());
    }
  } finally {
    await transport.close().catch(() => undefined);
  }
}
