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

  constructor(
    private readonly pause: () => void,
    private readonly resume: () => void,
    private readonly budget = READ_AHEAD_BYTES,
  ) {}

  push(c: Buffer): void {
    if (c.length === 0) return;
    this.queue.push(c);
    this.queued += c.length;
    if (this.queued >= this.budget && !this.paused) {
      this.paused = true;
      this.pause();
    }
    this.notify();
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

  /** Everything queued (at least one chunk), or undefined at the end; throws the source's failure. */
  async next(): Promise<Buffer[] | undefined> {
    for (;;) {
      if (this.queued > 0) {
        const out = this.queue;
        this.queue = [];
        this.queued = 0;
        if (this.paused) {
          this.paused = false;
          this.resume();
        }
        return out;
      }
      // Bytes that arrived before a failure are still handed out above: they were received whole.
      if (this.failure !== undefined) throw this.failure;
      if (this.ended) return undefined;
      await new Promise<void>((r) => (this.wake = r));
    }
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
