/**
 * Reading the source for FRAGMENT bodies (§3.1.5.1.4 "Read the data of size
 * FRAGMENT-LENGTH starting at FRAGMENT-START-OFFSET … into FRAGMENT-BUFFER").
 */
import { createReadStream, promises as fsp } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import { Transform, type Readable } from 'node:stream';
import { BitsError, SourceChangedError } from '../../errors.js';
import { sourceFileError } from '../../io/source-file.js';

/**
 * Fragments up to this size are read whole into one of two reused buffers (see
 * FragmentBuffers); larger ones are streamed from the file.
 */
export const BUFFERED_FRAGMENT_MAX = 16 * 1024 * 1024;
/** Size of the views a buffered fragment is handed to the transport in (progress granularity), and the streamed read size. */
const BODY_SLICE = 1024 * 1024;
/**
 * A slice the socket took within this long is followed by one twice as large (up
 * to the whole fragment): on a fast link an 8 MiB FRAGMENT goes out in a few
 * writes instead of eight slices with a pause for each (issue 13: CPU per GiB
 * 2.0 -> 1.6 s), and on a slow one progress still moves every BODY_SLICE.
 */
const FAST_SLICE_MS = 20;

/** Streams bytes [offset, offset+length) of the file, reporting how many went out. */
export function fragmentBody(file: string, offset: number, length: number, onBytes: (n: number) => void): Readable {
  const counter = new Transform({
    transform(chunk: Buffer, _enc, cb) {
      onBytes(chunk.length);
      cb(null, chunk);
    },
  });
  const rs = createReadStream(file, { start: offset, end: offset + length - 1, highWaterMark: BODY_SLICE });
  rs.on('error', (e) => counter.destroy(e));
  return rs.pipe(counter);
}

/** A buffered fragment as views of its buffer (no copies), counting what the transport took. */
export async function* bufferBody(buf: Buffer, onBytes: (n: number) => void, now: () => number = Date.now): AsyncGenerator<Buffer> {
  let slice = BODY_SLICE;
  for (let off = 0; off < buf.length; ) {
    const part = buf.subarray(off, Math.min(buf.length, off + slice));
    const t = now();
    // Resumed when the transport asks for the next slice: this one is on its way.
    yield part;
    onBytes(part.length);
    off += part.length;
    slice = now() - t < FAST_SLICE_MS ? slice * 2 : BODY_SLICE;
  }
}

interface Slot {
  buf: Buffer;
  offset: number;
  length: number;
  /** The read into buf in progress (resolves false if it failed), or undefined. */
  loading: Promise<boolean> | undefined;
}

/**
 * Two fragment-sized buffers, reused for the whole upload: the fragment in flight
 * is sent from one while the next is read ahead into the other.
 *
 * WHY: a fresh buffer per read chunk costs a page-faulted allocation per chunk and
 * lets tens of MB of dead buffers pile up until V8 collects them (RSS); reading the
 * file into the same memory costs neither. Reuse is safe because a buffer is only
 * refilled for a LATER fragment, and the next fragment is not started before the
 * previous request finished: an Ack can only come after the server received every
 * byte, so nothing in the transport still reads the old bytes (an early error answer
 * ends that request; its connection is either drained or closed before reuse).
 */
export class FragmentBuffers {
  private fh: FileHandle | undefined;
  private readonly slots: Slot[] = [];
  private current: Slot | undefined;

  constructor(private readonly file: string) {}

  /** The bytes [offset, offset+length) of the file: read ahead already, or read now. */
  async load(offset: number, length: number): Promise<Buffer> {
    const ahead = this.slots.find((s) => s.loading && s.offset === offset && s.length === length);
    if (ahead && (await ahead.loading)) {
      ahead.loading = undefined;
      this.current = ahead;
      return ahead.buf.subarray(0, length);
    }
    // No read may still be filling a buffer we are about to pick.
    await Promise.all(this.slots.map((s) => s.loading));
    for (const s of this.slots) s.loading = undefined;
    const slot = this.slotFor(length, undefined)!;
    await this.readInto(slot, offset, length);
    this.current = slot;
    return slot.buf.subarray(0, length);
  }

  /** Starts reading the likely next fragment into the buffer not in flight; errors surface at load(). */
  readAhead(offset: number, length: number): void {
    if (length <= 0) return;
    const slot = this.slotFor(length, this.current);
    if (!slot || slot.loading) return;
    slot.loading = this.readInto(slot, offset, length).then(
      () => true,
      () => false,
    );
  }

  async close(): Promise<void> {
    await Promise.all(this.slots.map((s) => s.loading));
    await this.fh?.close().catch(() => undefined);
    this.fh = undefined;
  }

  /** A slot other than `busy` with room for length bytes (grown if needed; not while it is being filled). */
  private slotFor(length: number, busy: Slot | undefined): Slot | undefined {
    let slot = this.slots.find((s) => s !== busy);
    if (!slot) {
      if (this.slots.length >= 2) return undefined;
      slot = { buf: Buffer.allocUnsafeSlow(length), offset: -1, length: 0, loading: undefined };
      this.slots.push(slot);
    } else if (slot.buf.length < length) {
      if (slot.loading) return undefined;
      slot.buf = Buffer.allocUnsafeSlow(length);
    }
    return slot;
  }

  private async readInto(slot: Slot, offset: number, length: number): Promise<void> {
    slot.offset = offset;
    slot.length = length;
    try {
      this.fh ??= await fsp.open(this.file, 'r');
      let done = 0;
      while (done < length) {
        const { bytesRead } = await this.fh.read(slot.buf, done, length - done, offset + done);
        if (bytesRead === 0) throw new SourceChangedError(`${this.file} became shorter during the upload; cancel the job and upload again`, 'local');
        done += bytesRead;
      }
    } catch (e) {
      slot.offset = -1;
      if (e instanceof BitsError) throw e;
      throw sourceFileError(this.file, e);
    }
  }
}

