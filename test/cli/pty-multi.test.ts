/**
 * Several files in one command on a terminal, for real against `bits serve`:
 * one bar for all files (`N/M`, the sum of their bytes, the current file's
 * name), never a bar per file; each file's last line scrolls above it.
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { ensureBuilt, ptyRunner, runBitsInPty } from '../helpers/cli.js';
import { startServe, type Served } from '../helpers/serve.js';
import { screenOf } from '../helpers/screen.js';

const SIZE = 1536 * 1024;
let root: string;
let work: string;
let serve: Served;
const files = ['one.bin', 'two.bin'].map((name) => ({ name, data: randomBytes(SIZE) }));
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

beforeAll(async () => {
  ensureBuilt();
  root = mkdtempSync(path.join(tmpdir(), 'bits-multi-root-'));
  work = mkdtempSync(path.join(tmpdir(), 'bits-multi-work-'));
  for (const f of files) writeFileSync(path.join(work, f.name), f.data);
  serve = await startServe(root);
});
afterAll(async () => {
  await serve?.stop();
  for (const d of [root, work]) if (d) rmSync(d, { recursive: true, force: true });
});

/** The combined bar: `2/2  ███░░  61%  1.8 MiB / 3.0 MiB  1.0 MiB/s  ETA 1s  two.bin`. */
const COMBINED = /^([12])\/2 +[█░]+ +(\d{1,3})% +([\d.]+) (B|KiB|MiB) \/ 3\.0 MiB .*\b(one|two)\.bin$/;

describe.skipIf(!ptyRunner())('several files on a terminal', () => {
  test('upload FILE… URL/ draws one combined bar, never one per file; the last lines of both files scroll above it', async () => {
    // The rate limit keeps each file on the screen for several redraws (8 per second).
    const r = await runBitsInPty(['upload', '--limit-rate', '2M', '--fragment-size', '256K', 'one.bin', 'two.bin', `${serve.url}up/`], { cwd: work });
    expect(r.code, r.output).toBe(0);
    for (const f of files) expect(sha(readFileSync(path.join(root, 'up', f.name)))).toBe(sha(f.data));

    // Every frame as the terminal showed it: cut the output at each redraw.
    const frames: string[][] = [];
    for (let at = r.output.indexOf('\u001b[1G'); at >= 0; at = r.output.indexOf('\u001b[1G', at + 1)) frames.push(screenOf(r.output.slice(0, at)));
    // A per-file bar starts with the kind (`upload  ███`): none may ever be drawn.
    for (const s of frames) expect(s.filter((l) => /^upload +[█░]/.test(l)), s.join('\n')).toEqual([]);
    const bars = frames.flatMap((s) => s.map((l) => COMBINED.exec(l)).filter((m): m is RegExpExecArray => m !== null));
    // The second file's bar carries the first file's bytes: past 1.5 MiB while two.bin moves, short of the end.
    const second = bars.find((m) => m[1] === '2' && m[5] === 'two' && Number(m[2]) > 50 && Number(m[2]) < 100);
    expect(second, `no mid-transfer frame of the second file; last screen:\n${screenOf(r.output).join('\n')}`).toBeDefined();
    expect(bars.some((m) => m[1] === '1' && m[5] === 'one' && Number(m[2]) < 50)).toBe(true);

    const end = screenOf(r.output).filter((l) => l.trim() !== '');
    const barRows = end.filter((l) => COMBINED.test(l));
    expect(barRows, end.join('\n')).toHaveLength(1);
    expect(barRows[0]).toMatch(/^2\/2 +█+ +100% +3\.0 MiB \/ 3\.0 MiB/);
    const bar = end.indexOf(barRows[0]!);
    const done = end.map((l, i) => (/^bits: uploaded 1\.5 MiB .*\/up\/(one|two)\.bin$/.test(l) ? i : -1)).filter((i) => i >= 0);
    expect(done).toHaveLength(2);
    for (const i of done) expect(i).toBeLessThan(bar);
    expect(end[end.length - 1]).toBe('bits: 2 of 2 transfers complete');
  });
});
