/**
 * The download client of MC-BUP §3.6 (the I/O driver; the protocol rules live
 * in src/protocol/download-ranges.ts, download-validate.ts and multipart.ts).
 *
 * States: STATE_SIZE (HEAD for DATA_LENGTH and DATA_TIMESTAMP/ETag; a server
 * without HEAD or without a length is asked with a GET instead), STATE_DOWNLOAD
 * (GETs for FRAGMENT_RANGES), STATE_SUSPEND (errors: retried with backoff while
 * transient, until the no-progress timeout; an abort signal) and STATE_COMPLETE
 * (verify, fsync, rename into place). STATE_SEARCH (MS-BPCR peer caching) is
 * not implemented: peer caching is deprecated since Windows 7.
 *
 * Fragment length. BITS sends fragments so each one is a checkpoint. A GET can
 * be resumed at any byte with Range + If-Range, so a fragment boundary only
 * costs a round trip (and, on a fast link, throughput). FRAGMENT_LENGTH is
 * therefore by default the whole remaining window of a segment, streamed by one
 * GET; durability comes from checkpoints taken by bytes written instead: every
 * `checkpointBytes` (4 MiB, and at least `checkpointMinIntervalMs` = 1 s apart) the
 * partial file is fsynced and only then are those bytes reported as done
 * (`onCheckpoint`). `fragmentSize` caps it if wanted.
 *
 * Files: data goes to `PATH.bits-partial` (preallocated; segments write at
 * their offsets), which is fsynced and renamed to PATH only when complete and,
 * with `sha256`, verified. On a sha256 mismatch the partial file is removed:
 * its bytes are exactly what the servers sent, so resuming it would only
 * reproduce the mismatch, and PATH is never touched. `-o -` streams to stdout:
 * bytes must then be written in order, nothing can be taken back, so there is
 * no partial file, no resume and no segments, and a content change mid-way is
 * an error instead of a restart.
 */
import { fsyncDirectoryAsync } from '../io/durable.js';
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import type { FileHandle } from 'node:fs/promises';
import type { Readable } from 'node:stream';
import { HttpTransport, type HttpResponse, type TransportOptions } from '../transport/http.js';
import { writevAll } from '../io/write-all.js';
import {
  AuthError,
  BitsError,
  InterruptedError,
  LocalFileError,
  ProtocolError,
  ServerError,
  SourceChangedError,
  TimeoutError,
  TransportError,
  UsageError,
  toBitsError,
} from '../errors.js';
import { formatRangeHeader, parseRangeList } from '../protocol/content-range.js';
import {
  buildToc,
  capRanges,
  chooseRanges,
  fragmentWindow,
  planSegments,
  resolveApplicationRanges,
  suppressRangeHeader,
  totalBytes,
  trimToSingleUrl,
  type AppRange,
  type TocRow,
} from '../protocol/download-ranges.js';
import {
  classifyStatus,
  defaultOutputName,
  ifRangeValue,
  parseRetryAfter,
  sameContent,
  validateRangeResponse,
  validatorsFrom,
  type Validators,
} from '../protocol/download-validate.js';
import { ByterangesParser, MultipartError } from '../protocol/multipart.js';
import type { TransferEvent, TransferListener } from './events.js';

export const PARTIAL_SUFFIX = '.bits-partial';

/** A source of the content: the origin URL or a mirror. */
export interface SourceState {
  url: string;
  /** What this source stated in STATE_SIZE (ETags differ between mirrors). */
  validators: Validators;
  /** SINGLE_RANGE_ONLY (§3.6.1) for this source. */
  singleRangeOnly: boolean;
  /** The source answers ranged GETs with 200 and the whole content. */
  ignoresRanges: boolean;
  /** Why the source is no longer used. */
  dropped?: string;
}

/**
 * Everything needed to resume a download: give it back as `resume`. Rows'
 * `done` counts only bytes fsynced before the checkpoint was reported.
 */
export interface DownloadCheckpoint {
  version: 1;
  url: string;
  mirrors: string[];
  outputPath: string;
  partialPath: string;
  /** DATA_LENGTH, DATA_TIMESTAMP (Last-Modified) and ETag of the origin. */
  validators: Validators;
  /** `--range` as typed, if any. */
  rangeText?: string;
  /** Resolved APPLICATION_RANGES (empty until the length is known). */
  applicationRanges: AppRange[];
  /** The Table of Contents: a row per range and segment, with its source and bytes done. */
  toc: TocRow[];
  sources: SourceState[];
  /** SINGLE_RANGE_ONLY of the origin (each source has its own flag in `sources`). */
  singleRangeOnly: boolean;
  segments: number;
  sha256?: string;
  force: boolean;
  bytesDone: number;
  totalBytes?: number;
}

export interface DownloadOptions {
  url: string;
  /** Output path; `-` for stdout; undefined: a name derived from the response, in `cwd`. */
  output?: string;
  /** Folder for relative and derived output names (default process.cwd()). */
  cwd?: string;
  /** Overwrite an existing output file. */
  force?: boolean;
  /** APPLICATION_RANGES as typed: `0-99,1000-1099,5000-`. */
  ranges?: string;
  /** Parallel segments over separate connections (default 1, or one per source with mirrors). */
  segments?: number;
  /** Other URLs serving the same content. */
  mirrors?: string[];
  /** Expected SHA-256 of the result (hex). */
  sha256?: string;
  /** Cap on FRAGMENT_LENGTH (bytes per GET); default: the whole remaining window. */
  fragmentSize?: number;
  /** Bytes written between durable checkpoints (default 4 MiB). */
  checkpointBytes?: number;
  /**
   * And at least this long between them (default 1 s, or 0 when checkpointBytes is
   * given): each checkpoint costs an fdatasync plus a durable job-store write, which at
   * loopback speed every 4 MiB dominated the transfer; a crash loses at most ~1 s of data.
   */
  checkpointMinIntervalMs?: number;
  /** Give up after this long without a byte of progress (default 5 minutes). */
  noProgressTimeoutMs?: number;
  /** First retry delay; doubles up to retryMaxMs (defaults 1 s, 60 s). */
  retryBaseMs?: number;
  retryMaxMs?: number;
  /** Smallest segment worth its own connection (default 1 MiB). */
  minSegmentBytes?: number;
  transport?: TransportOptions;
  /** Use this transport (not closed here) instead of creating one. */
  httpTransport?: HttpTransport;
  /** Where `-o -` writes (default process.stdout). */
  stdout?: NodeJS.WritableStream;
}

