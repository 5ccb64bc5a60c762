/**
 * Shared by the job tests: a fresh build of dist/ (they run the BUILT `bits`),
 * an in-process `bits serve`, temp BITS_HOMEs, and reading the job store the
 * way scripts do (`bits list --json`).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { acquireLock } from '../../src/store/lock.js';
import { expect } from 'vitest';
import { buildDist, ROOT, runBits, type RunResult } from '../helpers/cli.js';
import { runAndKill, type KillMoment } from '../helpers/killer.js';

function newest(p: string): number {
  const st = fs.statSync(p);
  if (!st.isDirectory()) return st.mtimeMs;
  return Math.max(0, ...fs.readdirSync(p).map((n) => newest(path.join(p, n))));
}

function stale(): boolean {
  const out = path.join(ROOT, 'dist', 'jobs', 'runner.js');
  const main = path.join(ROOT, 'dist', 'bundle', 'bits.mjs');
  if (!fs.existsSync(out) || !fs.existsSync(main)) return true;
  return newest(path.join(ROOT, 'src')) > Math.min(fs.statSync(out).mtimeMs, fs.statSync(main).mtimeMs);
}

/** Builds dist/ when any source is newer (serialized across vitest workers; tsc emits despite type errors elsewhere). */
export async function ensureFreshBuild(): Promise<void> {
  if (!stale()) return;
  const lock = await acquireLock(path.join(os.tmpdir(), 'bits-test-build.lock'), { timeoutMs: 180_000, staleMs: 180_000 });
  try {
    if (!stale()) return;
    buildDist();
    // tsc leaves unchanged outputs untouched: mark the build as current.
    const now = new Date();
    for (const f of ['dist/jobs/runner.js', 'dist/bundle/bits.mjs']) fs.utimesSync(path.join(ROOT, f), now, now);
  } finally {
    lock.release();
  }
}

export interface JobJson {
  id: string;
  kind: string;
  state: string;
  storedState?: string;
  running: boolean;
  resumable: boolean;
  bytesDone: number;
  totalBytes?: number;
  lastError?: { code: string; message: string };
  upload?: { sessionId?: string; confirmedOffset?: number };
  download?: { partialPath?: string };
  runner?: { pid: number };
}

export function jsonLines(s: string): Array<Record<string, unknown>> {
  return s
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as Record<string, unknown>);
}

/** `bits list --all --json`: must always succeed (the store is never corrupt). */
export async function listJobs(home: string): Promise<{ jobs: JobJson[]; result: RunResult }> {
  const result = await runBits(['list', '--all', '--json'], { env: { BITS_HOME: home } });
  if (result.code !== 0) throw new Error(`bits list failed (exit ${result.code}): ${result.stderr}`);
  const jobs = jsonLines(result.stdout).filter((o) => o.type === 'job') as unknown as JobJson[];
  return { jobs, result };
}

/** Every BITS-Sessions/Requests/{GUID} folder under root (upload sessions the server still holds). */
export function serverSessions(root: string): string[] {
  const found: string[] = [];
  const walk = (dir: string) => {
    for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
      const p = path.join(dir, e.name);
      if (!e.isDirectory()) continue;
      if (e.name === 'BITS-Sessions') {
        const req = path.join(p, 'Requests');
        if (fs.existsSync(req)) for (const g of fs.readdirSync(req)) found.push(path.join(req, g));
      } else walk(p);
    }
  };
  walk(root);
  return found;
}

/** What a kill -9 test counts (printed for the closing note). */
export interface KillTally {
  kills: number;
  killsByKind: Record<string, number>;
  endedBeforeKill: number;
  noJobYet: number;
  resumed: number;
  identical: number;
  /** Downloads only: resumes that started from a partial file. */
  resumedFromPartial?: number;
}

export interface KillRun {
  /** The transfer command, e.g. ['upload', '--json', …]. */
  args: string[];
  env: Record<string, string>;
  home: string;
  moment: KillMoment;
  /** When set, the first resume is killed too, at this moment. */
  resumeMoment?: KillMoment;
  /** The size the final `complete` object must report. */
  size: number;
  where: string;
  t: KillTally;
}

/**
 * The sequence every kill -9 test shares: run the transfer and SIGKILL it; the
 * store must then be readable and hold at most one job, not running; a job
 * not complete must be resumable; resume it (optionally killing that resume
 * too, and checking the store again) until it completes. The caller then
 * checks the transferred file.
 */
export async function killThenResume(r: KillRun): Promise<void> {
  const { args, env, home, moment, resumeMoment, size, where, t } = r;
  const k = await runAndKill(args, env, moment, home);
  if (k.killed) {
    t.kills++;
    t.killsByKind[moment.kind] = (t.killsByKind[moment.kind] ?? 0) + 1;
  } else {
    t.endedBeforeKill++;
    expect(k.result.code, `${where}: ${k.result.stderr}`).toBe(0);
  }

  // The store must be readable after any kill.
  let { jobs } = await listJobs(home);
  expect(jobs.length, where).toBeLessThanOrEqual(1);
  if (jobs.length === 0) {
    // Killed before the job was written: nothing to resume, the user runs the command again
    // (a download's partial file, if any, is discarded and rewritten).
    expect(k.killed, where).toBe(true);
    t.noJobYet++;
    const again = await runBits(args, { env, timeoutMs: 60_000 });
    expect(again.code, `${where}: ${again.stderr}`).toBe(0);
    return;
  }
  const job = jobs[0]!;
  if (k.jobId !== undefined) expect(job.id).toBe(k.jobId);
  expect(job.running, where).toBe(false);
  let state = job.state;
  if (state !== 'complete') {
    expect(job.resumable, `${where}: ${JSON.stringify(job)}`).toBe(true);
    if (t.resumedFromPartial !== undefined && job.bytesDone > 0) t.resumedFromPartial++;
    if (resumeMoment) {
      const rk = await runAndKill(['resume', '--json', job.id], env, resumeMoment, home);
      if (rk.killed) {
        t.kills++;
        t.killsByKind[`resume:${resumeMoment.kind}`] = (t.killsByKind[`resume:${resumeMoment.kind}`] ?? 0) + 1;
      }
      ({ jobs } = await listJobs(home));
      expect(jobs[0]!.running, where).toBe(false);
      state = jobs[0]!.state;
      if (state !== 'complete') expect(jobs[0]!.resumable, `${where}: ${JSON.stringify(jobs[0])}`).toBe(true);
    }
  }
  if (state !== 'complete') {
    const res = await runBits(['resume', '--json', job.id], { env, timeoutMs: 60_000 });
    expect(res.code, `${where}: resume: ${res.stderr}`).toBe(0);
    // The last JSON line is written after the store says complete.
    const last = JSON.parse(res.stdout.trim().split('\n').at(-1)!) as Record<string, unknown>;
    expect(last, where).toMatchObject({ type: 'complete', jobId: job.id, state: 'complete', bytes: size, error: null });
    t.resumed++;
  }
}
