/**
 * A power cut under `bits serve`, on the real path: the BUILT `bits upload` (rate-limited)
 * sends part of a file to the BUILT `bits serve`; both are SIGKILLed; the request file is
 * cut to what the session record says is durable (what a lost page cache leaves behind);
 * the server restarts on the same folder and port; `bits resume` finishes the job, and the
 * destination is sha256-identical. Once with group commit (the default), where the client
 * holds Acks beyond the durable length and must resync backwards, and once with
 * `--durability ack`, where nothing acknowledged may be lost.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { BIN, ROOT, childEnv, runBits, startBits } from '../helpers/cli.js';
import { ensureFreshBuild, jsonLines, listJobs, serverSessions } from '../jobs/helpers.js';
import { makeRandomFile, makeTempDir, sha256File } from '../helpers/files.js';

const SIZE = 4 * 1024 * 1024 + 333;
const FRAGMENT = 64 * 1024;

let tmp: { dir: string; cleanup: () => Promise<void> };
let src: string;
let srcSha: string;
const children = new Set<ChildProcess>();

beforeAll(async () => {
  await ensureFreshBuild();
  tmp = await makeTempDir('bits-power-cut-');
  src = path.join(tmp.dir, 'source.bin');
  await makeRandomFile(src, SIZE);
  srcSha = await sha256File(src);
}, 180_000);

afterAll(async () => {
  for (const c of children) await kill9(c);
  await tmp?.cleanup();
});

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function kill9(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const closed = new Promise<void>((r) => child.once('close', () => r()));
  child.kill('SIGKILL');
  await closed;
}

interface Serving {
  child: ChildProcess;
  url: string;
  port: number;
  log(): string;
}

/** The built `bits serve` as a child we can SIGKILL. */
async function serveChild(root: string, port: number, args: string[]): Promise<Serving> {
  const child = spawn(process.execPath, [BIN, 'serve', '--root', root, '--port', String(port), '--json', ...args], {
    cwd: ROOT,
    env: childEnv({ HTTP_PROXY: undefined, HTTPS_PROXY: undefined, http_proxy: undefined, https_proxy: undefined, NO_PROXY: undefined, no_proxy: undefined }),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.add(child);
  child.on('close', () => children.delete(child));
  let stdout = '';
  let stderr = '';
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  const url = await new Promise<string>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`bits serve did not start: ${stderr}`)), 15_000);
    child.stdout!.setEncoding('utf8').on('data', (d: string) => {
      stdout += d;
      const line = stdout.split('\n').find((l) => l.includes('"listening"'));
      if (line) {
        clearTimeout(t);
        resolve((JSON.parse(line) as { url: string }).url);
      }
    });
    child.on('close', () => {
      clearTimeout(t);
      reject(new Error(`bits serve exited: ${stderr}`));
    });
  });
  return { child, url, port: Number(new URL(url).port), log: () => stderr };
}

interface OnDisk {
  dir: string;
  size: number;
  durableLength: number | undefined;
}

/** The one session's request file size and recorded durable length, as the disk has them now. */
function onDisk(root: string): OnDisk | undefined {
  const [dir] = serverSessions(root);
  if (!dir) return undefined;
  try {
    const rec = JSON.parse(fs.readFileSync(path.join(dir, 'session.json'), 'utf8')) as { durableLength?: number };
    return { dir, size: fs.statSync(path.join(dir, 'requestfile.bin')).size, durableLength: rec.durableLength };
  } catch {
    return undefined; // the folder is being made
  }
}

/**
 * Uploads until `ready` says the server's state is worth cutting, SIGKILLs client and server,
 * cuts the request file to its recorded durable length (or leaves it, with none recorded),
 * restarts the server on the same folder and port, and resumes the job to the end.
 */
/** What the client's job store holds (the client checkpoints about once a second). */
function clientBytesDone(home: string): number {
  try {
    const data = JSON.parse(fs.readFileSync(path.join(home, 'jobs.json'), 'utf8')) as { jobs: Record<string, { bytesDone?: number }> };
    return Object.values(data.jobs)[0]?.bytesDone ?? 0;
  } catch {
    return 0;
  }
}

