/**
 * Real processes on one store: concurrent writers must not lose updates, and
 * a writer killed with SIGKILL at any instant must leave a store that opens,
 * validates, and can be written again (its lock recovered).
 */
import { afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawn, type ChildProcess } from 'node:child_process';
import { openJobStore } from '../../src/store/index.js';
import { ensureBuilt, ROOT } from './build-dist.js';

const WORKER = path.join(ROOT, 'test/store/fixtures/worker.mjs');
let home: string;

beforeAll(async () => {
  await ensureBuilt();
});
beforeEach(() => {
  home = fs.mkdtempSync(path.join(os.tmpdir(), 'bits-mp-'));
});
afterEach(() => {
  fs.rmSync(home, { recursive: true, force: true });
});

interface Run {
  child: ChildProcess;
  done: Promise<{ code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }>;
}

function run(args: string[]): Run {
  const child = spawn(process.execPath, [WORKER, ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (d: Buffer) => (stdout += d));
  child.stderr!.on('data', (d: Buffer) => (stderr += d));
  const done = new Promise<{ code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }>((resolve) =>
    child.on('close', (code, signal) => resolve({ code, signal, stdout, stderr })),
  );
  return { child, done };
}

describe('job store across processes', () => {
  it('4 processes x (50 creates + 50 read-modify-writes of one shared job + 10 own updates): nothing lost', async () => {
    const store = await openJobStore({ home });
    const counter = await store.create({ kind: 'upload', source: 'counter', destination: 'counter' });
    const W = 4;
    const N = 50;
    const results = await Promise.all(Array.from({ length: W }, (_, w) => run(['hammer', home, `w${w}`, String(N), counter.id]).done));
    for (const r of results) expect(r, r.stderr).toMatchObject({ code: 0 });
    const jobs = await store.list();
    expect(jobs).toHaveLength(1 + W * N);
    expect((await store.get(counter.id)).bytesDone).toBe(W * N);
    const byId = new Map(jobs.map((j) => [j.id, j]));
    for (const r of results) {
      const { tag, ids } = JSON.parse(r.stdout) as { tag: string; ids: string[] };
      expect(ids).toHaveLength(N);
      ids.forEach((id, i) => {
        const want = i % 5 === 4 ? { bytesDone: i + 1, totalBytes: N, state: 'transferring' } : { bytesDone: 0, state: 'queued' };
        expect(byId.get(id)).toMatchObject({ source: `${tag}-${i}`, ...want });
      });
    }
    expect(fs.existsSync(`${store.path}.lock`)).toBe(false);
    expect(fs.readdirSync(home).sort()).toEqual(['jobs.json']);
  });

  it('SIGKILL at 20 random moments during writes: the store always opens valid, its lock is recovered, no update is rolled back', async () => {
    const store = await openJobStore({ home });
    const counter = await store.create({ kind: 'upload', source: 'counter', destination: 'counter' });
    let last = 0;
    let killedHoldingLock = 0;
    const start = (): { r: Run; ready: Promise<void> } => {
      const r = run(['loop', home, counter.id]);
      const ready = new Promise<void>((resolve, reject) => {
        r.child.stdout!.once('data', () => resolve());
        r.child.once('exit', () => reject(new Error('worker exited early')));
      });
      ready.catch(() => {});
      return { r, ready };
    };
    // Workers start up a few rounds ahead: node start-up dominates otherwise.
    const ROUNDS = 20;
    const AHEAD = 3;
    const queue = Array.from({ length: AHEAD }, start);
    for (let round = 0; round < ROUNDS; round++) {
      const { r: { child, done }, ready } = queue.shift()!;
      await ready;
      const going = new Promise<void>((resolve) => child.stdout!.once('data', () => resolve()));
      child.stdin!.write('go\n');
      await going;
      if (round + AHEAD < ROUNDS) queue.push(start());
      await new Promise((r) => setTimeout(r, 5 + Math.random() * 60));
      child.kill('SIGKILL');
      const r = await done;
      expect(r.signal, r.stderr).toBe('SIGKILL');
      if (fs.existsSync(`${store.path}.lock`)) killedHoldingLock++;
      // A fresh open validates the whole file; an update needs the dead process's lock.
      const after = await openJobStore({ home, lock: { timeoutMs: 10_000 } });
      const now = (await after.get(counter.id)).bytesDone;
      expect(now).toBeGreaterThanOrEqual(last);
      const bumped = await after.update(counter.id, (j) => ({ ...j, bytesDone: j.bytesDone + 1 }));
      expect(bumped.bytesDone).toBe(now + 1);
      last = bumped.bytesDone;
      expect(fs.existsSync(`${store.path}.lock`)).toBe(false);
    }
    // Most of the loop is spent inside the lock, so some kills certainly hit a write in progress.
    expect(killedHoldingLock).toBeGreaterThan(0);
    expect(last).toBeGreaterThan(ROUNDS);
    JSON.parse(fs.readFileSync(store.path, 'utf8'));
  });
});
