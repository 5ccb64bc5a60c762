/**
 * The download client of MC-BUP §3.6: the driver. What to request and how to
 * read each answer is decided by the pure core, src/protocol/downloader.ts;
 * this folder does the I/O, a file per job:
 *
 *   index.ts       downloadFile: the states in order, restarts, STATE_COMPLETE
 *   options.ts     the options, their defaults and checks
 *   probe.ts       STATE_SIZE: HEAD, or GET bytes=0-0
 *   segments.ts    STATE_DOWNLOAD: workers per segment, failures, retries
 *   fetch.ts       one range request and its body (single part, multipart, 200)
 *   stream.ts      a server stating no length: one stream from zero
 *   sinks.ts       the partial file (write batching) and stdout; body read-ahead
 *   partial.ts     the .bits-partial file: open/resume, read back, verify, durable rename
 *   checkpoint.ts  durable checkpoints (DownloadCheckpoint) and when they are due
 *
 * States: STATE_SIZE, STATE_DOWNLOAD, STATE_SUSPEND (errors: retried under the
 * one failure policy, src/protocol/failure.ts + src/client/retry.ts, until the
 * no-progress deadline; an abort signal) and STATE_COMPLETE (verify, fsync,
 * rename into place). STATE_SEARCH (MS-BPCR peer caching) is not implemented:
 * peer caching is deprecated since Windows 7.
 *
 * Fragment length. A GET can be resumed at any byte with Range + If-Range, so
 * a fragment boundary only costs a round trip: FRAGMENT_LENGTH is by default
 * the whole remaining window of a segment, streamed by one GET; durability
 * comes from checkpoints taken by bytes written instead (checkpoint.ts).
 * `fragmentSize` caps it if wanted.
 *
 * Progress, for the no-progress deadline, is bytes durably held beyond the
 * high-water mark: a checkpoint reports them (ProgressDeadline.record), and
 * the deadline's signal goes with every request and body read, so a connect,
 * a response wait or a body stalling half-way all end on time.
 *
 * `-o -` streams to stdout: bytes must be written in order and nothing can be
 * taken back, so there is no partial file, no resume and no segments, and a
 * content change mid-way is an error instead of a restart.
 */
import * as path from 'node:path';
import { HttpTransport, type Transport } from '../../transport/http.js';
import { InterruptedError, ProtocolError, SourceChangedError, UsageError, toBitsError } from '../../errors.js';
import { formatBytes } from '../../units.js';
import { parseRangeList } from '../../protocol/content-range.js';
import { buildToc, resolveApplicationRanges, type AppRange } from '../../protocol/download-ranges.js';
import { defaultOutputName, validatorsFrom, type Validators } from '../../protocol/download-validate.js';
import { DownloadTable, type SourceState } from '../../protocol/downloader.js';
import type { RetryPolicy } from '../../protocol/failure.js';
import type { TransferEvent } from '../events.js';
import { resolveSettings, type DownloadResult, type DownloadRunOptions } from './options.js';
import { ProgressDeadline, RetryBudget } from '../retry.js';
import { Checkpointer, type DownloadCheckpoint } from './checkpoint.js';
import { readRange } from './fetch.js';
import { exists, existsError, finishPartial, openPartial, readBack, removePartial, resetPartial, PARTIAL_SUFFIX } from './partial.js';
import { stateSize } from './probe.js';
import { RestartRequired, runWorkers, type SegmentHost } from './segments.js';
import { FileSink, StreamSink, type Sink } from './sinks.js';
import { streamWhole } from './stream.js';
import { SourceRoutes } from './redirects.js';

export { PARTIAL_SUFFIX } from './partial.js';
export type { DownloadOptions, DownloadResult, DownloadRunOptions } from './options.js';
export { parseDownloadCheckpoint, type DownloadCheckpoint } from './checkpoint.js';
export type { SourceState } from '../../protocol/downloader.js';
export { readAhead } from './sinks.js';

export async function downloadFile(opts: DownloadRunOptions): Promise<DownloadResult> {
  return new Download(opts).run();
}

/** Removes the partial file of a download (§3.6.4.3 Cancel Download). */
export async function cancelDownload(cp: DownloadCheckpoint): Promise<void> {
  await removePartial(cp.partialPath);
}

/** Progress events at most this often (~5 per second). */
const PROGRESS_INTERVAL_MS = 200;
/** A restart per content change; a server changing it more often than this is not worth chasing. */
const MAX_RESTARTS = 3;

