/**
 * kill -9 at chosen moments: starts the BUILT `bits` with `--json`, and
 * SIGKILLs it at a moment picked by a seeded plan — after a delay from spawn
 * (start-up, the first store writes), as soon as the job store file appears,
 * on the first JSON line, on the first progress event, or after a random delay
 * during the transfer. Whatever survives must be resumable.
 */
import fs from 'node:fs';
import path from 'node:path';
import { startBits, type RunResult } from './cli.js';
import { seededRandom } from './files.js';

export type KillMoment =
  /** U[lo, hi) ms after spawn: inside node start-up, store open, job create and claim. */
  | { kind: 'after-spawn'; delayMs: number }
  /** As soon as jobs.json (or its lock) exists, plus a few ms: inside the first store writes. */
  | { kind: 'store-appears'; delayMs: number }
  /** On the first JSON line (the 'start' event: job claimed, no request sent yet), plus delayMs. */
  | { kind: 'first-line'; delayMs: number }
  /** On the first progress event, plus delayMs. */
  | { kind: 'first-progress'; delayMs: number }
  /** delayMs after the first JSON line: anywhere in the transfer. */
  | { kind: 'random'; delayMs: number };

/** A reproducible list of kill moments; `spanMs` ~ how long an undisturbed transfer takes. */
export function planKills(seed: number, count: number, spanMs: number): KillMoment[] {
  const rnd = seededRandom(seed);
  const kinds: KillMoment['kind'][] = ['after-spawn', 'random', 'store-appears', 'first-line', 'random', 'first-progress', 'random'];
  const plan: KillMoment[] = [];
  for (let i = 0; i < count; i++) {
    const kind = kinds[i % kinds.length]!;
    switch (kind) {
      case 'after-spawn':
        plan.push({ kind, delayMs: 100 + Math.floor(rnd() * 400) });
        break;
      case 'store-appears':
        plan.push({ kind, delayMs: Math.floor(rnd() * 30) });
        break;
      case 'first-line':
      case 'first-progress':
        plan.push({ kind, delayMs: Math.floor(rnd() * 15) });
        break;
      case 'random':
        plan.push({ kind, delayMs: Math.floor(rnd() * spanMs) });
        break;
    }
  }
  return plan;
}

export interface KilledRun {
  /** The SIGKILL landed (false: the run ended by itself first). */
  killed: boolean;
  result: RunResult;
  /** Job id from the first JSON object that carried one, if any was printed. */
  jobId?: string;
}

export function jobIdFromJsonLines(stdout: string): string | undefined {
  for (const line of stdout.split('\n')) {
    if (!line.startsWith('{')) continue;
    try {
      const o = JSON.parse(line) as { jobId?: unknown };
      if (typeof o.jobId === 'string') return o.jobId;
    } catch {
      // a line cut by the kill
    }
  }
  return undefined;
}

/** Starts `bits ...args` (add --json yourself) and SIGKILLs it at `moment`. */
export async function runAndKill(args: string[], env: Record<string, string>, moment: KillMoment, home: string): Promise<KilledRun> {
  const run = startBits(args, { env, timeoutMs: 60_000 });
  let killed = false;
  const kill = () => {
    if (killed || run.child.exitCode !== null || run.child.signalCode !== null) return;
    killed = true;
    run.child.kill('SIGKILL');
  };
  const later = (ms: number) => setTimeout(kill, ms);
  let poll: NodeJS.Timeout | undefined;
  switch (moment.kind) {
    case 'after-spawn':
      later(moment.delayMs);
      break;
    case 'store-appears': {
      const files = [path.join(home, 'jobs.json'), path.join(home, 'jobs.json.lock')];
      poll = setInterval(() => {
        if (files.some((f) => fs.existsSync(f))) {
          clearInterval(poll);
          later(moment.delayMs);
        }
      }, 1);
      break;
    }
    case 'first-line':
    case 'first-progress':
    case 'random': {
      const re = moment.kind === 'first-progress' ? /"type":"progress"/ : /^\{/m;
      const delay = moment.delayMs;
      run.waitFor(re, 'stdout', 60_000).then(() => later(delay), () => undefined);
      break;
    }
  }
  const result = await run.done;
  if (poll) clearInterval(poll);
  return { killed: killed && result.signal === 'SIGKILL', result, jobId: jobIdFromJsonLines(result.stdout) };
}
