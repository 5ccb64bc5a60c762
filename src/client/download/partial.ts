/**
 * The partial file, `PATH.bits-partial` (DATA_BUFFER on disk): opened fresh
 * or resumed (only bytes a checkpoint called durable AND the file holds are
 * trusted), read back for the overlap check, verified, and renamed into place
 * durably (the rename, then the directory's fsync, src/io/durable.ts).
 *
 * On a sha256 mismatch the partial file is removed: its bytes are exactly
 * what the servers sent, so resuming it would only reproduce the mismatch,
 * and PATH is never touched.
 */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import * as fsp from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import * as path from 'node:path';
import { fsyncDirectoryAsync } from '../../io/durable.js';
import { LocalFileError, SourceChangedError } from '../../errors.js';
import type { DownloadTable } from '../../protocol/downloader.js';
import { FileSink } from './sinks.js';

export const PARTIAL_SUFFIX = '.bits-partial';

export async function exists(p: string): Promise<boolean> {
  try {
    await fsp.lstat(p);
    return true;
  } catch {
    return false;
  }
}

export function existsError(p: string): LocalFileError {
  return new LocalFileError(`${p} already exists; use --force to overwrite it`, p);
}

/**
 * Opens the partial file for `table`, preallocated (sparse) so segments can
 * write at their offsets. `warn`/`info` report a missing or stale file.
 */
export async function openPartial(
  partialPath: string,
  table: DownloadTable,
  resuming: boolean,
  say: (level: 'info' | 'warning', message: string) => void,
): Promise<FileSink> {
  let fh: FileHandle;
  if (resuming) {
    let size = -1;
    try {
      size = (await fsp.stat(partialPath)).size;
    } catch {
      /* missing */
    }
    if (size < 0 && table.bytesDone > 0) say('warning', `partial file ${partialPath} is missing; starting again from zero`);
    const durableEnd = table.trustPartial(Math.max(0, size));
    fh = await fsp.open(partialPath, size < 0 ? 'w+' : 'r+');
    // Anything past the last durable byte was never reported done: drop it.
    await fh.truncate(durableEnd);
  } else {
    if (await exists(partialPath)) say('info', `discarding stale partial file ${partialPath}`);
    table.forgetAll();
    fh = await fsp.open(partialPath, 'w+');
  }
  await fh.truncate(table.total);
  return new FileSink(fh);
}

/** Bytes [at, at+length) of the partial file. */
export async function readBack(fh: FileHandle, at: number, length: number): Promise<Buffer> {
  const buf = Buffer.alloc(length);
  let n = 0;
  while (n < length) {
    const { bytesRead } = await fh.read(buf, n, length - n, at + n);
    if (bytesRead === 0) break;
    n += bytesRead;
  }
  return buf.subarray(0, n);
}

/** Empties and re-sizes the partial file for a new version of the content. */
export async function resetPartial(fh: FileHandle, total: number): Promise<void> {
  await fh.truncate(0);
  await fh.truncate(total);
}

async function sha256File(p: string): Promise<string> {
  const h = createHash('sha256');
  for await (const c of createReadStream(p, { highWaterMark: 1024 * 1024 })) h.update(c as Buffer);
  return h.digest('hex');
}

/**
 * STATE_COMPLETE for a file: the partial file (already fsynced and closed)
 * is verified against `sha256` and renamed to the output. Returns the digest when computed.
 */
export async function finishPartial(o: {
  partialPath: string;
  outputPath: string;
  sha256?: string;
  force: boolean;
  onVerify(): void;
}): Promise<string | undefined> {
  let digest: string | undefined;
  if (o.sha256) {
    o.onVerify();
    digest = await sha256File(o.partialPath);
    if (digest !== o.sha256) {
      await fsp.rm(o.partialPath, { force: true });
      throw new SourceChangedError(
        `sha256 mismatch: expected ${o.sha256}, got ${digest}; ${o.outputPath} was not written and the partial file was removed`,
        'remote',
      );
    }
  }
  if (!o.force && (await exists(o.outputPath))) throw existsError(o.outputPath);
  await fsp.rename(o.partialPath, o.outputPath);
  await fsyncDirectoryAsync(path.dirname(o.outputPath));
  return digest;
}

/** Removes the partial file of a download (§3.6.4.3 Cancel Download). */
export async function removePartial(partialPath: string): Promise<void> {
  await fsp.rm(partialPath, { force: true });
}
