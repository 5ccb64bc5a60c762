/**
 * The download driver exchange by exchange, with test/helpers/scripted-transport.ts
 * as its HTTP stack (option `httpTransport`): what it sends after each answer.
 * Real files on disk; the "server" is a script over real bytes.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createHash, randomBytes } from 'node:crypto';
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { downloadFile, parseDownloadCheckpoint, type DownloadCheckpoint, type DownloadRunOptions } from '../../src/client/download.js';
import type { TransferEvent } from '../../src/client/events.js';
import { InterruptedError } from '../../src/errors.js';
import { ScriptedTransport, type RecordedRequest, type ScriptedAnswer } from '../helpers/scripted-transport.js';
import { tempDir } from './helpers.js';

const LM = 'Wed, 01 Jan 2025 00:00:00 GMT';
const KiB = 1024;
let dir: string;
let n = 0;
const out = () => path.join(dir, `out-${++n}.bin`);
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const fast = { retryBaseMs: 20, noProgressTimeoutMs: 10_000 };

beforeAll(async () => {
  dir = await tempDir('bits-dl-scripted-');
});
afterAll(async () => {
  await fsp.rm(dir, { recursive: true, force: true });
});

interface Version {
  data: Buffer;
  etag?: string;
  lastModified?: string;
}

interface SiteOptions {
  ignoreRanges?: boolean;
  /** Answer a multi-range request with its first range only (single part). */
  firstPartOnly?: boolean;
  /** The first GET sends this many bytes, then stalls. */
  stallFirstGetAfter?: number;
  /** Answers given before any other, in order (503s, resets). */
  before?: ScriptedAnswer[];
}

function parseRange(h: string | undefined, size: number): { first: number; last: number }[] | undefined {
  if (!h) return undefined;
  return h
    .replace(/^bytes=/, '')
    .split(',')
    .map((p) => {
      const [a, b] = p.split('-');
      if (a === '') return { first: size - Number(b), last: size - 1 };
      return { first: Number(a), last: b === '' ? size - 1 : Math.min(size - 1, Number(b)) };
    });
}

/** A web server as a script: HEAD, GET with Range/If-Range, multipart/byteranges, over the current version. */
function site(version: () => Version, o: SiteOptions = {}) {
  let gets = 0;
  const before = [...(o.before ?? [])];
  return (req: RecordedRequest): ScriptedAnswer => {
    const v = version();
    const size = v.data.length;
    const vh: Record<string, string> = {};
    if (v.etag) vh['etag'] = v.etag;
    if (v.lastModified) vh['last-modified'] = v.lastModified;
    if (req.method === 'HEAD') return { status: 200, headers: { ...vh, 'content-length': String(size) } };
    const first = before.shift();
    if (first) return first;
    const stall = gets++ === 0 ? o.stallFirstGetAfter : undefined;
    const full = (): ScriptedAnswer => ({ status: 200, headers: { ...vh, 'content-length': String(size) }, body: v.data, ...(stall !== undefined ? { stallAfter: stall } : {}) });
    let ranges = o.ignoreRanges ? undefined : parseRange(req.headers['range'], size);
    const ifRange = req.headers['if-range'];
    if (ranges && ifRange !== undefined && ifRange !== v.etag && ifRange !== v.lastModified) ranges = undefined;
    if (!ranges) return full();
    if (o.firstPartOnly) ranges = ranges.slice(0, 1);
    if (ranges.length === 1) {
      const r = ranges[0]!;
      const body = v.data.subarray(r.first, r.last + 1);
      return {
        status: 206,
        headers: { ...vh, 'content-range': `bytes ${r.first}-${r.last}/${size}`, 'content-length': String(body.length) },
        body,
        ...(stall !== undefined ? { stallAfter: stall } : {}),
      };
    }
    const parts: Buffer[] = [];
    for (const r of ranges) {
      parts.push(Buffer.from(`\r\n--B0UND\r\ncontent-type: application/octet-stream\r\ncontent-range: bytes ${r.first}-${r.last}/${size}\r\n\r\n`));
      parts.push(v.data.subarray(r.first, r.last + 1));
    }
    parts.push(Buffer.from('\r\n--B0UND--\r\n'));
    const body = Buffer.concat(parts);
    return { status: 206, headers: { ...vh, 'content-type': 'multipart/byteranges; boundary=B0UND', 'content-length': String(body.length) }, body };
  };
}

