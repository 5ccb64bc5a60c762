/**
 * Where downloaded bytes go: the partial file (random access, write batching,
 * fsync) or stdout (in order only). Also the read-ahead of response bodies.
 */
import { createHash } from 'node:crypto';
import type { FileHandle } from 'node:fs/promises';
import type { Readable } from 'node:stream';
import { writevAll } from '../../io/write-all.js';

export interface Sink {
  /** Writes at aggregate offset `pos`; false when the sink cannot take bytes there (stdout: out of order). */
  write(buf: Buffer, pos: number): Promise<boolean>;
  sync(): Promise<void>;
  close(): Promise<void>;
  readonly sequential: boolean;
}

/** Bytes of one contiguous run gathered before a single pwritev (see FileSink). */
const WRITE_BATCH = 1024 * 1024;

interface Run {
  pos: number;
  bufs: Buffer[];
  bytes: number;
}

/**
 * Writes to the partial file. Socket chunks (~64 KiB each) are gathered per
 * contiguous run (one per segment) and written with one pwritev per WRITE_BATCH:
 * a thread-pool round trip per chunk made the disk path, not the network, the
 * limit.
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

  write(buf: Buffer, pos: number): Promise<boolean> {
    return this.serial(async () => {
      let run = this.runs.get(pos);
      if (run) this.runs.delete(pos);
      else run = { pos, bufs: [], bytes: 0 };
      run.bufs.push(buf);
      run.bytes += buf.length;
      if (run.bytes >= WRITE_BATCH) await this.writeRun(run);
      else this.runs.set(pos + buf.length, run);
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
  async write(buf: Buffer, pos: number): Promise<boolean> {
    if (pos !== this.pos) return false;
    this.hash.update(buf);
    this.pos += buf.length;
    if (!this.stream.write(buf)) {
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

/**
 * The body's chunks, read ahead into a bounded queue (default 2 MiB, the transport's own buffer size) instead
 * of pulled one at a time. A consumer writing to disk briefly slower than the
 * network then does not pause the HTTP parser: undici 7 crashes the process
 * (an uncatchable assert, nodejs/undici#5360) when a server closes the
 * connection (HTTP/1.0, `Connection: close`) while the parser is paused.
 */
export async function* readAhead(body: Readable, budget = 2 * 1024 * 1024): AsyncGenerator<Buffer> {
  const queue: Buffer[] = [];
  let queued = 0;
  let ended = false;
  let failure: unknown;
  let wake: (() => void) | undefined;
  const notify = () => {
    const w = wake;
    wake = undefined;
    w?.();
  };
  const onData = (c: Buffer) => {
    queue.push(c);
    queued += c.length;
    if (queued >= budget) body.pause();
    notify();
  };
  const onEnd = () => {
    ended = true;
    notify();
  };
  const onError = (e: unknown) => {
    failure ??= e;
    notify();
  };
  body.on('data', onData);
  body.on('end', onEnd);
  body.on('close', onEnd);
  body.on('error', onError);
  try {
    for (;;) {
      const c = queue.shift();
      if (c) {
        queued -= c.length;
        if (queued < budget / 2 && body.isPaused()) body.resume();
        yield c;
        continue;
      }
      if (failure !== undefined) throw failure;
      if (ended) return;
      await new Promise<void>((r) => (wake = r));
    }
  } finally {
    body.off('data', onData);
    body.off('end', onEnd);
    body.off('close', onEnd);
    body.off('error', onError);
  }
}