export interface DownloadRunOptions extends DownloadOptions {
  resume?: DownloadCheckpoint;
  /** Awaited after each durable write batch (the partial file is fsynced first). */
  onCheckpoint?(cp: DownloadCheckpoint): Promise<void> | void;
  onEvent?: TransferListener;
  /** Abort = suspend: the partial file and last checkpoint stay; InterruptedError. */
  signal?: AbortSignal;
}

export interface DownloadResult {
  path: string;
  bytes: number;
  sha256?: string;
  checkpoint: DownloadCheckpoint;
}

export async function downloadFile(opts: DownloadRunOptions): Promise<DownloadResult> {
  return new Download(opts).run();
}

/** Removes the partial file of a download (§3.6.4.3 Cancel Download). */
export async function cancelDownload(cp: DownloadCheckpoint): Promise<void> {
  await fsp.rm(cp.partialPath, { force: true });
}

// ---------------------------------------------------------------------------

/** The content changed (§3.6.5.2.4.2: back to STATE_INIT). */
class ContentChanged extends Error {
  constructor(
    readonly reason: string,
    readonly source: SourceState,
  ) {
    super(reason);
  }
}

class RestartRequired extends Error {}

const retryAfterOf = new WeakMap<object, number>();

function isTransient(e: BitsError): boolean {
  if (e instanceof TransportError) return true; // includes TimeoutError
  if (e instanceof ServerError && !(e instanceof AuthError)) return e.transient;
  return false;
}

interface Sink {
  /** Writes at aggregate offset `pos`; false when the sink cannot take bytes there (stdout: out of order). */
  write(buf: Buffer, pos: number): Promise<boolean>;
  sync(): Promise<void>;
  close(): Promise<void>;
  readonly sequential: boolean;
}

/** Bytes of one contiguous run gathered before a single pwritev (see FileSink). */
const WRITE_BATCH = 1024 * 1024;

interface Run {
  pos: number;
  bufs: Buffer[];
  bytes: number;
}

/**
 * Writes to the partial file. Socket chunks (~64 KiB each) are gathered per
 * contiguous run (one per segment) and written with one pwritev per WRITE_BATCH:
 * a thread-pool round trip per chunk made the disk path, not the network, the
 * limit.
 *
 * Gathered bytes count as written before they reach the disk, so two rules keep
 * a checkpoint honest: every operation runs in order (a sync() waits for a
 * batch another caller is writing, then writes what is gathered, then
 * fdatasyncs), and after any failed write (ENOSPC, EIO) the sink is poisoned:
 * the batch that failed is gone from memory, so no later sync() may succeed and
 * report it as durable. The download then stops at its last good checkpoint.
 */
class FileSink implements Sink {
  readonly sequential = false;
  /** Runs not yet written, by the offset they end at (where the next chunk of their segment goes). */
  private readonly runs = new Map<number, Run>();
  private chain: Promise<unknown> = Promise.resolve();
  private failure: unknown;
  constructor(readonly fh: FileHandle) {}

  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.chain.then(() => {
      if (this.failure !== undefined) throw this.failure;
      return fn();
    });
    this.chain = next.catch(() => {});
    return next;
  }

  write(buf: Buffer, pos: number): Promise<boolean> {
    return this.serial(async () => {
      let run = this.runs.get(pos);
      if (run) this.runs.delete(pos);
      else run = { pos, bufs: [], bytes: 0 };
      run.bufs.push(buf);
      run.bytes += buf.length;
      if (run.bytes >= WRITE_BATCH) await this.writeRun(run);
      else this.runs.set(pos + buf.length, run);
      return true;
    });
  }

  /**
   * Only the drain is in the queue: it puts every byte counted so far on the
   * file. The fdatasync that makes them durable then runs beside later writes,
   * which no checkpoint taken before it counts, so the stream never waits on it.
   */
  async sync(): Promise<void> {
    await this.serial(() => this.drain());
    await this.fh.datasync();
  }

  async close(): Promise<void> {
    try {
      await this.serial(() => this.drain());
    } finally {
      await this.chain;
      await this.fh.close();
    }
  }

  /** Writes every gathered run. */
  private async drain(): Promise<void> {
    const runs = [...this.runs.values()];
    this.runs.clear();
    for (const r of runs) await this.writeRun(r);
  }

  private async writeRun(run: Run): Promise<void> {
    try {
      await writevAll(this.fh, run.bufs, run.pos, run.bytes);
    } catch (err) {
      this.failure = err;
      throw err;
    }
  }
}

class StreamSink implements Sink {
  readonly sequential = true;
  pos = 0;
  readonly hash = createHash('sha256');
  constructor(readonly stream: NodeJS.WritableStream) {}
  async write(buf: Buffer, pos: number): Promise<boolean> {
    if (pos !== this.pos) return false;
    this.hash.update(buf);
    this.pos += buf.length;
    if (!this.stream.write(buf)) {
      await new Promise<void>((resolve, reject) => {
        const done = (err?: Error) => {
          this.stream.off('drain', ok);
          this.stream.off('error', done);
          if (err) reject(err);
          else resolve();
        };
        const ok = () => done();
        this.stream.once('drain', ok);
        this.stream.once('error', done);
      });
    }
    return true;
  }
  async sync(): Promise<void> {}
  async close(): Promise<void> {}
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const t = setTimeout(done, ms);
    function done() {
      clearTimeout(t);
      signal.removeEventListener('abort', done);
      resolve();
    }
    signal.addEventListener('abort', done, { once: true });
  });
}

async function exists(p: string): Promise<boolean> {
  try {
    await fsp.lstat(p);
    return true;
  } catch {
    return false;
  }
}

class Download {
  private readonly transport: HttpTransport;
  private readonly ownTransport: boolean;
  private readonly emit: (e: TransferEvent) => void;
  private readonly checkpointBytes: number;
  private readonly checkpointMinIntervalMs: number;
  private lastCheckpointAt = Date.now();
  private readonly noProgressMs: number;
  private readonly retryBaseMs: number;
  private readonly retryMaxMs: number;

