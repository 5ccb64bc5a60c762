import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { downloadFile, cancelDownload, type DownloadCheckpoint } from '../../src/client/download.js';
import type { TransferEvent } from '../../src/client/events.js';
import { InterruptedError, SourceChangedError, LocalFileError } from '../../src/errors.js';
import { startOddServer, type OddServer } from '../helpers/odd-servers.js';
import { ddBytes, makeFile, sha256, tempDir } from './helpers.js';

const MiB = 1024 * 1024;
const SIZE = 6 * MiB + 12345;
let dir: string;
let src: string;
let srcSha: string;
let other: string;
let otherSha: string;
const servers: OddServer[] = [];

async function odd(opts: Omit<Parameters<typeof startOddServer>[0], 'file'> & { file?: string }): Promise<OddServer> {
  const s = await startOddServer({ file: src, ...opts });
  servers.push(s);
  return s;
}
const fast = { retryBaseMs: 20, noProgressTimeoutMs: 15_000 };
let n = 0;
const out = () => path.join(dir, `out-${++n}.bin`);

beforeAll(async () => {
  dir = await tempDir();
  src = await makeFile(path.join(dir, 'src.bin'), SIZE);
  srcSha = await sha256(src);
  other = await makeFile(path.join(dir, 'other.bin'), 5 * MiB + 999);
  otherSha = await sha256(other);
});
afterAll(async () => {
  await Promise.all(servers.map((s) => s.close()));
  await fsp.rm(dir, { recursive: true, force: true });
});