async function run(
  t: ScriptedTransport,
  opts: Partial<DownloadRunOptions> & { output: string },
): Promise<{ events: TransferEvent[]; cp: DownloadCheckpoint; progressAt: number[] }> {
  const events: TransferEvent[] = [];
  const progressAt: number[] = [];
  const r = await downloadFile({
    url: 'http://127.0.0.1:9/f.bin',
    ...fast,
    ...opts,
    httpTransport: t,
    onEvent: (e) => {
      events.push(e);
      if (e.type === 'progress') progressAt.push(performance.now());
    },
  });
  return { events, cp: r.checkpoint, progressAt };
}

/** A download stopped (like Ctrl-C) once a checkpoint holds bytes; returns that checkpoint. */
async function interrupted(version: () => Version, output: string): Promise<DownloadCheckpoint> {
  const ac = new AbortController();
  let last: DownloadCheckpoint | undefined;
  const t = new ScriptedTransport(site(version, { stallFirstGetAfter: 300 * KiB }));
  const err = await downloadFile({
    url: 'http://127.0.0.1:9/f.bin',
    output,
    ...fast,
    checkpointBytes: 64 * KiB,
    httpTransport: t,
    signal: ac.signal,
    onCheckpoint: (cp) => {
      last = cp;
      if (cp.bytesDone > 0) ac.abort();
    },
  }).catch((e: unknown) => e);
  expect(err).toBeInstanceOf(InterruptedError);
  expect(last!.bytesDone).toBeGreaterThan(0);
  expect(last!.bytesDone).toBeLessThanOrEqual(300 * KiB);
  return last!;
}

const gets = (t: ScriptedTransport) => t.requests.filter((q) => q.method === 'GET');

