/**
 * The one retry loop's moving parts, shared by every driver (upload, download,
 * reply fetch): the no-progress deadline measured against the high-water mark,
 * and the wait between tries. What a failure means and how long to wait are
 * decided by the pure src/protocol/failure.ts; this file only keeps time.
 *
 * Progress is what the server (upload) or the disk (download) holds beyond the
 * highest offset ever confirmed: a re-acknowledged byte, a resync to an old
 * offset or a restarted session moves nothing, so a server that keeps taking
 * us back cannot keep a transfer alive forever.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { BitsError, InterruptedError, TimeoutError, toBitsError } from '../errors.js';
import { DEFAULT_RETRY_POLICY, nextRetryDelay, type RetryPolicy } from '../protocol/failure.js';

/**
 * The no-progress deadline (BITS' NoProgressTimeout) as an AbortSignal: it
 * aborts with TimeoutError('no-progress') once nothing moved beyond the
 * high-water mark for `timeoutMs`, whatever the transfer is doing then —
 * connecting, sending, waiting for a response, reading a body or sleeping
 * before a retry. Pass `signal` to every request.
 */
export class ProgressDeadline {
  private hwm: number;
  private lastProgressAt: number;
  private readonly ac = new AbortController();
  private timer: NodeJS.Timeout | undefined;
  private lastError: BitsError | undefined;
  readonly signal: AbortSignal;

  constructor(
    readonly timeoutMs: number,
    startOffset: number,
    private readonly now: () => number = Date.now,
    /** The user's signal (Ctrl-C): combined into `signal`. */
    userSignal?: AbortSignal,
  ) {
    this.hwm = startOffset;
    this.lastProgressAt = now();
    this.signal = userSignal ? AbortSignal.any([userSignal, this.ac.signal]) : this.ac.signal;
    this.arm();
  }

  /** The highest offset ever confirmed. */
  get highWaterMark(): number {
    return this.hwm;
  }

  /**
   * Reports the offset the server (or the disk) now holds. Returns true, and
   * restarts the deadline, only when it is beyond the high-water mark.
   */
  record(offset: number): boolean {
    if (offset <= this.hwm) return false;
    this.hwm = offset;
    this.lastProgressAt = this.now();
    return true;
  }

  /** Counts as progress without an offset (the final CLOSE-SESSION Ack, a completed reply). */
  touch(): void {
    this.lastProgressAt = this.now();
  }

  sinceProgressMs(): number {
    return this.now() - this.lastProgressAt;
  }

  /** The failure the deadline's message names ("last error: …"). */
  noteError(err: unknown): void {
    this.lastError = toBitsError(err);
  }

  /** Whether the deadline (not the user) ended the transfer. */
  get expired(): boolean {
    return this.ac.signal.aborted;
  }

  /** The error to end the transfer with once the deadline passed. */
  timeoutError(): TimeoutError {
    const secs = Math.round(this.timeoutMs / 1000);
    const last = this.lastError ? ` (last error: ${this.lastError.message})` : '';
    return new TimeoutError(`no progress for ${secs} s${last}; the transfer can be resumed`, 'no-progress', { cause: this.lastError });
  }

  dispose(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
  }

  private arm(): void {
    const left = this.lastProgressAt + this.timeoutMs - this.now();
    if (left <= 0) {
      this.ac.abort(this.timeoutError());
      return;
    }
    // Re-checked when it fires rather than re-armed on every byte: progress is frequent, timers are not free.
    this.timer = setTimeout(() => this.arm(), Math.min(left, 2 ** 31 - 1));
    this.timer.unref?.();
  }
}

export interface RetryEvent {
  attempt: number;
  delayMs: number;
  reason: string;
}

/**
 * Counts tries since the last progress and waits between them. `wait(err)`
 * either resolves after the delay (try again) or throws what the transfer
 * must end with: the error itself when it is not worth retrying, the
 * no-progress TimeoutError when the deadline passed, InterruptedError when the
 * user stopped us.
 */
export class RetryBudget {
  private attempt = 0;
  retries = 0;

  constructor(
    readonly deadline: ProgressDeadline,
    private readonly opts: {
      userSignal?: AbortSignal;
      policy?: RetryPolicy;
      random?: () => number;
      onRetry?: (e: RetryEvent) => void;
    } = {},
  ) {}

  /** Reports progress: beyond the high-water mark it resets the attempt count. */
  progress(offset: number): boolean {
    const moved = this.deadline.record(offset);
    if (moved) this.attempt = 0;
    return moved;
  }

  /** The error a transfer ends with when `err` surfaced after an abort: the user's interrupt or the deadline. */
  abortReason(err: unknown): BitsError {
    if (this.opts.userSignal?.aborted) {
      const r = this.opts.userSignal.reason;
      return r instanceof BitsError ? r : new InterruptedError();
    }
    if (this.deadline.expired) return this.deadline.timeoutError();
    return toBitsError(err);
  }

  async wait(err: unknown): Promise<void> {
    if (this.opts.userSignal?.aborted || this.deadline.expired) throw this.abortReason(err);
    const e = toBitsError(err);
    if (e.disposition !== 'retry') throw e;
    this.deadline.noteError(e);
    const delay = nextRetryDelay({
      attempt: this.attempt,
      retryAfterMs: (e as { retryAfterMs?: number }).retryAfterMs,
      sinceProgressMs: this.deadline.sinceProgressMs(),
      noProgressTimeoutMs: this.deadline.timeoutMs,
      policy: this.opts.policy ?? DEFAULT_RETRY_POLICY,
      random: (this.opts.random ?? Math.random)(),
    });
    if (delay === undefined) throw this.deadline.timeoutError();
    this.attempt++;
    this.retries++;
    this.opts.onRetry?.({ attempt: this.attempt, delayMs: delay, reason: e.message });
    try {
      await sleep(delay, undefined, { signal: this.deadline.signal });
    } catch {
      throw this.abortReason(e);
    }
  }
}
