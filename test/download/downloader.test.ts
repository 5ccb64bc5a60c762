/** The pure download core (src/protocol/downloader.ts), section by section of MC-BUP §3.6, without sockets. */
import { describe, expect, it } from 'vitest';
import { coalesceRanges } from '../../src/protocol/download-ranges.js';
import { DownloadTable, OVERLAP_WINDOW, type SourceState } from '../../src/protocol/downloader.js';

const LM = 'Wed, 01 Jan 2025 00:00:00 GMT';
const source = (url: string, v: SourceState['validators'] = { length: 10_000, lastModified: LM, etag: '"a"' }): SourceState => ({
  url,
  validators: v,
  singleRangeOnly: false,
  ignoresRanges: false,
});
const O = 'http://127.0.0.1:1/f';
const M = 'http://127.0.0.1:2/f';

/** Feeds URL bytes [offset, offset+length) and returns the bytes placed. */
function feed(t: DownloadTable, rows: number[], offset: number, length: number): number {
  let n = 0;
  for (const p of t.placements(rows, offset, length)) {
    t.advance(p);
    n += p.length;
  }
  return n;
}

describe('§3.6.1 Table of Contents', () => {
  it('one row per APPLICATION_RANGES entry and segment, sources round-robin', () => {
    const t = DownloadTable.plan([{ offset: 0, length: 10_000 }], [source(O), source(M)], 4, 1000);
    expect(t.toc.map((r) => [r.at, r.length, r.segment, r.source])).toEqual([
      [0, 2500, 0, O],
      [2500, 2500, 1, M],
      [5000, 2500, 2, O],
      [7500, 2500, 3, M],
    ]);
    expect(t.segmentCount).toBe(4);
    expect(t.total).toBe(10_000);
  });
  it('a dropped source gets no rows in a new plan', () => {
    const m = source(M);
    m.dropped = 'gone';
    const t = DownloadTable.plan([{ offset: 0, length: 4000 }], [source(O), m], 2, 1000);
    expect(new Set(t.toc.map((r) => r.source))).toEqual(new Set([O]));
  });
});

describe('§3.6.3 segments and sources', () => {
  it('each segment is claimed once; a complete one is never claimed', () => {
    const t = DownloadTable.plan([{ offset: 0, length: 4000 }], [source(O)], 2, 1000);
    expect(t.claimSegment()).toBe(0);
    expect(t.claimSegment()).toBe(1);
    expect(t.claimSegment()).toBeUndefined();
    t.release(0);
    feed(t, t.rowsOfSegment(0), 0, 2000);
    expect(t.claimSegment()).toBeUndefined();
  });
  it('dropping a source hands its unfinished rows to the others and says why', () => {
    const o = source(O);
    const m = source(M);
    const t = DownloadTable.plan([{ offset: 0, length: 4000 }], [o, m], 2, 1000);
    t.drop(m, 'mirror failed');
    expect(t.toc.every((r) => r.source === O)).toBe(true);
    expect(t.sourceFor(1)).toBe(o);
    expect(t.takeWarnings()).toEqual(['mirror failed']);
    t.drop(o, 'origin failed');
    expect(t.sourceFor(0)).toBeUndefined();
    expect(t.nextRequest(0)).toBeUndefined();
  });
});

