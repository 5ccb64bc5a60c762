/**
 * `bits download --segments 4` for real, against a real `bits serve`: in a
 * pseudo-terminal the screen shows one bar per segment under the main bar,
 * during the transfer and at the end; with --json every progress line carries
 * the segment table.
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { ensureBuilt, ptyRunner, runBits, runBitsInPty } from '../helpers/cli.js';
import { startServe, type Served } from '../helpers/serve.js';
import { screenOf } from '../helpers/screen.js';

const SIZE = 12 * 1024 * 1024;
let root: string;
let work: string;
let serve: Served;
const data = randomBytes(SIZE);
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

beforeAll(async () => {
  ensureBuilt();
  root = mkdtempSync(path.join(tmpdir(), 'bits-seg-root-'));
  work = mkdtempSync(path.join(tmpdir(), 'bits-seg-work-'));
  writeFileSync(path.join(root, 'big.bin'), data);
  serve = await startServe(root);
});
afterAll(async () => {
  await serve?.stop();
  for (const d of [root, work]) if (d) rmSync(d, { recursive: true, force: true });
});

const SEGMENT_ROW = /^ {2}#(\d+) +█*░* +\d{1,3}% +[\d.]+ (B|KiB|MiB) \/ 3\.0 MiB$/;

describe.skipIf(!ptyRunner())('segments on a terminal', () => {
  test('one bar per segment on the screen while it downloads and at the end', async () => {
    // The rate limit keeps it on the screen for a few redraws (8 per second).
    const r = await runBitsInPty(['download', `${serve.url}big.bin`, '-o', 'tty.bin', '--segments', '4', '--limit-rate', '6M'], { cwd: work });
    expect(r.code, r.output).toBe(0);
    expect(sha(readFileSync(path.join(work, 'tty.bin')))).toBe(sha(data));

    // Every frame as the terminal showed it: cut the output where the bars redraw (cursor up).
    const frames: string[][] = [];
    for (let at = r.output.indexOf('\u001b[', 0); at >= 0; at = r.output.indexOf('\u001b[4A', at + 1)) frames.push(screenOf(r.output.slice(0, at)));
    const rowsOf = (screen: string[]) => screen.map((l) => SEGMENT_ROW.exec(l)?.[1]).filter((x): x is string => x !== undefined);
    const mid = frames.find((s) => {
      const main = s.find((l) => l.startsWith('download '));
      return main !== undefined && !/ 100% /.test(main) && rowsOf(s).length === 4;
    });
    expect(mid, `no frame mid-download with 4 segment bars; last screen:\n${screenOf(r.output).join('\n')}`).toBeDefined();
    expect(rowsOf(mid!)).toEqual(['1', '2', '3', '4']);

    const end = screenOf(r.output);
    const main = end.findIndex((l) => /^download +█+ 100% +12\.0 MiB \/ 12\.0 MiB/.test(l));
    expect(main, end.join('\n')).toBeGreaterThanOrEqual(0);
    expect(end.slice(main + 1, main + 5).map((l) => SEGMENT_ROW.exec(l)?.[1])).toEqual(['1', '2', '3', '4']);
    for (const l of end.slice(main + 1, main + 5)) expect(l).toMatch(/100% +3\.0 MiB \/ 3\.0 MiB$/);
    expect(end.some((l) => /^bits: downloaded 12\.0 MiB/.test(l))).toBe(true);
  });
});

test('--json progress lines carry the segment table', async () => {
  const r = await runBits(['download', `${serve.url}big.bin`, '-o', 'json.bin', '--segments', '4', '--limit-rate', '12M', '--json'], { cwd: work });
  expect(r.code, r.stderr).toBe(0);
  const progress = r.stdout
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as { type: string; bytesDone: number; totalBytes: number; segments?: Array<{ index: number; bytesDone: number; totalBytes: number }> })
    .filter((o) => o.type === 'progress');
  expect(progress.length).toBeGreaterThanOrEqual(2);
  for (const p of progress) {
    expect(p.segments?.map((g) => g.index)).toEqual([0, 1, 2, 3]);
    expect(p.segments!.reduce((a, g) => a + g.totalBytes, 0)).toBe(SIZE);
    for (const g of p.segments!) expect(g.bytesDone).toBeLessThanOrEqual(g.totalBytes);
  }
  const last = progress[progress.length - 1]!;
  expect(last.bytesDone).toBe(SIZE);
  for (const g of last.segments!) expect(g.bytesDone).toBe(g.totalBytes);
});
