/**
 * jobs.list / get / resume / cancel / wait: the persistent jobs (the same
 * store `bits list` reads) from code.
 */
import path from 'node:path';
import { InterruptedError, UsageError } from '../errors.js';
import { effectiveState, isBackground, isTerminal, overrideTransportSettings, type Job, type JobState } from '../store/index.js';
import { sleep } from '../store/process.js';
import { runningAgent } from '../jobs/agent-lock.js';
import { cancelJob, cancelNow as cancelStopped, cleanJobs, resumeRefusal, runJob, type CancelResult } from '../jobs/runner.js';
import type { BitsError } from '../errors.js';
import { runnerAlive } from '../jobs/running.js';
import { settingsOf } from '../jobs/transport.js';
import { jobSignal, storeFor, transportFor, type RunOptions, type StoreOptions } from './options.js';

export type { Job, JobState, CancelResult };

/** A job as stored, with the state a reader should believe (a dead runner's 'transferring' is 'suspended'). */
export interface JobInfo extends Job {
  effectiveState: JobState;
  runnerAlive: boolean;
}

function info(job: Job): JobInfo {
  const alive = runnerAlive(job);
  return { ...job, effectiveState: effectiveState(job, alive), runnerAlive: alive };
}

/** Every job, oldest first. */
export async function list(opts: StoreOptions = {}): Promise<JobInfo[]> {
  const store = await storeFor(opts);
  return (await store.list()).map(info);
}

/** The jobs.json file the calls read and write (for messages; it may not exist yet). */
export async function storePath(opts: StoreOptions = {}): Promise<string> {
  return (await storeFor(opts)).path;
}

/** One job, by id or a unique prefix of at least 3 characters; UsageError when there is none. */
export async function get(id: string, opts: StoreOptions = {}): Promise<JobInfo> {
  const store = await storeFor(opts);
  return info(await store.get(id));
}

/**
 * Continues a suspended, queued or failed job from its checkpoint, in this
 * process. `transport` fields, when given, replace the stored ones (and are
 * stored for later resumes). Resolves with the completed job.
 */
export async function resume(id: string, opts: RunOptions = {}): Promise<Job> {
  const store = await storeFor(opts);
  let job = await store.get(id);
  const refusal = resumeRefusal(job, runnerAlive(job));
  if (refusal) throw refusal;
  const settings = opts.transport ? overrideTransportSettings(settingsOf(job), opts.transport) : settingsOf(job);
  // Built before the record changes: a password that cannot be had is a usage error, not the job's failure.
  const transport = transportFor(settings, opts);
  if (opts.transport) job = await store.update(job.id, { transport: settings, ...(settings.credentialSource ? { credentialSource: { ...settings.credentialSource } } : {}) });
  return runStored(store, job.id, transport, opts);
}

/**
 * Runs a stored job as it is, in this process: one made by createUpload /
 * createDownload, or one the caller has checked itself (resume checks for
 * you). The transport is opts.prepared, else rebuilt from the job's stored
 * settings. Resolves with the completed job; rejects with the BitsError it
 * ended with, after recording it (an aborted one is left suspended).
 */
export async function run(id: string, opts: Omit<RunOptions, 'transport'> = {}): Promise<Job> {
  const store = await storeFor(opts);
  const job = await store.get(id);
  return runStored(store, job.id, opts.prepared ? opts.prepared.options : transportFor(settingsOf(job), opts), opts);
}

async function runStored(store: Awaited<ReturnType<typeof storeFor>>, jobId: string, transport: ReturnType<typeof transportFor>, opts: RunOptions): Promise<Job> {
  const s = jobSignal(opts.signal);
  try {
    return await runJob(jobId, { store, transport, ...(opts.onEvent ? { onEvent: opts.onEvent } : {}), ...(s.signal ? { signal: s.signal } : {}) });
  } finally {
    s.dispose();
  }
}

/**
 * Cancels a job this process has just stopped (run() rejected after an
 * abort), with short timers because someone is waiting: CANCEL-SESSION for
 * an upload, the partial file removed for a download. Resolves with the
 * error the run ends with: a CancelledError, or why it could not cancel.
 */
export async function cancelNow(id: string, opts: Pick<RunOptions, 'home' | 'prepared'> = {}): Promise<BitsError> {
  const store = await storeFor(opts);
  return cancelStopped(store, id, opts.prepared?.options);
}

export interface CancelOptions extends StoreOptions {
  /** Stop another process running it; remove the job even if the server refuses CANCEL-SESSION. */
  force?: boolean;
}