describe('§3.6.5.2.4.3/4 what to request next', () => {
  it('the whole URL: no Range header (suppressed), no If-Range', () => {
    const t = DownloadTable.plan([{ offset: 0, length: 10_000 }], [source(O)], 1, 1000);
    const r = t.nextRequest(0, Infinity, 10_000)!;
    expect(r.rangeSent).toBe(false);
    expect(r.headers).toEqual({});
  });
  it('a resume asks from the first byte not held, with If-Range (strong ETag)', () => {
    const t = DownloadTable.plan([{ offset: 0, length: 10_000 }], [source(O)], 1, 1000);
    feed(t, [0], 0, 1234);
    expect(t.nextRequest(0)!.headers).toEqual({ range: 'bytes=1234-9999', 'if-range': '"a"' });
  });
  it('a weak ETag is no If-Range: Last-Modified is sent instead (RFC 7233 §3.2)', () => {
    const t = DownloadTable.plan([{ offset: 0, length: 10_000 }], [source(O, { length: 10_000, etag: 'W/"a"', lastModified: LM })], 1, 1000);
    feed(t, [0], 0, 1);
    expect(t.nextRequest(0)!.headers['if-range']).toBe(LM);
  });
  it('multi-range, or the first range only with SINGLE_RANGE_ONLY; fragmentSize caps it', () => {
    const app = [
      { offset: 100, length: 100 },
      { offset: 1000, length: 100 },
    ];
    const s = source(O);
    const t = DownloadTable.plan(app, [s], 1, 1000);
    expect(t.nextRequest(0)!.headers.range).toBe('bytes=100-199,1000-1099');
    expect(t.nextRequest(0, 150)!.headers.range).toBe('bytes=100-199,1000-1049');
    s.singleRangeOnly = true;
    expect(t.nextRequest(0)!.headers.range).toBe('bytes=100-199');
  });
  it('issue 12.9: overlapping and adjacent ranges are merged on the wire, in the order first asked', () => {
    expect(coalesceRanges([{ offset: 4619, length: 500 }, { offset: 5000, length: 119 }])).toEqual([{ offset: 4619, length: 500 }]);
    expect(coalesceRanges([{ offset: 500, length: 10 }, { offset: 0, length: 100 }, { offset: 100, length: 5 }, { offset: 50, length: 500 }])).toEqual([
      { offset: 0, length: 550 },
    ]);
    expect(coalesceRanges([{ offset: 900, length: 10 }, { offset: 0, length: 10 }])).toEqual([{ offset: 900, length: 10 }, { offset: 0, length: 10 }]);
    // --range 4619-5118,5000- on a 5119-byte file: one range asked, both rows filled from it, in the order asked.
    const t = DownloadTable.plan([{ offset: 4619, length: 500 }, { offset: 5000, length: 119 }], [source(O, { length: 5119, etag: '"a"' })], 1, 1000);
    const r = t.nextRequest(0, Infinity, 5119)!;
    expect(r.headers.range).toBe('bytes=4619-5118');
    const answer = t.judge(r, 206, { 'content-range': 'bytes 4619-5118/5119', etag: '"a"' });
    expect(answer).toMatchObject({ kind: 'body', offset: 4619, length: 500 });
    const places = t.placements(r.rows, 4619, 500);
    expect(places.map((p) => [p.row, p.from, p.length, p.at])).toEqual([
      [0, 0, 500, 0],
      [1, 381, 119, 500],
    ]);
  });
});

describe('§3.6.5.2.4.2 validating an answer', () => {
  const table = () => {
    const s = source(O);
    const t = DownloadTable.plan([{ offset: 100, length: 100 }, { offset: 1000, length: 100 }], [s], 1, 1000);
    return { s, t, req: t.nextRequest(0)! };
  };
  it('failures go to the failure policy; 416 is a changed content', () => {
    const { t, req } = table();
    expect(t.judge(req, 503, {}).kind).toBe('failure');
    expect(t.judge(req, 404, {}).kind).toBe('failure');
    expect(t.judge(req, 416, {}).kind).toBe('changed');
  });
  it('multipart/byteranges: the parser expects exactly the ranges asked', () => {
    const { t, req } = table();
    expect(t.judge(req, 206, { 'content-type': 'multipart/byteranges; boundary=B', etag: '"a"' })).toEqual({
      kind: 'multipart',
      boundary: 'B',
      expected: [
        { first: 100, last: 199 },
        { first: 1000, last: 1099 },
      ],
      total: 10_000,
      rows: [0, 1],
    });
  });
  it('a single part to a multi-range request: SINGLE_RANGE_ONLY, its bytes kept', () => {
    const { s, t, req } = table();
    expect(t.judge(req, 206, { 'content-range': 'bytes 100-199/10000' })).toMatchObject({ kind: 'body', offset: 100, length: 100 });
    expect(s.singleRangeOnly).toBe(true);
    expect(t.takeWarnings()[0]).toMatch(/multi-range/);
  });
  it('200 to a multi-range request: SINGLE_RANGE_ONLY, nothing taken', () => {
    const { s, t, req } = table();
    expect(t.judge(req, 200, { 'content-length': '10000' }).kind).toBe('none');
    expect(s.singleRangeOnly).toBe(true);
  });
  it('200 to a single range: the server ignores ranges; its unclaimed segments are filled from the same body', () => {
    const s = source(O, { length: 4000, etag: '"a"' });
    const t = DownloadTable.plan([{ offset: 0, length: 4000 }], [s], 2, 1000);
    feed(t, [0], 0, 10);
    expect(t.claimSegment()).toBe(0);
    const req = t.nextRequest(0, Infinity, 4000)!;
    const a = t.judge(req, 200, { 'content-length': '4000' }, 4000);
    expect(a).toMatchObject({ kind: 'body', offset: 0, adopted: [1], rows: [0, 1] });
    expect(s.ignoresRanges).toBe(true);
    expect(t.claimSegment()).toBeUndefined();
    t.releaseAdopted([1]);
    expect(t.claimSegment()).toBe(1);
  });
  it('a changed ETag or Last-Modified is a new version; W/"a" -> "a" is not (RFC 7232 weak comparison)', () => {
    const { t, req } = table();
    expect(t.judge(req, 206, { 'content-range': 'bytes 100-199/10000', etag: '"b"' })).toMatchObject({ kind: 'changed' });
    const weak = source(O, { length: 10_000, etag: 'W/"a"' });
    const t2 = DownloadTable.plan([{ offset: 0, length: 10_000 }], [weak], 1, 1000);
    feed(t2, [0], 0, 5);
    const r2 = t2.nextRequest(0)!;
    expect(t2.judge(r2, 206, { 'content-range': 'bytes 5-9999/10000', etag: '"a"' })).toMatchObject({ kind: 'body', offset: 5 });
  });
  it('a Content-Range not holding the offset asked is a protocol error', () => {
    const t = DownloadTable.plan([{ offset: 0, length: 10_000 }], [source(O)], 1, 1000);
    feed(t, [0], 0, 500);
    expect(t.judge(t.nextRequest(0)!, 206, { 'content-range': 'bytes 600-9999/10000' })).toMatchObject({ kind: 'error' });
  });
});

