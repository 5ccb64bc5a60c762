/**
 * The per-user agent's scheduler: the "B" of BITS. It runs background jobs
 * (those with a priority) through the one run loop, runJob
 * (src/jobs/runner.ts), and decides only what BITS' service decides:
 *
 * - which job next: priority (high, normal, low), then first queued first;
 *   at most `concurrency` at once;
 * - takeover: a background job left `transferring` by a dead process (an
 *   agent killed with SIGKILL) is claimed again and continues from its
 *   checkpoint;
 * - retry: a run that ended suspended with an error (outcomeForError: a
 *   transient failure whose own no-progress deadline passed, or a local one
 *   such as a full disk) is queued again after the retry
 *   delay (BITS MinimumRetryDelay), until the job has made no progress for
 *   its background no-progress timeout (BITS NoProgressTimeout), when it
 *   fails (state error);
 * - requests from other processes, read from the store on every tick:
 *   suspendRequested (`bits suspend`) and cancelRequested (`bits cancel`);
 * - completion commands (BITS SetNotifyCmdLine), run through the shell with
 *   the job in BITS_JOB_* variables; their exit status never changes the job;
 * - it returns once nothing is running or waiting for idleExitMs.
 *
 * Nothing here parses a command line or owns the lock (src/jobs/agent-lock.ts):
 * `bits agent` (src/cli/commands/agent.ts) does.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { InterruptedError, toBitsError } from '../errors.js';
import type { TransferEvent } from '../client/events.js';
import { compareQueue, isBackground, priorityRank, isTerminal, type Job, type JobStore } from '../store/index.js';
import { sleep } from '../store/process.js';
import { runJob } from './runner.js';
import { runnerAlive } from './running.js';
import { formatJobError, jobErrorFrom } from './lifecycle.js';

/** BITS' NoProgressTimeout default, kept for background jobs: 14 days without a byte of progress before a job fails. */
export const BACKGROUND_NO_PROGRESS_MS = 14 * 86_400_000;
/** BITS' MinimumRetryDelay default: 10 minutes between a transient failure and the next attempt. */
export const DEFAULT_RETRY_DELAY_MS = 10 * 60_000;
export const DEFAULT_CONCURRENCY = 2;
/** The agent exits after this long with nothing running or waiting. */
export const DEFAULT_IDLE_EXIT_MS = 10_000;
/** A completion command is killed after this long: a hung command must not keep the agent forever. */
const NOTIFY_TIMEOUT_MS = 10 * 60_000;
/** How long a stopping agent waits for its runs to record their state. */
const STOP_WAIT_MS = 15_000;

export interface AgentOptions {
  store: JobStore;
  concurrency: number;
  retryDelayMs: number;
  idleExitMs: number;
  /** How often the store is read (requests of other processes, new jobs). */
  pollMs?: number;
  /** One line per event worth keeping (the agent log). */
  log: (line: string) => void;
  /** Where completion commands' output goes (an fd open on the agent log); default: ignored. */
  notifyFd?: number;
  /** Abort = stop: running jobs are interrupted and queued again for the next agent. */
  signal?: AbortSignal;
}

/** stop: the agent stops or preempts the job, which is queued again. */
type StopReason = 'stop' | 'suspend' | 'cancel';
interface Slot {
  ctrl: AbortController;
  why?: StopReason;
  done: Promise<void>;
}

const rank = (j: Job) => priorityRank(j.priority);

/** The job's no-progress timeout across the agent's retries. */
export function backgroundTimeoutMs(job: Job): number {
  return job.options?.timeouts?.background ?? BACKGROUND_NO_PROGRESS_MS;
}

