/**
 * The --json rendering of a progress model: one object per line on stdout,
 * progress at most once per interval (with a trailing one after a burst, and
 * a final one when the count changed), exact integers.
 */
import type { Writable } from 'node:stream';
import { currentRate, type ProgressState } from './progress-model.js';
import { isoNow, writeJson } from './final.js';

export class JsonRenderer {
  private lastAt = 0;
  private pending = false;
  private lastBytes: number | undefined;
  private timer: NodeJS.Timeout | undefined;
  private finished = false;

  constructor(
    private readonly stdout: Writable,
    private readonly state: ProgressState,
    private readonly gapMs: number,
  ) {}

  /** Any object but progress: `start`, `phase`, `retry`, `warning`, … */
  write(type: string, fields: Record<string, unknown>): void {
    const jobId = this.state.jobId;
    writeJson(this.stdout, { type, time: isoNow(), ...(jobId !== undefined ? { jobId } : {}), ...fields });
  }

  private emitProgress(): void {
    this.pending = false;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    const s = this.state;
    const now = Date.now();
    this.lastAt = now;
    this.lastBytes = s.done;
    const fields: Record<string, unknown> = { bytesDone: s.done, totalBytes: s.total, bytesPerSecond: Math.round(currentRate(s, now)) };
    if (s.segments.length > 0) fields.segments = s.segments.map((g) => ({ index: g.index, bytesDone: g.done, totalBytes: g.total }));
    this.write('progress', fields);
  }

  progress(): void {
    const now = Date.now();
    if (now - this.lastAt >= this.gapMs) {
      this.emitProgress();
      return;
    }
    this.pending = true;
    // Trailing emit, so a pause after a burst still reports where we are.
    this.timer ??= setTimeout(() => {
      this.timer = undefined;
      if (this.pending && !this.finished) this.emitProgress();
    }, this.lastAt + this.gapMs - now).unref();
  }

  /** The final progress object: only if the last one sent is not already the final count. */
  finish(): void {
    if (this.finished) return;
    if (this.pending || (this.lastBytes ?? 0) !== this.state.done) this.emitProgress();
    this.finished = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
  }
}
