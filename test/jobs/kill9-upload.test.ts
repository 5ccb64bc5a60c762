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
import { planKills, type KillMoment } from '../helpers/killer.js';
import { ensureFreshBuild, killThenResume, type KillTally } from './helpers.js';

/** 12 in the suite (its time budget on two cores); BITS_KILL_RUNS=100 for a longer soak. */
const RUNS = Number(process.env.BITS_KILL_RUNS ?? 12);
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

async function oneRun(i: number, moment: KillMoment, resumeMoment: KillMoment | undefined, t: KillTally): Promise<void> {
  const home = path.join(tmp.dir, `home-${i}`);
  fs.mkdirSync(home);
  const name = `run-${i}.bin`;
  const args = ['upload', '--json', '--fragment-size', FRAG, src, `${server.url}/up/${name}`];
  const where = `run ${i} (${moment.kind} +${moment.delayMs} ms, seed ${SEED})`;
  await killThenResume({ args, env: { BITS_HOME: home }, home, moment, resumeMoment, size: SIZE, where, t });
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

    const t: KillTally = { kills: 0, killsByKind: {}, endedBeforeKill: 0, noJobYet: 0, resumed: 0, identical: 0 };
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
