/**
 * The built `bits` against a web server of our own on 127.0.0.1:
 * - issue 11 (d): a body that stalls half-way. The no-progress deadline
 *   covers the body read, so `bits download --no-progress-timeout 8` ends
 *   within 30 s with exit 4 (suspended), and `bits resume`, the server now
 *   behaving, finishes from the partial file sha256-identical;
 * - issue 12.7: no ETag, no Last-Modified, the file edited in place between
 *   interrupt and resume: the resume notices, warns and starts from zero;
 * - issue 12.8: W/"x" before the interrupt and "x" after (Apache) is the
 *   same file: the resume continues where it was;
 * - issue 12.9: overlapping --range entries are asked once, delivered in order.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createHash, randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { downloadFile } from '../../src/client/download.js';
import type { SegmentProgress } from '../../src/client/events.js';
import { ensureBuilt, runBits } from '../helpers/cli.js';
import { sha256, startRangeServer, tempDir, type RangeServer, type RangeServerState } from './helpers.js';

const MiB = 1024 * 1024;
const LM = 'Wed, 01 Jan 2025 00:00:00 GMT';
let dir: string;
const servers: RangeServer[] = [];
const shaOf = (b: Buffer) => createHash('sha256').update(b).digest('hex');

beforeAll(async () => {
  ensureBuilt();
  dir = await tempDir('bits-dl-stall-');
});
afterAll(async () => {
  await Promise.all(servers.map((s) => s.close()));
  await fsp.rm(dir, { recursive: true, force: true });
});

async function serve(state: RangeServerState): Promise<RangeServer> {
  const s = await startRangeServer(state);
  servers.push(s);
  return s;
}

/** `bits download` that the stalling server suspends; returns the job id. */
async function suspended(s: RangeServer, out: string, env: Record<string, string>, timeout: string): Promise<string> {
  const t0 = Date.now();
  const r = await runBits(['download', '--json', '--no-progress-timeout', timeout, '-o', out, `${s.url}/f.bin`], { env, timeoutMs: 45_000 });
  const took = Date.now() - t0;
  expect(r.code, r.stderr).toBe(4);
  expect(took).toBeLessThan(30_000);
  expect(r.stderr).toMatch(/no progress/);
  const id = r.stdout
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as { jobId?: string })
    .find((l) => typeof l.jobId === 'string')?.jobId;
  expect(id).toBeDefined();
  // The bytes that arrived before the stall are held in the partial file.
  expect(fs.existsSync(out + '.bits-partial')).toBe(true);
  return id!;
}

/** The first byte the resume asked for. */
const resumedFrom = (range: string | undefined) => Number(/^bytes=(\d+)-/.exec(range ?? '')?.[1] ?? 0);

describe('bits download against a server of our own', () => {
  it('a body stalling half-way: --no-progress-timeout 8 ends it within 30 s, exit 4; bits resume completes sha256-identical', async () => {
    const s = await serve({ data: randomBytes(4 * MiB + 777), etag: '"stall-1"', lastModified: LM, stall: true });
    const env = { BITS_HOME: path.join(dir, 'home-stall') };
    const out = path.join(dir, 'stall.bin');
    const id = await suspended(s, out, env, '8');
    s.state.stall = false;
    const before = s.ranges.length;
    const res = await runBits(['resume', '--json', id], { env, timeoutMs: 30_000 });
    expect(res.code, res.stderr).toBe(0);
    expect(await sha256(out)).toBe(shaOf(s.state.data));
    const resumed = s.ranges.slice(before);
    expect(resumed).toHaveLength(1);
    expect(resumedFrom(resumed[0])).toBeGreaterThan(0);
    expect(fs.existsSync(out + '.bits-partial')).toBe(false);
  }, 90_000);

  it('issue 12.7: no validators and the file edited in place (same length): the resume warns and starts from zero', async () => {
    const s = await serve({ data: randomBytes(2 * MiB), stall: true });
    const env = { BITS_HOME: path.join(dir, 'home-noval') };
    const out = path.join(dir, 'noval.bin');
    const id = await suspended(s, out, env, '2');
    const edited = Buffer.from(s.state.data);
    edited.fill(0x41, 0, MiB);
    s.state.data = edited;
    s.state.stall = false;
    const res = await runBits(['resume', id], { env, timeoutMs: 30_000 });
    expect(res.code, res.stderr).toBe(0);
    expect(res.stderr).toMatch(/no ETag or Last-Modified.*starting again from zero/);
    expect(await sha256(out)).toBe(shaOf(edited));
  }, 60_000);

  it('issue 12.8: W/"x" before the interrupt and "x" after is the same file: resumed, not restarted', async () => {
    const s = await serve({ data: randomBytes(2 * MiB), etag: 'W/"x"', lastModified: LM, stall: true });
    const env = { BITS_HOME: path.join(dir, 'home-weak') };
    const out = path.join(dir, 'weak.bin');
    const id = await suspended(s, out, env, '2');
    s.state.etag = '"x"';
    s.state.stall = false;
    const before = s.ranges.length;
    const res = await runBits(['resume', id], { env, timeoutMs: 30_000 });
    expect(res.code, res.stderr).toBe(0);
    expect(res.stderr).not.toMatch(/changed/);
    expect(s.ranges.slice(before)).toHaveLength(1);
    expect(resumedFrom(s.ranges[before])).toBeGreaterThan(0);
    expect(await sha256(out)).toBe(shaOf(s.state.data));
  }, 60_000);

  it('issue 12.9: --range 0-99,-500,5000- asks each byte once and writes the ranges in the order asked', async () => {
    const s = await serve({ data: randomBytes(5119), etag: '"r"', stall: false });
    const out = path.join(dir, 'ranges.bin');
    const r = await runBits(['download', '--quiet', '--range', '0-99,-500,5000-', '-o', out, `${s.url}/f.bin`], { env: { BITS_HOME: path.join(dir, 'home-r') } });
    expect(r.code, r.stderr).toBe(0);
    expect(s.ranges).toEqual(['bytes=0-99,4619-5118']);
    const d = s.state.data;
    expect((await fsp.readFile(out)).equals(Buffer.concat([d.subarray(0, 100), d.subarray(4619), d.subarray(5000)]))).toBe(true);
  });

  it('--segments 4 over real connections: progress events carry each segment\'s durable bytes, ending complete', async () => {
    const s = await serve({ data: randomBytes(8 * MiB), etag: '"seg"', stall: false });
    const out = path.join(dir, 'segments.bin');
    const seen: SegmentProgress[][] = [];
    await downloadFile({
      url: `${s.url}/f.bin`,
      output: out,
      segments: 4,
      checkpointBytes: 256 * 1024,
      onEvent: (e) => {
        if (e.type === 'progress' && e.segments) seen.push(e.segments);
      },
    });
    expect(await sha256(out)).toBe(shaOf(s.state.data));
    expect(s.ranges).toHaveLength(4);
    expect(seen.length).toBeGreaterThan(0);
    expect(seen.every((segs) => segs.length === 4 && segs.every((x) => x.bytesDone <= x.totalBytes && x.source === `${s.url}/f.bin`))).toBe(true);
    // Durable progress only grows.
    for (let i = 1; i < seen.length; i++) for (let k = 0; k < 4; k++) expect(seen[i]![k]!.bytesDone).toBeGreaterThanOrEqual(seen[i - 1]![k]!.bytesDone);
    expect(seen.at(-1)!.every((x) => x.bytesDone === x.totalBytes)).toBe(true);
    expect(seen.at(-1)!.reduce((n, x) => n + x.totalBytes, 0)).toBe(8 * MiB);
  });
});
