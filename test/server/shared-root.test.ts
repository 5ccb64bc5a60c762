/**
 * Two servers of one process on one root: the second one's start must leave the
 * first one's live sessions alone.
 *
 * A starting server loads every session under its root and, under group commit,
 * cuts each request file back to the durable length its session.json records
 * (sessions.ts): right after a crash, wrong for a session another server is
 * receiving right now. That server goes on writing at its own received offset, so
 * the bytes it had acknowledged but not yet synced became a hole of zeros, the
 * upload completed (exit 0) and the published file was wrong. Tests start such
 * second servers on a shared root (outcomes.test.ts "server is gone", the agent's
 * outage test, upload-e2e over ::1) beside concurrent uploads to the first: under
 * load `resume --all` then reported a complete upload whose sha256 differed.
 *
 * Real path: an in-process `bits serve` (as those tests run it), the BUILT `bits
 * upload` throttled so the second server starts mid-upload, after the first
 * fragment's Ack and long before any group commit (syncEverySeconds 3600).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fs from 'node:fs';
import path from 'node:path';
import { startServer, type RunningServer } from '../../src/server/index.js';
import { startBits } from '../helpers/cli.js';
import { describeFileDifference, makeRandomFile, makeTempDir } from '../helpers/files.js';
import { ensureFreshBuild } from '../jobs/helpers.js';

const SIZE = 384 * 1024 + 5;

let tmp: { dir: string; cleanup: () => Promise<void> };
let root: string;
let src: string;

beforeAll(async () => {
  await ensureFreshBuild();
  tmp = await makeTempDir('bits-shared-root-');
  root = path.join(tmp.dir, 'root');
  fs.mkdirSync(path.join(root, 'up'), { recursive: true });
  src = path.join(tmp.dir, 'source.bin');
  await makeRandomFile(src, SIZE);
}, 180_000);

afterAll(async () => {
  await tmp?.cleanup();
});

/** Resolves when a logged line matches (checked at once and on every new line), or rejects after timeoutMs. */
function logWaiter(lines: string[], waiters: Set<() => void>, re: RegExp, timeoutMs: number): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const check = () => {
      if (!lines.some((l) => re.test(l))) return;
      clearTimeout(timer);
      waiters.delete(check);
      resolve();
    };
    const timer = setTimeout(() => {
      waiters.delete(check);
      reject(new Error(`timed out waiting for ${re} in the server log:\n${lines.join('\n')}`));
    }, timeoutMs);
    waiters.add(check);
    check();
  });
}

describe('a second server on the same root', () => {
  it('does not cut the request file of an upload the first server is receiving', async () => {
    const lines: string[] = [];
    const waiters = new Set<() => void>();
    const first: RunningServer = await startServer({
      root,
      port: 0,
      durability: { mode: 'group', syncEverySeconds: 3600 },
      log: (l) => {
        lines.push(l);
        for (const w of [...waiters]) w();
      },
    });
    const secondLog: string[] = [];
    try {
      const run = startBits(['upload', '--json', '--limit-rate', '128K', '--fragment-size', '64K', src, `${first.url}/up/f.bin`], {
        env: { BITS_HOME: path.join(tmp.dir, 'home') },
        timeoutMs: 60_000,
      });
      // One fragment acknowledged, nothing synced yet: the request file holds 64 KiB, its durable length is 0.
      await logWaiter(lines, waiters, /^BITS_POST \/up\/f\.bin Fragment -> 200$/, 30_000);
      const second = await startServer({ root, port: 0, log: (l) => secondLog.push(l) });
      await second.close();
      const r = await run.done;
      expect(r.code, r.stderr).toBe(0);
      const diff = await describeFileDifference(path.join(root, 'up', 'f.bin'), src);
      expect(diff, `second server's log:\n${secondLog.join('\n')}`).toBeUndefined();
      // It said why it left the session alone.
      expect(secondLog.join('\n')).toMatch(/in use by another server of this process/);
      expect(secondLog.join('\n')).not.toMatch(/cutting the request file back/);
    } finally {
      await first.close();
    }
  }, 90_000);

  it('a server started after the first one closed takes its sessions over', async () => {
    // The guard is only for live servers: a restart on the same root must still resume an upload.
    const first = await startServer({ root, port: 0 });
    const run = startBits(['upload', '--json', '--limit-rate', '128K', '--fragment-size', '64K', src, `${first.url}/up/g.bin`], {
      env: { BITS_HOME: path.join(tmp.dir, 'home2') },
      timeoutMs: 60_000,
    });
    await run.waitFor(/"type":"progress"/, 'stdout', 20_000);
    run.child.kill('SIGKILL');
    await run.done;
    const port = Number(new URL(first.url).port);
    await first.close();
    const again = await startServer({ root, port });
    try {
      const r = await startBits(['resume', '--all', '--json'], { env: { BITS_HOME: path.join(tmp.dir, 'home2') }, timeoutMs: 60_000 }).done;
      expect(r.code, r.stderr).toBe(0);
      // The same session went on (no restart from byte 0: the server knew it).
      expect(r.stderr + r.stdout).not.toMatch(/lost the upload session/);
      expect(await describeFileDifference(path.join(root, 'up', 'g.bin'), src)).toBeUndefined();
    } finally {
      await again.close();
    }
  }, 90_000);
});
