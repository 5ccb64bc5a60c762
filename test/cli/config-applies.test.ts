/**
 * `bits config set` must change what transfers and the server do, not just
 * what `bits config list` shows: flags > config > built-in defaults.
 */
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startServer, type RunningServer } from '../../src/server/index.js';
import { ensureBuilt, runBits, startBits } from '../helpers/cli.js';
import { makeRandomFile, sha256File } from '../helpers/files.js';

const MiB = 1024 * 1024;
const work = mkdtempSync(path.join(tmpdir(), 'bits-config-applies-'));
const env = { BITS_HOME: path.join(work, 'home') };
let server: RunningServer;
let source: string;

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolve(port));
    });
  });
}

beforeAll(async () => {
  ensureBuilt();
  mkdirSync(path.join(work, 'root', 'up'), { recursive: true });
  server = await startServer({ root: path.join(work, 'root') });
  source = await makeRandomFile(path.join(work, 'src.bin'), 3 * MiB, 11);
});

afterAll(async () => {
  await server.close();
  rmSync(work, { recursive: true, force: true });
});

describe('bits config applies', () => {
  it('limit-rate from the config slows an upload; the flag overrides it', async () => {
    expect((await runBits(['config', 'set', 'limit-rate', '2M'], { env })).code).toBe(0);
    const t0 = Date.now();
    const r = await runBits(['upload', source, `${server.url}/up/a.bin`, '--quiet'], { env });
    const limited = Date.now() - t0;
    expect(r.code).toBe(0);
    expect(await sha256File(path.join(work, 'root', 'up', 'a.bin'))).toBe(await sha256File(source));
    // 3 MiB at 2 MiB/s cannot take less than ~1.5 s (minus the limiter's initial burst).
    expect(limited).toBeGreaterThan(1100);

    const t1 = Date.now();
    const r2 = await runBits(['upload', source, `${server.url}/up/b.bin`, '--quiet', '--limit-rate', '0'], { env });
    expect(r2.code).toBe(0);
    expect(Date.now() - t1).toBeLessThan(limited);
    expect((await runBits(['config', 'unset', 'limit-rate'], { env })).code).toBe(0);
  });

  it('no-progress-timeout from the config ends a dead download early (exit 4, resumable)', async () => {
    const dead = await freePort();
    expect((await runBits(['config', 'set', 'no-progress-timeout', '1'], { env })).code).toBe(0);
    const t0 = Date.now();
    const r = await runBits(['download', `http://127.0.0.1:${dead}/x.bin`, '-o', path.join(work, 'x.bin')], { env, timeoutMs: 20_000 });
    expect(r.code).toBe(4);
    expect(Date.now() - t0).toBeLessThan(15_000);
    expect((await runBits(['config', 'unset', 'no-progress-timeout'], { env })).code).toBe(0);
  });

  it('serve.port from the config is where bits serve listens', async () => {
    const port = await freePort();
    expect((await runBits(['config', 'set', 'serve.port', String(port)], { env })).code).toBe(0);
    // Not the in-process server's folder: a second server process on a served folder refuses to start.
    const root = path.join(work, 'serve-root');
    mkdirSync(root, { recursive: true });
    const s = startBits(['serve', '--root', root, '--json', '--quiet'], { env });
    try {
      await s.waitFor(/"listening"/, 'stdout', 15_000);
      expect(s.stdout).toContain(`"url":"http://127.0.0.1:${port}"`);
    } finally {
      s.child.kill('SIGTERM');
      await s.done;
      await runBits(['config', 'unset', 'serve.port'], { env });
    }
  });
});
