/**
 * One `bits serve` process per folder (src/server/root-lock.ts).
 *
 * A starting server loads every session under its root and, under group commit, cuts
 * each request file back to the durable length session.json records: right after a
 * crash, a hole of zeros in the upload another live server is receiving (that server
 * goes on writing at its own offset; the upload completes, exit 0, wrong sha256).
 * Servers of one process keep out of each other's sessions (shared-root.test.ts); a
 * second PROCESS must refuse to start (exit 2, one line) before it touches anything,
 * and a SIGKILLed server's lock must not wedge the folder.
 *
 * Real path: the BUILT `bits serve` twice on one temp root, the BUILT `bits upload`
 * throttled so the second server starts mid-upload (group commit interval 3600 s, so
 * nothing is durable yet), then kill -9 of the first server and of an upload, a new
 * server on the same port, and `bits resume --all`.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { startServer } from '../../src/server/index.js';
import { tryLifetimeLock } from '../../src/store/lock.js';
import { runBits, startBits, type RunningBits } from '../helpers/cli.js';
import { describeFileDifference, makeRandomFile, makeTempDir } from '../helpers/files.js';
import { ensureFreshBuild } from '../jobs/helpers.js';

const SIZE = 384 * 1024 + 5;

let tmp: { dir: string; cleanup: () => Promise<void> };
let root: string;
let src: string;
let first: RunningBits | undefined;
let firstUrl = '';
const others: RunningBits[] = [];

function serveArgs(port: number | string): string[] {
  return ['serve', '--port', String(port), '--root', root, '--json', '--sync-interval', '3600'];
}

/** Starts the built `bits serve` and waits for its listening line. */
async function startServe(port: number | string = 0): Promise<{ run: RunningBits; url: string }> {
  const run = startBits(serveArgs(port), { timeoutMs: 120_000 });
  others.push(run);
  await run.waitFor(/"type":"listening"/, 'stdout', 15_000);
  const url = (JSON.parse(run.stdout.split('\n')[0]!) as { url: string }).url;
  return { run, url };
}

const lockFile = () => path.join(root, 'BITS-Sessions', 'serve.lock');
const lockPid = () => (JSON.parse(fs.readFileSync(lockFile(), 'utf8')) as { pid: number }).pid;

beforeAll(async () => {
  await ensureFreshBuild();
  tmp = await makeTempDir('bits-serve-lock-');
  root = path.join(tmp.dir, 'root');
  fs.mkdirSync(path.join(root, 'up'), { recursive: true });
  src = path.join(tmp.dir, 'source.bin');
  await makeRandomFile(src, SIZE);
}, 180_000);

afterAll(async () => {
  for (const r of others) if (r.child.exitCode === null && r.child.signalCode === null) r.child.kill('SIGKILL');
  await Promise.all(others.map((r) => r.done.catch(() => {})));
  await tmp?.cleanup();
});

describe('bits serve: one process per folder', () => {
  it('a second bits serve on the folder exits 2 with one line, and the first one’s upload arrives identical', async () => {
    const a = await startServe();
    first = a.run;
    firstUrl = a.url;
    const up = startBits(['upload', '--json', '--limit-rate', '128K', '--fragment-size', '64K', src, `${firstUrl}/up/f.bin`], {
      env: { BITS_HOME: path.join(tmp.dir, 'home1') },
      timeoutMs: 60_000,
    });
    // One fragment acknowledged, nothing synced: the request file holds 64 KiB, its durable length is 0.
    await first.waitFor(/BITS_POST \/up\/f\.bin Fragment -> 200/, 'stderr', 30_000);
    const second = await runBits(['serve', '--port', '0', '--root', root], { timeoutMs: 8_000 });
    const r = await up.done;
    expect(r.code, r.stderr).toBe(0);
    // Without the lock the second server started and cut f.bin's request file back to 0: a hole of zeros.
    expect(await describeFileDifference(path.join(root, 'up', 'f.bin'), src)).toBeUndefined();
    expect(second.code, second.stderr).toBe(2);
    const lines = second.stderr.trim().split('\n');
    expect(lines, second.stderr).toHaveLength(1);
    expect(lines[0]).toMatch(new RegExp(`^bits: error: serve: .*root is already served by another bits serve \\(pid ${first.child.pid} on .*\\): one server per folder`));
    expect(second.stderr).not.toMatch(/cutting the request file back/);
    // The lock is still the first server's, and it goes on serving.
    expect(lockPid()).toBe(first.child.pid);
    expect(first.child.exitCode).toBeNull();
  }, 90_000);

  it('a server inside or around the served folder is refused too, and leaves no lock behind', async () => {
    expect(first).toBeDefined();
    const inner = path.join(root, 'up');
    await expect(startServer({ root: inner, port: 0 })).rejects.toMatchObject({ code: 'ERR_BITS_ROOT_IN_USE', where: 'inside' });
    await expect(startServer({ root: tmp.dir, port: 0 })).rejects.toMatchObject({ code: 'ERR_BITS_ROOT_IN_USE', where: 'around' });
    expect(fs.existsSync(path.join(inner, 'BITS-Sessions', 'serve.lock'))).toBe(false);
    expect(fs.existsSync(path.join(tmp.dir, 'BITS-Sessions', 'serve.lock'))).toBe(false);
  });

  it('a SIGKILLed server’s lock is taken over by the next one, and a killed upload resumes identical', async () => {
    expect(first).toBeDefined();
    const home = path.join(tmp.dir, 'home2');
    const up = startBits(['upload', '--json', '--limit-rate', '128K', '--fragment-size', '64K', src, `${firstUrl}/up/g.bin`], {
      env: { BITS_HOME: home },
      timeoutMs: 60_000,
    });
    await first!.waitFor(/BITS_POST \/up\/g\.bin Fragment -> 200/, 'stderr', 30_000);
    up.child.kill('SIGKILL');
    await up.done;
    first!.child.kill('SIGKILL');
    await first!.done;
    // Left behind, naming a dead pid.
    expect(lockPid()).toBe(first!.child.pid);

    const port = Number(new URL(firstUrl).port);
    const again = await startServe(port);
    expect(lockPid()).toBe(again.run.child.pid);
    const r = await runBits(['resume', '--all', '--json'], { env: { BITS_HOME: home }, timeoutMs: 60_000 });
    expect(r.code, r.stderr).toBe(0);
    expect(await describeFileDifference(path.join(root, 'up', 'g.bin'), src)).toBeUndefined();

    // SIGTERM: the lock goes with the server (and BITS-Sessions with it, once empty).
    again.run.child.kill('SIGTERM');
    expect((await again.run.done).code).toBe(0);
    expect(fs.existsSync(lockFile())).toBe(false);
  }, 120_000);
});

describe('lifetime locks and pid reuse', () => {
  it('a lock naming this very pid but taken before this process started is stale (a container restarted as pid 1)', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bits-pid-reuse-'));
    try {
      const file = path.join(dir, 'x.lock');
      const old = { pid: process.pid, host: os.hostname(), token: 'earlier', acquiredAt: Date.now() - process.uptime() * 1000 - 60_000 };
      fs.writeFileSync(file, JSON.stringify(old));
      const h = await tryLifetimeLock(file);
      expect(h).toBeDefined();
      // One taken by this process is not stale: a second attempt fails.
      expect(await tryLifetimeLock(file)).toBeUndefined();
      h!.release();
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