  private url: string;
  private mirrors: string[];
  private outputPath = '';
  private partialPath = '';
  private toStdout: boolean;
  private rangeText?: string;
  private segmentsWanted: number;
  private sha256?: string;
  private force: boolean;

  private sources: SourceState[] = [];
  private validators: Validators = {};
  private appRanges: AppRange[] = [];
  private toc: TocRow[] = [];
  /** Bytes written (not yet necessarily durable) at the start of each row. */
  private written: number[] = [];
  private claimed = new Set<number>();
  private sink?: Sink;
  private probeHeaders: Record<string, string> = {};
  private unknownLength = false;

  private flushChain: Promise<void> = Promise.resolve();
  /** A checkpoint taken in the background, and the error it hit if any. */
  private flushing: Promise<void> | undefined;
  private flushError: unknown;
  private sinceCheckpoint = 0;
  private lastProgressEmit = 0;
  private warned = new Set<string>();
  /** Aborts the requests of the current attempt (user abort, restart, fatal error). */
  private runAbort = new AbortController();

  constructor(private readonly opts: DownloadRunOptions) {
    const cp = opts.resume;
    this.emit = (e) => {
      try {
        opts.onEvent?.(e);
      } catch {
        /* a listener's failure must not break the transfer */
      }
    };
    this.checkpointBytes = Math.max(64 * 1024, opts.checkpointBytes ?? 4 * 1024 * 1024);
    this.checkpointMinIntervalMs = opts.checkpointMinIntervalMs ?? (opts.checkpointBytes === undefined ? 1000 : 0);
    this.noProgressMs = opts.noProgressTimeoutMs ?? 5 * 60_000;
    this.retryBaseMs = opts.retryBaseMs ?? 1000;
    this.retryMaxMs = opts.retryMaxMs ?? 60_000;
    this.url = cp?.url ?? opts.url;
    this.mirrors = cp?.mirrors ?? opts.mirrors ?? [];
    this.toStdout = !cp && opts.output === '-';
    this.rangeText = cp ? cp.rangeText : opts.ranges;
    this.sha256 = (cp?.sha256 ?? opts.sha256)?.toLowerCase();
    this.force = cp?.force ?? opts.force ?? false;
    const segs = cp?.segments ?? opts.segments;
    this.segmentsWanted = segs ?? (this.mirrors.length > 0 ? this.mirrors.length + 1 : 1);
    this.checkOptions();
    if (opts.httpTransport) {
      this.transport = opts.httpTransport;
      this.ownTransport = false;
    } else {
      this.transport = new HttpTransport({ ...opts.transport, connections: Math.max(1, this.segmentsWanted, opts.transport?.connections ?? 1) });
      this.ownTransport = true;
    }
  }

  private checkOptions(): void {
    for (const u of [this.url, ...this.mirrors]) {
      let parsed: URL;
      try {
        parsed = new URL(u);
      } catch {
        throw new UsageError(`not a valid URL: ${JSON.stringify(u)}`);
      }
      if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') throw new UsageError(`only http and https URLs can be downloaded: ${u}`);
    }
    if (!Number.isSafeInteger(this.segmentsWanted) || this.segmentsWanted < 1 || this.segmentsWanted > 64) {
      throw new UsageError(`--segments must be from 1 to 64, got ${this.segmentsWanted}`);
    }
    if (this.sha256 !== undefined && !/^[0-9a-f]{64}$/.test(this.sha256)) throw new UsageError('--sha256 must be 64 hexadecimal digits');
    if (this.rangeText !== undefined && !parseRangeList(this.rangeText)) {
      throw new UsageError(`--range must be a list like 0-99,1000-1099,5000- (got ${JSON.stringify(this.rangeText)})`);
    }
    if (this.toStdout && this.opts.segments !== undefined && this.opts.segments > 1) {
      throw new UsageError('--segments cannot be used with -o - (stdout takes bytes in order only)');
    }
    if (this.opts.fragmentSize !== undefined && !(this.opts.fragmentSize >= 1)) throw new UsageError('--fragment-size must be at least 1 byte');
  }

  async run(): Promise<DownloadResult> {
    const userSignal = this.opts.signal;
    // runAbort is replaced on a restart, so the listener looks it up each time.
    const onUserAbort = () => this.runAbort.abort(new InterruptedError('download interrupted; resume to continue'));
    userSignal?.addEventListener('abort', onUserAbort, { once: true });
    try {
      if (userSignal?.aborted) throw new InterruptedError('download interrupted before it started');
      return await this.runInner();
    } catch (err) {
      const e = userSignal?.aborted ? new InterruptedError('download interrupted; resume to continue') : toBitsError(err);
      await this.flushQuietly();
      if (e instanceof InterruptedError || e.resumable) this.emit({ type: 'phase', phase: 'suspended', detail: e.message });
      this.emit({ type: 'error', error: { code: e.code, message: e.message, exitCode: e.exitCode, resumable: e.resumable && !this.toStdout } });
      throw e;
    } finally {
      userSignal?.removeEventListener('abort', onUserAbort);
      await this.sink?.close().catch(() => {});
      this.sink = undefined;
      if (this.ownTransport) await this.transport.destroy().catch(() => {});
    }
  }

