/**
 * Jobs as users drive them, with the BUILT `bits` against `bits serve` on
 * loopback: Ctrl-C (suspend, exit 10) and Ctrl-C twice (CANCEL-SESSION,
 * exit 11), `bits cancel` (server session removed; unreachable server keeps
 * the job, exit 4; a running job needs --force), `bits resume --all`, two
 * processes on one job, a changed source (exit 9), a server refusal (state
 * error), credentials never stored, and the upload options that come from
 * `bits config`. The tests run concurrently (each has its own BITS_HOME and
 * server folder): most of their time is spent waiting on rate-limited transfers.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fs from 'node:fs';
import path from 'node:path';
import { startServer, type RunningServer } from '../../src/server/index.js';
import { runBits, startBits, type RunningBits } from '../helpers/cli.js';
import { makeRandomFile, makeTempDir, sha256File } from '../helpers/files.js';
import { ensureFreshBuild, jsonLines, listJobs, serverSessions, type JobJson } from './helpers.js';

const SIZE = 512 * 1024 + 17;

let tmp: { dir: string; cleanup: () => Promise<void> };
let root: string;
let src: string;
let srcSha: string;
let server: RunningServer;
let n = 0;
/** A fresh number for file names: the tests run concurrently. */
const uniq = () => ++n;

beforeAll(async () => {
  await ensureFreshBuild();
  tmp = await makeTempDir('bits-jobs-cli-');
  root = path.join(tmp.dir, 'root');
  fs.mkdirSync(path.join(root, 'small'), { recursive: true });
  src = path.join(tmp.dir, 'source.bin');
  await makeRandomFile(src, SIZE);
  srcSha = await sha256File(src);
  server = await startServer({
    root,
    port: 0,
    directories: { '/small': { maxUploadSize: 1000 } },
  });
}, 180_000);

afterAll(async () => {
  await server?.close();
  await tmp?.cleanup();
});

/** A fresh BITS_HOME, server folder and destination for one test. */
function fresh(label: string) {
  const i = uniq();
  const home = path.join(tmp.dir, `home-${label}-${i}`);
  const folder = `${label}-${i}`;
  fs.mkdirSync(home);
  fs.mkdirSync(path.join(root, folder));
  return { home, env: { BITS_HOME: home }, folder, url: `${server.url}/${folder}/f.bin`, dest: path.join(root, folder, 'f.bin') };
}

/** `bits upload` slowed down (the rate limit is stored with the job, so resumes are slow too: keep files small). */
function slowUpload(env: Record<string, string>, url: string, rate = '256K', file = src): RunningBits {
  return startBits(['upload', '--json', '--limit-rate', rate, '--fragment-size', '64K', file, url], { env, timeoutMs: 60_000 });
}

async function waitProgress(run: RunningBits): Promise<string> {
  await run.waitFor(/"type":"progress"/, 'stdout', 20_000);
  const id = jsonLines(run.stdout).find((o) => typeof o.jobId === 'string')?.jobId;
  expect(typeof id).toBe('string');
  return id as string;
}

/** An upload killed -9 mid-transfer: the session is on the server, the job resumable. */
async function killedUpload(env: Record<string, string>, url: string, file = src): Promise<string> {
  const run = slowUpload(env, url, '512K', file);
  const id = await waitProgress(run);
  run.child.kill('SIGKILL');
  await run.done;
  return id;
}

async function jobOf(home: string, id: string): Promise<JobJson> {
  const { jobs } = await listJobs(home);
  const j = jobs.find((x) => x.id === id);
  expect(j, `job ${id} in ${JSON.stringify(jobs)}`).toBeDefined();
  return j!;
}

const lastJson = (stdout: string) => jsonLines(stdout).at(-1)!;
const oneLine = (s: string) => s.trim().split('\n').filter(Boolean);

