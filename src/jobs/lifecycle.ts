/**
 * A job as `bits list` / `bits status` summarise it, and its last error as one
 * line. Pure. The state rules themselves live with the job record
 * (src/store/states.ts) and are re-exported here for the job layer's callers.
 */
import type { Job, JobError } from '../store/job.js';
import { effectiveState, isResumable, progressPercent } from '../store/states.js';
import { describeHresult, parseHresult } from '../protocol/hresult.js';
import { toBitsError } from '../errors.js';

export * from '../store/states.js';

export interface JobSummary {
  id: string;
  kind: Job['kind'];
  state: Job['state'];
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
