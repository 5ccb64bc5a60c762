/**
 * The API's background and control calls, against its own serve() on
 * loopback with the BUILT bits as the agent it starts: jobs.queue hands a job
 * to the agent and jobs.wait sees it complete; jobs.suspend stops a job the
 * agent runs and jobs.resume finishes it in this process; readServeConfig and
 * serve() with the settings `bits serve --config` reads.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import path from 'node:path';
import { writeFile } from 'node:fs/promises';
import { createUpload, jobs, readServeConfig, serve, upload, type Server } from '../../src/api.js';
import { makeRandomFile, sha256File } from '../helpers/files.js';
import { apiWorld, type ApiWorld } from './helpers.js';
import { ensureBuilt } from '../helpers/cli.js';
import { stopAgent, until } from '../agent/helpers.js';

let w: ApiWorld;
let tmp: { dir: string };
let server: Server;
let root: string;
let home: string;

beforeAll(async () => {
  ensureBuilt();
  w = await apiWorld('bits-api-bg-');
  ({ server, root, home } = w);
  tmp = { dir: w.dir };
});

afterAll(async () => {
  if (w) await stopAgent(w.home);
  await w?.close();
});

describe('jobs.queue / jobs.wait / jobs.suspend', () => {
  it('queue starts the agent, which runs the job; wait resolves with it complete, sha256-identical', async () => {
    const src = await makeRandomFile(path.join(tmp.dir, 'q.bin'), 300_000, 3);
    const job = await createUpload({ file: src, url: `${server.url}/up/q.bin`, home });
    const q = await jobs.queue(job.id, { home, priority: 'high' });
    expect(q.job.state).toBe('queued');
    expect(q.job.priority).toBe('high');
    expect(q.agentPid).toBeGreaterThan(0);
    const done = await jobs.wait(job.id, { home, timeoutMs: 30_000 });
    expect(done.state).toBe('complete');
    expect(await sha256File(path.join(root, 'up', 'q.bin'))).toBe(await sha256File(src));
    // A finished job is refused as resume refuses it.
    await expect(jobs.queue(job.id, { home })).rejects.toThrow(/already complete/);
  }, 60_000);

  it('suspend stops a job the agent is running; resume finishes it here, sha256-identical', async () => {
    const src = await makeRandomFile(path.join(tmp.dir, 's.bin'), 2 * 1024 * 1024, 4);
    const job = await createUpload({ file: src, url: `${server.url}/up/s.bin`, home, fragmentSize: 64 * 1024, transport: { limitRateBytesPerSec: 256 * 1024 } });
    await jobs.queue(job.id, { home });
    await until('the agent to move bytes', () => jobs.get(job.id, { home }), (j) => j.runnerAlive && j.bytesDone > 64 * 1024, 30_000);
    const s = await jobs.suspend(job.id, { home });
    expect(s.state).toBe('suspended');
    expect(s.runnerAlive).toBe(false);
    expect(s.bytesDone).toBeLessThan(2 * 1024 * 1024);
    // Nobody runs it now: it stays where it stopped.
    await new Promise((r) => setTimeout(r, 600));
    expect((await jobs.get(job.id, { home })).bytesDone).toBe(s.bytesDone);
    const done = await jobs.resume(job.id, { home, transport: { limitRateBytesPerSec: 0 } });
    expect(done.state).toBe('complete');
    expect(await sha256File(path.join(root, 'up', 's.bin'))).toBe(await sha256File(src));
    await expect(jobs.suspend(job.id, { home })).rejects.toThrow(/nothing to suspend/);
  }, 60_000);
});

describe('readServeConfig / serve with its settings', () => {
  it('reads a --config file and serves with it: a folder with uploads off refuses, the others take them in ack durability', async () => {
    const file = path.join(tmp.dir, 'serve.json');
    await writeFile(file, JSON.stringify({ directories: { '/ro': { uploadsEnabled: false } }, durability: { mode: 'ack' } }));
    const cfg = await readServeConfig(file);
    expect(cfg.directories?.['/ro']?.uploadsEnabled).toBe(false);
    expect(cfg.durability?.mode).toBe('ack');
    const own = await serve({ root, defaults: { ...cfg.defaults }, directories: cfg.directories ?? {}, durability: { mode: 'ack', syncEveryBytes: 1, syncEverySeconds: 1 } });
    try {
      const src = await makeRandomFile(path.join(tmp.dir, 'c.bin'), 100_000, 5);
      const ok = await upload({ file: src, url: `${own.url}/rw/c.bin`, home });
      expect(ok.job.state).toBe('complete');
      expect(await sha256File(path.join(root, 'rw', 'c.bin'))).toBe(await sha256File(src));
      await expect(upload({ file: src, url: `${own.url}/ro/c.bin`, home })).rejects.toMatchObject({ exitCode: 5 });
    } finally {
      await own.close();
    }
    await writeFile(file, JSON.stringify({ durability: { mode: 'sometimes' } }));
    await expect(readServeConfig(file)).rejects.toThrow(/durability/);
  }, 60_000);
});