class Download implements SegmentHost {
  readonly transport: Transport;
  private readonly ownTransport: HttpTransport | undefined;
  private readonly emit: (e: TransferEvent) => void;
  private readonly checkpointer: Checkpointer;
  private readonly noProgressMs: number;
  private readonly policy: RetryPolicy;
  readonly fragmentSize: number;

  private readonly url: string;
  private readonly mirrors: string[];
  private outputPath = '';
  private partialPath = '';
  private readonly toStdout: boolean;
  private readonly rangeText?: string;
  private readonly segmentsWanted: number;
  private readonly sha256?: string;
  private readonly force: boolean;

  private sources: SourceState[] = [];
  /** The origin's DATA_LENGTH, DATA_TIMESTAMP and ETag. */
  private validators: Validators = {};
  table: DownloadTable = new DownloadTable({ appRanges: [], toc: [], sources: [] });
  private sinkOrUndefined?: Sink;
  private probeHeaders: Record<string, string> = {};
  private unknownLength = false;
  private lastProgressEmit = 0;
  private readonly warned = new Set<string>();
  /** Aborts the requests of the current attempt (user abort, restart, another worker's failure). */
  private runAbort = new AbortController();
  private deadline: ProgressDeadline;

  constructor(private readonly opts: DownloadRunOptions) {
    this.emit = (e) => {
      try {
        opts.onEvent?.(e);
      } catch {
        /* a listener's failure must not break the transfer */
      }
    };
    const set = resolveSettings(opts);
    this.noProgressMs = set.noProgressMs;
    this.policy = set.policy;
    this.checkpointer = new Checkpointer(set.timing, () => this.takeCheckpoint());
    this.fragmentSize = set.fragmentSize;
    this.url = set.url;
    this.mirrors = set.mirrors;
    this.toStdout = set.toStdout;
    this.rangeText = set.rangeText;
    this.sha256 = set.sha256;
    this.force = set.force;
    this.segmentsWanted = set.segments;
    this.deadline = this.newDeadline(0);
    let inner: Transport;
    if (opts.httpTransport) {
      inner = opts.httpTransport;
    } else {
      this.ownTransport = new HttpTransport({
        ...opts.transport,
        // The credentials are for the URLs the user named, not for where they redirect.
        credentialOrigins: opts.transport?.credentialOrigins ?? [this.url, ...this.mirrors],
        connections: Math.max(1, this.segmentsWanted, opts.transport?.connections ?? 1),
      });
      inner = this.ownTransport;
    }
    this.transport = new SourceRoutes(inner, () => this.sources, opts.transport?.redirects ?? 'follow', this.emit);
  }

  // -------------------------------------------------------------------------
  // SegmentHost / FetchContext

  get sink(): Sink {
    if (!this.sinkOrUndefined) throw new Error('download sink used before it was opened');
    return this.sinkOrUndefined;
  }
  get signal(): AbortSignal {
    return this.deadline.signal;
  }
  get dataLength(): number | undefined {
    return this.validators.length;
  }
  get workers(): number {
    return this.toStdout ? 1 : this.segmentsWanted;
  }
  wrote(bytes: number): void {
    this.checkpointer.wrote(bytes);
    this.progress();
  }
  flushWarnings(): void {
    for (const w of this.table.takeWarnings()) this.warn(w);
  }
  abortRun(reason: Error): void {
    if (!this.runAbort.signal.aborted) this.runAbort.abort(reason);
  }
  abortReason(): Error | undefined {
    if (this.runAbort.signal.aborted) {
      const r: unknown = this.runAbort.signal.reason;
      return r instanceof Error ? r : new InterruptedError();
    }
    return this.deadline.expired ? this.deadline.timeoutError() : undefined;
  }
  newBudget(): RetryBudget {
    return new RetryBudget(this.deadline, {
      userSignal: this.runAbort.signal,
      policy: this.policy,
      onRetry: (r) => this.emit({ type: 'retry', ...r }),
    });
  }
  checkpoint(): Promise<void> {
    return this.checkpointer.flush();
  }
  phase(p: 'retrying' | 'transferring', detail?: string): void {
    this.emit({ type: 'phase', phase: p, ...(detail !== undefined ? { detail } : {}) });
  }