  private async runInner(): Promise<DownloadResult> {
    const cp = this.opts.resume;
    this.emit({ type: 'phase', phase: 'connecting', detail: this.url });
    if (cp) {
      if (cp.version !== 1) throw new UsageError('checkpoint of an unknown version');
      this.outputPath = cp.outputPath;
      this.partialPath = cp.partialPath;
      this.sources = cp.sources.map((s) => ({ ...s, validators: { ...s.validators } }));
      this.validators = { ...cp.validators };
      this.appRanges = cp.applicationRanges.map((r) => ({ ...r }));
      this.toc = cp.toc.map((r) => ({ ...r }));
      if (!this.force && (await exists(this.outputPath))) throw this.existsError(this.outputPath);
      // §3.6.4.2: with DATA_TIMESTAMP/length known go straight to STATE_DOWNLOAD.
      if (this.validators.length === undefined) {
        await this.stateSize();
        this.planFresh();
        await this.openPartial(false);
      } else {
        await this.openPartial(true);
      }
    } else {
      if (this.opts.output !== undefined && !this.toStdout) {
        this.outputPath = path.resolve(this.opts.cwd ?? process.cwd(), this.opts.output);
        if (!this.force && (await exists(this.outputPath))) throw this.existsError(this.outputPath);
      }
      this.sources = [this.url, ...this.mirrors].map((url) => ({ url, validators: {}, singleRangeOnly: false, ignoresRanges: false }));
      await this.stateSize();
      if (this.opts.output === undefined) {
        const cwd = this.opts.cwd ?? process.cwd();
        const name = defaultOutputName(new URL(this.url), this.probeHeaders);
        // Never outside the current folder, whatever the server suggested.
        this.outputPath = path.join(cwd, name);
        if (path.dirname(this.outputPath) !== path.resolve(cwd)) this.outputPath = path.join(cwd, 'download.bin');
        if (!this.force && (await exists(this.outputPath))) throw this.existsError(this.outputPath);
      }
      this.partialPath = this.toStdout ? '' : this.outputPath + PARTIAL_SUFFIX;
      this.planFresh();
      await this.openPartial(false);
    }

    const resumedAt = this.bytesDone();
    this.emit({
      type: 'start',
      kind: 'download',
      source: this.url,
      destination: this.toStdout ? '-' : this.outputPath,
      ...(!this.unknownLength ? { totalBytes: this.total() } : {}),
      ...(resumedAt > 0 ? { resumedAt } : {}),
    });
    if (resumedAt > 0) this.emit({ type: 'info', message: `resuming at ${resumedAt} of ${this.total()} bytes` });

    if (this.unknownLength) await this.streamUnknownLength();
    else await this.downloadWithRestarts();
    return this.complete();
  }

  private existsError(p: string): LocalFileError {
    return new LocalFileError(`${p} already exists; use --force to overwrite it`, p);
  }

  // -------------------------------------------------------------------------
  // STATE_SIZE

  /** HEAD (or GET fallback) for each source: learns validators, drops mismatching mirrors. */
  private async stateSize(): Promise<void> {
    const live = this.liveSources();
    if (live.length === 0) throw new ProtocolError('no usable source left');
    // The first source that answers is the reference; with mirrors, an
    // unreachable origin is dropped rather than waited for.
    let primary: SourceState | undefined;
    let first: { validators: Validators; headers: Record<string, string> } | undefined;
    for (let k = 0; k < live.length && !primary; k++) {
      const s = live[k]!;
      const last = k === live.length - 1;
      try {
        first = last ? await this.withRetries(() => this.probe(s)) : await this.probe(s);
        primary = s;
      } catch (err) {
        if (this.runAbort.signal.aborted || last) throw err;
        this.drop(s, `source ${s.url} is not usable: ${toBitsError(err).message}`);
      }
    }
    primary!.validators = first!.validators;
    this.probeHeaders = first!.headers;
    this.validators = { ...first!.validators };
    this.unknownLength = first!.validators.length === undefined;
    await Promise.all(
      this.liveSources()
        .filter((m) => m !== primary)
        .map(async (m) => {
          try {
            const r = await this.probe(m);
            m.validators = r.validators;
            const diff = sameContent(this.validators, r.validators);
            if (diff) this.drop(m, `mirror ${m.url} does not serve the same content (${diff}); not used`);
          } catch (err) {
            if (this.runAbort.signal.aborted) throw err;
            this.drop(m, `mirror ${m.url} is not usable: ${toBitsError(err).message}`);
          }
        }),
    );
  }

  /** Retries transient failures with backoff until the no-progress timeout. */
  private async withRetries<T>(fn: () => Promise<T>): Promise<T> {
    const start = Date.now();
    for (let attempt = 0; ; attempt++) {
      try {
        return await fn();
      } catch (err) {
        if (this.runAbort.signal.aborted) throw err;
        const e = toBitsError(err);
        if (!isTransient(e)) throw e;
        const waited = Date.now() - start;
        if (waited >= this.noProgressMs) throw new TimeoutError(`no progress for ${Math.round(waited / 1000)} s; last error: ${e.message}`, 'no-progress');
        const delay = Math.min(this.noProgressMs - waited, retryAfterOf.get(e) ?? Math.min(this.retryMaxMs, this.retryBaseMs * 2 ** attempt));
        this.emit({ type: 'retry', attempt: attempt + 1, delayMs: delay, reason: e.message });
        await sleep(delay, this.runAbort.signal);
      }
    }
  }

  /**
   * HEAD; a server that refuses HEAD or states no length is asked with
   * `GET Range: bytes=0-0` (206 names the length; 200 gives Content-Length).
   */
  private async probe(src: SourceState): Promise<{ validators: Validators; headers: Record<string, string> }> {
    const url = new URL(src.url);
    const head = await this.transport.request({ method: 'HEAD', url, signal: this.runAbort.signal });
    await head.discard();
    const cls = classifyStatus(head.status);
    if (cls === 'ok') {
      const v = validatorsFrom(200, head.headers);
      if (v.length !== undefined) return { validators: v, headers: head.headers };
    } else if (cls === 'auth' || cls === 'transient') {
      throw this.statusError(head, 'HEAD', url);
    }
    const get = await this.transport.request({ method: 'GET', url, headers: { range: 'bytes=0-0' }, signal: this.runAbort.signal });
    // Only the headers matter; a 200 body is cut off by destroying it.
    get.body.destroy();
    if (classifyStatus(get.status) !== 'ok') {
      if (cls !== 'ok' && classifyStatus(get.status) === 'fatal') throw this.statusError(head, 'HEAD', url);
      throw this.statusError(get, 'GET', url);
    }
    const v = validatorsFrom(get.status, get.headers);
    if (get.status === 206 && v.length === undefined) {
      // `bytes 0-0/*`: the server does not know its length either.
    }
    return { validators: v, headers: { ...head.headers, ...get.headers } };
  }

  private statusError(res: HttpResponse, request: string, url: URL): ServerError {
    const cls = classifyStatus(res.status);
    const info = { httpStatus: res.status, request, url: url.href, transient: cls === 'transient' };
    const e = cls === 'auth' ? new AuthError(info) : new ServerError(info);
    const ra = parseRetryAfter(res.headers['retry-after']);
    if (ra !== undefined) retryAfterOf.set(e, ra);
    return e;
  }

  // -------------------------------------------------------------------------
  // Planning and the partial file

