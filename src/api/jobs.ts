/**
 * jobs.list / get / resume / cancel / wait: the persistent jobs (the same
 * store `bits list` reads) from code.
 */
import path from 'node:path';
import { InterruptedError, UsageError } from '../errors.js';
import { TERMINAL_STATES, effectiveState, isBackground, isTerminal, jobExitCode, overrideTransportSettings, resumesByItself, waitIsOver, type Job, type JobError, type JobState } from '../store/index.js';
import { formatJobError } from '../jobs/lifecycle.js';
import { worstExitCode as worstOf } from '../jobs/outcome.js';
import { prepareTransport, type PreparedTransport } from './options.js';
import { sleep } from '../store/process.js';
import { runningAgent } from '../jobs/agent-lock.js';
import { backgroundTimeoutMs } from '../jobs/agent.js';
import type { TransferEvent } from '../client/events.js';
import { ensureAgent } from './background.js';
import { cancelJob, cancelNow as cancelStopped, cleanJobs, resumeRefusal, runJob, type CancelResult } from '../jobs/runner.js';
import type { BitsError } from '../errors.js';
import { runnerAlive } from '../jobs/running.js';
import { settingsOf } from '../jobs/transport.js';
import { jobSignal, storeFor, transportFor, type RunOptions, type StoreOptions } from './options.js';

export type { Job, JobState, JobError, CancelResult };
export { queue, dequeue, ensureAgent, agentPid, DEFAULT_BACKGROUND_TIMEOUT_MS, type QueueOptions, type QueueResult, type AgentStatus, type BackgroundPriority, type JobNotify } from './background.js';

/** A job as stored, with the state a reader should believe (a dead runner's 'transferring' is 'suspended'). */
export interface JobInfo extends Job {
  effectiveState: JobState;
  runnerAlive: boolean;
}

function info(job: Job): JobInfo {
  const alive = runnerAlive(job);
  return { ...job, effectiveState: effectiveState(job, alive), runnerAlive: alive };
}

export interface ListOptions extends StoreOptions {
  /**
   * Only some jobs: 'resumable', what `bits resume --all` continues (queued or
   * suspended, no live runner); 'unfinished', what `bits wait --all` waits for.
   */
  only?: 'resumable' | 'unfinished';
}

/** Every job (or those `only` names), oldest first. */
export async function list(opts: ListOptions = {}): Promise<JobInfo[]> {
  const store = await storeFor(opts);
  const all = (await store.list()).map(info);
  if (opts.only === 'resumable') return all.filter((j) => resumesByItself(j, j.runnerAlive));
  if (opts.only === 'unfinished') return all.filter((j) => !waitIsOver(j, j.runnerAlive));
  return all;
}

/**
 * The job, if resume(id) would take it; otherwise throws why not (a
 * UsageError: complete, cancelled, run by another live process, or failed in
 * a way a retry cannot change).
 */
export async function resumable(id: string, opts: StoreOptions = {}): Promise<JobInfo> {
  const store = await storeFor(opts);
  const job = info(await store.get(id));
  const refusal = resumeRefusal(job, job.runnerAlive);
  if (refusal) throw refusal;
  return job;
}

/**
 * What resume does before it runs, for a caller that runs the job itself
 * (jobs.run with `prepared`): checks the job may be resumed, builds its
 * transport from the stored settings with `transport` over them, and stores
 * those overrides for later resumes. Throws UsageError before any change when
 * it refuses or a needed password cannot be had.
 */
export async function prepareResume(id: string, opts: Pick<RunOptions, 'home' | 'transport' | 'secrets' | 'prepared'> = {}): Promise<{ job: JobInfo; prepared: PreparedTransport }> {
  const store = await storeFor(opts);
  let job: Job = await resumable(id, opts);
  const override = opts.transport ?? {};
  const settings = overrideTransportSettings(settingsOf(job), override);
  // Built before the record changes: a password that cannot be had is a usage error, not the job's failure.
  // A caller's own prepared transport is the one that runs: no second one is built (nor its passwords sought).
  const prepared = opts.prepared ?? prepareTransport(settings, opts.secrets);
  if (Object.keys(override).length > 0) {
    job = await store.update(job.id, { transport: settings, ...(settings.credentialSource ? { credentialSource: { ...settings.credentialSource } } : {}) });
  }
  return { job: info(job), prepared };
}

/** A stored error as one line (code, message, HTTP status), as `bits list` shows it. */
export function errorLine(e: JobError): string {
  return formatJobError(e);
}

/** The exit code the job ended with, as its own foreground run would have exited (README "Exit codes"). */
export function exitCodeOf(job: Job): number {
  return jobExitCode(job);
}