/** Runs the agent until it is idle for idleExitMs or `signal` aborts. */
export async function runAgent(opts: AgentOptions): Promise<void> {
  const { store, log } = opts;
  const pollMs = opts.pollMs ?? 250;
  const running = new Map<string, Slot>();
  const hooks = new Set<Promise<void>>();
  let wake: (() => void) | undefined;
  const nudge = () => wake?.();
  opts.signal?.addEventListener('abort', nudge, { once: true });
  let idleSince = Date.now();

  const start = (job: Job) => {
    const ctrl = new AbortController();
    const slot: Slot = { ctrl, done: Promise.resolve() };
    const takeover = job.state === 'transferring' && job.runner ? ` (taking over from dead pid ${job.runner.pid})` : job.retryAt ? ' (retry)' : '';
    log(`job ${job.id}: start ${job.kind} ${job.source} -> ${job.destination}, priority ${job.priority}${takeover}`);
    const onEvent = (e: TransferEvent) => {
      if (e.type === 'retry') log(`job ${job.id}: retry ${e.attempt} in ${Math.round(e.delayMs)} ms: ${e.reason}`);
      else if (e.type === 'warning') log(`job ${job.id}: warning: ${e.message}`);
    };
    slot.done = runJob(job.id, { store, signal: ctrl.signal, onEvent })
      .then((done) => finished(done))
      .catch((err) => failed(job.id, err, slot.why))
      .catch((err) => log(`job ${job.id}: could not record the outcome: ${toBitsError(err).message}`))
      .finally(() => {
        running.delete(job.id);
        nudge();
      });
    running.set(job.id, slot);
  };

  const finished = async (done: Job) => {
    const j = await store.update(done.id, { retryAt: undefined, stalledSince: undefined, stalledBytes: undefined });
    log(`job ${j.id}: complete, ${j.bytesDone} bytes -> ${j.destination}`);
    notify(j);
  };

  const failed = async (id: string, err: unknown, why: StopReason | undefined) => {
    const e = toBitsError(err);
    let j = await store.get(id);
    if (why === 'stop' && j.state === 'suspended') {
      // The agent stopping is not the job's business: the next agent continues it.
      await store.update(id, { state: 'queued' });
      log(`job ${id}: interrupted; queued again`);
      return;
    }
    if (why === 'suspend') {
      await store.update(id, { suspendRequested: undefined });
      log(`job ${id}: suspended on request (bits resume ${id} queues it again)`);
      return;
    }
    if (j.state === 'queued' || (j.state === 'transferring' && !runnerAlive(j))) {
      // Failed before the run claimed it (e.g. credentials that must be typed): retrying would fail the same way.
      j = await store.update(id, { state: 'error', lastError: jobErrorFrom(e), runner: undefined });
    } else if (j.state === 'suspended' && !(e instanceof InterruptedError)) {
      // Suspended with an error is what the one outcome rule makes of a transient failure (or a local one, like a full disk) once the run's own deadline passed.
      const now = Date.now();
      const progressed = j.stalledBytes === undefined || j.bytesDone > j.stalledBytes || j.stalledSince === undefined;
      const stalledSince = progressed ? now : Date.parse(j.stalledSince!);
      if (now - stalledSince < backgroundTimeoutMs(j)) {
        const retryAt = new Date(now + opts.retryDelayMs).toISOString();
        await store.update(id, { state: 'queued', retryAt, stalledSince: new Date(stalledSince).toISOString(), stalledBytes: j.bytesDone });
        log(`job ${id}: ${formatJobError(jobErrorFrom(e))}; retrying at ${retryAt}`);
        return;
      }
      j = await store.update(id, { state: 'error', retryAt: undefined });
      log(`job ${id}: no progress for ${Math.round(backgroundTimeoutMs(j) / 1000)} s; giving up`);
    }
    log(`job ${id}: ${j.state}${j.lastError ? `: ${formatJobError(j.lastError)}` : ''}`);
    notify(j);
  };

  const notify = (job: Job) => {
    const cmd = job.state === 'complete' ? job.notify?.onComplete : job.notify?.onError;
    if (!cmd) return;
    const p = runNotifyCommand(job, cmd, opts.notifyFd).then(
      (status) => log(`job ${job.id}: ${job.state === 'complete' ? 'on-complete' : 'on-error'} command ${status}`),
      (err) => log(`job ${job.id}: notify command could not start: ${toBitsError(err).message}`),
    );
    hooks.add(p);
    void p.finally(() => hooks.delete(p));
  };

  // Bounded: each pass sleeps pollMs, and the loop ends when idle (idleExitMs) or stopped.
  while (!opts.signal?.aborted) {
    const now = Date.now();
    let jobs: Job[];
    try {
      jobs = await store.list();
    } catch (err) {
      log(`cannot read the job store: ${toBitsError(err).message}`);
      jobs = [];
    }
    const byId = new Map(jobs.map((j) => [j.id, j]));
    for (const [id, slot] of running) {
      const j = byId.get(id);
      if (slot.why) continue;
      if (j?.cancelRequested) {
        slot.why = 'cancel';
        slot.ctrl.abort(new InterruptedError(`job ${id} cancelled by request`));
      } else if (j?.suspendRequested) {
        slot.why = 'suspend';
        slot.ctrl.abort(new InterruptedError(`job ${id} suspended by request`));
      }
    }
    const eligible = (j: Job) =>
      isBackground(j) && !running.has(j.id) && j.suspendRequested === undefined && j.cancelRequested === undefined &&
      ((j.state === 'queued' && (j.retryAt === undefined || Date.parse(j.retryAt) <= now)) || (j.state === 'transferring' && !runnerAlive(j, now)));
    const queue = jobs.filter(eligible).sort(compareQueue);
    while (queue.length > 0 && running.size < opts.concurrency) start(queue.shift()!);
    // BITS preempts: a waiting job of higher priority stops the lowest running one, which is queued again.
    const next = queue[0];
    const active = [...running.keys()].map((id) => byId.get(id)).filter((j): j is Job => j !== undefined && !running.get(j.id)!.why);
    const worst = active.sort(compareQueue).at(-1);
    if (next && worst && rank(next) < rank(worst)) {
      const slot = running.get(worst.id)!;
      slot.why = 'stop';
      log(`job ${worst.id}: preempted by job ${next.id} (priority ${next.priority})`);
      slot.ctrl.abort(new InterruptedError(`job ${worst.id} preempted by a job of higher priority`));
    }
    const waiting = jobs.some((j) => isBackground(j) && !isTerminal(j.state) && (j.state === 'queued' || (j.state === 'transferring' && !runnerAlive(j, now))));
    if (running.size > 0 || waiting || hooks.size > 0) idleSince = now;
    else if (now - idleSince >= opts.idleExitMs) break;
    await new Promise<void>((resolve) => {
      const t = setTimeout(resolve, pollMs);
      wake = () => {
        clearTimeout(t);
        resolve();
      };
    });
    wake = undefined;
  }
  for (const slot of running.values()) {
    slot.why ??= 'stop';
    slot.ctrl.abort(new InterruptedError('the bits agent is stopping'));
  }
  await Promise.race([Promise.allSettled([...running.values()].map((s) => s.done)), sleep(STOP_WAIT_MS)]);
  await Promise.race([Promise.allSettled([...hooks]), sleep(opts.signal?.aborted ? 0 : STOP_WAIT_MS)]);
}

