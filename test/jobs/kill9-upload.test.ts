/**
 * Every upload is a job that survives kill -9: `bits upload` (the BUILT
 * binary) is SIGKILLed at seeded random moments — during start-up and the
 * first store writes, on the first JSON line, on the first progress event,
 * anywhere in the transfer — then `bits resume <id>` finishes it, and the file
 * on the server is sha256-identical to the source. After every kill
 * `bits list --json` must succeed: the store is never left corrupt.
 * Some resumes are killed too, and resumed again.
 *
 * BITS_KILL_SEED=<n> reproduces a run (the seed is printed).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fs from 'node:fs';
import path from 'node:path';
import { startServer, type RunningServer } from '../../src/server/index.js';
import { runBits } from '../helpers/cli.js';
import { makeRandomFile, makeTempDir, sha256File } from '../helpers/files.js';
import { planKills, runAndKill, type KillMoment } from '../helpers/killer.js';
import { ensureFreshBuild, listJobs } from './helpers.js';

const RUNS = 20;
const SIZE = 1024 * 1024 + 777;
const FRAG = '64K';
const SEED = Number(process.env.BITS_KILL_SEED ?? Date.now() % 1_000_000);

let tmp: { dir: string; cleanup: () => Promise<void> };
let root: string;
let src: string;
let srcSha: string;
let server: RunningServer;

beforeAll(async () => {
  await ensureFreshBuild();
  tmp = await makeTempDir('bits-kill9-up-');
  root = path.join(tmp.dir, 'root');
  fs.mkdirSync(path.join(root, 'up'), { recursive: true });
  src = path.join(tmp.dir, 'source.bin');
  await makeRandomFile(src, SIZE, SEED);
  srcSha = await sha256File(src);
  server = await startServer({ root, port: 0 });
}, 180_000);

afterAll(async () => {
  await server?.close();
  await tmp?.cleanup();
});

interface Tally {
  kills: number;
  killsByKind: Record<string, number>;
  endedBeforeKill: number;
  noJobYet: number;
  resumed: number;
  identical: number;
}

async function oneRun(i: number, moment: KillMoment, resumeMoment: KillMoment | undefined, t: Tally): Promise<void> {
  const home = path.join(tmp.dir, `home-${i}`);
  fs.mkdirSync(home);
  const env = { BITS_HOME: home };
  const name = `run-${i}.bin`;
  const url = `${server.url}/up/${name}`;
  const uploadArgs = ['upload', '--json', '--fragment-size', FRAG, src, url];
  const k = await runAndKill(uploadArgs, env, moment, home);
  const where = `run ${i} (${moment.kind} +${moment.delayMs} ms, seed ${SEED})`;
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
    // Killed before the job was written: nothing to resume, the user runs the upload again.
    expect(k.killed, where).toBe(true);
    t.noJobYet++;
    const again = await runBits(uploadArgs, { env, timeoutMs: 60_000 });
    expect(again.code, `${where}: ${again.stderr}`).toBe(0);
  } else {
    const job = jobs[0]!;
    if (k.jobId !== undefined) expect(job.id).toBe(k.jobId);
    expect(job.running, where).toBe(false);
    let state = job.state;
    if (state !== 'complete') {
      expect(job.resumable, `${where}: ${JSON.stringify(job)}`).toBe(true);
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
      const r = await runBits(['resume', '--json', job.id], { env, timeoutMs: 60_000 });
      expect(r.code, `${where}: resume: ${r.stderr}`).toBe(0);
      // The last JSON line is written after the store says complete.
      const last = JSON.parse(r.stdout.trim().split('\n').at(-1)!) as Record<string, unknown>;
      expect(last, where).toMatchObject({ type: 'complete', jobId: job.id, state: 'complete', bytes: SIZE, error: null });
      t.resumed++;
    }
  }
  expect(await sha256File(path.join(root, 'up', name)), where).toBe(srcSha);
  t.identical++;
}

describe('kill -9 during bits upload, then bits resume', () => {
  it(`${RUNS} kills at random moments; every resume ends sha256-identical`, async () => {
    // One undisturbed upload measures the span the random kills spread over.
    const home0 = path.join(tmp.dir, 'home-measure');
    fs.mkdirSync(home0);
    const t0 = Date.now();
    const r0 = await runBits(['upload', '--json', '--fragment-size', FRAG, src, `${server.url}/up/measure.bin`], { env: { BITS_HOME: home0 } });
    expect(r0.code, r0.stderr).toBe(0);
    // The random kills spread over the transfer itself (they count from the first JSON line).
    const final = JSON.parse(r0.stdout.trim().split('\n').at(-1)!) as { elapsedMs?: number };
    const span = Math.max(150, Math.min(final.elapsedMs ?? Date.now() - t0, Date.now() - t0));
    const plan = planKills(SEED, RUNS, span);
    const resumePlan = planKills(SEED + 1, RUNS, span);
    console.log(`kill9-upload: seed ${SEED} (BITS_KILL_SEED=${SEED} reproduces), ${RUNS} runs, span ${span} ms`);

    const t: Tally = { kills: 0, killsByKind: {}, endedBeforeKill: 0, noJobYet: 0, resumed: 0, identical: 0 };
    // Two at a time: the machine has two cores.
    for (let i = 0; i < RUNS; i += 2) {
      await Promise.all(
        [i, i + 1].filter((n) => n < RUNS).map((n) => oneRun(n, plan[n]!, n % 4 === 3 ? resumePlan[n] : undefined, t)),
      );
    }
    console.log(`kill9-upload: ${JSON.stringify(t)}`);
    expect(t.identical).toBe(RUNS);
    // The plan must really kill (not race past the end): at least most runs were killed.
    expect(t.kills).toBeGreaterThanOrEqual(Math.floor(RUNS * 0.75));
  }, 120_000);
});
