/**
 * Durable checkpoints of a download: fsync the partial file, then report what
 * was written before the fsync as done (DownloadCheckpoint, the schema in
 * src/store/job.ts), and count it as progress for the no-progress deadline.
 *
 * A checkpoint is due every `checkpointBytes` written, at least
 * `minIntervalMs` apart, and also once `maxIntervalMs` passed with anything
 * new written: on a slow link 4 MiB can take longer than the no-progress
 * timeout, and only durable bytes count as progress. It runs beside the
 * stream, not in its path: a reader stalled on the disk would stall the
 * socket (and undici 7 asserts when a server closes the connection while the
 * body is paused, nodejs/undici#5360).
 */
import type { DownloadCheckpoint } from '../../store/job.js';

export type { DownloadCheckpoint };

/** A checkpoint this release can resume from, or undefined (none yet, or a version it does not know: start again). */
export function parseDownloadCheckpoint(v: unknown): DownloadCheckpoint | undefined {
  if (typeof v !== 'object' || v === null) return undefined;
  const d = v as Partial<DownloadCheckpoint>;
  if (d.version !== 1 || typeof d.url !== 'string' || typeof d.partialPath !== 'string' || typeof d.outputPath !== 'string') return undefined;
  if (!Array.isArray(d.toc) || !Array.isArray(d.sources) || !Array.isArray(d.applicationRanges) || typeof d.validators !== 'object' || d.validators === null) {
    return undefined;
  }
  return {
    ...d,
    mirrors: Array.isArray(d.mirrors) ? d.mirrors : [],
    singleRangeOnly: d.singleRangeOnly === true,
    segments: typeof d.segments === 'number' ? d.segments : 1,
    force: d.force === true,
    bytesDone: typeof d.bytesDone === 'number' ? d.bytesDone : 0,
  } as DownloadCheckpoint;
}

export interface CheckpointTiming {
  checkpointBytes: number;
  minIntervalMs: number;
  maxIntervalMs: number;
}

/** Serialised durable checkpoints, taken in the background as bytes arrive. */
export class Checkpointer {
  private chain: Promise<void> = Promise.resolve();
  private flushing: Promise<void> | undefined;
  private failure: unknown;
  private since = 0;
  private lastAt: number;

  constructor(
    private readonly timing: CheckpointTiming,
    /** One checkpoint: fsync, then report. Runs serialised. */
    private readonly take: () => Promise<void>,
    private readonly now: () => number = Date.now,
  ) {
    this.lastAt = now();
  }

  /** Bytes written; starts a background checkpoint when one is due. Throws a failed checkpoint's error. */
  wrote(bytes: number): void {
    if (this.failure !== undefined) throw this.failure;
    this.since += bytes;
    if (this.flushing || this.since === 0) return;
    const t = this.now();
    const age = t - this.lastAt;
    const due = (this.since >= this.timing.checkpointBytes && age >= this.timing.minIntervalMs) || age >= this.timing.maxIntervalMs;
    if (!due) return;
    this.lastAt = t;
    this.flushing = this.flush()
      .catch((err: unknown) => {
        this.failure ??= err;
      })
      .finally(() => {
        this.flushing = undefined;
      });
  }

  /** A checkpoint now (after the ones queued). */
  flush(): Promise<void> {
    const next = this.chain.then(async () => {
      this.since = 0;
      await this.take();
    });
    this.chain = next.catch(() => {});
    return next;
  }

  /** A checkpoint whose failure leaves the previous one valid. */
  async flushQuietly(): Promise<void> {
    try {
      await this.flush();
    } catch {
      /* the previous checkpoint stays valid */
    }
  }
}