describe.concurrent('Ctrl-C', () => {
  it('once: the job is saved suspended, the last line says bits resume <id>, exit 10; resume finishes it', async () => {
    const t = fresh('sigint');
    const run = slowUpload(t.env, t.url);
    const id = await waitProgress(run);
    expect(serverSessions(path.join(root, t.folder))).toHaveLength(1);
    run.child.kill('SIGINT');
    const r = await run.done;
    expect(r.code, r.stderr).toBe(10);
    expect(r.stderr).toContain(`bits resume ${id}`);
    expect(lastJson(r.stdout)).toMatchObject({ type: 'error', jobId: id, state: 'suspended', error: { code: 'InterruptedError' } });
    const job = await jobOf(t.home, id);
    expect(job).toMatchObject({ state: 'suspended', resumable: true, running: false });
    // The session stays on the server for the resume.
    expect(serverSessions(path.join(root, t.folder))).toHaveLength(1);

    const res = await runBits(['resume', '--json', id], { env: t.env, timeoutMs: 30_000 });
    expect(res.code, res.stderr).toBe(0);
    expect(lastJson(res.stdout)).toMatchObject({ type: 'complete', jobId: id, state: 'complete', bytes: SIZE });
    expect(jsonLines(res.stdout).every((o) => o.jobId === id)).toBe(true);
    expect(await sha256File(t.dest)).toBe(srcSha);
    expect((await jobOf(t.home, id)).state).toBe('complete');
  });

  it('twice within 2 s: CANCEL-SESSION (the server session is gone), job cancelled, exit 11', async () => {
    const t = fresh('sigint2');
    const run = slowUpload(t.env, t.url);
    const id = await waitProgress(run);
    expect(serverSessions(path.join(root, t.folder))).toHaveLength(1);
    run.child.kill('SIGINT');
    await run.waitFor(/press Ctrl-C again/, 'stderr');
    // Two signals within 100 ms are one Ctrl-C delivered twice; a person's second press comes later.
    await new Promise((r) => setTimeout(r, 150));
    run.child.kill('SIGINT');
    const r = await run.done;
    expect(r.code, r.stderr).toBe(11);
    expect(lastJson(r.stdout)).toMatchObject({ jobId: id, state: 'cancelled', error: { code: 'CancelledError' } });
    expect(serverSessions(path.join(root, t.folder))).toHaveLength(0);
    expect(fs.existsSync(t.dest)).toBe(false);
    expect((await jobOf(t.home, id)).state).toBe('cancelled');
  });
});