/** The environment a completion command sees. */
export function notifyEnv(job: Job): Record<string, string> {
  return {
    BITS_JOB_ID: job.id,
    BITS_JOB_STATE: job.state,
    BITS_JOB_KIND: job.kind,
    BITS_JOB_SOURCE: job.source,
    BITS_JOB_DESTINATION: job.destination,
    BITS_JOB_BYTES: String(job.bytesDone),
  };
}

/** Runs a user's completion command through the shell; resolves with how it ended (never rejects on its exit status). */
export function runNotifyCommand(job: Job, cmd: string, fd?: number): Promise<string> {
  return new Promise((resolve, reject) => {
    // In the folder the job was queued from (a download's cwd, an upload's source folder), not wherever the agent started.
    const cwd = job.options?.cwd ?? (job.kind === 'upload' ? path.dirname(job.source) : path.dirname(job.destination));
    const child = spawn(cmd, {
      shell: true,
      cwd: fs.existsSync(cwd) ? cwd : os.homedir(),
      env: { ...process.env, ...notifyEnv(job) },
      stdio: ['ignore', fd ?? 'ignore', fd ?? 'ignore'],
    });
    const timer = setTimeout(() => child.kill('SIGKILL'), NOTIFY_TIMEOUT_MS);
    child.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      resolve(signal ? `killed by ${signal}` : `exited ${code}`);
    });
  });
}
