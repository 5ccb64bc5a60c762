/**
 * Crash-safe file replacement: the one durable-write module of the job store,
 * the upload server's session records and the download partial file's rename.
 *
 * Why not conf's own write: conf writes through `atomically`, which does
 * fsync the temporary file and rename it, but never fsyncs the directory (so
 * after a power loss the rename itself may be lost), names its temporary file
 * with Math.random, and only removes that file in an exit hook, which a
 * SIGKILL skips. The store therefore reads through conf but writes with
 * writeDurable() below: temp file in the same directory -> write -> fsync ->
 * close -> rename over the target -> fsync the directory. A kill at any
 * instant leaves either the old file or the new one, never a mix; at worst a
 * stray `*.tmp-<pid>-<hex>` file, which removeStaleTemps() deletes later.
 */
import fs from 'node:fs';
import path from 'node:path';
import crypto from 'node:crypto';
import { open, rename, rm } from 'node:fs/promises';

/** Suffix of temporary files: `<file>.tmp-<pid>-<hex>`. */
const TMP_INFIX = '.tmp-';

export function writeDurable(file: string, data: string, mode = 0o600): void {
  const dir = path.dirname(file);
  fs.mkdirSync(dir, { recursive: true });
  const tmp = `${file}${TMP_INFIX}${process.pid}-${crypto.randomBytes(4).toString('hex')}`;
  const fd = fs.openSync(tmp, 'wx', mode);
  let renamed = false;
  try {
    try {
      const buf = Buffer.from(data, 'utf8');
      let off = 0;
      while (off < buf.length) off += fs.writeSync(fd, buf, off, buf.length - off);
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
    renameWithRetry(tmp, file);
    renamed = true;
  } finally {
    if (!renamed) fs.rmSync(tmp, { force: true });
  }
  fsyncDirectory(dir);
}

/**
 * On Windows a rename over a file another process is reading fails with
 * EPERM/EBUSY/EACCES for a moment (readers do not share delete access); the
 * store's readers hold the file for microseconds, so retry briefly. The wait
 * is synchronous on purpose: the caller holds the store lock and must not yield.
 */
function renameWithRetry(from: string, to: string): void {
  const deadline = Date.now() + 2_000;
  for (let wait = 1; ; wait = Math.min(wait * 2, 50)) {
    try {
      fs.renameSync(from, to);
      return;
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (process.platform !== 'win32' || !(code === 'EPERM' || code === 'EBUSY' || code === 'EACCES') || Date.now() > deadline) throw err;
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, wait);
    }
  }
}

/** Makes a rename in `dir` durable. Not possible on Windows (directories cannot be opened), where NTFS journals the rename. */
export function fsyncDirectory(dir: string): void {
  let fd: number | undefined;
  try {
    fd = fs.openSync(dir, 'r');
    fs.fsyncSync(fd);
  } catch {
    // EISDIR/EPERM on Windows, EINVAL on some file systems: nothing more can be done.
  } finally {
    if (fd !== undefined) fs.closeSync(fd);
  }
}

/**
 * Deletes temporary files a killed writer left next to `file` (`<file><infix>…`). Only files
 * older than `minAgeMs`: a live writer keeps its temporary file for
 * milliseconds, so an old one belongs to nobody.
 */
export function removeStaleTemps(file: string, minAgeMs = 60_000, infixes: readonly string[] = [TMP_INFIX]): void {
  const dir = path.dirname(file);
  const prefixes = infixes.map((infix) => path.basename(file) + infix);
  let names: string[];
  try {
    names = fs.readdirSync(dir);
  } catch {
    return;
  }
  const now = Date.now();
  for (const name of names) {
    if (!prefixes.some((prefix) => name.startsWith(prefix))) continue;
    const p = path.join(dir, name);
    try {
      if (now - fs.statSync(p).mtimeMs > minAgeMs) fs.rmSync(p, { force: true });
    } catch {
      // Raced with another cleaner or a writer: harmless.
    }
  }
}

/** fsyncs a directory so a rename or create inside it survives a crash (best effort where unsupported, as fsyncDirectory). */
export async function fsyncDirectoryAsync(dir: string): Promise<void> {
  let fh;
  try {
    fh = await open(dir, 'r');
    await fh.sync();
  } catch {
    // Windows cannot open or fsync a directory; NTFS journals the rename itself.
  } finally {
    await fh?.close().catch(() => {});
  }
}

/**
 * writeDurable without blocking the event loop (the server answers other
 * clients meanwhile): temp file beside the target, write, fsync, rename,
 * fsync the directory. A reader sees the old content or the new, never half.
 */
export async function writeDurableAsync(file: string, data: string | Buffer, mode = 0o600): Promise<void> {
  const tmp = `${file}${TMP_INFIX}${process.pid}-${crypto.randomBytes(4).toString('hex')}`;
  const fh = await open(tmp, 'wx', mode);
  let renamed = false;
  try {
    try {
      await fh.writeFile(data);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(tmp, file);
    renamed = true;
  } finally {
    if (!renamed) await rm(tmp, { force: true });
  }
  await fsyncDirectoryAsync(path.dirname(file));
}
