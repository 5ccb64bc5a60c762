/**
 * Job states and the changes between them, pure, beside the job record they
 * constrain: the store refuses any write these rules forbid, so no caller can
 * move a cancelled job back to transferring. Whether a runner process is alive
 * is I/O, so callers pass it in (see src/jobs/running.ts).
 *
 *   queued ──> transferring ──> complete
 *     │  ▲        │    ▲
 *     │  └────────┤    │ (resume)
 *     │           ▼    │
 *     ├──────> suspended / error
 *     ▼
 *   cancelled   (from any non-terminal state)
 *
 * complete and cancelled are terminal, as in Windows BITS (BG_JOB_STATE_ACKNOWLEDGED / CANCELLED).
 * error is BG_JOB_STATE_ERROR: BITS never retries such a job by itself, only when asked
 * (IBackgroundCopyJob::Resume), so `bits resume --all` skips it and `bits resume ID` retries it.
 */
import type { Job, JobState } from './job.js';
import { ExitCode } from '../errors.js';

export const TERMINAL_STATES: readonly JobState[] = ['complete', 'cancelled'];

const ALLOWED: Record<JobState, readonly JobState[]> = {
  queued: ['transferring', 'suspended', 'error', 'cancelled', 'complete'],
  transferring: ['suspended', 'error', 'complete', 'cancelled', 'queued'],
  suspended: ['transferring', 'queued', 'error', 'cancelled'],
  error: ['transferring', 'queued', 'suspended', 'cancelled'],
  complete: [],
  cancelled: [],
};

export function isTerminal(state: JobState): boolean {
  return TERMINAL_STATES.includes(state);
}

/** Staying in the same state is always allowed (progress updates, repeated cancel). */
export function canTransition(from: JobState, to: JobState): boolean {
  return from === to || ALLOWED[from].includes(to);
}

/**
 * The state a person should see. A job marked transferring whose runner died
 * (kill -9, power loss) is really suspended; a live runner means transferring
 * whatever the record says.
 */
export function effectiveState(job: Job, runnerAlive: boolean): JobState {
  if (isTerminal(job.state)) return job.state;
  if (runnerAlive) return 'transferring';
  if (job.state === 'transferring') return 'suspended';
  return job.state;
}

/**
 * `bits resume ID` can continue it: not finished, not cancelled, no live
 * process transferring it, and (for a failed job) not failed in a way a retry
 * cannot change (a changed source).
 */
export function isResumable(job: Job, runnerAlive = false): boolean {
  if (runnerAlive) return false;
  const s = effectiveState(job, false);
  if (s === 'error') return job.lastError?.resumable !== false;
  return s === 'queued' || s === 'suspended';
}

/** `bits resume --all` takes it up by itself: only queued and suspended jobs, never one in error. */
export function resumesByItself(job: Job, runnerAlive = false): boolean {
  if (runnerAlive) return false;
  const s = effectiveState(job, false);
  return s === 'queued' || s === 'suspended';
}

/**
 * Cleanable by `bits clean`: finished and not running; with `all`, also a job
 * that failed for good (error), whose upload session the caller cancels
 * best-effort first. A suspended job is never removed: it is still going to finish.
 */
export function isCleanable(job: Job, runnerAlive: boolean, all: boolean): boolean {
  if (runnerAlive) return false;
  if (isTerminal(job.state)) return true;
  return all && job.state === 'error';
}

export function progressPercent(job: Pick<Job, 'bytesDone' | 'totalBytes' | 'state'>): number | undefined {
  if (job.state === 'complete') return 100;
  if (job.totalBytes === undefined) return undefined;
  if (job.totalBytes === 0) return 0;
  return Math.min(100, Math.floor((job.bytesDone / job.totalBytes) * 1000) / 10);
}

// ---------------------------------------------------------------------------
// Background jobs (the agent, src/jobs/agent.ts).

/** A job the per-user agent runs (it has a background priority), not the process that created it. */
export function isBackground(job: Pick<Job, 'priority'>): boolean {
  return job.priority !== undefined;
}

const PRIORITY_RANK: Record<NonNullable<Job['priority']>, number> = { high: 0, normal: 1, low: 2 };

/** 0 = high: lower runs first. */
export function priorityRank(p: Job['priority']): number {
  return PRIORITY_RANK[p ?? 'normal'];
}

/** The agent's queue order: priority (high first), then first queued first, as BITS schedules. */
export function compareQueue(a: Job, b: Job): number {
  const pa = priorityRank(a.priority);
  const pb = priorityRank(b.priority);
  if (pa !== pb) return pa - pb;
  return a.createdAt < b.createdAt ? -1 : a.createdAt > b.createdAt ? 1 : a.id < b.id ? -1 : 1;
}

/**
 * `bits wait` is over for this job: it ended, or nothing will move it without
 * a command. A background job still queued (perhaps for a retry) or left
 * transferring by a dead agent is not over: the agent takes it up.
 */
export function waitIsOver(job: Job, runnerAlive: boolean): boolean {
  if (isTerminal(job.state) || job.state === 'error') return true;
  if (runnerAlive) return false;
  if (isBackground(job)) return job.state === 'suspended';
  return true;
}

/** The exit code a job ended with, as its own foreground run would have exited (README "Exit codes"). */
export function jobExitCode(job: Job): number {
  if (job.state === 'complete') return ExitCode.OK;
  if (job.state === 'cancelled') return ExitCode.CANCELLED;
  return job.lastError?.exitCode ?? ExitCode.INTERRUPTED;
}
