/**
 * The one failure policy: what every failed request means for the transfer,
 * and how long to wait before the next try. Pure: no I/O, no clocks, no
 * randomness (callers pass `now` and a random number in).
 *
 * Every driver (upload, download, reply fetch, cancel) and the job layer
 * decide "retry, suspend or fail for good" here and nowhere else, so that a
 * 404 means the same thing to an upload, a download and `bits resume --all`.
 *
 *   retry    try again after nextRetryDelay(), while the no-progress deadline allows;
 *            when it runs out the job is suspended (resumable, exit 4)
 *   suspend  stop now, the job stays resumable (Ctrl-C, a full local disk)
 *   fail     retrying will not help: the job is in state `error` (BITS' BG_JOB_STATE_ERROR,
 *            which Windows never retries by itself); `bits resume ID` may still try on request
 *   cancel   the job was cancelled
 *
 * Retry-After and the delay rule follow got's calculate-retry-delay: a pure
 * function of the attempt, the error and the policy.
 */
import { HRESULT } from './hresult.js';

export type Disposition = 'retry' | 'suspend' | 'fail' | 'cancel';

/**
 * The one table of transient HTTP statuses: a proxy, a load balancer or a
 * busy server answers these without meaning the request is wrong. 408, 429
 * and 503 are transient even with a BITS-Error (an IIS front end in
 * maintenance); the other 5xx only without one.
 */
export const ALWAYS_TRANSIENT_STATUSES: ReadonlySet<number> = new Set([408, 429, 503]);
/** 5xx that are transient when no BITS-Error says otherwise. */
export const TRANSIENT_5XX: ReadonlySet<number> = new Set([500, 502, 504, 507, 509, 520, 521, 522, 523, 524]);

/**
 * HRESULTs a BITS server sends that say "try again later" rather than "no".
 * BG_E_SESSION_NOT_FOUND is not here: it restarts the upload (§3.1.5.2.1),
 * which the uploader state machine decides.
 */
const TRANSIENT_HRESULTS: ReadonlySet<number> = new Set([HRESULT.E_OUTOFMEMORY]);

/**
 * What an HTTP error answer means. `bitsError` is the HRESULT the server sent
 * (BITS-Error or BITS-Error-Code), when it sent one.
 *
 * - 501 without a BITS error is a web server that does not implement the
 *   method (Apache, lighttpd, Python's http.server answer BITS_POST so): fail.
 * - 401/407 that reach this point are credentials that did not work: fail.
 */
export function classifyHttpFailure(status: number, bitsError?: number): Disposition {
  if (ALWAYS_TRANSIENT_STATUSES.has(status)) return 'retry';
  if (bitsError !== undefined) {
    if (TRANSIENT_HRESULTS.has(bitsError >>> 0)) return 'retry';
    return 'fail';
  }
  if (TRANSIENT_5XX.has(status)) return 'retry';
  return 'fail';
}

/** Whether an HTTP status is transient on its own (no BITS-Error). */
export function isTransientStatus(status: number): boolean {
  return classifyHttpFailure(status) === 'retry';
}

/**
 * Retry-After (RFC 7231 §7.1.3) as milliseconds from `now`: delta-seconds or an
 * HTTP-date. undefined when absent or unreadable.
 */
export function parseRetryAfter(value: string | readonly string[] | undefined, now: number): number | undefined {
  const raw = Array.isArray(value) ? value[0] : value;
  if (typeof raw !== 'string') return undefined;
  const v = raw.trim();
  if (v === '') return undefined;
  if (/^\d+$/.test(v)) return Number(v) * 1000;
  const t = Date.parse(v);
  return Number.isFinite(t) ? Math.max(0, t - now) : undefined;
}

export interface RetryPolicy {
  /** First backoff step. */
  baseMs: number;
  /** Largest backoff step (before jitter). */
  maxMs: number;
  /** A Retry-After longer than this is capped to it (a server may not park us for a day). */
  maxRetryAfterMs: number;
}

export const DEFAULT_RETRY_POLICY: RetryPolicy = { baseMs: 1000, maxMs: 30_000, maxRetryAfterMs: 10 * 60_000 };

export interface RetryDelayInput {
  /** Retries since the last progress: 0 for the first retry. */
  attempt: number;
  /** The server's Retry-After, in ms, if it sent one. */
  retryAfterMs?: number;
  /** Time since the transfer last moved beyond its high-water mark. */
  sinceProgressMs: number;
  /** The no-progress deadline (BITS' NoProgressTimeout). */
  noProgressTimeoutMs: number;
  policy?: RetryPolicy;
  /** A number in [0, 1). */
  random: number;
}

/**
 * How long to wait before the next try, or undefined when the no-progress
 * deadline has passed and the transfer must give up (suspended, resumable).
 *
 * Exponential backoff with equal jitter: half the step is fixed, half random,
 * so a retry never fires immediately and many clients spread out. A
 * Retry-After replaces the backoff (capped), and every delay ends at the
 * deadline at the latest, so the give-up comes on time.
 */
export function nextRetryDelay(input: RetryDelayInput): number | undefined {
  const policy = input.policy ?? DEFAULT_RETRY_POLICY;
  const left = input.noProgressTimeoutMs - input.sinceProgressMs;
  if (left <= 0) return undefined;
  let delay: number;
  if (input.retryAfterMs !== undefined && input.retryAfterMs >= 0) {
    delay = Math.min(input.retryAfterMs, policy.maxRetryAfterMs);
  } else {
    const step = Math.min(policy.maxMs, policy.baseMs * 2 ** Math.min(Math.max(0, input.attempt), 30));
    const r = Math.max(0, Math.min(0.999999, input.random));
    delay = Math.floor(step / 2 + r * (step / 2));
  }
  return Math.max(0, Math.min(delay, left));
}
