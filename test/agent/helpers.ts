/**
 * Shared by the agent tests: a per-test BITS_HOME, reading jobs through the
 * built `bits list --json`, and stopping every agent a test started (bounded).
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, afterEach, beforeAll } from 'vitest';
import { startServer, type RunningServer } from '../../src/server/index.js';
import { runBits, type RunResult } from '../helpers/cli.js';
import { makeTempDir } from '../helpers/files.js';
import { ensureFreshBuild, listJobs, type JobJson } from '../jobs/helpers.js';
import { jsonLines } from '../jobs/helpers.js';

export { ensureFreshBuild, jsonLines } from '../jobs/helpers.js';

export function agentPid(home: string): number | undefined {
  try {
    const v = JSON.parse(fs.readFileSync(path.join(home, 'agent.lock'), 'utf8')) as { pid: number };
    process.kill(v.pid, 0);
    return v.pid;
  } catch {
    return undefined;
  }
}

export async function bits(home: string, args: string[], extra: { env?: Record<string, string>; timeoutMs?: number; cwd?: string; input?: string } = {}): Promise<RunResult> {
  return runBits(args, { env: { BITS_HOME: home, ...extra.env }, timeoutMs: extra.timeoutMs ?? 30_000, ...(extra.cwd ? { cwd: extra.cwd } : {}), ...(extra.input !== undefined ? { input: extra.input } : {}) });
}

export async function job(home: string, id: string): Promise<JobJson & Record<string, unknown>> {
  const { jobs } = await listJobs(home);
  const j = jobs.find((x) => x.id === id);
  if (!j) throw new Error(`job ${id} not in bits list`);
  return j as JobJson & Record<string, unknown>;
}

/** Polls until `pred` holds; throws after timeoutMs. */
export async function until<T>(what: string, fn: () => Promise<T>, pred: (v: T) => boolean, timeoutMs = 20_000, stepMs = 100): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (let i = 0; ; i++) {
    const v = await fn();
    if (pred(v)) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}: ${JSON.stringify(v)}`);
    await new Promise((r) => setTimeout(r, stepMs));
  }
}

/** `bits agent stop`, then SIGKILL whatever still holds the lock: no test leaves an agent behind. */
export async function stopAgent(home: string): Promise<void> {
  await bits(home, ['agent', 'stop', '--timeout', '15'], { timeoutMs: 20_000 }).catch(() => undefined);
  const pid = agentPid(home);
  if (pid !== undefined) process.kill(pid, 'SIGKILL');
}

export function queuedId(r: RunResult): string {
  const q = jsonLines(r.stdout).find((o) => o.type === 'queued');
  if (!q) throw new Error(`no queued object (exit ${r.code}): ${r.stdout} ${r.stderr}`);
  return q.jobId as string;
}

export function agentLog(home: string): string {
  try {
    return fs.readFileSync(path.join(home, 'agent.log'), 'utf8');
  } catch {
    return '';
  }
}

export interface AgentFixture {
  readonly dir: string;
  readonly root: string;
  readonly server: RunningServer;
  /** A fresh BITS_HOME whose agent is stopped after the test. */
  home(name: string): string;
}

/** beforeAll/afterEach/afterAll for a file of agent tests: a temp folder, `bits serve`'s server on loopback, agents stopped. */
export function agentFixture(prefix: string): AgentFixture {
  let tmp: { dir: string; cleanup: () => Promise<void> } | undefined;
  let server: RunningServer | undefined;
  const homes: string[] = [];
  beforeAll(async () => {
    await ensureFreshBuild();
    tmp = await makeTempDir(prefix);
    fs.mkdirSync(path.join(tmp.dir, 'root', 'up'), { recursive: true });
    server = await startServer({ root: path.join(tmp.dir, 'root'), port: 0 });
  }, 180_000);
  afterEach(async () => {
    for (const h of homes.splice(0)) await stopAgent(h);
  });
  afterAll(async () => {
    await server?.close();
    await tmp?.cleanup();
  });
  return {
    get dir() {
      return tmp!.dir;
    },
    get root() {
      return path.join(tmp!.dir, 'root');
    },
    get server() {
      return server!;
    },
    home(name: string) {
      const h = path.join(tmp!.dir, name);
      fs.mkdirSync(h, { recursive: true });
      homes.push(h);
      return h;
    },
  };
}
