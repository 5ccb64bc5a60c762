/**
 * Every download is a job that survives kill -9: `bits download` (the BUILT
 * binary) from `bits serve` is SIGKILLed at seeded random moments, then
 * `bits resume <id>` finishes it from the partial file (§3.6.4.2) and the
 * output is sha256-identical to the served file. After every kill
 * `bits list --json` must succeed. Some resumes are killed too.
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
const SIZE = 6 * 1024 * 1024 + 333;
/** Durable checkpoints every 512 KiB (default 4 MiB), so kills land between many of them. */
const CHECKPOINT = '512K';
const RATE = '16M';
const SEED = Number(process.env.BITS_KILL_SEED ?? Date.now() % 1_000_000);

let tmp: { dir: string; cleanup: () => Promise<void> };
let root: string;
let srcSha: string;
let server: RunningServer;
let url: string;

beforeAll(async () => {
  await ensureFreshBuild();
  tmp = await makeTempDir('bits-kill9-dl-');
  root = path.join(tmp.dir, 'root');
  fs.mkdirSync(path.join(root, 'files'), { recursive: true });
  const src = path.join(root, 'files', 'source.bin');
  await makeRandomFile(src, SIZE, SEED);
  srcSha = await sha256File(src);
  server = await startServer({ root, port: 0 });
  url = `${server.url}/files/source.bin`;
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
  resumedFromPartial: number;
  identical: number;
}

async function oneRun(i: number, moment: KillMoment, resumeMoment: KillMoment | undefined, t: Tally): Promise<void> {
  const home = path.join(tmp.dir, `home-${i}`);
  const outDir = path.join(tmp.dir, `out-${i}`);
  fs.mkdirSync(home);
  fs.mkdirSync(outDir);
  const env = { BITS_HOME: home, BITS_CHECKPOINT_BYTES: CHECKPOINT };
  const out = path.join(outDir, 'copy.bin');
  // A rate limit spreads the transfer evenly over the span the random kills are drawn from.
  const args = ['download', '--json', '--limit-rate', RATE, '-o', out, url];
  const where = `run ${i} (${moment.kind} +${moment.delayMs} ms, seed ${SEED})`;
  const k = await runAndKill(args, env, moment, home);
  if (k.killed) {
    t.kills++;
    t.killsByKind[moment.kind] = (t.killsByKind[moment.kind] ?? 0) + 1;
  } else {
    t.endedBeforeKill++;
    expect(k.result.code, `${where}: ${k.result.stderr}`).toBe(0);
  }

  let { jobs } = await listJobs(home);
  expect(jobs.length, where).toBeLessThanOrEqual(1);
  if (jobs.length === 0) {
    expect(k.killed, where).toBe(true);
    t.noJobYet++;
    // The job was never written; a partial file may be (it is discarded and rewritten).
    const again = await runBits(args, { env, timeoutMs: 60_000 });
    expect(again.code, `${where}: ${again.stderr}`).toBe(0);
  } else {
    const job = jobs[0]!;
    if (k.jobId !== undefined) expect(job.id).toBe(k.jobId);
    expect(job.running, where).toBe(false);
    let state = job.state;
    if (state !== 'complete') {
      expect(job.resumable, `${where}: ${JSON.stringify(job)}`).toBe(true);
      if (job.bytesDone > 0) t.resumedFromPartial++;
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
      const last = JSON.parse(r.stdout.trim().split('\n').at(-1)!) as Record<string, unknown>;
      expect(last, where).toMatchObject({ type: 'complete', jobId: job.id, state: 'complete', bytes: SIZE, error: null });
      t.resumed++;
    }
  }
  expect(fs.existsSync(out + '.bits-partial'), `${where}: partial file left`).toBe(false);
  expect(await sha256File(out), where).toBe(srcSha);
  t.identical++;
}

describe('kill -9 during bits download, then bits resume', () => {
  it(`${RUNS} kills at random moments; every resume ends sha256-identical`, async () => {
    const out0 = path.join(tmp.dir, 'measure.bin');
    const home0 = path.join(tmp.dir, 'home-measure');
    fs.mkdirSync(home0);
    const t0 = Date.now();
    const r0 = await runBits(['download', '--json', '--limit-rate', RATE, '-o', out0, url], { env: { BITS_HOME: home0, BITS_CHECKPOINT_BYTES: CHECKPOINT } });
    expect(r0.code, r0.stderr).toBe(0);
    expect(await sha256File(out0)).toBe(srcSha);
    // The random kills spread over the transfer itself (they count from the first JSON line).
    const final = JSON.parse(r0.stdout.trim().split('\n').at(-1)!) as { elapsedMs?: number };
    const span = Math.max(150, Math.min(final.elapsedMs ?? Date.now() - t0, Date.now() - t0));
    const plan = planKills(SEED, RUNS, span);
    const resumePlan = planKills(SEED + 1, RUNS, span);
    console.log(`kill9-download: seed ${SEED} (BITS_KILL_SEED=${SEED} reproduces), ${RUNS} runs, span ${span} ms`);

    const t: Tally = { kills: 0, killsByKind: {}, endedBeforeKill: 0, noJobYet: 0, resumed: 0, resumedFromPartial: 0, identical: 0 };
    for (let i = 0; i < RUNS; i += 2) {
      await Promise.all(
        [i, i + 1].filter((n) => n < RUNS).map((n) => oneRun(n, plan[n]!, n % 4 === 3 ? resumePlan[n] : undefined, t)),
      );
    }
    console.log(`kill9-download: ${JSON.stringify(t)}`);
    expect(t.identical).toBe(RUNS);
    expect(t.kills).toBeGreaterThanOrEqual(Math.floor(RUNS * 0.75));
  }, 120_000);
});
