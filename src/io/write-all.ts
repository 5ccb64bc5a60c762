/**
 * Positional gathered writes that finish or throw. A short pwritev (a nearly
 * full disk gives one before it gives ENOSPC; a signal can give one at any
 * time) must not leave a hole that a later Ack or checkpoint would count as
 * data. Shared by the upload server and the download client.
 */
import type { FileHandle } from 'node:fs/promises';

export async function writevAll(fh: FileHandle, bufs: Buffer[], pos: number, bytes: number): Promise<void> {
  let left = bytes;
  while (left > 0) {
    const { bytesWritten } = await fh.writev(bufs, pos);
    if (bytesWritten <= 0) throw Object.assign(new Error('write made no progress'), { code: 'EIO' });
    pos += bytesWritten;
    left -= bytesWritten;
    if (left > 0) bufs = dropBytes(bufs, bytesWritten);
  }
}

/** The buffers without their first n bytes. */
function dropBytes(bufs: Buffer[], n: number): Buffer[] {
  const out: Buffer[] = [];
  for (const b of bufs) {
    if (n >= b.length) {
      n -= b.length;
      continue;
    }
    out.push(n > 0 ? b.subarray(n) : b);
    n = 0;
  }
  return out;
}
