// Upload a file to an embedded BITS server and download it back, sha256-checked.
//   node examples/upload-download.mjs [file]
// Prints one JSON line: the events seen and both digests.
import { createHash } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { upload, download, serve, BitsError } from 'bits-transfer';

const work = await mkdtemp(path.join(os.tmpdir(), 'bits-example-'));
const sha256 = async (f) => createHash('sha256').update(await readFile(f)).digest('hex');
let file = process.argv[2];
if (!file) {
  file = path.join(work, 'data.bin');
  await writeFile(file, Buffer.alloc(3 * 1024 * 1024 + 17, 'bits'));
}
const root = await mkdtemp(path.join(work, 'root-'));
const server = await serve({ root });
const seen = new Set();
const onEvent = (e) => seen.add(e.type);
try {
  // `home`: a job store of its own, so the example does not add jobs to `bits list`.
  const up = await upload({ file, url: `${server.url}/uploads/data.bin`, fragmentSize: 1024 * 1024, home: work, onEvent });
  const down = await download({ url: `${server.url}/uploads/data.bin`, output: path.join(work, 'copy.bin'), home: work, onEvent });
  const result = { uploaded: up.bytes, downloaded: down.bytes, source: await sha256(file), copy: await sha256(down.destination), events: [...seen] };
  console.log(JSON.stringify(result));
  if (result.source !== result.copy) process.exitCode = 1;
} catch (err) {
  // Every failure is a BitsError: one line, and the exit code bits itself would use.
  if (!(err instanceof BitsError)) throw err;
  console.error(`${err.code}: ${err.message}`);
  process.exitCode = err.exitCode;
} finally {
  await server.close();
  await rm(work, { recursive: true, force: true });
}
