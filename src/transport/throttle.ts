/**
 * Bandwidth limit (MC-BUP §1.3: a client may "limit the rate … by manipulating the
 * length and pace of the transmitted fragments"). One RateLimiter per transport is
 * shared by every connection and both directions, so `--limit-rate 500K` bounds the
 * whole transfer, not each socket.
 *
 * Pacing, not bursting: each slice reserves the next slot on a virtual clock and
 * waits for it; idle time earns no credit, so a pause is never followed by a burst.
 * Slices are at most 1/20 s of traffic, which keeps the rate steady at short scales.
 */
import { Transform, type TransformCallback } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseRateText } from '../units.js';
import { UsageError } from '../errors.js';

export class RateLimiter {
  /** Virtual time (ms, performance.now() clock) at which the next slice may go. */
  private next = 0;
  readonly sliceBytes: number;

  constructor(readonly bytesPerSec: number) {
    if (!(bytesPerSec > 0)) throw new RangeError('bytesPerSec must be positive');
    this.sliceBytes = Math.max(512, Math.min(256 * 1024, Math.floor(bytesPerSec / 20)));
  }

  /** Waits until `n` more bytes may be transferred. */
  async take(n: number, signal?: AbortSignal): Promise<void> {
    const now = performance.now();
    const start = Math.max(this.next, now);
    this.next = start + (n * 1000) / this.bytesPerSec;
    const wait = start - now;
    if (wait >= 1) await sleep(wait, undefined, signal ? { signal } : undefined);
  }

  /** Yields `chunk` in paced slices. */
  async *pace(chunk: Uint8Array, signal?: AbortSignal): AsyncGenerator<Uint8Array> {
    for (let off = 0; off < chunk.length; off += this.sliceBytes) {
      const slice = chunk.subarray(off, Math.min(chunk.length, off + this.sliceBytes));
      await this.take(slice.length, signal);
      yield slice;
    }
  }
}

/** A Transform that paces what flows through it (used on response bodies). */
export class ThrottleTransform extends Transform {
  constructor(private readonly limiter: RateLimiter) {
    super();
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    (async () => {
      for await (const slice of this.limiter.pace(chunk)) {
        if (this.destroyed) return;
        this.push(slice);
      }
    })().then(() => cb(), (e: Error) => cb(e));
  }
}

/** `500K`, `2M`, `1.5G`, `65536` -> bytes per second (K/M/G = 1024^n); 0 = no limit. */
export function parseRate(value: string | number, flag = '--limit-rate'): number {
  if (typeof value === 'number') {
    if (!Number.isFinite(value) || value < 0) throw new UsageError(`${flag} must be a rate like 500K or 2M, got ${value}`);
    return Math.floor(value);
  }
  const n = parseRateText(value);
  // Sizes go up to P; a "limit" of a TiB/s or more is a typo, not a limit.
  if (n === undefined || n >= 1024 ** 4) throw new UsageError(`${flag} must be a rate like 500K or 2M (bytes per second; K/M/G = 1024^n), got ${JSON.stringify(value)}`);
  if (n !== 0 && n < 1024) throw new UsageError(`${flag} must be at least 1K (or 0 for no limit), got ${JSON.stringify(value)}`);
  return n;
}