  private planFresh(): void {
    if (this.unknownLength) {
      if (this.rangeText !== undefined) throw new ProtocolError(`${this.url} does not state its length, which --range needs`);
      if (this.segmentsWanted > 1) this.warn('the server does not state the length: downloading in one stream, without segments');
      this.appRanges = [];
      this.toc = [];
      this.written = [];
      return;
    }
    const length = this.validators.length!;
    const specs = this.rangeText !== undefined ? parseRangeList(this.rangeText) : undefined;
    const { ranges, unsatisfiable } = resolveApplicationRanges(specs, length);
    if (unsatisfiable > 0) {
      throw new UsageError(`--range names ${unsatisfiable === 1 ? 'a range' : `${unsatisfiable} ranges`} beyond the ${length}-byte content`);
    }
    this.appRanges = ranges;
    const total = totalBytes(ranges);
    const segs = this.toStdout ? 1 : this.segmentsWanted;
    const starts = planSegments(total, segs, this.opts.minSegmentBytes ?? 1024 * 1024);
    this.toc = buildToc(ranges, starts, this.liveSources().map((s) => s.url));
    this.written = this.toc.map(() => 0);
  }

  private async openPartial(resuming: boolean): Promise<void> {
    if (this.toStdout) {
      this.sink = new StreamSink(this.opts.stdout ?? process.stdout);
      return;
    }
    const total = this.total();
    let fh: FileHandle;
    if (resuming) {
      let size = -1;
      try {
        size = (await fsp.stat(this.partialPath)).size;
      } catch {
        /* missing */
      }
      const claimed = this.toc.reduce((n, r) => n + r.done, 0);
      if (size < 0 && claimed > 0) this.warn(`partial file ${this.partialPath} is missing; starting again from zero`);
      // Trust only bytes the checkpoint calls durable AND that the file holds.
      for (const r of this.toc) r.done = Math.max(0, Math.min(r.done, r.length, size - r.at));
      fh = await fsp.open(this.partialPath, size < 0 ? 'w+' : 'r+');
      // Anything past the last durable byte was never reported done: drop it.
      const durableEnd = this.toc.reduce((m, r) => (r.done > 0 ? Math.max(m, r.at + r.done) : m), 0);
      await fh.truncate(durableEnd);
    } else {
      if (await exists(this.partialPath)) this.emit({ type: 'info', message: `discarding stale partial file ${this.partialPath}` });
      for (const r of this.toc) r.done = 0;
      fh = await fsp.open(this.partialPath, 'w+');
    }
    // Preallocate (sparse) so segments can write at their offsets.
    await fh.truncate(total);
    this.sink = new FileSink(fh);
    this.written = this.toc.map((r) => r.done);
    this.claimed.clear();
  }

  // -------------------------------------------------------------------------
  // STATE_DOWNLOAD

  private async downloadWithRestarts(): Promise<void> {
    for (let restarts = 0; ; restarts++) {
      try {
        await this.runWorkers();
        return;
      } catch (err) {
        if (!(err instanceof RestartRequired)) throw err;
        if (this.opts.signal?.aborted) throw new InterruptedError();
        if (this.toStdout && (this.sink as StreamSink).pos > 0) {
          throw new SourceChangedError(`the content changed on the server during the download (${err.message}); bytes already written to stdout cannot be taken back`, 'remote');
        }
        if (restarts >= 3) throw new SourceChangedError(`the content keeps changing on the server (${err.message}); giving up`, 'remote');
        this.warn(`the content changed on the server (${err.message}); starting again from zero`, true);
        this.runAbort = new AbortController();
        // Record "nothing held" durably before any byte of the new version is written.
        for (const r of this.toc) r.done = 0;
        this.written = this.toc.map(() => 0);
        this.validators = {};
        await this.flush();
        for (const s of this.sources) {
          // Every source is asked again: a mirror may have the new version too.
          delete s.dropped;
          s.validators = {};
          s.singleRangeOnly = false;
          s.ignoresRanges = false;
        }
        await this.stateSize();
        this.planFresh();
        if (this.unknownLength) throw new SourceChangedError('the content changed and no longer states its length', 'remote');
        const fh = (this.sink as FileSink).fh;
        await fh.truncate(0);
        await fh.truncate(this.total());
        this.written = this.toc.map(() => 0);
        this.claimed.clear();
        this.emit({ type: 'start', kind: 'download', source: this.url, destination: this.outputPath, totalBytes: this.total() });
      }
    }
  }

  private async runWorkers(): Promise<void> {
    const segments = new Set(this.toc.map((r) => r.segment));
    const n = Math.max(1, Math.min(segments.size, this.toStdout ? 1 : this.segmentsWanted));
    this.emit({ type: 'phase', phase: 'transferring' });
    const results = await Promise.allSettled(Array.from({ length: n }, () => this.worker()));
    const failures = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected').map((r) => r.reason as unknown);
    await this.flush();
    if (failures.length === 0) {
      if (this.toc.some((r, i) => this.written[i]! < r.length)) throw new ProtocolError('download ended with ranges missing');
      return;
    }
    if (this.opts.signal?.aborted) throw new InterruptedError('download interrupted; resume to continue');
    const restart = failures.find((f) => f instanceof RestartRequired);
    if (restart) throw restart;
    // The first real failure, not the aborts it caused in the other workers.
    throw failures.find((f) => !(f instanceof AbortedByRun)) ?? failures[0];
  }

  private async worker(): Promise<void> {
    try {
      for (;;) {
        const seg = this.claimSegment();
        if (seg === undefined) return;
        await this.downloadSegment(seg);
      }
    } catch (err) {
      // One worker's failure ends the attempt: stop the others promptly.
      if (!this.runAbort.signal.aborted) this.runAbort.abort(new AbortedByRun());
      throw err;
    }
  }

  private claimSegment(): number | undefined {
    for (let i = 0; i < this.toc.length; i++) {
      const r = this.toc[i]!;
      if (this.written[i]! < r.length && !this.claimed.has(r.segment)) {
        this.claimed.add(r.segment);
        return r.segment;
      }
    }
    return undefined;
  }

  private liveSources(): SourceState[] {
    return this.sources.filter((s) => !s.dropped);
  }

