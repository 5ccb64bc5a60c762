/**
 * Test helpers for real files: temp dirs that clean up, random files written in
 * chunks (never a whole large file in memory), sha256 of a file by streaming.
 */
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, promises as fsp } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** A fresh directory under os.tmpdir(); remove it with the returned cleanup. */
export async function makeTempDir(prefix = 'bits-test-'): Promise<{ dir: string; cleanup: () => Promise<void> }> {
  const dir = await fsp.mkdtemp(join(tmpdir(), prefix));
  return { dir, cleanup: () => fsp.rm(dir, { recursive: true, force: true }) };
}

/**
 * A deterministic PRNG (mulberry32) so seeded tests reproduce: returns values in [0, 1).
 */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * Writes `size` bytes to `path`: random (crypto) by default, or from a seeded PRNG
 * when `seed` is given. Written in 1 MiB chunks.
 */
export async function makeRandomFile(path: string, size: number, seed?: number): Promise<string> {
  const fh = await fsp.open(path, 'w');
  try {
    const rnd = seed === undefined ? undefined : seededRandom(seed);
    let left = size;
    while (left > 0) {
      const n = Math.min(left, 1024 * 1024);
      let chunk: Buffer;
      if (rnd) {
        chunk = Buffer.allocUnsafe(n);
        for (let i = 0; i < n; i += 4) {
          const v = Math.floor(rnd() * 4294967296);
          for (let j = 0; j < 4 && i + j < n; j++) chunk[i + j] = (v >>> (8 * j)) & 0xff;
        }
      } else {
        chunk = randomBytes(n);
      }
      await fh.write(chunk);
      left -= n;
    }
  } finally {
    await fh.close();
  }
  return path;
}

/** sha256 (hex) of a file, streamed. */
export async function sha256File(path: string): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of createReadStream(path)) h.update(chunk as Buffer);
  return h.digest('hex');
}

export function sha256(data: Buffer | string): string {
  return createHash('sha256').update(data).digest('hex');
}

/**
 * How `actual` differs from `expected`, for a failure message: both sizes, the first
 * differing offset, how long the run of differing bytes there is (up to 1 MiB looked at)
 * and whether the arrived bytes in it are all zeros (a hole: bytes written past a cut
 * end, or never written). Undefined when the files are identical.
 */
export async function describeFileDifference(actual: string, expected: string): Promise<string | undefined> {
  let a: Buffer;
  try {
    a = await fsp.readFile(actual);
  } catch (err) {
    return `${actual}: ${(err as Error).message}`;
  }
  const e = await fsp.readFile(expected);
  const common = Math.min(a.length, e.length);
  let first = -1;
  for (let i = 0; i < common; i++) {
    if (a[i] !== e[i]) {
      first = i;
      break;
    }
  }
  if (first < 0 && a.length === e.length) return undefined;
  const sizes = `arrived ${a.length} bytes, source ${e.length}`;
  if (first < 0) return `${sizes}; the first ${common} bytes are identical`;
  let end = first;
  const limit = Math.min(common, first + 1024 * 1024);
  while (end < limit && a[end] !== e[end]) end++;
  const run = a.subarray(first, end);
  const zeros = run.every((b) => b === 0);
  // The differing run may be followed by more: count the differing bytes overall too.
  let differing = 0;
  for (let i = 0; i < common; i++) if (a[i] !== e[i]) differing++;
  return (
    `${sizes}; first difference at offset ${first} (0x${first.toString(16)}), ` +
    `a run of ${end - first}${end === limit && limit < common ? '+' : ''} differing bytes${zeros ? ' that arrived as zeros' : ''}, ` +
    `${differing} differing bytes in all in the common ${common}`
  );
}
