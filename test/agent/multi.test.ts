/**
 * Several files in one command, with the BUILT bits against the server on
 * loopback: `download URL… -d DIR`, `-i LIST` (names, comments, blank lines),
 * the same list with --background, and `upload FILE… URL/`; one job per file,
 * the exit code the worst of them.
 */
import { describe, expect, it } from 'vitest';
import fs from 'node:fs';
import path from 'node:path';
import { makeRandomFile, sha256File } from '../helpers/files.js';
import { agentFixture, bits, jsonLines } from './helpers.js';

const fx = agentFixture('bits-agent-multi-');

async function served(name: string, size: number): Promise<string> {
  const file = path.join(fx.root, 'files', name);
  fs.mkdirSync(path.dirname(file), { recursive: true });
  await makeRandomFile(file, size, size);
  return sha256File(file);
}

describe('several files in one command', () => {
  it('download URL… -d DIR and -i LIST (foreground and --background) arrive identical; a missing URL makes the exit code 5', async () => {
    const home = fx.home('home-multi');
    const sha = { a: await served('a.bin', 300_000), b: await served('b.bin', 123_457), c: await served('c.bin', 1) };
    const u = (n: string) => `${fx.server.url}/files/${n}`;
    const d1 = path.join(fx.dir, 'd1');
    const r1 = await bits(home, ['download', u('a.bin'), u('b.bin'), u('c.bin'), '-d', d1]);
    expect(r1.code, r1.stderr).toBe(0);
    for (const n of ['a', 'b', 'c'] as const) expect(await sha256File(path.join(d1, `${n}.bin`))).toBe(sha[n]);

    const list = path.join(fx.dir, 'list.txt');
    fs.writeFileSync(list, `# mirrors of the nightly build\n${u('a.bin')}  renamed-a.bin\n\n   ${u('b.bin')}\n# ${u('c.bin')} skipped\n`);
    const d2 = path.join(fx.dir, 'd2');
    const r2 = await bits(home, ['download', '-i', list, '-d', d2]);
    expect(r2.code, r2.stderr).toBe(0);
    expect(fs.readdirSync(d2).sort()).toEqual(['b.bin', 'renamed-a.bin']);
    expect(await sha256File(path.join(d2, 'renamed-a.bin'))).toBe(sha.a);
    expect(await sha256File(path.join(d2, 'b.bin'))).toBe(sha.b);

    const d3 = path.join(fx.dir, 'd3');
    const r3 = await bits(home, ['download', '--background', '--json', '-i', list, u('c.bin'), '-d', d3]);
    expect(r3.code, r3.stderr).toBe(0);
    const ids = jsonLines(r3.stdout).filter((o) => o.type === 'queued').map((o) => o.jobId as string);
    expect(ids).toHaveLength(3);
    const w = await bits(home, ['wait', ...ids], { timeoutMs: 30_000 });
    expect(w.code, w.stderr).toBe(0);
    expect(await sha256File(path.join(d3, 'renamed-a.bin'))).toBe(sha.a);
    expect(await sha256File(path.join(d3, 'b.bin'))).toBe(sha.b);
    expect(await sha256File(path.join(d3, 'c.bin'))).toBe(sha.c);

    const d5 = path.join(fx.dir, 'd5');
    const r5 = await bits(home, ['download', '-i', '-', '-d', d5], { input: `${u('c.bin')} from-stdin.bin\n` });
    expect(r5.code, r5.stderr).toBe(0);
    expect(await sha256File(path.join(d5, 'from-stdin.bin'))).toBe(sha.c);

    const r4 = await bits(home, ['download', u('nope.bin'), u('a.bin'), '-d', path.join(fx.dir, 'd4')]);
    expect(r4.code).toBe(5);
    expect(await sha256File(path.join(fx.dir, 'd4', 'a.bin'))).toBe(sha.a);
  }, 60_000);

  it('in a CI log, the status lines are one combined line for all files (N/M files, the sum of bytes, the current file); each file keeps its own start and last line', async () => {
    const home = fx.home('home-multi-log');
    const size = 600_000;
    const sha = { p: await served('p.bin', size), q: await served('q.bin', size), r: await served('r.bin', size) };
    const d = path.join(fx.dir, 'dlog');
    const urls = ['p', 'q', 'r'].map((n) => `${fx.server.url}/files/${n}.bin`);
    // 600 kB at 1 MB/s is 0.6 s a file: several status lines (every 100 ms) per file.
    const r = await bits(home, ['download', ...urls, '-d', d, '--limit-rate', '1M'], { env: { BITS_STATUS_INTERVAL_MS: '100' } });
    expect(r.code, r.stderr).toBe(0);
    for (const n of ['p', 'q', 'r'] as const) expect(await sha256File(path.join(d, `${n}.bin`))).toBe(sha[n]);
    const lines = r.stderr.trimEnd().split('\n');
    // No per-file status line (`bits: download 300 KiB …`): every one is the combined line.
    expect(lines.filter((l) => /^bits: download [\d.]+ (B|KiB|MiB)/.test(l)), r.stderr).toEqual([]);
    const status = lines.map((l) => /^bits: ([123])\/3 files ([\d.]+) (B|KiB|MiB)\b.*, ([pqr])\.bin/.exec(l)).filter((m): m is RegExpExecArray => m !== null);
    expect(status.length, r.stderr).toBeGreaterThanOrEqual(3);
    // The file number and the name agree, and the bytes are the sum: past one file's size while the third runs.
    for (const m of status) expect('pqr'[Number(m[1]) - 1]).toBe(m[4]);
    const unit = { B: 1, KiB: 1024, MiB: 1024 * 1024 } as const;
    const third = status.filter((m) => m[1] === '3').map((m) => Number(m[2]) * unit[m[3] as keyof typeof unit]);
    expect(third.length, r.stderr).toBeGreaterThan(0);
    expect(Math.max(...third)).toBeGreaterThan(2 * size * 0.99);
    // Once every size is known, the combined line has the total of all three.
    expect(r.stderr).toMatch(/^bits: 3\/3 files [\d.]+ (KiB|MiB) \/ 1\.7 MiB \(\d+%\)/m);
    expect(lines.filter((l) => /^bits: download http/.test(l))).toHaveLength(3);
    expect(lines.filter((l) => /^bits: downloaded /.test(l))).toHaveLength(3);
    expect(lines[lines.length - 1]).toBe('bits: 3 of 3 transfers complete');
  }, 60_000);

  it('upload FILE… URL/ sends each file under its own name', async () => {
    const home = fx.home('home-multi-up');
    const f1 = path.join(fx.dir, 'one.bin');
    const f2 = path.join(fx.dir, 'two words.bin');
    await makeRandomFile(f1, 200_000, 1);
    await makeRandomFile(f2, 70_001, 2);
    const r = await bits(home, ['upload', '--json', f1, f2, `${fx.server.url}/up/`]);
    expect(r.code, r.stderr).toBe(0);
    expect(jsonLines(r.stdout).filter((o) => o.type === 'complete')).toHaveLength(2);
    expect(await sha256File(path.join(fx.root, 'up', 'one.bin'))).toBe(await sha256File(f1));
    expect(await sha256File(path.join(fx.root, 'up', 'two words.bin'))).toBe(await sha256File(f2));
    const bad = await bits(home, ['upload', f1, f2, `${fx.server.url}/up/x.bin`]);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/ending in \//);
  }, 60_000);
});