describe.concurrent('bits cancel', () => {
  it('a suspended upload: CANCEL-SESSION removes the server session; the job is cancelled and cannot be resumed', async () => {
    const t = fresh('cancel');
    const id = await killedUpload(t.env, t.url);
    expect(serverSessions(path.join(root, t.folder))).toHaveLength(1);
    const c = await runBits(['cancel', '--json', id], { env: t.env });
    expect(c.code, c.stderr).toBe(0);
    expect(lastJson(c.stdout)).toMatchObject({ jobId: id, state: 'cancelled', error: null });
    expect(serverSessions(path.join(root, t.folder))).toHaveLength(0);
    expect((await jobOf(t.home, id)).state).toBe('cancelled');

    const r = await runBits(['resume', id], { env: t.env });
    expect(r.code).toBe(2);
    expect(oneLine(r.stderr)).toHaveLength(1);
    expect(r.stderr).toMatch(/was cancelled; it cannot be resumed/);
    // Cancelling again is harmless.
    const again = await runBits(['cancel', id], { env: t.env });
    expect(again.code, again.stderr).toBe(0);
    expect(again.stderr).toMatch(/already cancelled/);
  });

  it('server unreachable: exit 4, one line, the job is kept; the retried cancel succeeds', async () => {
    const root2 = path.join(tmp.dir, 'root-down');
    fs.mkdirSync(path.join(root2, 'up'), { recursive: true });
    let s2 = await startServer({ root: root2, port: 0 });
    const port = s2.port;
    const t = fresh('cancel-down');
    const id = await killedUpload(t.env, `${s2.url}/up/f.bin`);
    await s2.close();
    const c = await runBits(['cancel', id], { env: t.env, timeoutMs: 60_000 });
    expect(c.code, c.stderr).toBe(4);
    expect(oneLine(c.stderr)).toHaveLength(1);
    expect(c.stderr).toMatch(new RegExp(`could not cancel job ${id}: .*run bits cancel ${id} again`));
    const kept = await jobOf(t.home, id);
    expect(kept.state).not.toBe('cancelled');
    expect(kept.resumable).toBe(true);
    expect(serverSessions(root2)).toHaveLength(1);

    s2 = await startServer({ root: root2, port });
    try {
      const c2 = await runBits(['cancel', id], { env: t.env });
      expect(c2.code, c2.stderr).toBe(0);
      expect(serverSessions(root2)).toHaveLength(0);
      expect((await jobOf(t.home, id)).state).toBe('cancelled');
    } finally {
      await s2.close();
    }
  });

  it('a job another process is running: refused (exit 2) unless --force, which stops it; the running process ends as cancelled (exit 11)', async () => {
    const t = fresh('cancel-running');
    // 2 MiB at 64 KiB/s: still running however slow the machine is; --force ends it.
    const big = path.join(tmp.dir, `big-${uniq()}.bin`);
    await makeRandomFile(big, 2 * 1024 * 1024);
    const run = slowUpload(t.env, t.url, '64K', big);
    const id = await waitProgress(run);

    // Two processes on one job: resume and cancel are refused with one line.
    const res = await runBits(['resume', id], { env: t.env });
    expect(res.code).toBe(2);
    expect(oneLine(res.stderr)).toHaveLength(1);
    expect(res.stderr).toMatch(new RegExp(`job ${id} is being transferred by pid ${run.child.pid}`));
    const c = await runBits(['cancel', id], { env: t.env });
    expect(c.code).toBe(2);
    expect(c.stderr).toMatch(/bits cancel --force/);
    const during = await jobOf(t.home, id);
    expect(during.running, `${JSON.stringify(during)} ${run.stderr}`).toBe(true);

    const f = await runBits(['cancel', '--force', id], { env: t.env, timeoutMs: 30_000 });
    expect(f.code, f.stderr).toBe(0);
    const r = await run.done;
    // One truth: the running process itself cancels (it was asked to) and says so.
    expect(r.code, r.stderr).toBe(11);
    expect(r.stderr.trimEnd().split('\n').at(-1)).toMatch(new RegExp(`^bits: job ${id} cancelled`));
    expect(r.stderr).not.toMatch(/continue with: bits resume/);
    expect(lastJson(r.stdout)).toMatchObject({ jobId: id, state: 'cancelled' });
    expect(f.stderr).toMatch(new RegExp(`job ${id} cancelled`));
    expect(serverSessions(path.join(root, t.folder))).toHaveLength(0);
    expect(await jobOf(t.home, id)).toMatchObject({ state: 'cancelled', running: false });
  });

  it('a download: the partial file is removed', async () => {
    const t = fresh('cancel-dl');
    fs.copyFileSync(src, path.join(root, t.folder, 'served.bin'));
    const out = path.join(tmp.dir, `dl-${uniq()}.bin`);
    const run = startBits(['download', '--json', '--limit-rate', '256K', '-o', out, `${server.url}/${t.folder}/served.bin`], {
      env: { ...t.env, BITS_CHECKPOINT_BYTES: '64K' },
      timeoutMs: 30_000,
    });
    const id = await waitProgress(run);
    await run.waitFor(/"bytesDone":[1-9]/, 'stdout', 20_000);
    run.child.kill('SIGKILL');
    await run.done;
    expect(fs.existsSync(out + '.bits-partial')).toBe(true);
    const c = await runBits(['cancel', id], { env: t.env });
    expect(c.code, c.stderr).toBe(0);
    expect(fs.existsSync(out + '.bits-partial')).toBe(false);
    expect(fs.existsSync(out)).toBe(false);
    expect((await jobOf(t.home, id)).state).toBe('cancelled');
  });
});

