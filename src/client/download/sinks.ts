/**
 * Where downloaded bytes go: the partial file (random access, write batching,
 * fsync) or stdout (in order only). Also the read-ahead of response bodies.
 */
import { createHash } from 'node:crypto';
import type { FileHandle } from 'node:fs/promises';
import { writevAll } from '../../io/write-all.js';

export interface Sink {
  /** Writes the chunks, in order, at aggregate offset `pos`; false when the sink cannot take bytes there (stdout: out of order). */
  write(bufs: readonly Buffer[], pos: number): Promise<boolean>;
  sync(): Promise<void>;
  close(): Promise<void>;
  readonly sequential: boolean;
}

/** Bytes of one contiguous run gathered before a single pwritev (see FileSink). */
const WRITE_BATCH = 1024 * 1024;
/** A write at least this large goes to the file at once, from the caller's buffers. */
const DIRECT_WRITE = 256 * 1024;

interface Run {
  pos: number;
  bufs: Buffer[];
  bytes: number;
}

/**
 * Writes to the partial file, in pwritevs of about WRITE_BATCH: a thread-pool
 * round trip per socket chunk made the disk path, not the network, the limit.
 * Large writes (the transport's batches, bodyBatches) go to the file at once;
 * small ones (a slow body) are copied and gathered per contiguous run (one per
 * segment) until a batch is full.
 *
 * The sink never keeps a caller's buffer once write() has returned: the bulk
 * reader (transport/bulk-get.ts) reuses its socket buffers as soon as the
 * consumer asks for the next batch.
 *
 * Gathered bytes count as written before they reach the disk, so two rules keep
 * a checkpoint honest: every operation runs in order (a sync() waits for a
 * batch another caller is writing, then writes what is gathered, then
 * fdatasyncs), and after any failed write (ENOSPC, EIO) the sink is poisoned:
 * the batch that failed is gone from memory, so no later sync() may succeed and
 * report it as durable. The download then stops at its last good checkpoint.
 */
export class FileSink implements Sink {
  readonly sequential = false;
  /** Runs not yet written, by the offset they end at (where the next chunk of their segment goes). */
  private readonly runs = new Map<number, Run>();
  private chain: Promise<unknown> = Promise.resolve();
  private failure: unknown;
  constructor(readonly fh: FileHandle) {}

  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.chain.then(() => {
      if (this.failure !== undefined) throw this.failure;
      return fn();
    });
    this.chain = next.catch(() => {});
    return next;
  }

  write(bufs: readonly Buffer[], pos: number): Promise<boolean> {
    return this.serial(async () => {
      let bytes = 0;
      for (const b of bufs) bytes += b.length;
      const run = this.runs.get(pos) ?? { pos, bufs: [], bytes: 0 };
      this.runs.delete(pos);
      if (bytes >= DIRECT_WRITE || run.bytes + bytes >= WRITE_BATCH) {
        // What was gathered before it, then the caller's buffers, in one pwritev.
        await this.writeRun({ pos: run.pos, bufs: [...run.bufs, ...bufs], bytes: run.bytes + bytes });
      } else {
        if (bytes > 0) run.bufs.push(bufs.length === 1 ? Buffer.from(bufs[0]!) : Buffer.concat(bufs, bytes));
        run.bytes += bytes;
        this.runs.set(run.pos + run.bytes, run);
      }
      return true;
    });
  }

  /**
   * Only the drain is in the queue: it puts every byte counted so far on the
   * file. The fdatasync that makes them durable then runs beside later writes,
   * which no checkpoint taken before it counts, so the stream never waits on it.
   */
  async sync(): Promise<void> {
    await this.serial(() => this.drain());
    await this.fh.datasync();
  }

  async close(): Promise<void> {
    try {
      await this.serial(() => this.drain());
    } finally {
      await this.chain;
      await this.fh.close();
    }
  }

  /** Writes every gathered run. */
  private async drain(): Promise<void> {
    const runs = [...this.runs.values()];
    this.runs.clear();
    for (const r of runs) await this.writeRun(r);
  }

  private async writeRun(run: Run): Promise<void> {
    try {
      await writevAll(this.fh, run.bufs, run.pos, run.bytes);
    } catch (err) {
      this.failure = err;
      throw err;
    }
  }
}

export class StreamSink implements Sink {
  readonly sequential = true;
  pos = 0;
  readonly hash = createHash('sha256');
  constructor(readonly stream: NodeJS.WritableStream) {}
  async write(bufs: readonly Buffer[], pos: number): Promise<boolean> {
    if (pos !== this.pos) return false;
    let full = false;
    for (const buf of bufs) {
      this.hash.update(buf);
      this.pos += buf.length;
      // A copy: the stream keeps what it has not flushed, and the caller's buffer is reused (see FileSink).
      full = !this.stream.write(Buffer.from(buf));
    }
    if (full) {
      await new Promise<void>((resolve, reject) => {
        const done = (err?: Error) => {
          this.stream.off('drain', ok);
          this.stream.off('error', done);
          if (err) reject(err);
          else resolve();
        };
        const ok = () => done();
        this.stream.once('drain', ok);
        this.stream.once('error', done);
      });
    }
    return true;
  }
  async sync(): Promise<void> {}
  async close(): Promise<void> {}
}

/** The body's chunks one at a time, read ahead (transport/read-ahead.ts). */
export { readAhead } from '../../transport/read-ahead.js';

/** The bytes [from, from+length) of a batch of chunks, as views (no copies). */
export function sliceBatch(batch: readonly Buffer[], from: number, length: number): Buffer[] {
  const out: Buffer[] = [];
  let skip = from;
  let want = length;
  for (const c of batch) {
    if (want === 0) break;
    if (skip >= c.length) {
      skip -= c.length;
      continue;
    }
    const take = Math.min(c.length - skip, want);
    out.push(skip === 0 && take === c.length ? c : c.subarray(skip, skip + take));
    want -= take;
    skip = 0;
  }
  return out;
}