describe('placing bytes, durability and per-segment progress', () => {
  it('a row grows only by its next byte: a repeat or a gap places nothing', () => {
    const t = DownloadTable.plan([{ offset: 0, length: 1000 }], [source(O)], 1, 1000);
    expect(feed(t, [0], 0, 100)).toBe(100);
    expect(feed(t, [0], 0, 100)).toBe(0);
    expect(feed(t, [0], 200, 100)).toBe(0);
    expect(feed(t, [0], 50, 100)).toBe(50);
    expect(t.bytesWritten).toBe(150);
    expect(t.bytesDone).toBe(0);
  });
  it('only a snapshot made durable counts as done; segments report durable bytes with their source', () => {
    const t = DownloadTable.plan([{ offset: 0, length: 4000 }], [source(O), source(M)], 2, 1000);
    feed(t, [0], 0, 300);
    const snap = t.snapshot();
    feed(t, [0], 300, 100);
    feed(t, [1], 2000, 50);
    t.markDurable(snap);
    expect(t.bytesDone).toBe(300);
    expect(t.segmentProgress()).toEqual([
      { index: 0, bytesDone: 300, totalBytes: 2000, source: O },
      { index: 1, bytesDone: 0, totalBytes: 2000, source: M },
    ]);
  });
});

describe('§3.6.4.2 resuming', () => {
  it('trusts only bytes the file holds; says where to truncate', () => {
    const t = DownloadTable.plan([{ offset: 0, length: 4000 }], [source(O)], 2, 1000);
    t.toc[0]!.done = 1500;
    t.toc[1]!.done = 1000;
    expect(t.trustPartial(2500)).toBe(2500);
    expect(t.toc.map((r) => r.done)).toEqual([1500, 500]);
    expect(t.written).toEqual([1500, 500]);
    expect(t.trustPartial(0)).toBe(0);
  });
  it('issue 12.7: without ETag and Last-Modified the bytes before each resume point are re-read first', () => {
    const bare = source(O, { length: 300_000 });
    const t = DownloadTable.plan([{ offset: 0, length: 300_000 }], [bare], 2, 1000);
    t.toc[0]!.done = 100_000;
    t.toc[1]!.done = 10;
    expect(t.overlapChecks()).toEqual([
      { source: bare, offset: 100_000 - OVERLAP_WINDOW, length: OVERLAP_WINDOW, at: 100_000 - OVERLAP_WINDOW },
      { source: bare, offset: 150_000, length: 10, at: 150_000 },
    ]);
    const tagged = DownloadTable.plan([{ offset: 0, length: 300_000 }], [source(O)], 1, 1000);
    tagged.toc[0]!.done = 5000;
    expect(tagged.overlapChecks()).toEqual([]);
  });
});