  private drop(src: SourceState, why: string): void {
    if (src.dropped) return;
    src.dropped = why;
    this.warn(why);
    const live = this.liveSources();
    if (live.length === 0) return;
    // Reassign its remaining rows, segment by segment, to the other sources.
    this.toc.forEach((r, i) => {
      if (r.source === src.url && this.written[i]! < r.length) r.source = live[r.segment % live.length]!.url;
    });
  }

  private sourceFor(segment: number): SourceState {
    const live = this.liveSources();
    if (live.length === 0) throw new ProtocolError('no usable source left');
    const row = this.toc.find((r, i) => r.segment === segment && this.written[i]! < r.length);
    let src = row ? this.sources.find((s) => s.url === row.source && !s.dropped) : undefined;
    if (!src) {
      src = live[segment % live.length]!;
      for (const r of this.toc) if (r.segment === segment) r.source = src.url;
    }
    return src;
  }

  private async downloadSegment(segment: number): Promise<void> {
    let lastProgress = Date.now();
    let attempt = 0;
    let idle = 0;
    const signal = this.runAbort.signal;
    for (;;) {
      if (signal.aborted) throw signal.reason ?? new AbortedByRun();
      const win = fragmentWindow(this.toc, segment, (i) => this.written[i]!, this.opts.fragmentSize ?? Infinity);
      if (!win) return;
      const src = this.sourceFor(segment);
      try {
        const got = await this.fetchFragment(segment, win, src);
        if (got > 0) {
          lastProgress = Date.now();
          attempt = 0;
          idle = 0;
        } else if (++idle > 4) {
          throw new ProtocolError(`${src.url} keeps answering without the requested bytes`);
        }
      } catch (err) {
        if (signal.aborted) throw signal.reason ?? err;
        if (err instanceof RestartRequired) throw err;
        if (err instanceof ContentChanged) {
          if (err.source === this.liveSources()[0]) throw new RestartRequired(err.reason);
          this.drop(err.source, `mirror ${err.source.url} changed (${err.reason}); no longer used`);
          continue;
        }
        const e = toBitsError(err);
        const others = this.liveSources().filter((s) => s !== src).length > 0;
        // With other sources at hand a failing one is not waited for (auth failures included).
        if ((isTransient(e) || e instanceof ProtocolError || e instanceof ServerError) && others) {
          this.drop(src, `source ${src.url} failed (${e.message}); its ranges go to the other sources`);
          await this.flush();
          continue;
        }
        if (!isTransient(e)) throw e;
        await this.flush();
        const waited = Date.now() - lastProgress;
        if (waited >= this.noProgressMs) {
          throw new TimeoutError(`no progress for ${Math.round(waited / 1000)} s; last error: ${e.message}`, 'no-progress');
        }
        const delay = Math.min(
          this.noProgressMs - waited,
          retryAfterOf.get(e) ?? Math.min(this.retryMaxMs, this.retryBaseMs * 2 ** attempt),
        );
        attempt++;
        this.emit({ type: 'phase', phase: 'retrying', detail: e.message });
        this.emit({ type: 'retry', attempt, delayMs: delay, reason: e.message });
        await sleep(delay, signal);
        this.emit({ type: 'phase', phase: 'transferring' });
      }
    }
  }

  /** One GET for FRAGMENT_RANGES; returns the bytes it added to DATA_BUFFER. */
  private async fetchFragment(segment: number, win: { offset: number; length: number }, src: SourceState): Promise<number> {
    const chosen = chooseRanges(this.appRanges, win.offset, win.length, src.singleRangeOnly);
    const ranges = capRanges(trimToSingleUrl(chosen.ranges, this.toc).ranges);
    if (ranges.length === 0) return 0;
    const length = src.validators.length ?? this.validators.length;
    const rangeSent = !src.ignoresRanges && !suppressRangeHeader(ranges, length);
    const headers: Record<string, string> = {};
    if (rangeSent) {
      headers['range'] = formatRangeHeader(ranges.map((r) => ({ first: r.offset, last: r.offset + r.length - 1 })));
      // A resumed range must come from the same version (RFC 7233 §3.2).
      const ir = ifRangeValue(src.validators);
      if (ir) headers['if-range'] = ir;
    }
    const url = new URL(src.url);
    const res = await this.transport.request({ method: 'GET', url, headers, signal: this.runAbort.signal });
    const cls = classifyStatus(res.status);
    if (cls !== 'ok') {
      await res.discard();
      if (cls === 'unsatisfiable') throw new ContentChanged(`HTTP 416 for bytes the content had`, src);
      throw this.statusError(res, 'GET', url);
    }
    const verdict = validateRangeResponse({
      status: res.status,
      headers: res.headers,
      requested: ranges,
      rangeSent,
      known: { ...src.validators, length },
    });
    const rows = this.rowsOfSegment(segment);
    switch (verdict.kind) {
      case 'changed':
        res.body.destroy();
        throw new ContentChanged(verdict.reason, src);
      case 'error':
        res.body.destroy();
        throw new ProtocolError(`${url.host}: ${verdict.message}`, { httpStatus: res.status });
      case 'full': {
        if (verdict.ignoredRange && !src.ignoresRanges) {
          src.ignoresRanges = true;
          this.warn(`${url.host} ignores Range requests; taking the needed bytes from its full responses`);
        }
        const adopted: number[] = [];
        if (verdict.ignoredRange) {
          // The whole content is coming anyway: fill the unclaimed segments of this source from it too.
          for (let i = 0; i < this.toc.length; i++) {
            const r = this.toc[i]!;
            if (r.source === src.url && !this.claimed.has(r.segment) && this.written[i]! < r.length) {
              this.claimed.add(r.segment);
              adopted.push(r.segment);
            }
          }
          for (const seg of adopted) rows.push(...this.rowsOfSegment(seg));
        }
        try {
          return await this.consume(res, rows, 0, length);
        } finally {
          // Unfinished adopted segments go back to the pool for any worker.
          for (const seg of adopted) if (!this.rowsComplete(this.rowsOfSegment(seg))) this.claimed.delete(seg);
        }
      }
      case 'partial':
        return this.consume(res, rows, verdict.range.first, verdict.range.last - verdict.range.first + 1);
      case 'multi-failed': {
        this.setSingleRangeOnly(src, verdict.reason);
        if (verdict.usable) return this.consume(res, rows, verdict.usable.first, verdict.usable.last - verdict.usable.first + 1);
        res.body.destroy();
        return 0;
      }
      case 'multipart':
        return this.consumeMultipart(res, rows, verdict.boundary, ranges, length, src);
    }
  }