describe.concurrent('bits resume', () => {
  it('--all resumes every resumable job one after another; exit 0 when all complete', async () => {
    const a = fresh('all');
    const bUrl = `${server.url}/${a.folder}/g.bin`;
    const id1 = await killedUpload(a.env, a.url);
    const id2 = await killedUpload(a.env, bUrl);
    const { jobs } = await listJobs(a.home);
    expect(jobs.filter((j) => j.resumable).map((j) => j.id).sort()).toEqual([id1, id2].sort());

    const r = await runBits(['resume', '--all', '--json'], { env: a.env, timeoutMs: 60_000 });
    expect(r.code, r.stderr).toBe(0);
    const lines = jsonLines(r.stdout);
    expect(lines.at(-1)).toMatchObject({ type: 'summary', resumed: 2, complete: 2, exitCode: 0 });
    expect(lines.filter((o) => o.type === 'complete').map((o) => o.jobId).sort()).toEqual([id1, id2].sort());
    expect(await sha256File(a.dest)).toBe(srcSha);
    expect(await sha256File(path.join(root, a.folder, 'g.bin'))).toBe(srcSha);
    // Nothing left to do: still exit 0.
    const again = await runBits(['resume', '--all'], { env: a.env });
    expect(again.code, again.stderr).toBe(0);
    expect(again.stderr).toMatch(/no resumable jobs/);
  });

  it('a source changed since the upload began: exit 9, job in error and not resumable; cancel clears it', async () => {
    const t = fresh('changed');
    const mine = path.join(tmp.dir, `changing-${uniq()}.bin`);
    fs.copyFileSync(src, mine);
    const id = await killedUpload(t.env, t.url, mine);
    fs.appendFileSync(mine, 'more');
    const r = await runBits(['resume', '--json', id], { env: t.env });
    expect(r.code, r.stderr).toBe(9);
    expect(lastJson(r.stdout)).toMatchObject({ jobId: id, state: 'error', error: { code: 'SourceChangedError' } });
    expect(r.stderr).toMatch(new RegExp(`bits cancel ${id}`));
    expect(await jobOf(t.home, id)).toMatchObject({ state: 'error', resumable: false, lastError: { code: 'SourceChangedError' } });
    const again = await runBits(['resume', id], { env: t.env });
    expect(again.code).toBe(2);
    expect(again.stderr).toMatch(/cannot be resumed \(SourceChangedError/);
    const c = await runBits(['cancel', id], { env: t.env });
    expect(c.code, c.stderr).toBe(0);
    expect(serverSessions(path.join(root, t.folder))).toHaveLength(0);
  });

  it('a permanent server refusal ends in state error (exit 5) and stays resumable once the server is fixed', async () => {
    const t = fresh('refused');
    const r = await runBits(['upload', '--json', '--fragment-size', '64K', src, `${server.url}/small/f.bin`], { env: t.env });
    expect(r.code, r.stderr).toBe(5);
    const last = lastJson(r.stdout);
    expect(last).toMatchObject({ type: 'error', state: 'error', error: { code: 'ServerError', exitCode: 5 } });
    expect(oneLine(r.stderr).filter((l) => l.includes('error'))).toHaveLength(1);
    const job = await jobOf(t.home, last.jobId as string);
    expect(job).toMatchObject({ state: 'error', resumable: true, lastError: { code: 'ServerError' } });
  });

  it('credentials are never stored: resume asks again (BITS_PASSWORD), and without one it refuses (exit 2)', async () => {
    const authRoot = path.join(tmp.dir, 'root-auth');
    fs.mkdirSync(path.join(authRoot, 'up'), { recursive: true });
    const s3 = await startServer({ root: authRoot, port: 0, basicAuth: { user: 'alice', password: 'pw-s3cret-42' } });
    try {
      const t = fresh('auth');
      const run = startBits(['upload', '--json', '--limit-rate', '512K', '--fragment-size', '64K', '--user', 'alice:pw-s3cret-42', src, `${s3.url}/up/f.bin`], {
        env: { ...t.env, BITS_USER: undefined, BITS_PASSWORD: undefined },
        timeoutMs: 30_000,
      });
      const id = await waitProgress(run);
      run.child.kill('SIGKILL');
      await run.done;
      const store = fs.readFileSync(path.join(t.home, 'jobs.json'), 'utf8');
      expect(store).not.toContain('pw-s3cret-42');
      expect(JSON.parse(store).jobs[id].credentialSource).toEqual({ kind: 'flag', user: 'alice' });

      const no = await runBits(['resume', id], { env: { ...t.env, BITS_PASSWORD: undefined } });
      expect(no.code).toBe(2);
      expect(oneLine(no.stderr)).toHaveLength(1);
      expect(no.stderr).toMatch(/password/);

      const yes = await runBits(['resume', id], { env: { ...t.env, BITS_PASSWORD: 'pw-s3cret-42' }, timeoutMs: 30_000 });
      expect(yes.code, yes.stderr).toBe(0);
      expect(await sha256File(path.join(authRoot, 'up', 'f.bin'))).toBe(srcSha);
      expect(fs.readFileSync(path.join(t.home, 'jobs.json'), 'utf8')).not.toContain('pw-s3cret-42');
    } finally {
      await s3.close();
    }
  });
});

describe.concurrent('upload options: flags > bits config > defaults', () => {
  const small = () => {
    const f = path.join(tmp.dir, `small-${uniq()}.bin`);
    fs.writeFileSync(f, 'x'.repeat(10_000));
    return f;
  };
  const optionsOf = async (home: string) => {
    const { jobs } = await listJobs(home);
    return (jobs.at(-1) as unknown as { options: { fragmentSize: number; timeouts: Record<string, number> } }).options;
  };

  it('fragment-size and no-progress-timeout from bits config; flags win', async () => {
    const t = fresh('config');
    expect((await runBits(['config', 'set', 'fragment-size', '128K'], { env: t.env })).code).toBe(0);
    expect((await runBits(['config', 'set', 'no-progress-timeout', '42'], { env: t.env })).code).toBe(0);
    const a = await runBits(['upload', '-q', small(), t.url], { env: t.env });
    expect(a.code, a.stderr).toBe(0);
    expect(await optionsOf(t.home)).toMatchObject({ fragmentSize: 131072, timeouts: { noProgress: 42_000 } });
    const b = await runBits(['upload', '-q', '--fragment-size', '64K', '--no-progress-timeout', '7', small(), `${server.url}/${t.folder}/b.bin`], { env: t.env });
    expect(b.code, b.stderr).toBe(0);
    expect(await optionsOf(t.home)).toMatchObject({ fragmentSize: 65536, timeouts: { noProgress: 7_000 } });
  });

  it('defaults without config: 8M fragments, 300 s no-progress timeout; --no-progress-timeout=SECONDS form works', async () => {
    const t = fresh('defaults');
    const a = await runBits(['upload', '-q', small(), t.url], { env: t.env });
    expect(a.code, a.stderr).toBe(0);
    expect(await optionsOf(t.home)).toMatchObject({ fragmentSize: 8 * 1024 * 1024, timeouts: { noProgress: 300_000 } });
    const b = await runBits(['upload', '-q', '--no-progress-timeout=12.5', small(), t.url], { env: t.env });
    expect(b.code, b.stderr).toBe(0);
    expect(await optionsOf(t.home)).toMatchObject({ timeouts: { noProgress: 12_500 } });
  });

  it('bad values are one-line usage errors (exit 2) and create no job', async () => {
    const t = fresh('bad');
    for (const args of [['--no-progress-timeout', '0'], ['--no-progress-timeout', 'soon'], ['--fragment-size', '1K'], ['--fragment-size', 'big']]) {
      const r = await runBits(['upload', ...args, small(), t.url], { env: t.env });
      expect(r.code, `${args.join(' ')}: ${r.stderr}`).toBe(2);
      expect(oneLine(r.stderr), args.join(' ')).toHaveLength(1);
    }
    expect((await listJobs(t.home)).jobs).toHaveLength(0);
  });
});
