/** `bits list`, `bits status`, `bits clean` as users run them: the built CLI on a store in a temp BITS_HOME. */
import { afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawn, spawnSync } from 'node:child_process';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { ensureBuilt, BIN } from './build-dist.js';
import { schemaProblem } from '../helpers/cli.js';

let home: string;

beforeAll(async () => {
  await ensureBuilt();
});
beforeEach(() => {
  home = fs.mkdtempSync(path.join(os.tmpdir(), 'bits-cli-'));
});
afterEach(() => {
  fs.rmSync(home, { recursive: true, force: true });
});

interface Result {
  code: number | null;
  stdout: string;
  stderr: string;
}

function bits(...args: string[]): Promise<Result> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BIN, ...args], {
      env: { ...process.env, BITS_HOME: home, NO_COLOR: '1', FORCE_COLOR: '0' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d));
    child.stderr.on('data', (d: Buffer) => (stderr += d));
    child.on('close', (code) => {
      const bad = schemaProblem(args, stdout);
      if (bad) reject(bad);
      else resolve({ code, stdout, stderr });
    });
  });
}

const jsonLines = (s: string) => s.trim().split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>);

const iso = (agoMs: number) => new Date(Date.now() - agoMs).toISOString();
const DAY = 24 * 3600_000;

function deadPid(): number {
  return Number(spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'], { encoding: 'utf8' }).stdout);
}

/** A store with one job in each interesting situation, written as a file (as an older bits run would have left it). */
function prepare(): void {
  const base = (id: string, over: Record<string, unknown>) => ({
    id,
    kind: 'upload',
    source: `/data/${id}.bin`,
    destination: `https://127.0.0.1:8443/upload/${id}.bin`,
    state: 'queued',
    bytesDone: 0,
    totalBytes: 4096,
    createdAt: iso(3 * DAY),
    updatedAt: iso(60_000),
    ...over,
  });
  const jobs = [
    base('aaa111', { state: 'complete', bytesDone: 4096 }),
    base('bbb222', { state: 'cancelled', updatedAt: iso(2 * DAY) }), // finished long ago: hidden by default
    base('ccc333', {
      state: 'error',
      bytesDone: 1024,
      lastError: {
        code: 'ServerError', exitCode: 5, resumable: true, httpStatus: 413,
        message: 'server refused FRAGMENT: HTTP 413 Payload Too Large (0x8019019D), BITS-Error 0x80200020 BG_E_TOO_LARGE [server]: the file is larger than the server accepts',
        hresult: '0x80200020', hresultName: 'BG_E_TOO_LARGE', context: 'server', at: iso(60_000),
      },
      upload: { sessionId: '{F1E2D3C4-0000-4000-8000-000000000001}', confirmedOffset: 1024, sourceSize: 4096, sourceMtimeMs: 1700000000000 },
      options: { fragmentSize: 1048576, headers: { 'X-Trace': '1' } },
      credentialSource: { kind: 'env', user: 'alice' },
    }),
    // Marked transferring, and its process (this test runner) is alive: running.
    base('ddd444', { state: 'transferring', bytesDone: 2048, runner: { pid: process.pid, host: os.hostname(), since: iso(1000) } }),
    // Marked transferring, but its process was killed: really suspended.
    base('eee555', { state: 'transferring', bytesDone: 512, runner: { pid: deadPid(), host: os.hostname(), since: iso(5000) } }),
    // A failed job that a live process is resuming right now: clean --all must keep it.
    base('fff666', { kind: 'download', source: 'https://127.0.0.1/f', destination: '/tmp/f', state: 'error', runner: { pid: process.pid, host: os.hostname(), since: iso(1000) }, download: { partialPath: '/tmp/f.bits-partial', validators: { etag: '"abc"' } } }),
  ];
  fs.writeFileSync(path.join(home, 'jobs.json'), JSON.stringify({ schemaVersion: 1, jobs: Object.fromEntries(jobs.map((j) => [j.id, j])) }, null, '\t'));
}

describe('bits list', () => {
  it('--json: one object per job, effective states, finished-long-ago hidden, then a summary; --all shows everything', async () => {
    prepare();
    const r = await bits('list', '--json');
    expect(r.code, r.stderr).toBe(0);
    const lines = jsonLines(r.stdout);
    const jobs = lines.filter((l) => l.type === 'job');
    expect(jobs.map((j) => j.id)).toEqual(['aaa111', 'ccc333', 'ddd444', 'eee555', 'fff666']);
    expect(lines.at(-1)).toEqual({ type: 'summary', count: 5, hidden: 1 });
    const byId = Object.fromEntries(jobs.map((j) => [j.id as string, j]));
    expect(byId.ddd444).toMatchObject({ state: 'transferring', running: true, resumable: false, percent: 50 });
    expect(byId.eee555).toMatchObject({ state: 'suspended', storedState: 'transferring', running: false, resumable: true });
    expect(byId.ccc333).toMatchObject({ state: 'error', resumable: true, lastError: { httpStatus: 413, hresult: '0x80200020' } });
    expect(byId.fff666).toMatchObject({ state: 'transferring', storedState: 'error', running: true });
    const all = jsonLines((await bits('list', '--json', '--all')).stdout);
    expect(all.filter((l) => l.type === 'job')).toHaveLength(6);
    expect(all.at(-1)).toEqual({ type: 'summary', count: 6, hidden: 0 });
  });

  it('a table for people', async () => {
    prepare();
    const r = await bits('list');
    expect(r.code, r.stderr).toBe(0);
    const lines = r.stdout.trimEnd().split('\n');
    expect(lines[0]).toMatch(/^ID\s+KIND\s+STATE\s+PROGRESS\s+SIZE\s+UPDATED\s+SOURCE → DESTINATION$/);
    expect(lines.find((l) => l.startsWith('ccc333'))).toMatch(/^ccc333\s+upload\s+error\s+25\.0%\s+4\.0 KiB\s+1m ago\s+\/data\/ccc333\.bin → https:\/\/127\.0\.0\.1:8443\/upload\/ccc333\.bin$/);
    expect(lines.find((l) => l.startsWith('eee555'))).toMatch(/suspended/);
    expect(r.stdout).not.toContain('bbb222');
    expect(lines.at(-1)).toBe('1 job finished more than a day ago not shown (bits list --all)');
  });

  it('an empty store', async () => {
    const r = await bits('list');
    expect(r.code).toBe(0);
    expect(r.stdout).toBe(`no jobs in ${path.join(home, 'jobs.json')}\n`);
    expect(jsonLines((await bits('list', '--json')).stdout)).toEqual([{ type: 'summary', count: 0, hidden: 0 }]);
  });
});

describe('bits status', () => {
  it('shows everything about a job by unique prefix, with the last error on one line (HTTP status, HRESULT)', async () => {
    prepare();
    const r = await bits('status', 'ccc');
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^job\s+ccc333 \(upload\)$/m);
    expect(r.stdout).toMatch(/^state\s+error; continue with: bits resume ccc333$/m);
    expect(r.stdout).toMatch(/^progress\s+25\.0%, 1\.0 KiB of 4\.0 KiB \(4096 bytes\)$/m);
    expect(r.stdout).toMatch(/^last error\s+ServerError: server refused FRAGMENT: HTTP 413 .*BG_E_TOO_LARGE.* \(\d{4}-.*\)$/m);
    expect(r.stdout).toMatch(/^session\s+\{F1E2D3C4-0000-4000-8000-000000000001\}$/m);
    expect(r.stdout).toMatch(/^credentials\s+from the environment \(user alice\)/m);
  });

  it('--json prints the job object', async () => {
    prepare();
    const r = await bits('status', 'eee555', '--json');
    expect(r.code, r.stderr).toBe(0);
    const [job, ...rest] = jsonLines(r.stdout);
    expect(rest).toEqual([]);
    expect(job).toMatchObject({ type: 'job', id: 'eee555', kind: 'upload', state: 'suspended', storedState: 'transferring', bytesDone: 512, totalBytes: 4096 });
  });

  it('unknown or ambiguous job id: exit 2 with one line', async () => {
    prepare();
    const r = await bits('status', 'zzz999');
    expect(r.code).toBe(2);
    expect(r.stdout).toBe('');
    expect(r.stderr.trimEnd().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(/no job "zzz999"/);
    fs.writeFileSync(path.join(home, 'jobs.json'), fs.readFileSync(path.join(home, 'jobs.json'), 'utf8').replace(/bbb222/g, 'aaa222'));
    const amb = await bits('status', 'aaa');
    expect(amb.code).toBe(2);
    expect(amb.stderr).toMatch(/ambiguous: it matches aaa111, aaa222/);
  });
});

describe('bits clean', () => {
  it('removes finished jobs; --all also failed ones; never a running one', async () => {
    prepare();
    const r = await bits('clean');
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toBe('removed 2 jobs: aaa111, bbb222; 1 failed job kept (bits clean --all removes them)\n');
    const r2 = await bits('clean', '--all', '--json');
    expect(r2.code, r2.stderr).toBe(0);
    expect(jsonLines(r2.stdout)).toEqual([
      { type: 'removed', id: 'ccc333', kind: 'upload', state: 'error' },
      { type: 'summary', count: 1 },
    ]);
    const left = jsonLines((await bits('list', '--all', '--json')).stdout).filter((l) => l.type === 'job').map((l) => l.id);
    expect(left).toEqual(['ddd444', 'eee555', 'fff666']);
    expect((await bits('clean')).stdout).toBe('nothing to clean\n');
  });
});

describe('finished jobs kept', () => {
  it('a new job forgets the finished jobs beyond the newest 100, the oldest first; failed and active ones stay', async () => {
    // Every transfer rewrites the whole store: a history that only grew made each one slower.
    const ALPHA = '0123456789abcdefghjkmnpqrstvwxyz';
    const idOf = (i: number) => 'k' + [0, 1, 2, 3, 4].map((k) => ALPHA[Math.floor(i / 32 ** (4 - k)) % 32]).join('');
    const job = (id: string, state: string, agoMin: number) => ({
      id, kind: 'upload', source: `/data/${id}.bin`, destination: `https://127.0.0.1:8443/upload/${id}.bin`,
      state, bytesDone: 0, totalBytes: 4096, createdAt: iso(agoMin * 60_000 + 1000), updatedAt: iso(agoMin * 60_000),
    });
    // 130 finished (complete and cancelled) a minute apart, idOf(0) the oldest; a failed and a suspended job older than all.
    const seeded = Array.from({ length: 130 }, (_, i) => job(idOf(i), i % 10 === 3 ? 'cancelled' : 'complete', 200 - i));
    const jobs = [...seeded, job('eee111', 'error', 500), job('sss111', 'suspended', 600)];
    fs.writeFileSync(path.join(home, 'jobs.json'), JSON.stringify({ schemaVersion: 1, jobs: Object.fromEntries(jobs.map((j) => [j.id, j])) }, null, '\t'));
    const body = Buffer.from('eleven bytes');
    const server = http.createServer((req, res) => {
      res.writeHead(200, { 'content-length': body.length });
      res.end(req.method === 'HEAD' ? undefined : body);
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    try {
      const out = path.join(home, 'out.bin');
      const r = await bits('download', '--quiet', `http://127.0.0.1:${(server.address() as AddressInfo).port}/f`, '-o', out);
      expect(r.code, r.stderr).toBe(0);
      expect(fs.readFileSync(out)).toEqual(body);
    } finally {
      server.close();
    }
    const listed = jsonLines((await bits('list', '--all', '--json')).stdout).filter((l) => l.type === 'job');
    const ids = new Set(listed.map((l) => l.id as string));
    expect(listed.filter((l) => l.state === 'complete' || l.state === 'cancelled')).toHaveLength(100);
    // The new download (finished last) and the newest 99 seeded ones; the 31 that finished first are gone.
    expect(listed.some((l) => l.kind === 'download' && l.state === 'complete')).toBe(true);
    expect(seeded.filter((j) => ids.has(j.id)).map((j) => j.id)).toEqual(seeded.slice(31).map((j) => j.id));
    expect(ids.has('eee111') && ids.has('sss111')).toBe(true);
  });
});

describe('a damaged store', () => {
  it('exit 8 with one line naming the file and the fix, for every command; the file is kept', async () => {
    const file = path.join(home, 'jobs.json');
    fs.writeFileSync(file, '{"schemaVersion":1,"jobs":{"aaa111":{"id":');
    for (const args of [['list'], ['status', 'aaa111'], ['clean', '--all']]) {
      const r = await bits(...args);
      expect(r.code, args.join(' ')).toBe(8);
      const lines = r.stderr.trimEnd().split('\n');
      expect(lines).toHaveLength(1);
      expect(lines[0]).toMatch(new RegExp(`^bits: error: job store ${file.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')} is corrupt \\(.*\\); move it aside to start afresh: mv `));
      expect(r.stderr).not.toMatch(/\n\s+at /);
    }
    expect(fs.readFileSync(file, 'utf8')).toBe('{"schemaVersion":1,"jobs":{"aaa111":{"id":');
    const j = await bits('list', '--json');
    expect(j.code).toBe(8);
    const last = jsonLines(j.stdout).at(-1)!;
    expect(last).toMatchObject({ error: { code: 'StoreError', exitCode: 8 } });
  });
});
