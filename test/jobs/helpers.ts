/**
 * Shared by the job tests: a fresh build of dist/ (they run the BUILT `bits`),
 * an in-process `bits serve`, temp BITS_HOMEs, and reading the job store the
 * way scripts do (`bits list --json`).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { acquireLock } from '../../src/store/lock.js';
import { ROOT, runBits, type RunResult } from '../helpers/cli.js';

function newest(p: string): number {
  const st = fs.statSync(p);
  if (!st.isDirectory()) return st.mtimeMs;
  return Math.max(0, ...fs.readdirSync(p).map((n) => newest(path.join(p, n))));
}

function stale(): boolean {
  const out = path.join(ROOT, 'dist', 'jobs', 'runner.js');
  const main = path.join(ROOT, 'dist', 'cli', 'main.js');
  if (!fs.existsSync(out) || !fs.existsSync(main)) return true;
  return newest(path.join(ROOT, 'src')) > Math.min(fs.statSync(out).mtimeMs, fs.statSync(main).mtimeMs);
}

/** Builds dist/ when any source is newer (serialized across vitest workers; tsc emits despite type errors elsewhere). */
export async function ensureFreshBuild(): Promise<void> {
  if (!stale()) return;
  const lock = await acquireLock(path.join(os.tmpdir(), 'bits-test-build.lock'), { timeoutMs: 180_000, staleMs: 180_000 });
  try {
    if (!stale()) return;
    spawnSync(process.execPath, [path.join(ROOT, 'node_modules/typescript/bin/tsc'), '-p', ROOT], { cwd: ROOT, stdio: 'ignore' });
    // tsc leaves unchanged outputs untouched: mark the build as current.
    const now = new Date();
    for (const f of ['dist/jobs/runner.js', 'dist/cli/main.js']) fs.utimesSync(path.join(ROOT, f), now, now);
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
