/**
 * Response bodies read ahead into a bounded queue and handed to the consumer in
 * batches: everything that arrived while the consumer was busy comes out as one
 * array, so the per-chunk cost of a promise, a yield and a disk-queue entry is
 * paid per batch (issue 13: per-64-KiB overhead was a large share of a 1 GiB
 * download's CPU). Both the undici path and the bulk reader (bulk-get.ts) feed it.
 */
import type { Readable } from 'node:stream';

/** Buffered bytes per body before the source is paused (the transport's own buffer size). */
export const READ_AHEAD_BYTES = 2 * 1024 * 1024;
/**
 * A batch waits for this many bytes (or the end, or BATCH_WAIT_MS): the disk
 * then gets ~1 MiB pwritevs straight from the batch, not one per socket read.
 */
export const BATCH_MIN_BYTES = 1024 * 1024;
/** The longest a batch waits for BATCH_MIN_BYTES: a slow body still shows progress (and feeds the no-progress timer) this often. */
export const BATCH_WAIT_MS = 100;

/**
 * A bounded queue between a push source (socket or stream 'data') and one
 * async consumer. `pause`/`resume` are the source's; `fail` and `end` finish it.
 */
export class BatchQueue {
  private queue: Buffer[] = [];
  private queued = 0;
  private ended = false;
  private failure: unknown;
  private paused = false;
  private wake: (() => void) | undefined;
  private readonly min: number;

  constructor(
    private readonly pause: () => void,
    private readonly resume: () => void,
    private readonly budget = READ_AHEAD_BYTES,
  ) {
    // Below the pause threshold, or a paused source could never fill a batch.
    this.min = Math.min(BATCH_MIN_BYTES, budget >> 1);
  }

  push(c: Buffer): void {
    if (c.length === 0) return;
    this.queue.push(c);
    this.queued += c.length;
    if (this.queued >= this.budget && !this.paused) {
      this.paused = true;
      this.pause();
    }
    // The first chunk wakes the consumer too, so that it starts the BATCH_WAIT_MS clock.
    if (this.queued >= this.min || this.queue.length === 1) this.notify();
  }

  end(): void {
    this.ended = true;
    this.notify();
  }

  fail(e: unknown): void {
    this.failure ??= e;
    this.notify();
  }

  get finished(): boolean {
    return this.ended || this.failure !== undefined;
  }

  private notify(): void {
    const w = this.wake;
    this.wake = undefined;
    w?.();
  }

  /**
   * Everything queued, once that is BATCH_MIN_BYTES, the source ended or failed,
   * or BATCH_WAIT_MS passed with something queued; undefined at the end. Throws
   * the source's failure after the bytes that arrived before it.
   */
  async next(): Promise<Buffer[] | undefined> {
    let deadline: NodeJS.Timeout | undefined;
    let late = false;
    try {
      for (;;) {
        if (this.queued > 0 && (this.queued >= this.min || late || this.finished)) return this.take();
        // Bytes that arrived before a failure are still handed out above: they were received whole.
        if (this.failure !== undefined) throw this.failure;
        if (this.ended) return undefined;
        if (this.queued > 0 && !deadline) {
          deadline = setTimeout(() => {
            late = true;
            this.notify();
          }, BATCH_WAIT_MS);
        }
        await new Promise<void>((r) => (this.wake = r));
      }
    } finally {
      clearTimeout(deadline);
    }
  }

  private take(): Buffer[] {
    const out = this.queue;
    this.queue = [];
    this.queued = 0;
    if (this.paused) {
      this.paused = false;
      this.resume();
    }
    return out;
  }
}

/**
 * The batches of a Readable body. A consumer writing to disk briefly slower
 * than the network then does not pause the HTTP parser: undici 7 crashes the
 * process (an uncatchable assert, nodejs/undici#5360) when a server closes the
 * connection (HTTP/1.0, `Connection: close`) while the parser is paused.
 */
export async function* readBatches(body: Readable, budget = READ_AHEAD_BYTES): AsyncGenerator<Buffer[]> {
  const q = new BatchQueue(
    () => body.pause(),
    () => body.resume(),
    budget,
  );
  const onData = (c: Buffer) => q.push(c);
  const onEnd = () => q.end();
  const onError = (e: unknown) => q.fail(e);
  body.on('data', onData);
  body.on('end', onEnd);
  body.on('close', onEnd);
  body.on('error', onError);
  try {
    for (;;) {
      const batch = await q.next();
      if (!batch) return;
      yield batch;
    }
  } finally {
    body.off('data', onData);
    body.off('end', onEnd);
    body.off('close', onEnd);
    body.off('error', onError);
  }
}

/** The body's chunks one at a time (the batches, flattened), for consumers that want a chunk stream. */
export async function* readAhead(body: Readable, budget = READ_AHEAD_BYTES): AsyncGenerator<Buffer> {
  for await (const batch of readBatches(body, budget)) yield* batch;
}
