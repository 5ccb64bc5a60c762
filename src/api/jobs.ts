/**
 * jobs.list / get / resume / cancel / wait: the persistent jobs (the same
 * store `bits list` reads) from code.
 */
import { InterruptedError, UsageError } from '../errors.js';
import { effectiveState, isBackground, isTerminal, overrideTransportSettings, type BackgroundPriority, type Job, type JobState, type TransportSettings } from '../store/index.js';
import { ensureAgent, homeOf } from '../jobs/agent-start.js';
import { runningAgent } from '../jobs/agent-lock.js';
import { BACKGROUND_NO_PROGRESS_MS } from '../jobs/agent.js';
import { sleep } from '../store/process.js';
import { cancelJob, cancelNow as cancelStopped, cleanJobs, resumeRefusal, runJob, type CancelResult } from '../jobs/runner.js';
import type { BitsError } from '../errors.js';
import { runnerAlive } from '../jobs/running.js';
import { settingsOf } from '../jobs/transport.js';
import { jobSignal, prepareTransport, storeFor, transportFor, type PreparedTransport, type RunOptions, type StoreOptions } from './options.js';
import type { TransportSecrets } from '../jobs/transport.js';

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
 * Throws the UsageError jobs.resume and jobs.queue would refuse this job
 * with (complete, cancelled, run by another live process, failed for good);
 * for checking before asking for passwords.
 */
export function assertResumable(job: Job): void {
  const refusal = resumeRefusal(job, runnerAlive(job));
  if (refusal) throw refusal;
}

/**
 * The transport a resume of this job uses: its stored settings with
 * `override` on top, passwords from `secrets` (or asked for once, see
 * PreparedTransport.askPasswords). Pass it as `prepared` to jobs.resume.
 */
export function prepareResume(job: Job, override: Partial<TransportSettings> = {}, secrets?: TransportSecrets): PreparedTransport {
  return prepareTransport(overrideTransportSettings(settingsOf(job), override), secrets);
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

/**
 * Stops a job until it is resumed (jobs.resume, jobs.queue, `bits resume`).
 * A background job the agent runs is stopped by the agent (it reads the
 * request from the store at its next tick); a queued or stopped one is
 * suspended at once (a failed one stays failed); a run in another process is
 * sent SIGTERM, which suspends it there. Resolves with the job once its
 * runner let go of it; UsageError for a finished job or a runner that does
 * not stop in time.
 */
export async function suspend(id: string, opts: SuspendOptions = {}): Promise<JobInfo> {
  const store = await storeFor(opts);
  let job = await store.get(id);
  if (isTerminal(job.state)) throw new UsageError(`job ${job.id} is ${job.state}; there is nothing to suspend`);
  if (!runnerAlive(job)) return info(await store.update(job.id, { state: job.state === 'error' ? 'error' : 'suspended', retryAt: undefined, runner: undefined }));
  const r = job.runner!;
  const agent = runningAgent(homeOf(store));
  if (isBackground(job) && agent?.pid === r.pid) await store.update(job.id, { suspendRequested: new Date().toISOString() });
  else process.kill(r.pid, 'SIGTERM');
  const waitMs = opts.timeoutMs ?? 20_000;
  const deadline = Date.now() + waitMs;
  while (runnerAlive(job) && job.runner?.pid === r.pid) {
    if (Date.now() > deadline) throw new UsageError(`job ${job.id}: pid ${r.pid} did not stop it within ${Math.round(waitMs / 1000)} s`);
    await sleep(100);
    job = await store.get(job.id);
  }
  return info(job);
}

export interface QueueOptions extends StoreOptions {
  /** Default: the job's own, else normal. */
  priority?: BackgroundPriority;
  /** Shell command lines run when the job ends (BITS_JOB_* in their environment). */
  onComplete?: string;
  onError?: string;
  /** Give up after this long without progress across the agent's retries; default 14 days (BITS' default). */
  backgroundTimeoutMs?: number;
  /** Fields that replace the stored transport settings (and are stored). */
  transport?: Partial<TransportSettings>;
}

export interface QueueResult {
  job: JobInfo;
  /** The agent that will run it (started by this call when none ran). */
  agentPid: number;
  agentStarted: boolean;
}

/**
 * Hands a job to the per-user background agent instead of running it here:
 * a new one from createUpload / createDownload, or a stopped one again. The
 * agent runs queued jobs in priority order, retries transient failures after
 * its retry delay and keeps the store up to date (jobs.wait follows it).
 * Refused (UsageError) as jobs.resume refuses: a finished job, one another
 * process runs, one that cannot be resumed.
 */
export async function queue(id: string, opts: QueueOptions = {}): Promise<QueueResult> {
  const store = await storeFor(opts);
  const job = await store.get(id);
  const refusal = resumeRefusal(job, runnerAlive(job));
  if (refusal) throw refusal;
  const transport = opts.transport && Object.keys(opts.transport).length > 0 ? overrideTransportSettings(settingsOf(job), opts.transport) : undefined;
  const notify = opts.onComplete !== undefined || opts.onError !== undefined ? { ...(opts.onComplete !== undefined ? { onComplete: opts.onComplete } : {}), ...(opts.onError !== undefined ? { onError: opts.onError } : {}) } : undefined;
  const queued = await store.update(job.id, (j) => ({
    ...j,
    state: 'queued' as const,
    priority: opts.priority ?? j.priority ?? 'normal',
    retryAt: undefined,
    suspendRequested: undefined,
    stalledSince: undefined,
    stalledBytes: undefined,
    runner: undefined,
    ...(notify ? { notify } : {}),
    ...(transport ? { transport } : {}),
    options: { ...j.options, timeouts: { ...j.options?.timeouts, background: opts.backgroundTimeoutMs ?? j.options?.timeouts?.background ?? BACKGROUND_NO_PROGRESS_MS } },
  }));
  const agent = await ensureAgent(store);
  return { job: info(queued), agentPid: agent.pid, agentStarted: agent.started };
}

/** Starts the background agent for this store's BITS_HOME if none runs (jobs.wait does not). */
export async function startAgent(opts: StoreOptions = {}): Promise<{ pid: number; started: boolean }> {
  return ensureAgent(await storeFor(opts));
}