describe('download driver, exchange by exchange', () => {
  const v1: Version = { data: randomBytes(512 * KiB), etag: '"v1"', lastModified: LM };

  it('206 single range: HEAD, then one GET for the range with If-Range', async () => {
    const t = new ScriptedTransport(site(() => v1));
    const o = out();
    await run(t, { output: o, ranges: '100-199' });
    expect(t.requests.map((q) => q.method)).toEqual(['HEAD', 'GET']);
    expect(gets(t)[0]!.headers).toMatchObject({ range: 'bytes=100-199', 'if-range': '"v1"' });
    expect((await fsp.readFile(o)).equals(v1.data.subarray(100, 200))).toBe(true);
  });

  it('a multipart/byteranges answer fills every range in the order asked', async () => {
    const t = new ScriptedTransport(site(() => v1));
    const o = out();
    await run(t, { output: o, ranges: '5000-5999,10-19' });
    expect(gets(t)).toHaveLength(1);
    expect(gets(t)[0]!.headers.range).toBe('bytes=5000-5999,10-19');
    expect((await fsp.readFile(o)).equals(Buffer.concat([v1.data.subarray(5000, 6000), v1.data.subarray(10, 20)]))).toBe(true);
  });

  it('issue 12.9: --range with overlapping entries (…,-500,5000-) asks each byte once and delivers in order', async () => {
    const small: Version = { data: randomBytes(5119), etag: '"s"' };
    const t = new ScriptedTransport(site(() => small));
    const o = out();
    await run(t, { output: o, ranges: '0-99,-500,5000-' });
    expect(gets(t).map((q) => q.headers.range)).toEqual(['bytes=0-99,4619-5118']);
    const want = Buffer.concat([small.data.subarray(0, 100), small.data.subarray(4619), small.data.subarray(5000)]);
    expect((await fsp.readFile(o)).equals(want)).toBe(true);
  });

  it('a server that ignores ranges (200): the bytes asked are cut from the full body, with a warning', async () => {
    const t = new ScriptedTransport(site(() => v1, { ignoreRanges: true }));
    const o = out();
    const { events } = await run(t, { output: o, ranges: '1000-1999' });
    expect(gets(t)).toHaveLength(1);
    expect((await fsp.readFile(o)).equals(v1.data.subarray(1000, 2000))).toBe(true);
    expect(events.some((e) => e.type === 'warning' && /ignores Range/.test(e.message))).toBe(true);
  });

  it('SINGLE_RANGE_ONLY fallback: a single part to a multi-range request is kept, the rest asked one range at a time', async () => {
    const t = new ScriptedTransport(site(() => v1, { firstPartOnly: true }));
    const o = out();
    const { cp, events } = await run(t, { output: o, ranges: '0-9,100-109,200-209' });
    expect(gets(t).map((q) => q.headers.range)).toEqual(['bytes=0-9,100-109,200-209', 'bytes=100-109', 'bytes=200-209']);
    expect(cp.singleRangeOnly).toBe(true);
    expect(events.some((e) => e.type === 'warning' && /multi-range/.test(e.message))).toBe(true);
    expect((await fsp.readFile(o)).equals(Buffer.concat([v1.data.subarray(0, 10), v1.data.subarray(100, 110), v1.data.subarray(200, 210)]))).toBe(true);
  });

  it('503 + Retry-After: the wait is the server\'s (not the 20 ms backoff), then the GET is sent again', async () => {
    const t = new ScriptedTransport(site(() => v1, { before: [{ status: 503, headers: { 'retry-after': '1' } }] }));
    const o = out();
    const { events } = await run(t, { output: o });
    expect(t.requests.map((q) => q.method)).toEqual(['HEAD', 'GET', 'GET']);
    const retries = events.filter((e): e is Extract<TransferEvent, { type: 'retry' }> => e.type === 'retry');
    expect(retries).toHaveLength(1);
    expect(retries[0]!.delayMs).toBe(1000);
    expect(sha(await fsp.readFile(o))).toBe(sha(v1.data));
  });

  it('a 404 is not retried', async () => {
    const t = new ScriptedTransport(site(() => v1, { before: [{ status: 404 }] }));
    const err = await run(t, { output: out() }).catch((e: unknown) => e);
    expect((err as { httpStatus?: number }).httpStatus).toBe(404);
    expect(gets(t)).toHaveLength(1);
  });

  it('a changed ETag on resume: If-Range fails, the 200 is a new version, the download starts again from zero', async () => {
    let current: Version = v1;
    const o = out();
    const cp = await interrupted(() => current, o);
    current = { data: randomBytes(400 * KiB), etag: '"v2"', lastModified: 'Thu, 02 Jan 2025 00:00:00 GMT' };
    const t = new ScriptedTransport(site(() => current));
    const { events } = await run(t, { output: o, resume: cp });
    expect(t.requests[0]!.headers).toMatchObject({ range: `bytes=${cp.bytesDone}-${v1.data.length - 1}`, 'if-range': '"v1"' });
    expect(t.requests.slice(1).map((q) => q.method)).toEqual(['HEAD', 'GET']);
    expect(events.some((e) => e.type === 'warning' && /changed on the server/.test(e.message))).toBe(true);
    expect(sha(await fsp.readFile(o))).toBe(sha(current.data));
  });

  it('issue 12.8: W/"x" on the first run and "x" on resume (Apache) is the same file: no restart; If-Range was Last-Modified', async () => {
    const data = randomBytes(512 * KiB);
    let current: Version = { data, etag: 'W/"x"', lastModified: LM };
    const o = out();
    const cp = await interrupted(() => current, o);
    current = { data, etag: '"x"', lastModified: LM };
    const t = new ScriptedTransport(site(() => current));
    const { events } = await run(t, { output: o, resume: cp });
    expect(t.requests.map((q) => q.method)).toEqual(['GET']);
    expect(t.requests[0]!.headers).toMatchObject({ range: `bytes=${cp.bytesDone}-${data.length - 1}`, 'if-range': LM });
    expect(events.some((e) => e.type === 'warning')).toBe(false);
    expect(sha(await fsp.readFile(o))).toBe(sha(data));
  });

  it('issue 12.7: no validators, unchanged: the overlap window is re-read, compared, and the download continues', async () => {
    const data = randomBytes(512 * KiB);
    const o = out();
    const cp = await interrupted(() => ({ data }), o);
    const t = new ScriptedTransport(site(() => ({ data })));
    const { events } = await run(t, { output: o, resume: cp });
    const held = cp.bytesDone;
    const w = Math.min(64 * KiB, held);
    expect(gets(t).map((q) => q.headers.range)).toEqual([`bytes=${held - w}-${held - 1}`, `bytes=${held}-${data.length - 1}`]);
    expect(events.some((e) => e.type === 'warning')).toBe(false);
    expect(sha(await fsp.readFile(o))).toBe(sha(data));
  });

  it('issue 12.7: no validators, changed in place (same length): warned, started again from zero, never a mix', async () => {
    const data = randomBytes(512 * KiB);
    const o = out();
    const cp = await interrupted(() => ({ data }), o);
    const edited = Buffer.from(data);
    edited.fill(0x55, 0, cp.bytesDone);
    const t = new ScriptedTransport(site(() => ({ data: edited })));
    const { events } = await run(t, { output: o, resume: cp });
    expect(events.some((e) => e.type === 'warning' && /no ETag or Last-Modified.*starting again from zero/.test(e.message))).toBe(true);
    expect(gets(t).at(-1)!.headers.range).toBeUndefined();
    expect(sha(await fsp.readFile(o))).toBe(sha(edited));
  });

  it('--segments 4: progress events carry every segment\'s durable progress, at most ~5 per second', async () => {
    const big: Version = { data: randomBytes(4 * 1024 * KiB), etag: '"big"' };
    const t = new ScriptedTransport(site(() => big));
    const o = out();
    const { events, progressAt } = await run(t, { output: o, segments: 4, minSegmentBytes: 64 * KiB, checkpointBytes: 64 * KiB });
    // Throttled to one per 200 ms; only the final one (at completion) is forced.
    for (let i = 1; i < progressAt.length - 1; i++) expect(progressAt[i]! - progressAt[i - 1]!).toBeGreaterThanOrEqual(190);
    const progress = events.filter((e): e is Extract<TransferEvent, { type: 'progress' }> => e.type === 'progress');
    expect(progress.length).toBeGreaterThan(0);
    const last = progress.at(-1)!;
    expect(last.segments).toHaveLength(4);
    expect(last.segments!.map((s) => s.index)).toEqual([0, 1, 2, 3]);
    expect(last.segments!.every((s) => s.bytesDone === s.totalBytes && s.source === 'http://127.0.0.1:9/f.bin')).toBe(true);
    expect(last.segments!.reduce((a, s) => a + s.totalBytes, 0)).toBe(big.data.length);
    expect(sha(await fsp.readFile(o))).toBe(sha(big.data));
  });

  it('a version-1 checkpoint as the previous release stored it resumes; other shapes are refused (the download restarts)', async () => {
    const o = out();
    const cp = await interrupted(() => v1, o);
    // What the job store holds: JSON, read back.
    const stored = JSON.parse(JSON.stringify(cp)) as unknown;
    const parsed = parseDownloadCheckpoint(stored);
    expect(parsed).toEqual(cp);
    const t = new ScriptedTransport(site(() => v1));
    await run(t, { output: o, resume: parsed! });
    expect(t.requests.map((q) => q.headers.range)).toEqual([`bytes=${cp.bytesDone}-${v1.data.length - 1}`]);
    expect(sha(await fsp.readFile(o))).toBe(sha(v1.data));
    // The store's old loose shape (rangesDone, never written) and unknown versions start again.
    expect(parseDownloadCheckpoint({ outputPath: o, partialPath: o + '.bits-partial', validators: {}, rangesDone: [[0, 10]] })).toBeUndefined();
    expect(parseDownloadCheckpoint({ ...cp, version: 2 })).toBeUndefined();
    expect(parseDownloadCheckpoint(null)).toBeUndefined();
  });
});