  private setSingleRangeOnly(src: SourceState, reason: string): void {
    if (src.singleRangeOnly) return;
    src.singleRangeOnly = true;
    this.warn(`${new URL(src.url).host} does not handle multi-range requests (${reason}); using single ranges`);
  }

  private rowsOfSegment(segment: number): number[] {
    const out: number[] = [];
    this.toc.forEach((r, i) => {
      if (r.segment === segment) out.push(i);
    });
    return out;
  }

  /** Streams a body holding URL bytes from `offset` into the rows. */
  private async consume(res: HttpResponse, rows: number[], offset: number, expected: number | undefined): Promise<number> {
    let pos = offset;
    let added = 0;
    let received = 0;
    try {
      for await (const chunk of readAhead(res.body)) {
        received += chunk.length;
        added += await this.place(rows, pos, chunk);
        pos += chunk.length;
        if (this.rowsComplete(rows)) break;
      }
    } finally {
      res.body.destroy();
    }
    if (!this.rowsComplete(rows) && expected !== undefined && received < expected) {
      throw new TransportError(`response ended after ${received} of ${expected} bytes`);
    }
    return added;
  }

  private async consumeMultipart(
    res: HttpResponse,
    rows: number[],
    boundary: string,
    ranges: readonly AppRange[],
    total: number | undefined,
    src: SourceState,
  ): Promise<number> {
    const parser = new ByterangesParser({
      boundary,
      expected: ranges.map((r) => ({ first: r.offset, last: r.offset + r.length - 1 })),
      ...(total !== undefined ? { total } : {}),
    });
    let added = 0;
    try {
      for await (const chunk of readAhead(res.body)) {
        for (const ev of parser.feed(chunk)) {
          if (ev.type === 'data') added += await this.place(rows, ev.offset, ev.data);
        }
        if (parser.done) break;
      }
      parser.finish();
    } catch (err) {
      if (!(err instanceof MultipartError)) throw err;
      // §3.6.5.2.4.2: a multi-range answer failing validation -> SINGLE_RANGE_ONLY.
      // Bytes of parts that passed validation were correct and are kept.
      this.setSingleRangeOnly(src, err.message);
    } finally {
      res.body.destroy();
    }
    return added;
  }

  private rowsComplete(rows: readonly number[]): boolean {
    return rows.every((i) => this.written[i]! >= this.toc[i]!.length);
  }

  /**
   * Copies URL bytes [offset, offset+data.length) into every row they extend:
   * a row only ever grows by its next byte, so whatever a server sends (more,
   * less, the whole file) nothing is written out of place.
   */
  private async place(rows: readonly number[], offset: number, data: Buffer): Promise<number> {
    if (this.flushError !== undefined) throw this.flushError;
    let added = 0;
    for (const i of rows) {
      const row = this.toc[i]!;
      const w = this.written[i]!;
      if (w >= row.length) continue;
      const want = row.offset + w;
      if (want < offset || want >= offset + data.length) continue;
      const from = want - offset;
      const n = Math.min(data.length - from, row.length - w);
      if (!(await this.sink!.write(data.subarray(from, from + n), row.at + w))) continue;
      this.written[i] = w + n;
      added += n;
    }
    if (added > 0) {
      this.sinceCheckpoint += added;
      this.progress();
      if (this.sinceCheckpoint >= this.checkpointBytes && !this.flushing && Date.now() - this.lastCheckpointAt >= this.checkpointMinIntervalMs) {
        this.lastCheckpointAt = Date.now();
        // fsync runs beside the stream, not in its path: a reader stalled on the
        // disk would stall the socket (and undici 7 asserts when a server closes
        // the connection while the body is paused, nodejs/undici#5360).
        this.flushing = this.flush()
          .catch((err: unknown) => {
            this.flushError ??= err;
          })
          .finally(() => {
            this.flushing = undefined;
          });
      }
    }
    return added;
  }

  private progress(force = false): void {
    const now = Date.now();
    if (!force && now - this.lastProgressEmit < 100) return;
    this.lastProgressEmit = now;
    const bytesDone = this.written.reduce((a, b) => a + b, 0);
    this.emit({ type: 'progress', bytesDone, ...(this.unknownLength ? {} : { totalBytes: this.total() }) });
  }

  // -------------------------------------------------------------------------
  // Checkpoints

  /** fsync, then report what was written before it as done. Serialised. */
  private flush(): Promise<void> {
    const next = this.flushChain.then(async () => {
      if (!this.sink) return;
      const snapshot = this.written.slice();
      this.sinceCheckpoint = 0;
      await this.sink.sync();
      this.toc.forEach((r, i) => {
        if (snapshot[i] !== undefined) r.done = snapshot[i]!;
      });
      if (!this.toStdout && this.opts.onCheckpoint) await this.opts.onCheckpoint(this.checkpoint());
    });
    this.flushChain = next.catch(() => {});
    return next;
  }

  private async flushQuietly(): Promise<void> {
    try {
      await this.flush();
    } catch {
      /* the previous checkpoint stays valid */
    }
  }

  checkpoint(): DownloadCheckpoint {
    const origin = this.sources.find((s) => s.url === this.url);
    return {
      version: 1,
      url: this.url,
      mirrors: [...this.mirrors],
      outputPath: this.outputPath,
      partialPath: this.partialPath,
      validators: { ...this.validators },
      ...(this.rangeText !== undefined ? { rangeText: this.rangeText } : {}),
      applicationRanges: this.appRanges.map((r) => ({ ...r })),
      toc: this.toc.map((r) => ({ ...r })),
      sources: this.sources.map((s) => ({ ...s, validators: { ...s.validators } })),
      singleRangeOnly: origin?.singleRangeOnly ?? false,
      segments: this.segmentsWanted,
      ...(this.sha256 ? { sha256: this.sha256 } : {}),
      force: this.force,
      bytesDone: this.bytesDone(),
      ...(this.unknownLength ? {} : { totalBytes: this.total() }),
    };
  }

  private bytesDone(): number {
    return this.toc.reduce((n, r) => n + r.done, 0);
  }