/** Cancels a job: CANCEL-SESSION for an upload, the partial file removed for a download. */
export async function cancel(id: string, opts: CancelOptions = {}): Promise<CancelResult> {
  const store = await storeFor(opts);
  return cancelJob(store, id, opts.force ? { force: true } : {});
}

const STOPPED: readonly JobState[] = ['complete', 'cancelled', 'error', 'suspended'];

export interface WaitOptions extends StoreOptions {
  /** Give up (TimeoutError) after this long; default: wait as long as it takes. */
  timeoutMs?: number;
  /** How often the store is read; default 250 ms. */
  pollMs?: number;
  signal?: AbortSignal;
}

/**
 * Waits until a job, possibly run by another process (`bits resume`, a
 * background agent), is no longer being transferred: resolves with it in its
 * state then (complete, cancelled, error, or suspended when its runner
 * stopped). It does not run the job; see resume for that.
 */
export async function wait(id: string, opts: WaitOptions = {}): Promise<JobInfo> {
  const store = await storeFor(opts);
  const pollMs = Math.max(10, opts.pollMs ?? 250);
  const deadline = opts.timeoutMs !== undefined ? Date.now() + opts.timeoutMs : Number.POSITIVE_INFINITY;
  const jobId = (await store.get(id)).id;
  for (;;) {
    const j = info(await store.get(jobId));
    // queued: someone (a background agent, a resume) is about to run it; keep waiting.
    if (STOPPED.includes(j.effectiveState)) return j;
    opts.signal?.throwIfAborted();
    const left = deadline - Date.now();
    // The job goes on; only this wait stops, so it is an interrupt of the waiting, not a transfer failure.
    if (left <= 0) throw new InterruptedError(`job ${jobId} is still ${j.effectiveState} after ${opts.timeoutMs} ms of waiting`);
    await new Promise<void>((resolve, reject) => {
      const t = setTimeout(done, Math.min(pollMs, left));
      function done() {
        opts.signal?.removeEventListener('abort', abort);
        resolve();
      }
      function abort() {
        clearTimeout(t);
        reject(opts.signal!.reason);
      }
      opts.signal?.addEventListener('abort', abort, { once: true });
    });
  }
}

export interface CleanOptions extends StoreOptions {
  /** Also remove jobs that failed for good (state error), their upload sessions cancelled on the server first, best-effort. */
  all?: boolean;
}

/**
 * Forgets finished jobs (complete, cancelled; with `all` failed ones too); a
 * job being transferred is never removed. Resolves with the removed jobs.
 * Only the records go: downloaded, partial and reply files stay.
 */
export async function clean(opts: CleanOptions = {}): Promise<Job[]> {
  const store = await storeFor(opts);
  return cleanJobs(store, { all: opts.all === true });
}

export interface SuspendOptions extends StoreOptions {
  /** How long to wait for the process running the job to record the suspension; default 20 s. */
  timeoutMs?: number;
}

export interface SuspendResult {
  /** The job as its runner (or this call) left it: suspended, or error for a failed job nobody ran. */
  job: JobInfo;
  /** The process that was transferring it and stopped; undefined when none ran it and the record was changed here. */
  stoppedPid?: number;
}

/**
 * Stops a job until resume: one the background agent runs is stopped by the
 * agent (it reads the request from the store at its next tick), one another
 * process runs in the foreground is sent SIGTERM (which suspends it there),
 * one nobody runs is marked suspended at once (a failed one stays failed).
 * UsageError when the job is finished or its runner does not stop in time.
 */
export async function suspend(id: string, opts: SuspendOptions = {}): Promise<SuspendResult> {
  const store = await storeFor(opts);
  const waitMs = opts.timeoutMs ?? 20_000;
  let job = await store.get(id);
  if (isTerminal(job.state)) throw new UsageError(`job ${job.id} is ${job.state}; there is nothing to suspend`);
  if (!runnerAlive(job)) {
    job = await store.update(job.id, { state: job.state === 'error' ? 'error' : 'suspended', retryAt: undefined, runner: undefined });
    return { job: info(job) };
  }
  const r = job.runner!;
  const agent = runningAgent(path.dirname(store.path));
  if (isBackground(job) && agent?.pid === r.pid) await store.update(job.id, { suspendRequested: new Date().toISOString() });
  else process.kill(r.pid, 'SIGTERM');
  // Bounded by the deadline: a runner that ignores the request is reported, not waited for forever.
  const deadline = Date.now() + waitMs;
  while (runnerAlive(job) && job.runner?.pid === r.pid) {
    if (Date.now() > deadline) throw new UsageError(`job ${job.id}: pid ${r.pid} did not stop it within ${waitMs / 1000} s`);
    await sleep(100);
    job = await store.get(job.id);
  }
  return { job: info(job), stoppedPid: r.pid };
}