  /** Runs `fn` under the one retry policy until it succeeds, fails for good or the deadline passes. */
  async retrying<T>(fn: () => Promise<T>): Promise<T> {
    const budget = this.newBudget();
    for (;;) {
      try {
        return await fn();
      } catch (err) {
        const why = this.abortReason();
        if (why) throw why;
        await budget.wait(err);
      }
    }
  }

  private newDeadline(startOffset: number): ProgressDeadline {
    this.deadline?.dispose();
    return new ProgressDeadline(this.noProgressMs, startOffset, Date.now, this.runAbort.signal);
  }

  // -------------------------------------------------------------------------

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
      await this.checkpointer.flushQuietly();
      // Only what the job will really be (suspend or retry): a 404 ends in error, and saying suspended first would contradict it.
      if (e.disposition === 'suspend' || e.disposition === 'retry') this.emit({ type: 'phase', phase: 'suspended', detail: e.message });
      this.emit({ type: 'error', error: { code: e.code, message: e.message, exitCode: e.exitCode, resumable: e.resumable && !this.toStdout } });
      throw e;
    } finally {
      userSignal?.removeEventListener('abort', onUserAbort);
      this.deadline.dispose();
      await this.sinkOrUndefined?.close().catch(() => {});
      this.sinkOrUndefined = undefined;
      await this.ownTransport?.destroy().catch(() => {});
    }
  }

  private async runInner(): Promise<DownloadResult> {
    const cp = this.opts.resume;
    this.emit({ type: 'phase', phase: 'connecting', detail: this.url });
    if (cp) {
      this.outputPath = cp.outputPath;
      this.partialPath = cp.partialPath;
      this.sources = cp.sources.map((s) => ({ ...s, validators: { ...s.validators } }));
      this.validators = { ...cp.validators };
      this.table = new DownloadTable({ appRanges: cp.applicationRanges.map((r) => ({ ...r })), toc: cp.toc.map((r) => ({ ...r })), sources: this.sources });
      if (!this.force && (await exists(this.outputPath))) throw existsError(this.outputPath);
      // §3.6.4.2: with DATA_TIMESTAMP/length known go straight to STATE_DOWNLOAD.
      if (this.validators.length === undefined) {
        await this.stateSize();
        this.plan();
        await this.open(false);
      } else {
        await this.open(true);
        await this.verifyOverlap();
      }
    } else {
      if (this.opts.output !== undefined && !this.toStdout) {
        this.outputPath = path.resolve(this.opts.cwd ?? process.cwd(), this.opts.output);
        if (!this.force && (await exists(this.outputPath))) throw existsError(this.outputPath);
      }
      this.sources = [this.url, ...this.mirrors].map((url) => ({ url, validators: {}, singleRangeOnly: false, ignoresRanges: false }));
      await this.stateSize();
      if (this.opts.output === undefined) {
        const cwd = this.opts.cwd ?? process.cwd();
        const name = defaultOutputName(new URL(this.url), this.probeHeaders);
        // Never outside the current folder, whatever the server suggested.
        this.outputPath = path.join(cwd, name);
        if (path.dirname(this.outputPath) !== path.resolve(cwd)) this.outputPath = path.join(cwd, 'download.bin');
        if (!this.force && (await exists(this.outputPath))) throw existsError(this.outputPath);
      }
      this.partialPath = this.toStdout ? '' : this.outputPath + PARTIAL_SUFFIX;
      this.plan();
      await this.open(false);
    }

    const resumedAt = this.table.bytesDone;
    this.deadline = this.newDeadline(resumedAt);
    this.emit({
      type: 'start',
      kind: 'download',
      source: this.url,
      destination: this.toStdout ? '-' : this.outputPath,
      ...(!this.unknownLength ? { totalBytes: this.table.total } : {}),
      ...(resumedAt > 0 ? { resumedAt } : {}),
    });
    if (resumedAt > 0) this.emit({ type: 'info', message: `resuming at ${formatBytes(resumedAt)}${this.table.total !== undefined ? ` of ${formatBytes(this.table.total)}` : ''}` });

    if (this.unknownLength) await this.streamUnknownLength();
    else await this.downloadWithRestarts();
    return this.complete();
  }

  private async stateSize(): Promise<void> {
    const { probed } = await stateSize(
      {
        transport: this.transport,
        signal: this.signal,
        retrying: (fn) => this.retrying(fn),
        drop: (s, why) => {
          this.table.drop(s, why);
          this.flushWarnings();
        },
      },
      this.sources,
    );
    this.probeHeaders = probed.headers;
    this.validators = { ...probed.validators };
    this.unknownLength = probed.validators.length === undefined;
  }

  /** APPLICATION_RANGES and the Table of Contents for the length just learnt. */
  private plan(): void {
    if (this.unknownLength) {
      if (this.rangeText !== undefined) throw new ProtocolError(`${this.url} does not state its length, which --range needs`);
      if (this.segmentsWanted > 1) this.warn('the server does not state the length: downloading in one stream, without segments');
      this.table = new DownloadTable({ appRanges: [], toc: [], sources: this.sources });
      return;
    }
    const length = this.validators.length!;
    const specs = this.rangeText !== undefined ? parseRangeList(this.rangeText) : undefined;
    const { ranges, unsatisfiable } = resolveApplicationRanges(specs, length);
    if (unsatisfiable > 0) {
      throw new UsageError(`--range names ${unsatisfiable === 1 ? 'a range' : `${unsatisfiable} ranges`} beyond the ${length}-byte content`);
    }
    this.table = DownloadTable.plan(ranges, this.sources, this.toStdout ? 1 : this.segmentsWanted, this.opts.minSegmentBytes ?? 1024 * 1024);
  }

  private async open(resuming: boolean): Promise<void> {
    if (this.toStdout) {
      this.sinkOrUndefined = new StreamSink(this.opts.stdout ?? process.stdout);
      return;
    }
    this.sinkOrUndefined = await openPartial(this.partialPath, this.table, resuming, (type, message) =>
      type === 'info' ? this.emit({ type, message }) : this.warn(message),
    );
  }

  /**
   * Issue 12.7: a source without validators gets the bytes before each resume
   * point re-read and compared; a difference means the content changed while
   * the download was suspended, and it starts again from zero.
   */
  private async verifyOverlap(): Promise<void> {
    const checks = this.table.overlapChecks();
    if (checks.length === 0) return;
    const fh = (this.sink as FileSink).fh;
    for (const c of checks) {
      const remote = await this.retrying(() => readRange(this.transport, c.source, c.offset, c.length, this.signal));
      const local = await readBack(fh, c.at, c.length);
      if (!remote.equals(local)) {
        this.warn(
          `${new URL(c.source.url).host} sends no ETag or Last-Modified, and the ${formatBytes(c.length)} before the resume point differ from the partial file: the content changed; starting again from zero`,
          true,
        );
        this.table.forgetAll();
        await this.checkpointer.flush();
        await resetPartial(fh, this.table.total);
        return;
      }
    }
    this.emit({ type: 'info', message: `the server sends no validators: checked ${formatBytes(checks.reduce((n, c) => n + c.length, 0))} before the resume point, unchanged` });
  }

  // -------------------------------------------------------------------------
  // STATE_DOWNLOAD

  private async downloadWithRestarts(): Promise<void> {
    for (let restarts = 0; ; restarts++) {
      try {
        await runWorkers(this);
        return;
      } catch (err) {
        if (!(err instanceof RestartRequired)) throw err;
        if (this.opts.signal?.aborted) throw new InterruptedError();
        if (this.toStdout && (this.sink as StreamSink).pos > 0) {
          throw new SourceChangedError(`the content changed on the server during the download (${err.message}); bytes already written to stdout cannot be taken back`, 'remote');
        }
        if (restarts >= MAX_RESTARTS) throw new SourceChangedError(`the content keeps changing on the server (${err.message}); giving up`, 'remote');
        this.warn(`the content changed on the server (${err.message}); starting again from zero`, true);
        this.runAbort = new AbortController();
        // Record "nothing held" durably before any byte of the new version is written.
        this.table.forgetAll();
        this.validators = {};
        await this.checkpointer.flush();
        for (const s of this.sources) {
          // Every source is asked again: a mirror may have the new version too.
          delete s.dropped;
          delete s.finalUrl;
          s.validators = {};
          s.singleRangeOnly = false;
          s.ignoresRanges = false;
        }
        this.deadline = this.newDeadline(0);
        await this.stateSize();
        this.plan();
        if (this.unknownLength) throw new SourceChangedError('the content changed and no longer states its length', 'remote');
        await resetPartial((this.sink as FileSink).fh, this.table.total);
        this.emit({ type: 'start', kind: 'download', source: this.url, destination: this.outputPath, totalBytes: this.table.total });
      }
    }
  }

  /** A server that states no length: one stream (stream.ts), then a table of the length it had. */
  private async streamUnknownLength(): Promise<void> {
    const src = this.table.liveSources()[0]!;
    const { length, headers } = await streamWhole({
      transport: this.transport,
      sink: this.sink,
      source: src,
      signal: () => this.signal,
      interrupted: () => this.runAbort.signal.aborted,
      budget: this.newBudget(),
      emit: this.emit,
    });
    this.validators = { ...validatorsFrom(200, headers), length };
    src.validators = { ...this.validators };
    const appRanges: AppRange[] = [{ offset: 0, length }];
    this.table = new DownloadTable({ appRanges, toc: buildToc(appRanges, [0], [src.url]), sources: this.sources });
    for (const p of this.table.placements([0], 0, length)) this.table.advance(p);
    this.unknownLength = false;
    if (this.sink instanceof FileSink) await this.sink.fh.truncate(length);
    await this.checkpointer.flush();
  }

  // -------------------------------------------------------------------------
  // Checkpoints and progress

  /** fsync, then report what was written before it as done and as progress. Serialised by the Checkpointer. */
  private async takeCheckpoint(): Promise<void> {
    if (!this.sinkOrUndefined) return;
    const snapshot = this.table.snapshot();
    await this.sinkOrUndefined.sync();
    this.table.markDurable(snapshot);
    this.deadline.record(this.table.bytesDone);
    if (!this.toStdout && this.opts.onCheckpoint) await this.opts.onCheckpoint(this.checkpointRecord());
    // Segment progress is durable progress: it moves here.
    this.progress();
  }

  private progress(force = false): void {
    const now = Date.now();
    if (!force && now - this.lastProgressEmit < PROGRESS_INTERVAL_MS) return;
    this.lastProgressEmit = now;
    const segments = this.table.segmentCount > 1 ? { segments: this.table.segmentProgress() } : {};
    this.emit({ type: 'progress', bytesDone: this.table.bytesWritten, ...(this.unknownLength ? {} : { totalBytes: this.table.total }), ...segments });
  }

  private checkpointRecord(): DownloadCheckpoint {
    const origin = this.sources.find((s) => s.url === this.url);
    return {
      version: 1,
      url: this.url,
      mirrors: [...this.mirrors],
      outputPath: this.outputPath,
      partialPath: this.partialPath,
      validators: { ...this.validators },
      ...(this.rangeText !== undefined ? { rangeText: this.rangeText } : {}),
      applicationRanges: this.table.appRanges.map((r) => ({ ...r })),
      toc: this.table.toc.map((r) => ({ ...r })),
      sources: this.sources.map((s) => ({ ...s, validators: { ...s.validators } })),
      singleRangeOnly: origin?.singleRangeOnly ?? false,
      segments: this.segmentsWanted,
      ...(this.sha256 ? { sha256: this.sha256 } : {}),
      force: this.force,
      bytesDone: this.table.bytesDone,
      ...(this.unknownLength ? {} : { totalBytes: this.table.total }),
    };
  }

  private warn(message: string, always = false): void {
    if (!always && this.warned.has(message)) return;
    this.warned.add(message);
    this.emit({ type: 'warning', message });
  }

  // -------------------------------------------------------------------------
  // STATE_COMPLETE

  private async complete(): Promise<DownloadResult> {
    await this.checkpointer.flush();
    const bytes = this.table.total;
    let digest: string | undefined;
    if (this.sink instanceof StreamSink) {
      digest = this.sink.hash.digest('hex');
      if (this.sha256 && digest !== this.sha256) {
        throw new SourceChangedError(`sha256 mismatch: expected ${this.sha256}, got ${digest} (already written to stdout)`, 'remote');
      }
    } else {
      const sink = this.sink as FileSink;
      await sink.fh.sync();
      await sink.close();
      this.sinkOrUndefined = undefined;
      digest = await finishPartial({
        partialPath: this.partialPath,
        outputPath: this.outputPath,
        ...(this.sha256 ? { sha256: this.sha256 } : {}),
        force: this.force,
        onVerify: () => this.emit({ type: 'phase', phase: 'verifying' }),
      });
    }
    this.progress(true);
    const destination = this.toStdout ? '-' : this.outputPath;
    this.emit({ type: 'complete', bytes, destination, ...(digest ? { sha256: digest } : {}) });
    return { path: destination, bytes, ...(digest ? { sha256: digest } : {}), checkpoint: this.checkpointRecord() };
  }
}
