// Stop an upload half-way with an AbortSignal, then continue the job from its checkpoint.
//   node examples/abort-resume.mjs
// Prints one JSON line: the state after the abort, the resumed offset, the final state.
import { createHash } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { upload, serve, jobs, InterruptedError } from 'bits-transfer';

const work = await mkdtemp(path.join(os.tmpdir(), 'bits-example-'));
const file = path.join(work, 'data.bin');
await writeFile(file, Buffer.alloc(2 * 1024 * 1024, 'resume'));
const root = await mkdtemp(path.join(work, 'root-'));
const server = await serve({ root });
const url = `${server.url}/uploads/data.bin`;
try {
  const ctl = new AbortController();
  let jobId;
  try {
    await upload({
      file,
      url,
      home: work,
      fragmentSize: 64 * 1024,
      // 512 KiB/s: slow enough to stop it in the middle.
      transport: { limitRateBytesPerSec: 512 * 1024 },
      onJob: (job) => (jobId = job.id),
      onEvent: (e) => {
        if (e.type === 'progress' && e.bytesDone >= 256 * 1024) ctl.abort();
      },
      signal: ctl.signal,
    });
    throw new Error('the upload was expected to be interrupted');
  } catch (err) {
    if (!(err instanceof InterruptedError)) throw err;
  }
  const stopped = await jobs.get(jobId, { home: work });
  let resumedAt;
  const done = await jobs.resume(jobId, { home: work, onEvent: (e) => e.type === 'start' && (resumedAt = e.resumedAt) });
  const same = createHash('sha256').update(await readFile(file)).digest('hex') === createHash('sha256').update(await readFile(path.join(root, 'uploads', 'data.bin'))).digest('hex');
  console.log(JSON.stringify({ jobId, afterAbort: stopped.effectiveState, bytesAtAbort: stopped.bytesDone, resumedAt, final: done.state, identical: same }));
  if (!same) process.exitCode = 1;
} finally {
  await server.close();
  await rm(work, { recursive: true, force: true });
}
