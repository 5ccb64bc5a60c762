/**
 * The ordering that makes kill -9 safe, observed on the wire: a TCP proxy in
 * front of `bits serve` reads the job store at the moment each request
 * arrives. The job must exist (transferring, claimed by the uploader's pid)
 * before CREATE-SESSION, and every FRAGMENT must start exactly at the offset
 * the store already holds as confirmed: the previous acknowledgement was
 * durably recorded before the next request went out.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fs from 'node:fs';
import path from 'node:path';
import { startServer, type RunningServer } from '../../src/server/index.js';
import { startFaultProxy, type FaultProxy } from '../helpers/fault-proxy.js';
import { startBits } from '../helpers/cli.js';
import { makeRandomFile, makeTempDir, sha256File } from '../helpers/files.js';
import { ensureFreshBuild } from './helpers.js';

let tmp: { dir: string; cleanup: () => Promise<void> };
let server: RunningServer;
let proxy: FaultProxy;
let home: string;

interface Seen {
  packetType: string;
  range?: string;
  job?: { state: string; runnerPid?: number; confirmed?: number; sessionId?: string };
}
const seen: Seen[] = [];

function readJob(): Seen['job'] {
  const file = path.join(home, 'jobs.json');
  if (!fs.existsSync(file)) return undefined;
  const data = JSON.parse(fs.readFileSync(file, 'utf8')) as { jobs: Record<string, { state: string; runner?: { pid: number }; upload?: { bytesTransferred?: number; bitsSessionId?: string | null } }> };
  const job = Object.values(data.jobs)[0];
  if (!job) return undefined;
  return { state: job.state, runnerPid: job.runner?.pid, confirmed: job.upload?.bytesTransferred, sessionId: job.upload?.bitsSessionId ?? undefined };
}

beforeAll(async () => {
  await ensureFreshBuild();
  tmp = await makeTempDir('bits-jobs-order-');
  home = path.join(tmp.dir, 'home');
  fs.mkdirSync(home);
  fs.mkdirSync(path.join(tmp.dir, 'root', 'up'), { recursive: true });
  server = await startServer({ root: path.join(tmp.dir, 'root'), port: 0 });
  proxy = await startFaultProxy({
    target: { host: '127.0.0.1', port: server.port },
    decide: (req) => {
      // Synchronous, while the request is in flight: what the store says right now.
      seen.push({ packetType: (req.packetType ?? req.method).toUpperCase(), range: req.headers['content-range'], job: readJob() });
      return undefined;
    },
  });
}, 180_000);

afterAll(async () => {
  await proxy?.close();
  await server?.close();
  await tmp?.cleanup();
});

describe('store writes precede the requests they protect', () => {
  it('job claimed before CREATE-SESSION; the session id is stored before the first FRAGMENT; the stored offset never runs ahead of the server', async () => {
    const src = path.join(tmp.dir, 'src.bin');
    const size = 10 * 64 * 1024 + 99;
    await makeRandomFile(src, size);
    const started = Date.now();
    const run = startBits(['upload', '--json', '--fragment-size', '64K', src, `http://127.0.0.1:${proxy.port}/up/f.bin`], { env: { BITS_HOME: home } });
    const r = await run.done;
    const elapsedMs = Date.now() - started;
    expect(r.code, r.stderr).toBe(0);
    expect(await sha256File(path.join(tmp.dir, 'root', 'up', 'f.bin'))).toBe(await sha256File(src));

    const create = seen.find((s) => s.packetType === 'CREATE-SESSION');
    expect(create?.job).toMatchObject({ state: 'transferring', runnerPid: run.child.pid });
    expect(create?.job?.sessionId).toBeUndefined();

    const fragments = seen.filter((s) => s.packetType === 'FRAGMENT');
    expect(fragments).toHaveLength(11);
    for (const f of fragments) {
      const start = Number(/^bytes (\d+)-/.exec(f.range ?? '')?.[1]);
      // A kill -9 now resumes this session, from an offset the server confirmed.
      expect(f.job?.sessionId, f.range).toMatch(/^\{[0-9A-F-]{36}\}$/i);
      expect(f.job?.confirmed, f.range).toBeLessThanOrEqual(start);
    }
    // The store is written about once a second, not per fragment (src/jobs/runner.ts UploadCheckpointWriter).
    const stored = new Set(fragments.map((f) => f.job?.confirmed));
    expect(stored.size, JSON.stringify([...stored])).toBeLessThanOrEqual(1 + Math.ceil(elapsedMs / 1000));
    const close = seen.find((s) => s.packetType === 'CLOSE-SESSION');
    expect(close?.job?.confirmed).toBe(size);
    expect(close?.job?.state).toBe('transferring');
  });
});
