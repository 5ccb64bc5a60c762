/**
 * FileSink keeps no caller's buffer past write(): the bulk reader reuses its
 * read buffers as soon as the consumer asks for the next batch, so a buffer
 * overwritten after write() returned must not change what lands in the file
 * (small writes are copied and gathered, large ones written at once).
 */
import { randomBytes } from 'node:crypto';
import * as fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { FileSink } from '../../src/client/download/sinks.js';

let dir: string;
beforeAll(async () => {
  dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'bits-sinks-'));
});
afterAll(() => fsp.rm(dir, { recursive: true, force: true }));

it('what a write was given is what the file holds, even when the caller reuses the buffer at once', async () => {
  const want = randomBytes(5 * 1024 * 1024 + 3);
  const file = path.join(dir, 'out.bin');
  const sink = new FileSink(await fsp.open(file, 'w+'));
  const reused = Buffer.alloc(512 * 1024);
  // Two segments interleaved, sizes from 1 byte to 384 KiB: both the gathered and the direct path.
  const sizes = [1, 4096, 65536, 300_000, 393_216, 17, 200_000];
  const half = Math.floor(want.length / 2);
  const cursors = [0, half];
  const ends = [half, want.length];
  for (let i = 0; cursors[0]! < ends[0]! || cursors[1]! < ends[1]!; i++) {
    const seg = i % 2;
    if (cursors[seg]! >= ends[seg]!) continue;
    const n = Math.min(sizes[i % sizes.length]!, ends[seg]! - cursors[seg]!);
    want.copy(reused, 0, cursors[seg]!, cursors[seg]! + n);
    // Two views of the one reused buffer, as a batch of two chunks.
    const cut = n >> 1;
    expect(await sink.write([reused.subarray(0, cut), reused.subarray(cut, n)], cursors[seg]!)).toBe(true);
    reused.fill(0xee);
    cursors[seg]! += n;
  }
  await sink.sync();
  await sink.close();
  expect((await fsp.readFile(file)).equals(want)).toBe(true);
});
