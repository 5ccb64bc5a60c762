/**
 * Running a transfer as a persistent job, for any caller (the foreground CLI
 * in src/cli/foreground.ts, a test, a future service): create, run, cancel,
 * clean. Progress goes to the event sink the caller passes, a stop request
 * comes in as an AbortSignal; nothing here prints, reads signals or knows the
 * command line.
 *
 * - The job is written (queued, then claimed: transferring + runner pid) before
 *   the first request, so a kill at any moment leaves a record `bits resume`
 *   can continue.
 * - Every checkpoint the client reports (upload: after CREATE-SESSION and each
 *   acknowledged fragment; download: after each durable write batch) is
 *   written to the store and the write is awaited before the client sends the
 *   next request, so a kill loses at most the fragment in flight — and the
 *   server's BITS-Received-Content-Range (or the partial file) resyncs that.
 * - The end is always releaseJob + the final state outcomeForError decides
 *   (src/jobs/outcome.ts): complete, suspended, error or cancelled.
 *
 * Credentials are never stored: a job keeps its TransportSettings (no secret)
 * and where the credentials came from; src/jobs/transport.ts asks again.
 */
import { promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { CancelledError, InterruptedError, ServerError, StoreError, UsageError, formatErrorLine, toBitsError, type BitsError } from '../errors.js';
import type { TransferEvent } from '../client/events.js';
import type { TransportOptions } from '../transport/http.js';
import { cancelUpload, newUploadCheckpoint, uploadFile, type UploadResult } from '../client/upload.js';
import { cancelDownload, downloadFile, PARTIAL_SUFFIX, type DownloadCheckpoint as ClientDownloadCheckpoint, type DownloadResult } from '../client/download.js';
import { assertSourceUnchanged, statSourceFile } from '../io/source-file.js';
import { parseSizeText } from '../units.js';
import {
  isCleanable,
  isResumable,
  redactUrl,
  unredactUrl,
  type Job,
  type JobOptions,
  type JobStore,
  type TransportSettings,
  upgradeUploadCheckpoint,
} from '../store/index.js';
import { isProcessAlive } from '../store/process.js';
import { jobErrorFrom } from './lifecycle.js';
import { outcomeForError } from './outcome.js';
import { claimJob, isOwnRunner, releaseJob, runnerAlive } from './running.js';
import { fromStoredDownload, toStoredDownload } from './checkpoints.js';
import { shortTimers, transportForJob } from './transport.js';
import type { UploadCheckpoint } from '../protocol/uploader.js';

// ---------------------------------------------------------------------------
// Creating jobs.

export interface UploadJobSpec {
  /** Local source (made absolute). */
  file: string;
  url: string;
  fragmentSize: number;
  noProgressTimeoutMs: number;
  /** `-` = stdout. */
  replyFile?: string;
  requireReply: boolean;
  /** Send BITS messages as POST with X-Http-Method-Override (kept for resume and cancel). */
  methodOverride?: boolean;
  /** How to reach the server, now and on every resume (src/cli/transport-options.ts builds it from the flags). */
  transport: TransportSettings;
}

/** Writes a new upload job (state queued) before anything touches the network. */
export async function createUploadJob(store: JobStore, spec: UploadJobSpec): Promise<Job> {
  const file = path.resolve(spec.file);
  // The store keeps the client's own checkpoint (src/protocol/uploader.ts UploadCheckpoint), from the first write on.
  const upload = await newUploadCheckpoint(file, spec.fragmentSize);
  const options: JobOptions = { fragmentSize: spec.fragmentSize, timeouts: { noProgress: spec.noProgressTimeoutMs }, requireReply: spec.requireReply };
  if (spec.methodOverride) options.methodOverride = true;
  const replyFile = spec.replyFile === undefined || spec.replyFile === '-' ? spec.replyFile : path.resolve(spec.replyFile);
  if (replyFile !== undefined) options.replyFile = replyFile;
  return store.create({
    kind: 'upload',
    source: file,
    destination: spec.url,
    totalBytes: upload.sourceEntitySize,
    options,
    transport: spec.transport,
    upload,
    ...(spec.transport.credentialSource ? { credentialSource: { ...spec.transport.credentialSource } } : {}),
  });
}

export interface DownloadJobSpec {
  url: string;
  /** As given (`-` is not a job: stdout cannot resume). Undefined: the server's name, in cwd. */
  output?: string;
  cwd: string;
  force: boolean;
  ranges?: string;
  segments?: number;
  mirrors: string[];
  sha256?: string;
  fragmentSize?: number;
  noProgressTimeoutMs: number;
  transport: TransportSettings;
}

/** Writes a new download job (state queued) before the first request. */
export async function createDownloadJob(store: JobStore, spec: DownloadJobSpec): Promise<Job> {
  const cwd = path.resolve(spec.cwd);
  const options: JobOptions = { timeouts: { noProgress: spec.noProgressTimeoutMs }, cwd, force: spec.force };
  if (spec.output !== undefined) options.output = path.resolve(cwd, spec.output);
  if (spec.ranges !== undefined) options.ranges = spec.ranges;
  if (spec.segments !== undefined) options.segments = spec.segments;
  if (spec.mirrors.length) options.mirrors = spec.mirrors.map(redactUrl);
  if (spec.sha256 !== undefined) options.sha256 = spec.sha256;
  if (spec.fragmentSize !== undefined) options.fragmentSize = spec.fragmentSize;
  return store.create({
    kind: 'download',
    source: spec.url,
    // Until the server names the file: the folder it will be written to.
    destination: spec.output !== undefined ? path.resolve(cwd, spec.output) : cwd + path.sep,
    options,
    transport: spec.transport,
    ...(spec.transport.credentialSource ? { credentialSource: { ...spec.transport.credentialSource } } : {}),
  });
}

// ---------------------------------------------------------------------------
// Running jobs.

export interface RunContext {
  store: JobStore;
  /** Gets every event; 'complete' only once the store says complete. */
  onEvent?: (e: TransferEvent) => void;
  /** Abort = suspend the job (the reason should be an InterruptedError). */
  signal?: AbortSignal;
  /** The transport for this run; default: rebuilt from the job's stored settings (credentials asked again). */
  transport?: TransportOptions;
}

/** Runs (or continues) a job of either kind; throws the BitsError it ended with, after recording it. */
export async function runJob(jobId: string, ctx: RunContext): Promise<Job> {
  const job = await ctx.store.get(jobId);
  const { job: done } = job.kind === 'upload' ? await runUploadJob(job.id, ctx) : await runDownloadJob(job.id, ctx);
  return done;
}

/**
 * Claims the job for this process (state transferring) and runs a `transfer`,
 * turning how it ends into the job's final state. Rethrows the transfer's
 * error after recording it; an interrupt that `bits cancel --force` asked for
 * (requestCancel) ends as that cancel, a CancelledError.
 */
async function runClaimed<T>(
  ctx: RunContext,
  jobId: string,
  transport: TransportOptions,
  transfer: (job: Job, emit: (e: TransferEvent) => void) => Promise<T>,
  completePatch: (r: T) => Partial<Job>,
): Promise<{ job: Job; result: T }> {
  let held: TransferEvent | undefined;
  // The final 'complete' event prints the outcome; hold it until the store agrees.
  // A client's own 'error' event is dropped: the outcome is printed once the store has recorded it.
  const emit = (e: TransferEvent) => {
    if (e.type === 'complete') held = e;
    else if (e.type !== 'error') ctx.onEvent?.(e);
  };
  const job = await claimJob(ctx.store, jobId, { state: 'transferring', cancelRequested: undefined });
  let result: T;
  try {
    result = await transfer(job, emit);
  } catch (err) {
    const out = outcomeForError(err);
    let cancelAsked = false;
    try {
      // A job another process took over (it judged us dead) is theirs to record.
      const cur = await ctx.store.get(jobId);
      cancelAsked = cur.cancelRequested !== undefined;
      if (!cur.runner || isOwnRunner(cur)) await releaseJob(ctx.store, jobId, { state: out.state, lastError: out.lastError });
    } catch (storeErr) {
      // The transfer's error is what the user needs; a store failure on top is reported but must not hide it.
      ctx.onEvent?.({ type: 'warning', message: `could not record the job's state: ${toBitsError(storeErr).message}` });
    }
    if (cancelAsked && toBitsError(err) instanceof InterruptedError) throw await cancelNow(ctx.store, jobId, transport);
    throw err;
  }
  const done = await releaseJob(ctx.store, jobId, { state: 'complete', lastError: undefined, ...completePatch(result) });
  if (held) ctx.onEvent?.(held);
  return { job: done, result };
}

/**
 * Cancels a job this process just stopped (Ctrl-C twice, or `bits cancel
 * --force` from another process), with short timers: the user is waiting.
 * Returns the error the run ends with: CancelledError, or why it could not cancel.
 */
export async function cancelNow(store: JobStore, jobId: string, transport: TransportOptions | undefined): Promise<BitsError> {
  try {
    const j = await store.get(jobId);
    const { message } = await cancelJob(store, jobId, { transport: shortTimers(transport ?? transportForJob(j)) });
    return new CancelledError(message);
  } catch (err) {
    return toBitsError(err);
  }
}

/** How often a running upload writes its checkpoint to the job store (see UploadCheckpointWriter). */
const UPLOAD_CHECKPOINT_INTERVAL_MS = 1000;

/**
 * Writes an upload's checkpoints to the job store about once a second, and always
 * when the session changes and when the run ends. Per fragment would be an fsync
 * every few milliseconds at loopback speed, for nothing: on resume the server's
 * offset wins (§3.1.4.3), so a checkpoint that lags only costs a resync forward
 * (src/protocol/uploader.ts earlierRunsMayHaveSentMore). What must never lag is the
 * session id: a kill -9 right after CREATE-SESSION resumes that session, not a new one.
 */
class UploadCheckpointWriter {
  private written: UploadCheckpoint | undefined;
  private pending: UploadCheckpoint | undefined;
  private lastWriteAt = 0;

  constructor(private readonly write: (cp: UploadCheckpoint) => Promise<void>) {}

  /** Awaited by the client before its next request. */
  async offer(cp: UploadCheckpoint): Promise<void> {
    const sessionChanged = cp.bitsSessionId !== this.written?.bitsSessionId || cp.bitsHostId !== this.written?.bitsHostId;
    const done = cp.bytesTransferred === cp.sourceEntitySize;
    if (sessionChanged || done || Date.now() - this.lastWriteAt >= UPLOAD_CHECKPOINT_INTERVAL_MS) {
      await this.flush(cp);
    } else {
      this.pending = cp;
    }
  }

  /** Runs the upload and writes the last checkpoint it held back, however the run ends. */
  async around<T>(run: () => Promise<T>): Promise<T> {
    let result: T;
    try {
      result = await run();
    } catch (err) {
      // The run's error is what the user needs; a store that refuses the last write (a takeover) must not hide it.
      await this.flush(this.pending).catch(() => {});
      throw err;
    }
    await this.flush(this.pending);
    return result;
  }

  private async flush(cp: UploadCheckpoint | undefined): Promise<void> {
    this.pending = undefined;
    if (!cp) return;
    await this.write(cp);
    this.written = cp;
    this.lastWriteAt = Date.now();
  }
}

/** Runs (or continues, from its checkpoint) an upload job. */
async function runUploadJob(jobId: string, ctx: RunContext): Promise<{ job: Job; result: UploadResult }> {
  // Before the claim: a password that cannot be asked for is a usage error, not the job's failure.
  const stored = await ctx.store.get(jobId);
  const transport = ctx.transport ?? transportForJob(stored);
  // A URL whose query secret was not stored: refused (exit 2) before the claim, like a password that cannot be asked for.
  const url = unredactUrl(stored.destination);
  return runClaimed(
    ctx,
    jobId,
    transport,
    async (job, emit) => {
      // A changed source must never be mixed into a session. Records of the previous release are read too.
      const u = upgradeUploadCheckpoint(job.upload);
      if (u) await assertSourceUnchanged(job.source, { size: u.sourceEntitySize, mtimeMs: u.sourceMtimeMs }, `cancel the job (bits cancel ${job.id}) and upload again`);
      else await statSourceFile(job.source);
      const o = job.options ?? {};
      const replyFile = o.replyFile;
      const checkpoints = new UploadCheckpointWriter(async (cp) => {
        await ctx.store.update(jobId, (j) => {
          if (!isOwnRunner(j)) throw new StoreError(`job ${jobId} was taken over by another process (pid ${j.runner?.pid ?? '?'}); stopping`);
          return { ...j, bytesDone: cp.bytesTransferred, upload: cp };
        });
      });
      return checkpoints.around(() => uploadFile({
        file: job.source,
        url,
        fragmentSize: o.fragmentSize ?? job.upload?.fragmentSize,
        replyFile,
        requireReply: o.requireReply === true || replyFile !== undefined,
        methodOverride: o.methodOverride === true,
        ...(o.timeouts?.noProgress !== undefined ? { noProgressTimeoutMs: o.timeouts.noProgress } : {}),
        transport,
        ...(u ? { resume: u } : {}),
        onEvent: emit,
        signal: ctx.signal,
        onCheckpoint: (cp) => checkpoints.offer(cp),
      }));
    },
    (r) => ({ bytesDone: r.bytes }),
  );
}

/** A stored download checkpoint with the query secrets of its URLs back (src/store/secrets.ts unredactUrl). */
function withFullUrls(cp: ClientDownloadCheckpoint | undefined): ClientDownloadCheckpoint | undefined {
  if (!cp) return cp;
  return {
    ...cp,
    url: unredactUrl(cp.url),
    mirrors: cp.mirrors.map((m) => unredactUrl(m)),
    sources: cp.sources.map((x) => ({ ...x, url: unredactUrl(x.url) })),
    toc: cp.toc.map((r) => ({ ...r, source: r.source === null ? null : unredactUrl(r.source) })),
  };
}

/** A cancel must not be refused for a secret it cannot restore: the server then refuses it, and --force removes the job. */
function fullUrlOrStored(url: string): string {
  try {
    return unredactUrl(url);
  } catch {
    return url;
  }
}

/** Where a download job's partial file is (or would be). */
function partialPathOf(job: Job): string | undefined {
  const cp = fromStoredDownload(job);
  if (cp?.partialPath) return cp.partialPath;
  const out = job.options?.output;
  return out !== undefined ? out + PARTIAL_SUFFIX : undefined;
}

async function fileSize(p: string): Promise<number | undefined> {
  try {
    return (await fsp.stat(p)).size;
  } catch {
    return undefined;
  }
}

/**
 * A kill after the partial file was renamed to the output but before the
 * store said complete: every byte was checkpointed, the partial file is gone
 * and the output has the full size. Downloading again would refuse (the
 * output exists), so recognise it.
 */
async function finishedBeforeKill(cp: ClientDownloadCheckpoint): Promise<boolean> {
  if (cp.totalBytes === undefined || cp.bytesDone !== cp.totalBytes) return false;
  if ((await fileSize(cp.partialPath)) !== undefined) return false;
  return (await fileSize(cp.outputPath)) === cp.totalBytes;
}

/**
 * BITS_CHECKPOINT_BYTES: bytes a download writes between durable checkpoints
 * (default: the client's 4 MiB; at least 64 KiB). Smaller loses less to a
 * crash on a slow link, at the cost of an fsync and a store write each time.
 */
function checkpointBytesFromEnv(env: NodeJS.ProcessEnv = process.env): number | undefined {
  const v = env['BITS_CHECKPOINT_BYTES'];
  if (v === undefined || v.trim() === '') return undefined;
  const n = parseSizeText(v);
  if (n === undefined || n < 64 * 1024) throw new UsageError(`BITS_CHECKPOINT_BYTES must be a size of at least 64K, got ${JSON.stringify(v)}`);
  return n;
}

/** Runs (or continues, from its checkpoint) a download job. */
async function runDownloadJob(jobId: string, ctx: RunContext): Promise<{ job: Job; result: DownloadResult }> {
  const stored = await ctx.store.get(jobId);
  const transport = ctx.transport ?? transportForJob(stored);
  const url = unredactUrl(stored.source);
  return runClaimed(
    ctx,
    jobId,
    transport,
    async (job, emit) => {
      const o = job.options ?? {};
      const resume = withFullUrls(fromStoredDownload(job));
      if (resume && (await finishedBeforeKill(resume))) {
        emit({ type: 'start', kind: 'download', source: job.source, destination: resume.outputPath, totalBytes: resume.totalBytes, resumedAt: resume.bytesDone });
        emit({ type: 'complete', bytes: resume.bytesDone, destination: resume.outputPath });
        return { path: resume.outputPath, bytes: resume.bytesDone, checkpoint: resume };
      }
      const checkpointBytes = checkpointBytesFromEnv();
      const mirrors = (o.mirrors ?? []).map((m) => unredactUrl(m));
      return downloadFile({
        url,
        ...(o.output !== undefined ? { output: o.output } : {}),
        cwd: o.cwd ?? process.cwd(),
        force: o.force === true,
        ...(o.ranges !== undefined ? { ranges: o.ranges } : {}),
        ...(typeof o.segments === 'number' ? { segments: o.segments } : {}),
        mirrors,
        ...(o.sha256 !== undefined ? { sha256: o.sha256 } : {}),
        ...(o.fragmentSize !== undefined ? { fragmentSize: o.fragmentSize } : {}),
        ...(o.timeouts?.noProgress !== undefined ? { noProgressTimeoutMs: o.timeouts.noProgress } : {}),
        ...(checkpointBytes !== undefined ? { checkpointBytes } : {}),
        transport,
        ...(resume ? { resume } : {}),
        onEvent: emit,
        signal: ctx.signal,
        onCheckpoint: async (cp) => {
          await ctx.store.update(jobId, (j) => {
            if (!isOwnRunner(j)) throw new StoreError(`job ${jobId} was taken over by another process (pid ${j.runner?.pid ?? '?'}); stopping`);
            const next: Job = { ...j, bytesDone: cp.bytesDone, destination: cp.outputPath, download: toStoredDownload(cp) };
            if (cp.totalBytes !== undefined) next.totalBytes = cp.totalBytes;
            return next;
          });
        },
      });
    },
    (r) => ({ bytesDone: r.bytes, totalBytes: r.bytes, destination: r.path, download: toStoredDownload(r.checkpoint) }),
  );
}


/** Why a job cannot be resumed, as a one-line UsageError; undefined when it can. */
export function resumeRefusal(job: Job, alive: boolean): UsageError | undefined {
  if (job.state === 'complete') return new UsageError(`job ${job.id} is already complete; nothing to resume`);
  if (job.state === 'cancelled') return new UsageError(`job ${job.id} was cancelled; it cannot be resumed`);
  if (alive && !isOwnRunner(job)) {
    return new UsageError(`job ${job.id} is being transferred by pid ${job.runner!.pid} on ${job.runner!.host}; wait for it or stop that process`);
  }
  if (!isResumable(job, false)) {
    const why = job.lastError ? ` (${job.lastError.code}: ${job.lastError.message.replace(/\s*\n\s*/g, ' ')})` : '';
    return new UsageError(`job ${job.id} cannot be resumed${why}; cancel it with: bits cancel ${job.id}`);
  }
  return undefined;
}

// ---------------------------------------------------------------------------
// Cancelling and cleaning.

export interface CancelOptions {
  /**
   * A job another live process is transferring: ask it to cancel and stop it
   * (SIGTERM). A server that refuses CANCEL-SESSION: remove the job locally anyway.
   */
  force?: boolean;
  /** Default: rebuilt from the job's stored settings. */
  transport?: TransportOptions;
  /** How long --force waits for the runner to exit. */
  stopWaitMs?: number;
}

export interface CancelResult {
  job: Job;
  /** It was cancelled before this call (by someone else, or by its own runner on our request). */
  already: boolean;
  /** The server refused CANCEL-SESSION and --force removed the job anyway: the session may remain. */
  sessionMayRemain?: boolean;
  /** One line for people. */
  message: string;
}

/**
 * Cancels a job: an upload's server session is removed with CANCEL-SESSION
 * (a session the server no longer knows counts as cancelled); a download's
 * partial file is removed; the job becomes cancelled.
 * - The server cannot be reached: the job is left as it was and the error is
 *   thrown (exit 4), so the cancel can be retried: marking it cancelled
 *   locally would orphan the server's session and its disk space.
 * - The server refuses (400, 500): it will not change its mind. With `force`
 *   the job is cancelled locally (the session may remain); without, the job
 *   is recorded as failed (error, so `bits clean --all` removes it) and the
 *   refusal is thrown.
 */
export async function cancelJob(store: JobStore, idOrPrefix: string, opts: CancelOptions = {}): Promise<CancelResult> {
  let job = await store.get(idOrPrefix);
  if (job.state === 'cancelled') return { job, already: true, message: `job ${job.id} was already cancelled` };
  if (job.state === 'complete') throw new UsageError(`job ${job.id} is already complete; there is nothing to cancel (bits clean removes it)`);
  if (runnerAlive(job) && !isOwnRunner(job)) {
    const r = job.runner!;
    if (!opts.force) {
      throw new UsageError(`job ${job.id} is being transferred by pid ${r.pid} on ${r.host}; stop it first, or use: bits cancel --force ${job.id}`);
    }
    if (r.host !== os.hostname()) throw new UsageError(`job ${job.id} is being transferred on another machine (${r.host}, pid ${r.pid}); cancel it there`);
    // The runner, once stopped, sees the request and cancels the job itself (it has the credentials in memory) and ends as cancelled.
    await store.update(job.id, { cancelRequested: new Date().toISOString() });
    await stopRunner(r.pid, opts.stopWaitMs ?? 15_000);
    job = await store.get(job.id);
    if (job.state === 'cancelled') return { job, already: false, message: cancelledLine(job) };
    if (job.state === 'complete') throw new UsageError(`job ${job.id} completed before it could be cancelled`);
  }
  // Claimed while cancelling, so a `bits resume` started meanwhile is refused.
  job = await claimJob(store, job.id);
  try {
    if (job.kind === 'upload') {
      const cp = upgradeUploadCheckpoint(job.upload);
      if (cp) await cancelUpload(fullUrlOrStored(job.destination), cp, { transport: opts.transport ?? transportForJob(job), methodOverride: job.options?.methodOverride === true });
    } else {
      await cancelDownloadJob(job);
    }
  } catch (err) {
    const e = toBitsError(err);
    // A server that answered, even if only with errors until the cancel's deadline, refused; one that never answered is unreachable.
    const refusal = e instanceof ServerError ? e : e.cause instanceof ServerError ? e.cause : undefined;
    if (refusal && opts.force) {
      const done = await releaseJob(store, job.id, { state: 'cancelled', lastError: undefined, cancelRequested: undefined });
      return { job: done, already: false, sessionMayRemain: true, message: `job ${job.id} cancelled here; the server refused CANCEL-SESSION (${formatErrorLine(refusal)}), so its session may remain on the server` };
    }
    if (refusal) {
      await releaseJob(store, job.id, { state: 'error', lastError: jobErrorFrom(refusal), cancelRequested: undefined }).catch(() => undefined);
      throw Object.assign(refusal, { message: `could not cancel job ${job.id}: ${formatErrorLine(refusal)}; the server refused, so the job is kept as failed: bits cancel --force ${job.id} removes it here (the server session may remain)` });
    }
    await releaseJob(store, job.id, { cancelRequested: undefined }).catch(() => undefined);
    throw Object.assign(e, { message: `could not cancel job ${job.id}: ${formatErrorLine(e)}; the job is kept, run bits cancel ${job.id} again` });
  }
  const done = await releaseJob(store, job.id, { state: 'cancelled', lastError: undefined, cancelRequested: undefined });
  return { job: done, already: false, message: cancelledLine(done) };
}

function cancelledLine(job: Job): string {
  return `job ${job.id} cancelled${job.kind === 'upload' ? ' (the server session is removed)' : ' (the partial file is removed)'}`;
}

async function cancelDownloadJob(job: Job): Promise<void> {
  const cp = fromStoredDownload(job);
  if (cp) {
    await cancelDownload(cp);
    return;
  }
  const p = partialPathOf(job);
  if (p !== undefined) await fsp.rm(p, { force: true });
}

async function stopRunner(pid: number, waitMs: number): Promise<void> {
  try {
    process.kill(pid, 'SIGTERM');
  } catch {
    return; // already gone
  }
  const deadline = Date.now() + waitMs;
  while (isProcessAlive(pid)) {
    if (Date.now() > deadline) throw new UsageError(`pid ${pid} did not stop within ${Math.round(waitMs / 1000)} s of SIGTERM; stop it, then run bits cancel again`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

export interface CleanOptions {
  /** Also remove jobs that failed for good (state error), after cancelling their upload sessions best-effort. */
  all?: boolean;
  /** Bound on each best-effort CANCEL-SESSION; default 3 s. */
  cancelTimeoutMs?: number;
}

/**
 * `bits clean`: removes finished jobs (and with `all`, failed ones). A failed
 * upload's server session is cancelled first, best-effort: a server that is
 * gone or refuses does not keep the job. Nothing here prompts for a password
 * (BITS_PASSWORD is used when set). Downloaded, partial and reply files stay.
 */
export async function cleanJobs(store: JobStore, opts: CleanOptions = {}): Promise<Job[]> {
  const all = opts.all === true;
  if (all) {
    const failedUploads = (await store.list()).filter((j) => j.state === 'error' && j.kind === 'upload' && isCleanable(j, runnerAlive(j), true));
    for (const j of failedUploads) {
      const cp = upgradeUploadCheckpoint(j.upload);
      if (!cp) continue;
      const timeoutMs = opts.cancelTimeoutMs ?? 3000;
      try {
        await cancelUpload(j.destination, cp, {
          transport: shortTimers(transportForJob(j, { input: { isTTY: false } as unknown as NodeJS.ReadableStream }), timeoutMs),
          noProgressTimeoutMs: timeoutMs,
          methodOverride: j.options?.methodOverride === true,
        });
      } catch {
        // best-effort: the job goes either way
      }
    }
  }
  // Decided under the store lock, so a job a process claims meanwhile is not removed.
  return store.removeWhere((job) => isCleanable(job, runnerAlive(job), all));
}
