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
import { planKills, type KillMoment } from '../helpers/killer.js';
import { ensureFreshBuild, killThenResume, type KillTally } from './helpers.js';

/** 12 in the suite (its time budget on two cores); BITS_KILL_RUNS=100 for a longer soak. */
const RUNS = Number(process.env.BITS_KILL_RUNS ?? 12);
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

async function oneRun(i: number, moment: KillMoment, resumeMoment: KillMoment | undefined, t: KillTally): Promise<void> {
  const home = path.join(tmp.dir, `home-${i}`);
  const outDir = path.join(tmp.dir, `out-${i}`);
  fs.mkdirSync(home);
  fs.mkdirSync(outDir);
  const out = path.join(outDir, 'copy.bin');
  // A rate limit spreads the transfer evenly over the span the random kills are drawn from.
  const args = ['download', '--json', '--limit-rate', RATE, '-o', out, url];
  const where = `run ${i} (${moment.kind} +${moment.delayMs} ms, seed ${SEED})`;
  const env = { BITS_HOME: home, BITS_CHECKPOINT_BYTES: CHECKPOINT };
  await killThenResume({ args, env, home, moment, resumeMoment, size: SIZE, where, t });
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

    const t: KillTally = { kills: 0, killsByKind: {}, endedBeforeKill: 0, noJobYet: 0, resumed: 0, resumedFromPartial: 0, identical: 0 };
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
