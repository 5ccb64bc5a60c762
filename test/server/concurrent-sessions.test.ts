/**
 * Many clients at once in one folder of a real `bits serve`: sessions are created and
 * closed concurrently, so one session's cleanup (rmdir of the then-empty
 * BITS-Sessions/Requests) runs between another's mkdir and open. Every upload must
 * still be accepted and arrive sha256-identical; before the tree lock in sessions.ts,
 * some CREATE-SESSIONs failed with 500 E_FAIL (ENOENT).
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import { join } from 'node:path';
import { promises as fsp } from 'node:fs';
import { startServer, type RunningServer } from '../../src/server/index.js';
import { uploadFile } from '../../src/client/upload.js';
import { makeRandomFile, makeTempDir, sha256File } from '../helpers/files.js';

let tmp: { dir: string; cleanup: () => Promise<void> };
let server: RunningServer;
const errors: string[] = [];

beforeAll(async () => {
  tmp = await makeTempDir('bits-concurrent-');
  await fsp.mkdir(join(tmp.dir, 'root', 'up'), { recursive: true });
  await fsp.mkdir(join(tmp.dir, 'src'));
  server = await startServer({ root: join(tmp.dir, 'root'), port: 0, log: (l) => /^upload:/.test(l) && errors.push(l) });
});
afterAll(async () => {
  await server?.close();
  await tmp?.cleanup();
});

// 100 stays under the default 120 sessions a minute per client (429 beyond).
it('100 small uploads, 6 at a time, into one folder: all accepted and identical', async () => {
  const N = Number(process.env.N ?? 100);
  const files: string[] = [];
  for (let i = 0; i < N; i++) {
    const f = join(tmp.dir, 'src', `c-${i}.bin`);
    await makeRandomFile(f, 1024 + i * 97, i);
    files.push(f);
  }
  let next = 0;
  const failures: string[] = [];
  const worker = async () => {
    while (next < N) {
      const i = next++;
      try {
        await uploadFile({ file: files[i]!, url: `${server.url}/up/c-${i}.bin`, retryBaseMs: 10, retryMaxMs: 50 });
      } catch (err) {
        failures.push(`${i}: ${(err as Error).message}`);
      }
    }
  };
  await Promise.all(Array.from({ length: 6 }, worker));
  expect(failures).toEqual([]);
  expect(errors).toEqual([]);
  for (let i = 0; i < N; i++) expect(await sha256File(join(tmp.dir, 'root', 'up', `c-${i}.bin`))).toBe(await sha256File(files[i]!));
}, 30_000);
