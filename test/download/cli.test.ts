/** `bits download` as users run it: the built binary, real server, exit codes. */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { startOddServer, type OddServer } from '../helpers/odd-servers.js';
import { makeFile, sha256, tempDir } from './helpers.js';
import { ensureBuilt, schemaProblem } from '../helpers/cli.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const BIN = path.join(ROOT, 'bin', 'bits');
const MiB = 1024 * 1024;
let dir: string;
let src: string;
let srcSha: string;
let server: OddServer;

function bits(args: string[], cwd = dir): Promise<{ code: number | null; stdout: Buffer; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BIN, ...args], { cwd, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, NO_COLOR: '1' } });
    const out: Buffer[] = [];
    let err = '';
    child.stdout.on('data', (d: Buffer) => out.push(d));
    child.stderr.on('data', (d) => (err += String(d)));
    child.once('error', reject);
    child.once('close', (code) => {
      const bad = schemaProblem(args, Buffer.concat(out).toString('utf8'));
      if (bad) reject(bad);
      else resolve({ code, stdout: Buffer.concat(out), stderr: err });
    });
  });
}

beforeAll(async () => {
  ensureBuilt();
  dir = await tempDir();
  src = await makeFile(path.join(dir, 'src.bin'), 3 * MiB + 5);
  srcSha = await sha256(src);
  server = await startOddServer({ file: src });
});
afterAll(async () => {
  await server?.close();
  await fsp.rm(dir, { recursive: true, force: true });
});

describe('bits download (CLI)', () => {
  it('downloads with segments and sha256; exit 0', async () => {
    const o = path.join(dir, 'a.bin');
    const r = await bits(['download', `${server.url}/x/a.bin`, '-o', o, '--segments', '2', '--sha256', srcSha, '--quiet']);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(await sha256(o)).toBe(srcSha);
  });

  it("range bodies go through bits' own HTTP/1.1 reader; a server that chunks its 206 answers is read through undici instead", async () => {
    const odd = await startOddServer({ file: src, chunkedRanges: true });
    try {
      const o = path.join(dir, 'chunked.bin');
      const r = await bits(['download', `${odd.url}/c.bin`, '-o', o, '--segments', '2', '--quiet']);
      expect(r.stderr).toBe('');
      expect(r.code).toBe(0);
      expect(await sha256(o)).toBe(srcSha);
      // The reader declined the first chunked answers (one per segment at most) and undici asked again.
      const ranges = odd.requests.filter((q) => q.method === 'GET' && q.range).map((q) => q.range!);
      const repeated = ranges.length - new Set(ranges).size;
      expect(repeated).toBeGreaterThanOrEqual(1);
      expect(repeated).toBeLessThanOrEqual(2);
    } finally {
      await odd.close();
    }
  });

  it('refuses to overwrite an existing output without --force: exit 3, file untouched', async () => {
    const o = path.join(dir, 'exists.bin');
    await fsp.writeFile(o, 'precious');
    const r = await bits(['download', `${server.url}/exists.bin`, '-o', o]);
    expect(r.code).toBe(3);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(/already exists.*--force/);
    expect(await fsp.readFile(o, 'utf8')).toBe('precious');
    const f = await bits(['download', `${server.url}/exists.bin`, '-o', o, '--force', '-q']);
    expect(f.code).toBe(0);
    expect(await sha256(o)).toBe(srcSha);
  });

  it('the default name comes from the URL, in the current folder', async () => {
    const cwd = await fsp.mkdtemp(path.join(dir, 'cwd-'));
    const r = await bits(['download', `${server.url}/dir/named%20file.bin`, '-q'], cwd);
    expect(r.code).toBe(0);
    expect(await sha256(path.join(cwd, 'named file.bin'))).toBe(srcSha);
  });

  it('-o - streams to stdout', async () => {
    const r = await bits(['download', `${server.url}/s.bin`, '-o', '-', '-q', '--range', '10-19,0-9']);
    expect(r.code).toBe(0);
    const bytes = await fsp.readFile(src);
    expect(r.stdout.equals(Buffer.concat([bytes.subarray(10, 20), bytes.subarray(0, 10)]))).toBe(true);
    const w = await bits(['download', `${server.url}/s.bin`, '-o', '-', '-q']);
    expect(createHash('sha256').update(w.stdout).digest('hex')).toBe(srcSha);
  });

  it('a sha256 mismatch fails (exit 9) and leaves no output', async () => {
    const o = path.join(dir, 'bad.bin');
    const r = await bits(['download', `${server.url}/bad.bin`, '-o', o, '--sha256', '0'.repeat(64)]);
    expect(r.code).toBe(9);
    expect(r.stderr).toMatch(/sha256 mismatch/);
    expect(existsSync(o)).toBe(false);
    expect(existsSync(o + '.bits-partial')).toBe(false);
  });

  it.each([
    [['--range', '5-2']],
    [['--range', 'abc']],
    [['--sha256', 'xyz']],
    [['--segments', '0']],
    [['--segments', '2', '-o', '-']],
    [['--fragment-size', 'lots']],
    [['--mirror', 'ftp://x/y']],
  ])('usage errors exit 2 with one line: %j', async (extra) => {
    const r = await bits(['download', `${server.url}/u.bin`, ...extra]);
    expect(r.code).toBe(2);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
  });

  it('--json ends with a complete object', async () => {
    const o = path.join(dir, 'j.bin');
    const r = await bits(['download', `${server.url}/j.bin`, '-o', o, '--json']);
    expect(r.code).toBe(0);
    const lines = r.stdout.toString('utf8').trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(lines.at(-1)).toMatchObject({ state: 'complete', bytes: 3 * MiB + 5 });
  });
});