/** The exit code for several jobs: the worst (highest), 0 when every one completed. */
export function worstExitCode(codes: readonly number[]): number {
  return worstOf(codes);
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
  const { job, prepared } = await prepareResume(id, opts);
  return runStored(await storeFor(opts), job.id, prepared.options, opts);
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
/** Starting an agent takes a moment; do not start another before it could have taken its lock. */
const AGENT_RESTART_GAP_MS = 2000;

export interface WaitOptions extends StoreOptions {
  /** Give up (InterruptedError) after this long; default: wait as long as it takes. */
  timeoutMs?: number;
  /** How often the store is read; default 250 ms. */
  pollMs?: number;
  /** Stops the waiting (not the jobs): the call rejects with its reason, after one last read of the store. */
  signal?: AbortSignal;
  /**
   * The jobs' progress as the store shows it (their runner records it at
   * every checkpoint): 'start' once a job is under way, 'progress' at every
   * read, 'complete' when it completed.
   */
  onEvent?: (event: TransferEvent, job: JobInfo) => void;
  /** Each job once its wait is over, in the order they end. */
  onEnd?: (job: JobInfo) => void;
  /**
   * Wait as `bits wait` does: a background job is waited for until the agent
   * ends it (a retry later is still waited for), and the agent is started
   * again when it died with such work left; a foreground job no process runs
   * ends the wait at once; a job removed meanwhile is waited for as last seen.
   */
  agent?: boolean;
  /** With `agent`: this wait started the agent, with this pid. */
  onAgentStart?: (pid: number) => void;
}

/**
 * Waits until a job, possibly run by another process (`bits resume`, a
 * background agent), is no longer being transferred: resolves with it in its
 * state then (complete, cancelled, error, or suspended when its runner
 * stopped). It does not run the job; see resume for that.
 */
export async function wait(id: string, opts: WaitOptions = {}): Promise<JobInfo> {
  return (await waitAll([id], opts))[0]!;
}

/**
 * wait() for several jobs at once, with one read of the store per poll:
 * resolves with all of them (in the order of `ids`) once every wait is over.
 */
export async function waitAll(ids: readonly string[], opts: WaitOptions = {}): Promise<JobInfo[]> {
  const store = await storeFor(opts);
  const pollMs = Math.max(10, opts.pollMs ?? 250);
  const deadline = opts.timeoutMs !== undefined ? Date.now() + opts.timeoutMs : Number.POSITIVE_INFINITY;
  const isOver = (j: JobInfo) => (opts.agent ? waitIsOver(j, j.runnerAlive) : STOPPED.includes(j.effectiveState));
  let current: JobInfo[] = await Promise.all(ids.map(async (id) => info(await store.get(id))));
  const started = new Set<string>();
  const ended = new Set<string>();
  let lastAgentStart = 0;
  // Bounded by the deadline and the signal (and by the jobs ending).
  for (let first = true; ; first = false) {
    if (!first) current = await Promise.all(current.map(async (j) => info(await (opts.agent ? store.get(j.id).catch(() => j) : store.get(j.id)))));
    for (const j of current) {
      if (ended.has(j.id)) continue;
      if (opts.onEvent) {
        if (!started.has(j.id) && (j.state === 'transferring' || j.bytesDone > 0 || TERMINAL_STATES.includes(j.state))) {
          started.add(j.id);
          opts.onEvent({ type: 'start', kind: j.kind, jobId: j.id, source: j.source, destination: j.destination, ...(j.totalBytes !== undefined ? { totalBytes: j.totalBytes } : {}), resumedAt: j.bytesDone }, j);
        }
        if (started.has(j.id)) opts.onEvent({ type: 'progress', bytesDone: j.bytesDone, ...(j.totalBytes !== undefined ? { totalBytes: j.totalBytes } : {}) }, j);
      }
      if (!isOver(j)) continue;
      ended.add(j.id);
      if (j.state === 'complete') opts.onEvent?.({ type: 'complete', bytes: j.bytesDone, destination: j.destination }, j);
      opts.onEnd?.(j);
    }
    if (ended.size === current.length) return current;
    const now = Date.now();
    const needAgent = opts.agent && current.some((j) => !ended.has(j.id) && isBackground(j) && !j.runnerAlive && (j.state === 'queued' || j.state === 'transferring'));
    if (needAgent && now - lastAgentStart > AGENT_RESTART_GAP_MS) {
      const a = await ensureAgent(opts);
      if (a.started) {
        lastAgentStart = now;
        opts.onAgentStart?.(a.pid);
      }
    }
    opts.signal?.throwIfAborted();
    const left = deadline - Date.now();
    const waiting = current.find((j) => !ended.has(j.id))!;
    // The job goes on; only this wait stops, so it is an interrupt of the waiting, not a transfer failure.
    if (left <= 0) throw new InterruptedError(`job ${waiting.id} is still ${waiting.effectiveState} after ${opts.timeoutMs} ms of waiting`);
    await pause(Math.min(pollMs, left), opts.signal);
  }
}

/** Sleeps, cut short by the signal: the caller reads the store once more before it stops. */
function pause(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise<void>((resolve) => {
    const t = setTimeout(done, ms);
    function done() {
      clearTimeout(t);
      signal?.removeEventListener('abort', done);
      resolve();
    }
    signal?.addEventListener('abort', done, { once: true });
  });
}

/** How long the agent lets this job go without progress before it fails it (its own setting, else DEFAULT_BACKGROUND_TIMEOUT_MS). */
export function backgroundTimeoutOf(job: Job): number {
  return backgroundTimeoutMs(job);
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