  private total(): number {
    return totalBytes(this.appRanges);
  }

  private warn(message: string, always = false): void {
    if (!always && this.warned.has(message)) return;
    this.warned.add(message);
    this.emit({ type: 'warning', message });
  }

  // -------------------------------------------------------------------------
  // A server that states no length: one stream, restarted from zero on failure.

  private async streamUnknownLength(): Promise<void> {
    const src = this.liveSources()[0]!;
    const url = new URL(src.url);
    let lastProgress = Date.now();
    for (let attempt = 0; ; attempt++) {
      let pos = 0;
      try {
        const res = await this.transport.request({ method: 'GET', url, signal: this.runAbort.signal });
        if (classifyStatus(res.status) !== 'ok' || res.status !== 200) {
          await res.discard();
          throw res.status === 206 ? new ProtocolError('HTTP 206 to a request without Range', { httpStatus: 206 }) : this.statusError(res, 'GET', url);
        }
        this.emit({ type: 'phase', phase: 'transferring' });
        for await (const chunk of readAhead(res.body)) {
          if (!(await this.sink!.write(chunk, pos))) throw new SourceChangedError('cannot restart a stream already written to stdout', 'remote');
          pos += chunk.length;
          lastProgress = Date.now();
          this.emit({ type: 'progress', bytesDone: pos });
        }
        const v = validatorsFrom(200, res.headers);
        this.validators = { ...v, length: pos };
        src.validators = { ...this.validators };
        this.appRanges = [{ offset: 0, length: pos }];
        this.toc = buildToc(this.appRanges, [0], [src.url]);
        this.written = this.toc.map((r) => r.length);
        this.unknownLength = false;
        if (this.sink instanceof FileSink) await this.sink.fh.truncate(pos);
        await this.flush();
        return;
      } catch (err) {
        if (this.runAbort.signal.aborted) throw new InterruptedError('download interrupted (the server states no length: it will start again from zero)');
        const e = toBitsError(err);
        if (!isTransient(e) || this.toStdout && pos > 0) throw e;
        const waited = Date.now() - lastProgress;
        if (waited >= this.noProgressMs) throw new TimeoutError(`no progress for ${Math.round(waited / 1000)} s; last error: ${e.message}`, 'no-progress');
        const delay = Math.min(this.retryMaxMs, this.retryBaseMs * 2 ** attempt);
        this.emit({ type: 'retry', attempt: attempt + 1, delayMs: delay, reason: `${e.message} (no length known: starting again from zero)` });
        await sleep(delay, this.runAbort.signal);
      }
    }
  }

  // -------------------------------------------------------------------------
  // STATE_COMPLETE

  private async complete(): Promise<DownloadResult> {
    await this.flush();
    const bytes = this.total();
    let digest: string | undefined;
    if (this.sink instanceof StreamSink) {
      digest = this.sink.hash.digest('hex');
      if (this.sha256 && digest !== this.sha256) {
        throw new SourceChangedError(`sha256 mismatch: expected ${this.sha256}, got ${digest} (already written to stdout)`, 'remote');
      }
    } else {
      const fh = (this.sink as FileSink).fh;
      await fh.sync();
      await this.sink!.close();
      this.sink = undefined;
      if (this.sha256) {
        this.emit({ type: 'phase', phase: 'verifying' });
        digest = await sha256File(this.partialPath);
        if (digest !== this.sha256) {
          await fsp.rm(this.partialPath, { force: true });
          throw new SourceChangedError(
            `sha256 mismatch: expected ${this.sha256}, got ${digest}; ${this.outputPath} was not written and the partial file was removed`,
            'remote',
          );
        }
      }
      if (!this.force && (await exists(this.outputPath))) throw this.existsError(this.outputPath);
      await fsp.rename(this.partialPath, this.outputPath);
      await syncDir(path.dirname(this.outputPath));
    }
    this.progress(true);
    this.emit({ type: 'complete', bytes, destination: this.toStdout ? '-' : this.outputPath, ...(digest ? { sha256: digest } : {}) });
    return { path: this.toStdout ? '-' : this.outputPath, bytes, ...(digest ? { sha256: digest } : {}), checkpoint: this.checkpoint() };
  }
}

class AbortedByRun extends Error {
  constructor() {
    super('stopped because another segment failed');
  }
}

/**
 * The body's chunks, read ahead into a bounded queue (default 16 MiB) instead
 * of pulled one at a time. A consumer writing to disk briefly slower than the
 * network then does not pause the HTTP parser: undici 7 crashes the process
 * (an uncatchable assert, nodejs/undici#5360) when a server closes the
 * connection (HTTP/1.0, `Connection: close`) while the parser is paused.
 */
export async function* readAhead(body: Readable, budget = 2 * 1024 * 1024): AsyncGenerator<Buffer> {
  const queue: Buffer[] = [];
  let queued = 0;
  let ended = false;
  let failure: unknown;
  let wake: (() => void) | undefined;
  const notify = () => {
    const w = wake;
    wake = undefined;
    w?.();
  };
  const onData = (c: Buffer) => {
    queue.push(c);
    queued += c.length;
    if (queued >= budget) body.pause();
    notify();
  };
  const onEnd = () => {
    ended = true;
    notify();
  };
  const onError = (e: unknown) => {
    failure ??= e;
    notify();
  };
  body.on('data', onData);
  body.on('end', onEnd);
  body.on('close', onEnd);
  body.on('error', onError);
  try {
    for (;;) {
      const c = queue.shift();
      if (c) {
        queued -= c.length;
        if (queued < budget / 2 && body.isPaused()) body.resume();
        yield c;
        continue;
      }
      if (failure !== undefined) throw failure;
      if (ended) return;
      await new Promise<void>((r) => (wake = r));
    }
  } finally {
    body.off('data', onData);
    body.off('end', onEnd);
    body.off('close', onEnd);
    body.off('error', onError);
  }
}

async function sha256File(p: string): Promise<string> {
  const h = createHash('sha256');
  for await (const c of createReadStream(p, { highWaterMark: 1024 * 1024 })) h.update(c as Buffer);
  return h.digest('hex');
}

/** Makes the rename durable (best effort where the platform cannot, io/durable.ts). */
const syncDir = fsyncDirectoryAsync;