async function powerCut(label: string, serveArgs: string[], ready: (d: OnDisk, clientBytes: number) => boolean) {
  const root = path.join(tmp.dir, `root-${label}`);
  const home = path.join(tmp.dir, `home-${label}`);
  fs.mkdirSync(path.join(root, 'up'), { recursive: true });
  fs.mkdirSync(home);
  const env = { BITS_HOME: home };
  const first = await serveChild(root, 0, serveArgs);
  const run = startBits(['upload', '--json', '--limit-rate', '1M', '--fragment-size', String(FRAGMENT), src, `${first.url}/up/f.bin`], {
    env,
    timeoutMs: 60_000,
  });
  // Bounded: the whole upload takes ~4 s at this rate.
  let state: OnDisk | undefined;
  let clientBytes = 0;
  for (let i = 0; i < 500 && !(state && ready(state, clientBytes)); i++) {
    await sleep(20);
    state = onDisk(root);
    clientBytes = clientBytesDone(home);
  }
  expect(state && ready(state, clientBytes), `server state never ready: ${JSON.stringify(state)}, client ${clientBytes}`).toBe(true);
  // The server first: everything it acknowledged after its last group commit is in its page cache only.
  await kill9(first.child);
  await kill9(run.child);
  await run.done;
  const atKill = onDisk(root)!;
  // The power cut: the page cache is lost, so the file keeps only what was synced.
  if (atKill.durableLength !== undefined) fs.truncateSync(path.join(atKill.dir, 'requestfile.bin'), atKill.durableLength);
  const { jobs } = await listJobs(home);
  expect(jobs).toHaveLength(1);
  const job = jobs[0]!;

  const second = await serveChild(root, first.port, serveArgs);
  try {
    const res = await runBits(['resume', '--json', job.id], { env, timeoutMs: 60_000 });
    expect(res.code, res.stderr).toBe(0);
    expect(jsonLines(res.stdout).at(-1)).toMatchObject({ type: 'complete', jobId: job.id, bytes: SIZE });
    expect(await sha256File(path.join(root, 'up', 'f.bin'))).toBe(srcSha);
    expect(serverSessions(root)).toEqual([]);
    return { atKill, job, resumeOut: res.stdout, serverLog: second.log() };
  } finally {
    await kill9(second.child);
  }
}

describe('a power cut under bits serve', () => {
  it('group commit: the client resyncs back to the durable length and the file arrives identical', async () => {
    // A sync every 2 MiB and never by time: Acks run up to 2 MiB ahead of the record, longer
    // than the client's once-a-second checkpoint (1 MiB at this rate) lags behind them.
    const { atKill, job, resumeOut } = await powerCut('group', ['--sync-every', '2M', '--sync-interval', '3600'], (d, clientBytes) => {
      const durable = d.durableLength ?? 0;
      return durable > 0 && d.size - durable >= 3 * FRAGMENT && clientBytes > durable;
    });
    expect(atKill.durableLength).toBeGreaterThan(0);
    expect(atKill.durableLength! % (64 * 1024)).toBe(0);
    // The server had acknowledged bytes that the cut took away: the client knew of more than the disk kept.
    expect(atKill.size).toBeGreaterThan(atKill.durableLength!);
    expect(job.bytesDone).toBeGreaterThan(atKill.durableLength!);
    expect(job.bytesDone).toBeLessThan(SIZE);
    // …and it went back to the server's offset (§3.1.4.3), not on from its own.
    const resync = jsonLines(resumeOut).find((o) => o.type === 'resync');
    expect(resync, resumeOut).toMatchObject({ to: atKill.durableLength });
    expect(resync!.from as number).toBeGreaterThan(atKill.durableLength!);
  }, 90_000);

  it('--durability ack: the record names no durable length, and nothing acknowledged is lost', async () => {
    const { atKill, job } = await powerCut('ack', ['--durability', 'ack'], (d) => d.size >= 1024 * 1024);
    expect(atKill.durableLength).toBeUndefined();
    // Every Ack waited for its fdatasync: all the client counted is in the file.
    expect(atKill.size).toBeGreaterThanOrEqual(job.bytesDone);
  }, 90_000);
});
