/**
 * Downloads from real servers: `bits serve` (§3.5) and nginx, each
 * byte-identical to the source, with ranges, segments and resume.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { downloadFile, type DownloadCheckpoint } from '../../src/client/download.js';
import type { TransferEvent } from '../../src/client/events.js';
import { InterruptedError } from '../../src/errors.js';
import { startServer, type RunningServer } from '../../src/server/index.js';
import { NGINX, ddBytes, makeFile, sha256, startNginx, tempDir, type Nginx } from './helpers.js';

const MiB = 1024 * 1024;
const SIZE = 12 * MiB + 777;
const fast = { retryBaseMs: 20, noProgressTimeoutMs: 15_000 };
let dir: string;
let root: string;
let srcSha: string;
let n = 0;
const out = () => path.join(dir, `out-${++n}.bin`);

beforeAll(async () => {
  dir = await tempDir();
  root = path.join(dir, 'root');
  await fsp.mkdir(root);
  await makeFile(path.join(root, 'big file.bin'), SIZE);
  await fsp.writeFile(path.join(root, 'empty.bin'), '');
  srcSha = await sha256(path.join(root, 'big file.bin'));
});
afterAll(async () => {
  await fsp.rm(dir, { recursive: true, force: true });
});

interface Target {
  name: string;
  start(): Promise<{ url: string; stop(): Promise<void> }>;
}

const targets: Target[] = [
  {
    name: 'bits serve',
    async start() {
      const s: RunningServer = await startServer({ root });
      return { url: s.url, stop: () => s.close() };
    },
  },
];
if (NGINX) {
  targets.push({
    name: 'nginx',
    async start() {
      const g: Nginx = await startNginx(root);
      return { url: g.url, stop: () => g.stop() };
    },
  });
} else if (process.env.CI) {
  it('nginx is installed on CI', () => {
    expect(NGINX, 'nginx is required on CI').toBeDefined();
  });
} else {
  it.skip('nginx tests (nginx not installed)', () => {});
}

describe.each(targets)('download from $name', (t) => {
  let server: { url: string; stop(): Promise<void> };
  let url: string;
  beforeAll(async () => {
    server = await t.start();
    url = `${server.url}/big%20file.bin`;
  });
  afterAll(async () => server?.stop());

  it('whole file, byte-identical, default name from the URL', async () => {
    const cwd = await fsp.mkdtemp(path.join(dir, 'cwd-'));
    const r = await downloadFile({ url, cwd, ...fast });
    expect(r.path).toBe(path.join(cwd, 'big file.bin'));
    expect(await sha256(r.path)).toBe(srcSha);
  });

  it('an empty file', async () => {
    const o = out();
    const r = await downloadFile({ url: `${server.url}/empty.bin`, output: o, ...fast });
    expect(r.bytes).toBe(0);
    expect((await fsp.stat(o)).size).toBe(0);
  });

  it('--segments 4, byte-identical', async () => {
    const o = out();
    const r = await downloadFile({ url, output: o, segments: 4, sha256: srcSha, ...fast });
    expect(r.sha256).toBe(srcSha);
    expect(new Set(r.checkpoint.toc.map((x) => x.segment)).size).toBe(4);
  });

  it('--range with multipart/byteranges equals dd', async () => {
    const o = out();
    const spec = '100-199,5000000-5999999,200-299,-1000';
    const events: TransferEvent[] = [];
    await downloadFile({ url, output: o, ranges: spec, ...fast, onEvent: (e) => events.push(e) });
    const src = path.join(root, 'big file.bin');
    const want = Buffer.concat([await ddBytes(src, 100, 100), await ddBytes(src, 5000000, 1000000), await ddBytes(src, 200, 100), await ddBytes(src, SIZE - 1000, 1000)]);
    expect((await fsp.readFile(o)).equals(want)).toBe(true);
    // A conforming server needs no fallback.
    expect(events.some((e) => e.type === 'warning')).toBe(false);
  });

  it('--range with segments and a small fragment size equals dd', async () => {
    const o = out();
    const spec = '0-2999999,9000000-10999999,4000000-4000009';
    await downloadFile({ url, output: o, ranges: spec, segments: 3, fragmentSize: 700_000, minSegmentBytes: 512 * 1024, ...fast });
    const src = path.join(root, 'big file.bin');
    const want = Buffer.concat([await ddBytes(src, 0, 3000000), await ddBytes(src, 9000000, 2000000), await ddBytes(src, 4000000, 10)]);
    expect((await fsp.readFile(o)).equals(want)).toBe(true);
  });

  it('abort mid-way, resume from the checkpoint with If-Range: identical', async () => {
    const o = out();
    const ac = new AbortController();
    let last: DownloadCheckpoint | undefined;
    const err = await downloadFile({
      // Rate-limited so the abort lands mid-transfer however fast the server is.
      url, output: o, segments: 2, ...fast, checkpointBytes: 256 * 1024, signal: ac.signal, transport: { limitRateBytesPerSec: 8 * MiB },
      onCheckpoint: (cp) => { last = structuredClone(cp); },
      onEvent: (e) => { if (e.type === 'progress' && e.bytesDone > 3 * MiB) ac.abort(); },
    }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(InterruptedError);
    expect(last!.bytesDone).toBeGreaterThan(0);
    expect(last!.bytesDone).toBeLessThan(SIZE);
    const events: TransferEvent[] = [];
    const r = await downloadFile({ url: 'ignored', resume: last!, ...fast, onEvent: (e) => events.push(e) });
    expect(await sha256(r.path)).toBe(srcSha);
    expect(events.find((e) => e.type === 'start')).toMatchObject({ resumedAt: last!.bytesDone });
    expect(events.some((e) => e.type === 'warning')).toBe(false);
  });
});
