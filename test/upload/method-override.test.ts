/**
 * `bits upload --method-override` (issue 12.14): every BITS message goes out as
 * POST with `X-Http-Method-Override: BITS_POST`, the way through intermediaries
 * that refuse methods they do not know. The intermediary here is real: a
 * node:http forwarder, whose parser answers an unknown method such as BITS_POST
 * with 400 before any handler runs, in front of a real `bits serve`.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { ensureFreshBuild } from '../jobs/helpers.js';
import { runBits } from '../helpers/cli.js';
import { makeRandomFile, makeTempDir, sha256File } from '../helpers/files.js';
import { startServer, type RunningServer } from '../../src/server/index.js';

let tmp: { dir: string; cleanup: () => Promise<void> };
let server: RunningServer;
let forwarder: http.Server;
let forwarderUrl: string;
const seen: string[] = [];

beforeAll(async () => {
  await ensureFreshBuild();
  tmp = await makeTempDir('bits-override-');
  await fsp.mkdir(join(tmp.dir, 'root', 'up'), { recursive: true });
  server = await startServer({ root: join(tmp.dir, 'root'), port: 0 });
  forwarder = http.createServer((req, res) => {
    seen.push(`${req.method} ${req.headers['x-http-method-override'] ?? '-'}`);
    const out = http.request(
      { host: '127.0.0.1', port: server.port, method: req.method, path: req.url, headers: req.headers },
      (up) => {
        res.writeHead(up.statusCode ?? 502, up.headers);
        up.pipe(res);
      },
    );
    out.on('error', () => res.destroy());
    req.pipe(out);
  });
  await new Promise<void>((r) => forwarder.listen(0, '127.0.0.1', r));
  forwarderUrl = `http://127.0.0.1:${(forwarder.address() as AddressInfo).port}`;
}, 180_000);

afterAll(async () => {
  await new Promise((r) => forwarder?.close(r));
  await server?.close();
  await tmp?.cleanup();
});

it('through an intermediary that refuses BITS_POST: plain fails at once, --method-override arrives sha256-identical', async () => {
  const file = join(tmp.dir, 'src.bin');
  await makeRandomFile(file, 300 * 1024 + 7, 3);

  const plain = await runBits(['upload', file, `${forwarderUrl}/up/plain.bin`, '--fragment-size', '64K', '--no-progress-timeout', '8'], {
    env: { BITS_HOME: join(tmp.dir, 'home-plain') },
    timeoutMs: 30_000,
  });
  expect(plain.code, plain.stderr).toBe(5);
  expect(seen).toEqual([]); // node:http refused the method before the handler saw it

  const r = await runBits(['upload', file, `${forwarderUrl}/up/over.bin`, '--fragment-size', '64K', '--method-override'], {
    env: { BITS_HOME: join(tmp.dir, 'home-over') },
    timeoutMs: 30_000,
  });
  expect(r.code, r.stderr).toBe(0);
  expect(await sha256File(join(tmp.dir, 'root', 'up', 'over.bin'))).toBe(await sha256File(file));
  expect(seen.length).toBeGreaterThanOrEqual(6); // CREATE-SESSION, 5 FRAGMENTs, CLOSE-SESSION
  expect(new Set(seen)).toEqual(new Set(['POST BITS_POST']));
}, 90_000);