describe('download from imperfect servers', () => {
  it('a plain whole-file download suppresses Range and is byte-identical', async () => {
    const s = await odd({});
    const o = out();
    const r = await downloadFile({ url: `${s.url}/f.bin`, output: o, ...fast });
    expect(await sha256(o)).toBe(srcSha);
    expect(r.bytes).toBe(SIZE);
    expect(s.requests.map((q) => q.method)).toEqual(['HEAD', 'GET']);
    expect(s.requests[1]!.range).toBeUndefined();
    await expect(fsp.stat(o + '.bits-partial')).rejects.toThrow();
  });

  it('a server without HEAD and without lengths: falls back to GET, still identical', async () => {
    const s = await odd({ noHead: true, noLength: true });
    const o = out();
    await downloadFile({ url: `${s.url}/f.bin`, output: o, ...fast });
    expect(await sha256(o)).toBe(srcSha);
    const s2 = await odd({ noHead: true, noLength: true, ignoreRange: true });
    const o2 = out();
    await downloadFile({ url: `${s2.url}/f.bin`, output: o2, ...fast });
    expect(await sha256(o2)).toBe(srcSha);
  });

  it('a server that ignores Range: resume after a cut takes the needed bytes from the 200', async () => {
    const s = await odd({ ignoreRange: true, cutAfterBytes: 2 * MiB });
    const o = out();
    const events: TransferEvent[] = [];
    await downloadFile({ url: `${s.url}/f.bin`, output: o, ...fast, checkpointBytes: 256 * 1024, onEvent: (e) => events.push(e) });
    expect(await sha256(o)).toBe(srcSha);
    expect(s.requests.filter((q) => q.method === 'GET').length).toBe(2);
    expect(s.requests[2]!.range).toMatch(/^bytes=\d+-/);
    expect(events.some((e) => e.type === 'warning' && /ignores Range/.test(e.message))).toBe(true);
    expect(events.some((e) => e.type === 'retry')).toBe(true);
  });

  it('--range output equals the bytes cut with dd, also from a server that ignores Range', async () => {
    const spec = '0-99,1000000-1099999,5-5,6000000-';
    const want = Buffer.concat([
      await ddBytes(src, 0, 100),
      await ddBytes(src, 1000000, 100000),
      await ddBytes(src, 5, 1),
      await ddBytes(src, 6000000, SIZE - 6000000),
    ]);
    for (const opts of [{ multiRange: 'multipart' as const }, { ignoreRange: true }]) {
      const s = await odd(opts);
      const o = out();
      await downloadFile({ url: `${s.url}/f.bin`, output: o, ranges: spec, ...fast });
      expect((await fsp.readFile(o)).equals(want)).toBe(true);
      if (opts.multiRange) {
        const gets = s.requests.filter((q) => q.method === 'GET');
        expect(gets).toHaveLength(1);
        // 5-5 lies inside 0-99: asked once (issue 12.9), delivered twice, in the order asked.
        expect(gets[0]!.range).toBe(`bytes=0-99,1000000-1099999,6000000-${SIZE - 1}`);
      }
    }
  });

  it.each(['first-only', 'full-200', 'wrong-part'] as const)('a server mishandling multi-range (%s) -> SINGLE_RANGE_ONLY, identical', async (mode) => {
    const s = await odd({ multiRange: mode });
    const o = out();
    const events: TransferEvent[] = [];
    const spec = '100-199,1000-1099,300-399';
    const r = await downloadFile({ url: `${s.url}/f.bin`, output: o, ranges: spec, ...fast, onEvent: (e) => events.push(e) });
    const want = Buffer.concat([await ddBytes(src, 100, 100), await ddBytes(src, 1000, 100), await ddBytes(src, 300, 100)]);
    expect((await fsp.readFile(o)).equals(want)).toBe(true);
    expect(r.checkpoint.singleRangeOnly).toBe(true);
    expect(events.some((e) => e.type === 'warning' && /multi-range/.test(e.message))).toBe(true);
    const gets = s.requests.filter((q) => q.method === 'GET');
    expect(gets[0]!.range).toBe('bytes=100-199,1000-1099,300-399');
    expect(gets.slice(1).every((q) => !q.range!.includes(','))).toBe(true);
  });

  for (const honorIfRange of [true, false]) {
    it(`content replaced mid-download is detected; the result is the NEW content (If-Range ${honorIfRange ? 'honoured' : 'ignored'})`, async () => {
      const s = await odd({ swapAfterBytes: 3 * MiB, swapTo: other, honorIfRange });
      const o = out();
      const events: TransferEvent[] = [];
      const r = await downloadFile({ url: `${s.url}/f.bin`, output: o, ...fast, onEvent: (e) => events.push(e) });
      expect(await sha256(o)).toBe(otherSha);
      expect(r.bytes).toBe(5 * MiB + 999);
      expect(events.some((e) => e.type === 'warning' && /changed on the server/.test(e.message))).toBe(true);
      const resumed = s.requests.find((q) => q.method === 'GET' && q.range);
      expect(resumed?.ifRange).toBe(`"g1-${SIZE}"`);
    });
  }

  it('abort mid-way, then resume from the checkpoint: identical, and only the rest is fetched', async () => {
    const s = await odd({ chunkSize: 16 * 1024 });
    const o = out();
    const ac = new AbortController();
    let last: DownloadCheckpoint | undefined;
    const err = await downloadFile({
      url: `${s.url}/f.bin`,
      output: o,
      ...fast,
      checkpointBytes: 128 * 1024, transport: { limitRateBytesPerSec: 8 * MiB },
      signal: ac.signal,
      onCheckpoint: (cp) => {
        last = structuredClone(cp);
      },
      onEvent: (e) => {
        if (e.type === 'progress' && e.bytesDone > 2 * MiB) ac.abort();
      },
    }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(InterruptedError);
    expect(last).toBeDefined();
    const held = last!.bytesDone;
    expect(held).toBeGreaterThan(1 * MiB);
    expect(held).toBeLessThan(6 * MiB);
    await expect(fsp.stat(o)).rejects.toThrow();
    const before = s.bytesSent();
    const events: TransferEvent[] = [];
    await downloadFile({ url: 'ignored', resume: last!, ...fast, onEvent: (e) => events.push(e) });
    expect(await sha256(o)).toBe(srcSha);
    const resumeGet = s.requests.filter((q) => q.method === 'GET').at(-1)!;
    expect(resumeGet.range).toBe(`bytes=${held}-${SIZE - 1}`);
    expect(resumeGet.ifRange).toBe(`"g1-${SIZE}"`);
    expect(s.bytesSent() - before).toBe(SIZE - held);
    expect(events.find((e) => e.type === 'start')).toMatchObject({ resumedAt: held });
  });

  it('resume trusts only bytes that exist in the partial file', async () => {
    const s = await odd({ chunkSize: 16 * 1024 });
    const o = out();
    const ac = new AbortController();
    let last: DownloadCheckpoint | undefined;
    await downloadFile({
      url: `${s.url}/f.bin`, output: o, ...fast, checkpointBytes: 128 * 1024, transport: { limitRateBytesPerSec: 8 * MiB }, signal: ac.signal,
      onCheckpoint: (cp) => { last = structuredClone(cp); },
      onEvent: (e) => { if (e.type === 'progress' && e.bytesDone > 2 * MiB) ac.abort(); },
    }).catch(() => {});
    // The partial file lost its tail (e.g. a crash before the data reached the disk).
    await fsp.truncate(last!.partialPath, 1000);
    await downloadFile({ url: 'ignored', resume: last!, ...fast });
    expect(await sha256(o)).toBe(srcSha);
    expect(s.requests.filter((q) => q.method === 'GET').at(-1)!.range).toBe(`bytes=1000-${SIZE - 1}`);
  });

  it('cancelDownload removes the partial file', async () => {
    const s = await odd({ chunkSize: 16 * 1024 });
    const o = out();
    const ac = new AbortController();
    let last: DownloadCheckpoint | undefined;
    await downloadFile({
      url: `${s.url}/f.bin`, output: o, ...fast, checkpointBytes: 128 * 1024, transport: { limitRateBytesPerSec: 8 * MiB }, signal: ac.signal,
      onCheckpoint: (cp) => { last = structuredClone(cp); },
      onEvent: (e) => { if (e.type === 'progress' && e.bytesDone > 1 * MiB) ac.abort(); },
    }).catch(() => {});
    await fsp.stat(last!.partialPath);
    await cancelDownload(last!);
    await expect(fsp.stat(last!.partialPath)).rejects.toThrow();
  });

  it('--segments 4 with one connection cut mid-way: retried, identical', async () => {
    const s = await odd({ cutAfterBytes: 3 * MiB, chunkSize: 32 * 1024 });
    const o = out();
    const events: TransferEvent[] = [];
    const r = await downloadFile({ url: `${s.url}/f.bin`, output: o, segments: 4, ...fast, onEvent: (e) => events.push(e) });
    expect(await sha256(o)).toBe(srcSha);
    const gets = s.requests.filter((q) => q.method === 'GET');
    expect(gets.length).toBe(5);
    expect(new Set(gets.map((g) => g.range?.split('-')[0])).size).toBeGreaterThanOrEqual(4);
    expect(events.some((e) => e.type === 'retry')).toBe(true);
    expect(new Set(r.checkpoint.toc.map((row) => row.segment)).size).toBe(4);
  });

  it('--mirror: one mirror failing mid-way is dropped, its ranges reassigned; identical', async () => {
    const origin = await odd({});
    const bad = await odd({ cutAfterBytes: 512 * 1024, failAfterBytes: 512 * 1024, chunkSize: 16 * 1024 });
    const o = out();
    const events: TransferEvent[] = [];
    await downloadFile({ url: `${origin.url}/f.bin`, mirrors: [`${bad.url}/f.bin`], output: o, segments: 4, ...fast, onEvent: (e) => events.push(e) });
    expect(await sha256(o)).toBe(srcSha);
    expect(bad.requests.some((q) => q.method === 'GET' && q.status === 206)).toBe(true);
    expect(events.some((e) => e.type === 'warning' && e.message.includes(bad.url) && /failed/.test(e.message))).toBe(true);
  });

  it('a mirror with different content is dropped up front', async () => {
    const origin = await odd({});
    const wrong = await odd({ file: other });
    const o = out();
    const events: TransferEvent[] = [];
    await downloadFile({ url: `${origin.url}/f.bin`, mirrors: [`${wrong.url}/f.bin`], output: o, ...fast, onEvent: (e) => events.push(e) });
    expect(await sha256(o)).toBe(srcSha);
    expect(wrong.requests.filter((q) => q.method === 'GET')).toHaveLength(0);
    expect(events.some((e) => e.type === 'warning' && /does not serve the same content/.test(e.message))).toBe(true);
  });

  it('servers closing the connection after each response (HTTP/1.0 style) do not crash the client', async () => {
    // Regression: undici 7 asserted (uncatchable) when the socket ended while the parser was paused.
    const s = await odd({ connectionClose: true });
    for (const segments of [1, 3]) {
      const o = out();
      await downloadFile({ url: `${s.url}/f.bin`, output: o, segments, checkpointBytes: 256 * 1024, ...fast });
      expect(await sha256(o)).toBe(srcSha);
    }
  });

  it('transient 503s are retried', async () => {
    const s = await odd({ failFirst: { count: 2, status: 503, retryAfter: '0' } });
    const o = out();
    await downloadFile({ url: `${s.url}/f.bin`, output: o, ...fast });
    expect(await sha256(o)).toBe(srcSha);
  });

  it('--sha256 verifies; a mismatch is an error and nothing appears at PATH', async () => {
    const s = await odd({});
    const o = out();
    const r = await downloadFile({ url: `${s.url}/f.bin`, output: o, sha256: srcSha, ...fast });
    expect(r.sha256).toBe(srcSha);
    const o2 = out();
    const err = await downloadFile({ url: `${s.url}/f.bin`, output: o2, sha256: otherSha, ...fast }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(SourceChangedError);
    await expect(fsp.stat(o2)).rejects.toThrow();
    await expect(fsp.stat(o2 + '.bits-partial')).rejects.toThrow();
  });

  it('an existing output is kept unless force; default names stay in the folder', async () => {
    const s = await odd({ contentDisposition: 'attachment; filename="../../escape.bin"' });
    const o = out();
    await fsp.writeFile(o, 'keep me');
    const err = await downloadFile({ url: `${s.url}/f.bin`, output: o, ...fast }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(LocalFileError);
    expect(await fsp.readFile(o, 'utf8')).toBe('keep me');
    await downloadFile({ url: `${s.url}/f.bin`, output: o, force: true, ...fast });
    expect(await sha256(o)).toBe(srcSha);
    const sub = await fsp.mkdtemp(path.join(dir, 'cwd-'));
    const r = await downloadFile({ url: `${s.url}/dir/f.bin`, cwd: sub, ...fast });
    expect(r.path).toBe(path.join(sub, 'escape.bin'));
    expect(await sha256(r.path)).toBe(srcSha);
  });
});
