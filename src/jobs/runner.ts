/**
 * The glue between the job store and the transfer clients: every transfer is a
 * persistent job that survives kill -9.
 *
 * - The job is written (queued, then claimed: transferring + runner pid) before
 *   the first request, so a kill at any moment leaves a record `bits resume`
 *   can continue.
 * - Every checkpoint the client reports (upload: after CREATE-SESSION and each
 *   acknowledged fragment; download: after each durable write batch) is
 *   written to the store and the write is awaited before the client sends the
 *   next request, so a kill loses at most the fragment in flight — and the
 *   server's BITS-Received-Content-Range (or the partial file) resyncs that.
 * - The end is always releaseJob + a final state, chosen by outcomeForError
 *   (pure, unit-tested): complete, suspended, error or cancelled.
 *
 * Credentials are never stored: a job keeps the non-secret options
 * (persistableTransportOptions) and its credentialSource; resume and cancel
 * rebuild the transport with transportOptionsFrom, which asks for the password
 * again (BITS_PASSWORD, or a prompt on a terminal).
 */
import { promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {
  BitsError,
  CancelledError,
  InterruptedError,
  SourceChangedError,
  StoreError,
  TransportError,
  UsageError,
  formatErrorLine,
  toBitsError,
} from '../errors.js';
import type { TransferEvent } from '../client/events.js';
import type { TransportOptions } from '../transport/http.js';
import { cancelUpload, newUploadCheckpoint, uploadFile, type UploadResult } from '../client/upload.js';
import { assertSourceUnchanged } from '../io/source-file.js';
import {
  cancelDownload,
  downloadFile,
  PARTIAL_SUFFIX,
  type DownloadCheckpoint as ClientDownloadCheckpoint,
  type DownloadResult,
} from '../client/download.js';
import { isSecretHeader, redactUrl, type DownloadCheckpoint, type Job, type JobError, type JobOptions, type JobState, type JobStore, type JsonObject, upgradeUploadCheckpoint } from '../store/index.js';
import { isProcessAlive } from '../store/process.js';
import { isResumable, jobErrorFrom } from './lifecycle.js';
import { claimJob, isOwnRunner, releaseJob, runnerAlive } from './running.js';
import { onInterrupt, printFinal, type FinalState, type OutputOptions } from '../cli/run.js';
import { createReporter, type Reporter } from '../cli/output/reporter.js';
import { persistableTransportOptions, transportOptionsFrom } from '../cli/transport-options.js';
import { parseSizeOrUndefined } from '../cli/parse.js';

// ---------------------------------------------------------------------------
// Pure parts.

export type EndState = Extract<JobState, 'suspended' | 'error' | 'cancelled'>;

export interface JobOutcome {
  state: EndState;
  /** What to store as lastError; undefined clears it (an interrupt is not a failure worth showing). */
  lastError?: JobError;
}

/**
 * The state a job ends in after a transfer threw `err`:
 * - cancelled: CancelledError;
 * - suspended: InterruptedError (Ctrl-C, SIGTERM), and transient failures the
 *   client gave up on (network errors after retries, the no-progress timeout,
 *   a server error marked transient, a full disk) — `bits resume` retries them;
 * - error: everything else — a permanent server refusal, auth, protocol, TLS,
 *   a changed source, a bug. lastError.resumable (from the error) tells whether
 *   `bits resume` may still try it (a server refusal: yes, once the server is
 *   fixed; a changed source: no, the user must cancel).
 */
export function outcomeForError(err: unknown, now = new Date()): JobOutcome {
  const e = toBitsError(err);
  if (e instanceof CancelledError) return { state: 'cancelled' };
  if (e instanceof InterruptedError) return { state: 'suspended' };
  const lastError = jobErrorFrom(e, now);
  if (e instanceof TransportError) return { state: 'suspended', lastError }; // includes TimeoutError (no-progress)
  if (e.code === 'ServerError' && (e as { transient?: boolean }).transient === true) return { state: 'suspended', lastError };
  if (e.code === 'LocalFileError' && e.resumable) return { state: 'suspended', lastError };
  return { state: 'error', lastError };
}

/** How a job's state is reported as the command's outcome (`--json` final object). */
export function finalStateFor(state: JobState): FinalState {
  switch (state) {
    case 'complete':
      return 'complete';
    case 'cancelled':
      return 'cancelled';
    case 'error':
      return 'failed';
    default:
      return 'suspended';
  }
}

/** `bits resume --all`: the exit code of the worst outcome; 0 when every job completed. */
export function worstExitCode(codes: readonly number[]): number {
  return codes.reduce((a, b) => Math.max(a, b), 0);
}

/** Transport flags a job keeps (commander attribute names): never a password (persistableTransportOptions strips them). */
const KEPT_TRANSPORT_FLAGS = ['requestTimeout', 'responseTimeout', 'connectTimeout', 'user', 'proxy', 'proxyUser', 'cacert', 'cert', 'key', 'insecure', 'limitRate'] as const;
const PATH_FLAGS = new Set(['cacert', 'cert', 'key']);

/**
 * The part of a command's options a job stores so that resume and cancel use
 * the same settings: timeouts, non-secret headers, proxy, TLS files (absolute:
 * resume may run from another folder), rate limit, user name.
 */
export function jobTransportOptions(flags: Record<string, unknown>, cwd = process.cwd()): { options: JobOptions; droppedHeaders: string[] } {
  const safe = persistableTransportOptions(flags);
  const transport: JsonObject = {};
  for (const k of KEPT_TRANSPORT_FLAGS) {
    const v = safe[k];
    if (typeof v === 'string') transport[k] = PATH_FLAGS.has(k) ? path.resolve(cwd, v) : v;
    else if (typeof v === 'number' || typeof v === 'boolean') transport[k] = v;
  }
  const headers: { [name: string]: string } = {};
  const droppedHeaders: string[] = [];
  for (const h of (flags.header as string[] | undefined) ?? []) {
    const i = h.indexOf(':');
    if (i <= 0) continue; // transportOptionsFrom has already refused it
    const name = h.slice(0, i).trim();
    if (isSecretHeader(name)) droppedHeaders.push(name);
    else headers[name] = h.slice(i + 1).trim();
  }
  const ms = (v: unknown, d: number) => Math.round((Number.isFinite(Number(v)) && Number(v) > 0 ? Number(v) : d) * 1000);
  const options: JobOptions = {
    timeouts: { request: ms(flags.requestTimeout, 120), response: ms(flags.responseTimeout, 300), connect: ms(flags.connectTimeout, 30) },
    transport,
  };
  if (Object.keys(headers).length) options.headers = headers;
  return { options, droppedHeaders };
}

/** The flag record transportOptionsFrom takes, rebuilt from a stored job. */
export function transportFlagsFromJob(job: Pick<Job, 'options' | 'credentialSource'>): Record<string, unknown> {
  const t = job.options?.transport;
  const flags: Record<string, unknown> = t && typeof t === 'object' && !Array.isArray(t) ? { ...t } : {};
  flags.header = Object.entries(job.options?.headers ?? {}).map(([k, v]) => `${k}: ${v}`);
  // Credentials that came from BITS_USER are not in the flags: the stored source still names the user.
  if (flags.user === undefined && job.credentialSource?.user) flags.user = job.credentialSource.user;
  return flags;
}

// ---------------------------------------------------------------------------
// Creating and running jobs.

export interface UploadJobSpec {
  /** Local source (made absolute). */
  file: string;
  url: string;
  fragmentSize: number;
  noProgressTimeoutMs: number;
  /** `-` = stdout. */
  replyFile?: string;
  requireReply: boolean;
  /** The command's transport flags (commander attribute names), for jobTransportOptions. */
  flags: Record<string, unknown>;
}

/** Writes a new upload job (state queued) before anything touches the network. */
export async function createUploadJob(store: JobStore, spec: UploadJobSpec, transport: TransportOptions): Promise<{ job: Job; droppedHeaders: string[] }> {
  const file = path.resolve(spec.file);
  // The store keeps the client's own checkpoint (src/protocol/uploader.ts UploadCheckpoint), from the first write on.
  const upload = await newUploadCheckpoint(file, spec.fragmentSize);
  const { options, droppedHeaders } = jobTransportOptions(spec.flags);
  options.fragmentSize = spec.fragmentSize;
  options.timeouts = { ...options.timeouts, noProgress: spec.noProgressTimeoutMs };
  options.requireReply = spec.requireReply;
  const replyFile = spec.replyFile === undefined || spec.replyFile === '-' ? spec.replyFile : path.resolve(spec.replyFile);
  if (replyFile !== undefined) options.replyFile = replyFile;
  const job = await store.create({
    kind: 'upload',
    source: file,
    destination: spec.url,
    totalBytes: upload.sourceEntitySize,
    options,
    upload,
    ...(transport.credentialSource ? { credentialSource: { ...transport.credentialSource } } : {}),
  });
  return { job, droppedHeaders };
}

export interface RunContext {
  store: JobStore;
  /** Gets every event; 'complete' only once the store says complete. */
  onEvent?: (e: TransferEvent) => void;
  signal?: AbortSignal;
  /** The transport for this run; default: rebuilt from the job's stored options (credentials asked again). */
  transport?: TransportOptions;
}

/**
 * Claims the job for this process (state transferring) and runs a `transfer`,
 * turning how it ends into the job's final state. Rethrows the transfer's error
 * after recording it.
 */
async function runClaimed<T>(
  ctx: RunContext,
  jobId: string,
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
  const job = await claimJob(ctx.store, jobId, { state: 'transferring' });
  let result: T;
  try {
    result = await transfer(job, emit);
  } catch (err) {
    const out = outcomeForError(err);
    try {
      // A job another process took over (it judged us dead) is theirs to record.
      const cur = await ctx.store.get(jobId);
      if (!cur.runner || isOwnRunner(cur)) await releaseJob(ctx.store, jobId, { state: out.state, lastError: out.lastError });
    } catch (storeErr) {
      // The transfer's error is what the user needs; a store failure on top is reported but must not hide it.
      ctx.onEvent?.({ type: 'warning', message: `could not record the job's state: ${toBitsError(storeErr).message}` });
    }
    throw err;
  }
  const done = await releaseJob(ctx.store, jobId, { state: 'complete', lastError: undefined, ...completePatch(result) });
  if (held) ctx.onEvent?.(held);
  return { job: done, result };
}

/** The job's source against what the job recorded: a changed source must never be mixed into a session. */
async function checkUploadSource(job: Job): Promise<void> {
  const u = upgradeUploadCheckpoint(job.upload);
  if (u) await assertSourceUnchanged(job.source, { size: u.sourceEntitySize, mtimeMs: u.sourceMtimeMs }, `cancel the job (bits cancel ${job.id}) and upload again`);
}

function numberOption(o: JobOptions | undefined, key: string): number | undefined {
  const v = o?.[key];
  return typeof v === 'number' ? v : undefined;
}

/** Runs (or continues, from its checkpoint) an upload job. */
export async function runUploadJob(jobId: string, ctx: RunContext): Promise<{ job: Job; result: UploadResult }> {
  // Before the claim: a password that cannot be asked for is a usage error, not the job's failure.
  const transport = ctx.transport ?? transportForJob(await ctx.store.get(jobId));
  return runClaimed(
    ctx,
    jobId,
    async (job, emit) => {
      await checkUploadSource(job);
      const o = job.options ?? {};
      const replyFile = typeof o.replyFile === 'string' ? o.replyFile : undefined;
      return uploadFile({
        file: job.source,
        url: job.destination,
        fragmentSize: o.fragmentSize ?? job.upload?.fragmentSize,
        replyFile,
        requireReply: o.requireReply === true || replyFile !== undefined,
        noProgressTimeoutMs: o.timeouts?.noProgress ?? numberOption(o, 'noProgressTimeoutMs'),
        transport,
        // The client reads records of the previous release too (upgradeUploadCheckpoint).
        ...(job.upload ? { resume: job.upload } : {}),
        onEvent: emit,
        signal: ctx.signal,
        onCheckpoint: async (cp) => {
          // Awaited by the client before its next request: this is what bounds the loss of a kill -9 to one fragment.
          await ctx.store.update(jobId, (j) => {
            if (!isOwnRunner(j)) throw new StoreError(`job ${jobId} was taken over by another process (pid ${j.runner?.pid ?? '?'}); stopping`);
            return { ...j, bytesDone: cp.bytesTransferred, upload: cp };
          });
        },
      });
    },
    (r) => ({ bytesDone: r.bytes }),
  );
}

/** The transport for a stored job: its options, credentials asked for again. */
export function transportForJob(job: Job): TransportOptions {
  return transportOptionsFrom(transportFlagsFromJob(job));
}

/** A transport for a quick cancel: the same settings, short timers. */
export function shortTimers(t: TransportOptions, ms = 5000): TransportOptions {
  const cap = (v: number | undefined) => Math.min(v ?? ms, ms);
  return { ...t, requestTimeoutMs: cap(t.requestTimeoutMs), responseTimeoutMs: cap(t.responseTimeoutMs), connectTimeoutMs: cap(t.connectTimeoutMs) };
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

/** Continues a job in this process with its stored options. */
export async function resumeJob(idOrPrefix: string, ctx: RunContext): Promise<{ job: Job; result: UploadResult | DownloadResult }> {
  const job = await ctx.store.get(idOrPrefix);
  const refusal = resumeRefusal(job, runnerAlive(job));
  if (refusal) throw refusal;
  if (job.kind === 'upload') return runUploadJob(job.id, ctx);
  return runDownloadJob(job.id, ctx);
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
  flags: Record<string, unknown>;
}

/** Writes a new download job (state queued) before the first request. */
export async function createDownloadJob(store: JobStore, spec: DownloadJobSpec, transport: TransportOptions): Promise<{ job: Job; droppedHeaders: string[] }> {
  const { options, droppedHeaders } = jobTransportOptions(spec.flags, spec.cwd);
  const cwd = path.resolve(spec.cwd);
  options.timeouts = { ...options.timeouts, noProgress: spec.noProgressTimeoutMs };
  options.cwd = cwd;
  options.force = spec.force;
  if (spec.output !== undefined) options.output = path.resolve(cwd, spec.output);
  if (spec.ranges !== undefined) options.ranges = spec.ranges;
  if (spec.segments !== undefined) options.segments = spec.segments;
  if (spec.mirrors.length) options.mirrors = spec.mirrors.map(redactUrl);
  if (spec.sha256 !== undefined) options.sha256 = spec.sha256;
  if (spec.fragmentSize !== undefined) options.fragmentSize = spec.fragmentSize;
  const job = await store.create({
    kind: 'download',
    source: spec.url,
    // Until the server names the file: the folder it will be written to.
    destination: spec.output !== undefined ? path.resolve(cwd, spec.output) : cwd + path.sep,
    options,
    ...(transport.credentialSource ? { credentialSource: { ...transport.credentialSource } } : {}),
  });
  return { job, droppedHeaders };
}

/** The download client's checkpoint as stored: URLs without passwords (the store redacts only source and destination). */
export function toStoredDownload(cp: ClientDownloadCheckpoint): DownloadCheckpoint {
  const clean: ClientDownloadCheckpoint = {
    ...cp,
    url: redactUrl(cp.url),
    mirrors: cp.mirrors.map(redactUrl),
    sources: cp.sources.map((s) => ({ ...s, url: redactUrl(s.url) })),
    toc: cp.toc.map((r) => ({ ...r, source: r.source === null ? null : redactUrl(r.source) })),
  };
  return JSON.parse(JSON.stringify(clean)) as DownloadCheckpoint;
}

/** The checkpoint to resume from; undefined when none was saved yet (the download starts again). */
export function fromStoredDownload(job: Pick<Job, 'download'>): ClientDownloadCheckpoint | undefined {
  const d = job.download as unknown as Partial<ClientDownloadCheckpoint> | undefined;
  if (!d || d.version !== 1 || typeof d.partialPath !== 'string' || typeof d.outputPath !== 'string' || !Array.isArray(d.toc) || !Array.isArray(d.sources)) {
    return undefined;
  }
  return d as ClientDownloadCheckpoint;
}

/** Where a download job's partial file is (or would be). */
function partialPathOf(job: Job): string | undefined {
  const cp = fromStoredDownload(job);
  if (cp?.partialPath) return cp.partialPath;
  const out = job.options?.output;
  return typeof out === 'string' ? out + PARTIAL_SUFFIX : undefined;
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
export function checkpointBytesFromEnv(env: NodeJS.ProcessEnv = process.env): number | undefined {
  const v = env['BITS_CHECKPOINT_BYTES'];
  if (v === undefined || v.trim() === '') return undefined;
  const n = parseSizeOrUndefined(v);
  if (n === undefined || n < 64 * 1024) throw new UsageError(`BITS_CHECKPOINT_BYTES must be a size of at least 64K, got ${JSON.stringify(v)}`);
  return n;
}

/** Runs (or continues, from its checkpoint) a download job. */
export async function runDownloadJob(jobId: string, ctx: RunContext): Promise<{ job: Job; result: DownloadResult }> {
  const transport = ctx.transport ?? transportForJob(await ctx.store.get(jobId));
  return runClaimed(
    ctx,
    jobId,
    async (job, emit) => {
      const o = job.options ?? {};
      const resume = fromStoredDownload(job);
      if (resume && (await finishedBeforeKill(resume))) {
        emit({ type: 'start', kind: 'download', source: job.source, destination: resume.outputPath, totalBytes: resume.totalBytes, resumedAt: resume.bytesDone });
        emit({ type: 'complete', bytes: resume.bytesDone, destination: resume.outputPath });
        return { path: resume.outputPath, bytes: resume.bytesDone, checkpoint: resume };
      }
      const str = (k: string) => (typeof o[k] === 'string' ? (o[k] as string) : undefined);
      const checkpointBytes = checkpointBytesFromEnv();
      const mirrors = Array.isArray(o.mirrors) ? o.mirrors.filter((m): m is string => typeof m === 'string') : [];
      return downloadFile({
        url: job.source,
        ...(str('output') !== undefined ? { output: str('output') } : {}),
        cwd: str('cwd') ?? process.cwd(),
        force: o.force === true,
        ...(str('ranges') !== undefined ? { ranges: str('ranges') } : {}),
        ...(typeof o.segments === 'number' ? { segments: o.segments } : {}),
        mirrors,
        ...(str('sha256') !== undefined ? { sha256: str('sha256') } : {}),
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

// ---------------------------------------------------------------------------
// Cancelling.

export interface CancelOptions {
  /** A job another live process is transferring: stop it (SIGTERM), then cancel. */
  force?: boolean;
  /** Default: rebuilt from the job's stored options. */
  transport?: TransportOptions;
  /** How long --force waits for the runner to exit. */
  stopWaitMs?: number;
}

/**
 * Cancels a job: an upload's server session is removed with CANCEL-SESSION
 * (a session the server no longer knows counts as cancelled); a download's
 * partial file is removed; the job becomes cancelled. When the server cannot be
 * reached the job is left as it was and the error is thrown (exit 4), so the
 * cancel can be retried: marking it cancelled locally would orphan the
 * server's session and its disk space.
 */
export async function cancelJob(store: JobStore, idOrPrefix: string, opts: CancelOptions = {}): Promise<{ job: Job; already: boolean }> {
  let job = await store.get(idOrPrefix);
  if (job.state === 'cancelled') return { job, already: true };
  if (job.state === 'complete') throw new UsageError(`job ${job.id} is already complete; there is nothing to cancel (bits clean removes it)`);
  if (runnerAlive(job) && !isOwnRunner(job)) {
    const r = job.runner!;
    if (!opts.force) {
      throw new UsageError(`job ${job.id} is being transferred by pid ${r.pid} on ${r.host}; stop it first, or use: bits cancel --force ${job.id}`);
    }
    if (r.host !== os.hostname()) throw new UsageError(`job ${job.id} is being transferred on another machine (${r.host}, pid ${r.pid}); cancel it there`);
    await stopRunner(r.pid, opts.stopWaitMs ?? 15_000);
    job = await store.get(job.id);
    if (job.state === 'cancelled') return { job, already: true };
    if (job.state === 'complete') throw new UsageError(`job ${job.id} completed before it could be cancelled`);
  }
  // Claimed while cancelling, so a `bits resume` started meanwhile is refused.
  job = await claimJob(store, job.id);
  try {
    if (job.kind === 'upload') {
      if (job.upload) await cancelUpload(job.destination, job.upload, { transport: opts.transport ?? transportForJob(job) });
    } else {
      await cancelDownloadJob(job);
    }
  } catch (err) {
    await releaseJob(store, job.id).catch(() => undefined);
    const e = toBitsError(err);
    throw Object.assign(e, { message: `could not cancel job ${job.id}: ${formatErrorLine(e)}; the job is kept, run bits cancel ${job.id} again` });
  }
  const done = await releaseJob(store, job.id, { state: 'cancelled', lastError: undefined });
  return { job: done, already: false };
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

// ---------------------------------------------------------------------------
// The command side: progress, the final line, Ctrl-C.

/** A second SIGINT within this long of the first cancels the job instead of suspending it. */
export const CANCEL_WINDOW_MS = 2000;

interface JobInterrupt {
  readonly signal: AbortSignal;
  /** The first signal, once one arrived. */
  readonly first: NodeJS.Signals | undefined;
  /**
   * After a SIGINT: resolves true if a second one arrives within the window
   * (the user asks to cancel), false when the window passes.
   */
  cancelRequested(): Promise<boolean>;
  dispose(): void;
}

/**
 * Removes the other SIGINT/SIGTERM listeners while a job runs, and gives them
 * back after. conf (the job store) loads atomically -> when-exit, whose
 * listener re-sends the first signal to the process, expecting it to die of
 * it; here that echo would arrive as a second Ctrl-C and cancel the job.
 */
function takeSignals(): () => void {
  const removed: Array<[NodeJS.Signals, (...args: unknown[]) => void]> = [];
  for (const sig of ['SIGINT', 'SIGTERM'] as const) {
    for (const l of process.rawListeners(sig) as Array<(...args: unknown[]) => void>) {
      process.removeListener(sig, l);
      removed.push([sig, l]);
    }
  }
  return () => {
    for (const [sig, l] of removed) process.on(sig, l);
  };
}

function jobInterrupt(windowMs = CANCEL_WINDOW_MS): JobInterrupt {
  const giveBack = takeSignals();
  let first: NodeJS.Signals | undefined;
  let firstAt = 0;
  let second = false;
  let wake: (() => void) | undefined;
  const intr = onInterrupt(
    (sig) => {
      first = sig;
      firstAt = Date.now();
    },
    {
      forceWindowMs: windowMs,
      secondHint: `press Ctrl-C again within ${Math.round(windowMs / 1000)} s to cancel the job instead`,
      onSecond: () => {
        second = true;
        wake?.();
      },
    },
  );
  return {
    signal: intr.signal,
    get first() {
      return first;
    },
    cancelRequested() {
      if (second) return Promise.resolve(true);
      const left = firstAt + windowMs - Date.now();
      if (left <= 0) return Promise.resolve(false);
      return new Promise<boolean>((resolve) => {
        const t = setTimeout(() => resolve(second), left);
        wake = () => {
          clearTimeout(t);
          resolve(true);
        };
      });
    },
    dispose() {
      intr.dispose();
      giveBack();
    },
  };
}

export interface ExecuteOptions extends OutputOptions {
  /** The run's transport (a new `bits upload` has the password in memory); default rebuilt from the job. */
  transport?: TransportOptions;
  /** Called with the reporter before the transfer starts (e.g. to warn). */
  beforeStart?: (reporter: Reporter) => void;
}

/**
 * Runs one job in the foreground: progress on stderr (or --json on stdout),
 * the job id in every JSON object, the outcome as the last line. Ctrl-C once:
 * the job is saved suspended and the line says `bits resume <id>` (exit 10);
 * Ctrl-C twice within 2 s: CANCEL-SESSION (bounded by short timers), job
 * cancelled (exit 11). Throws the BitsError the process should exit with,
 * after printing it.
 */
export async function executeJob(store: JobStore, job: Job, out: ExecuteOptions): Promise<Job> {
  const reporter = createReporter({ json: out.json, quiet: out.quiet, stdout: out.stdout, stderr: out.stderr, kind: job.kind, jobId: job.id });
  reporter.setJobId(job.id);
  out.beforeStart?.(reporter);
  const intr = jobInterrupt();
  const started = Date.now();
  try {
    const ctx: RunContext = { store, onEvent: reporter.listener, signal: intr.signal, ...(out.transport ? { transport: out.transport } : {}) };
    const { job: done } = job.kind === 'upload' ? await runUploadJob(job.id, ctx) : await runDownloadJob(job.id, ctx);
    reporter.finish();
    // Normally already printed by the reporter on 'complete'; this covers a client that did not send one.
    printFinal(out, { state: 'complete', jobId: done.id, kind: done.kind, bytes: done.bytesDone, totalBytes: done.totalBytes, source: done.source, destination: done.destination, elapsedMs: Date.now() - started });
    return done;
  } catch (err) {
    reporter.finish();
    let e = toBitsError(err);
    if (e instanceof InterruptedError && intr.first === 'SIGINT' && (await intr.cancelRequested())) {
      e = await cancelAfterInterrupt(store, job.id, out.transport);
    }
    const latest = await store.get(job.id).catch(() => undefined);
    printJobOutcome(out, latest ?? job, e);
    throw e;
  } finally {
    intr.dispose();
  }
}

async function cancelAfterInterrupt(store: JobStore, jobId: string, transport: TransportOptions | undefined): Promise<BitsError> {
  try {
    const j = await store.get(jobId);
    await cancelJob(store, jobId, { transport: shortTimers(transport ?? transportForJob(j)) });
    return new CancelledError(`job ${jobId} cancelled`);
  } catch (err) {
    return toBitsError(err);
  }
}

/** The last line (and JSON object) for a job that did not complete. */
export function printJobOutcome(out: OutputOptions, job: Job, e: BitsError): boolean {
  const state = job.state === 'transferring' || job.state === 'queued' ? finalStateFor(outcomeForError(e).state) : finalStateFor(job.state);
  let message: string | undefined;
  if (state === 'failed' && job.state === 'error') {
    const next = isResumable(job, false) ? `fix the cause, then: bits resume ${job.id}` : `cancel it with: bits cancel ${job.id}`;
    message = `${formatErrorLine(e)}; job ${job.id} stopped with an error, ${next}`;
  } else if (state === 'cancelled') {
    message = e instanceof CancelledError ? e.message : `job ${job.id} cancelled`;
  }
  return printFinal(out, {
    state,
    jobId: job.id,
    kind: job.kind,
    bytes: job.bytesDone,
    totalBytes: job.totalBytes,
    source: job.source,
    destination: job.destination,
    error: { ...e.toJSON(), message: formatErrorLine(e) },
    ...(message ? { message } : {}),
  });
}
