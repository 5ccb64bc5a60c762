/**
 * Job lifecycle rules, pure: which state changes are allowed, what can be
 * resumed, and the summary `bits list` / `bits status` show. Whether a job's
 * runner process is alive is I/O, so callers pass it in (see running.ts).
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
 */
import type { Job, JobError, JobState } from '../store/job.js';
import { describeHresult, parseHresult } from '../protocol/hresult.js';
import { toBitsError } from '../errors.js';

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

/** `bits resume` can continue it: not finished, not cancelled, and no live process is transferring it. */
export function isResumable(job: Job, runnerAlive = false): boolean {
  if (runnerAlive) return false;
  const s = effectiveState(job, false);
  if (s === 'error') return job.lastError?.resumable !== false;
  return s === 'queued' || s === 'suspended';
}

/** Cleanable by `bits clean`: finished (or, with `all`, failed) and not running. */
export function isCleanable(job: Job, runnerAlive: boolean, all: boolean): boolean {
  if (runnerAlive) return false;
  if (isTerminal(job.state)) return true;
  return all && job.state === 'error';
}

export interface JobSummary {
  id: string;
  kind: Job['kind'];
  state: JobState;
  running: boolean;
  resumable: boolean;
  bytesDone: number;
  totalBytes?: number;
  /** 0..100 with one decimal, when the total is known. */
  percent?: number;
  source: string;
  destination: string;
  createdAt: string;
  updatedAt: string;
  /** The last error as one line, when there is one. */
  error?: string;
}

export function progressPercent(job: Pick<Job, 'bytesDone' | 'totalBytes' | 'state'>): number | undefined {
  if (job.state === 'complete') return 100;
  if (job.totalBytes === undefined) return undefined;
  if (job.totalBytes === 0) return 0;
  return Math.min(100, Math.floor((job.bytesDone / job.totalBytes) * 1000) / 10);
}

export function summarize(job: Job, runnerAlive = false): JobSummary {
  const s: JobSummary = {
    id: job.id,
    kind: job.kind,
    state: effectiveState(job, runnerAlive),
    running: runnerAlive,
    resumable: isResumable(job, runnerAlive),
    bytesDone: job.bytesDone,
    source: job.source,
    destination: job.destination,
    createdAt: job.createdAt,
    updatedAt: job.updatedAt,
  };
  if (job.totalBytes !== undefined) s.totalBytes = job.totalBytes;
  const pct = progressPercent(job);
  if (pct !== undefined) s.percent = pct;
  if (job.lastError) s.error = formatJobError(job.lastError);
  return s;
}

/**
 * The last error as the one line people see: the message, then HTTP status
 * and HRESULT (name and hex) unless the message already says them.
 * e.g. `server refused FRAGMENT: HTTP 500 … [HTTP 500, BG_E_HTTP_ERROR_500 0x801901F4]`.
 */
export function formatJobError(e: JobError): string {
  const extra: string[] = [];
  if (e.httpStatus !== undefined && !e.message.includes(`HTTP ${e.httpStatus}`)) extra.push(`HTTP ${e.httpStatus}`);
  if (e.hresult !== undefined) {
    const hr = parseHresult(e.hresult);
    const name = e.hresultName ?? (hr !== undefined ? describeHresult(hr).name : undefined);
    const parts = [];
    if (name && !e.message.includes(name)) parts.push(name);
    if (!e.message.toLowerCase().includes(e.hresult.toLowerCase())) parts.push(e.hresult);
    if (parts.length) extra.push(parts.join(' '));
  }
  if (e.context && !e.message.includes(e.context)) extra.push(`context ${e.context}`);
  const line = `${e.code}: ${e.message.replace(/\s*\n\s*/g, ' ')}`;
  return extra.length ? `${line} [${extra.join(', ')}]` : line;
}

/** What to store as `lastError` for any thrown value. */
export function jobErrorFrom(err: unknown, now = new Date()): JobError {
  return { ...toBitsError(err).toJSON(), at: now.toISOString() };
}
