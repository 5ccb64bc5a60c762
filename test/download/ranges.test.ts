import { describe, expect, it } from 'vitest';
import {
  buildToc,
  capRanges,
  chooseRanges,
  fragmentWindow,
  isWholeUrl,
  planSegments,
  resolveApplicationRanges,
  rowIndexAt,
  suppressRangeHeader,
  totalBytes,
  trimToSingleUrl,
  type AppRange,
} from '../../src/protocol/download-ranges.js';
import { parseRangeList } from '../../src/protocol/content-range.js';

const SPEC_APP: AppRange[] = [
  { offset: 100, length: 100 },
  { offset: 1000, length: 100 },
  { offset: 200, length: 100 },
];
const ol = (rs: { offset: number; length: number }[]) => rs.map((r) => ({ offset: r.offset, length: r.length }));

describe('§3.6.5.2.4.3 Choosing Ranges (the spec example)', () => {
  it('FRAGMENT_OFFSET 25, FRAGMENT_LENGTH 200 -> {125,75},{1000,100},{200,25}', () => {
    const r = chooseRanges(SPEC_APP, 25, 200, false);
    expect(ol(r.ranges)).toEqual([
      { offset: 125, length: 75 },
      { offset: 1000, length: 100 },
      { offset: 200, length: 25 },
    ]);
    expect(r.length).toBe(200);
    expect(r.ranges.map((x) => x.at)).toEqual([25, 100, 200]);
    expect(r.ranges.map((x) => x.index)).toEqual([0, 1, 2]);
  });
  it('SINGLE_RANGE_ONLY -> {125,75} and FRAGMENT_LENGTH 75', () => {
    const r = chooseRanges(SPEC_APP, 25, 200, true);
    expect(ol(r.ranges)).toEqual([{ offset: 125, length: 75 }]);
    expect(r.length).toBe(75);
  });
  it('FRAGMENT_OFFSET 200, FRAGMENT_LENGTH 1000 -> {200,100}, length reduced to 100', () => {
    const r = chooseRanges(SPEC_APP, 200, 1000, false);
    expect(ol(r.ranges)).toEqual([{ offset: 200, length: 100 }]);
    expect(r.length).toBe(100);
  });
  it('at the end of APPLICATION_RANGES nothing is chosen', () => {
    expect(chooseRanges(SPEC_APP, 300, 10, false)).toEqual({ ranges: [], length: 0 });
  });
});

describe('application ranges', () => {
  it('whole URL by default; Range header suppressed only for it', () => {
    const { ranges } = resolveApplicationRanges(undefined, 5000);
    expect(ranges).toEqual([{ offset: 0, length: 5000 }]);
    expect(isWholeUrl(ranges, 5000)).toBe(true);
    expect(suppressRangeHeader([{ offset: 0, length: 5000 }], 5000)).toBe(true);
    expect(suppressRangeHeader([{ offset: 0, length: 4999 }], 5000)).toBe(false);
    expect(suppressRangeHeader([{ offset: 0, length: 5000 }], undefined)).toBe(false);
  });
  it('resolves a typed list, keeps order, counts unsatisfiable specs', () => {
    const r = resolveApplicationRanges(parseRangeList('0-99,1000-1099,-10,4990-')!, 5000);
    expect(r.ranges).toEqual([
      { offset: 0, length: 100 },
      { offset: 1000, length: 100 },
      { offset: 4990, length: 10 },
      { offset: 4990, length: 10 },
    ]);
    expect(resolveApplicationRanges(parseRangeList('0-9,6000-6001')!, 5000).unsatisfiable).toBe(1);
    expect(totalBytes(r.ranges)).toBe(220);
  });
});

describe('Table of Contents and segments', () => {
  it('plans near-equal segments no smaller than the minimum', () => {
    expect(planSegments(100, 4, 10)).toEqual([0, 25, 50, 75]);
    expect(planSegments(100, 4, 60)).toEqual([0]);
    expect(planSegments(0, 4, 10)).toEqual([0]);
  });
  it('a row per application range, split where segments start, sources round-robin', () => {
    const toc = buildToc(SPEC_APP, [0, 150], ['a', 'b']);
    expect(toc.map((r) => [r.at, r.length, r.offset, r.index, r.segment, r.source])).toEqual([
      [0, 100, 100, 0, 0, 'a'],
      [100, 50, 1000, 1, 0, 'a'],
      [150, 50, 1050, 1, 1, 'b'],
      [200, 100, 200, 2, 1, 'b'],
    ]);
    expect(rowIndexAt(toc, 0)).toBe(0);
    expect(rowIndexAt(toc, 149)).toBe(1);
    expect(rowIndexAt(toc, 150)).toBe(2);
    expect(rowIndexAt(toc, 300)).toBe(-1);
  });
  it('§3.6.5.2.4.4 trims FRAGMENT_RANGES to the source of the first byte', () => {
    const toc = buildToc(SPEC_APP, [0], ['a']);
    toc[2]!.source = 'b';
    const chosen = chooseRanges(SPEC_APP, 25, 200, false);
    const t = trimToSingleUrl(chosen.ranges, toc);
    expect(ol(t.ranges)).toEqual([
      { offset: 125, length: 75 },
      { offset: 1000, length: 100 },
    ]);
    expect(t.length).toBe(175);
    expect(t.source).toBe('a');
    // A range spanning rows of two sources is cut at the row boundary.
    const split = buildToc([{ offset: 0, length: 100 }], [0, 50], ['a', 'b']);
    const t2 = trimToSingleUrl(chooseRanges([{ offset: 0, length: 100 }], 10, 90, false).ranges, split);
    expect(ol(t2.ranges)).toEqual([{ offset: 10, length: 40 }]);
  });
  it('fragment windows follow progress and stop before a partly held row', () => {
    const toc = buildToc(SPEC_APP, [0], ['a']);
    const prog = [25, 0, 0];
    expect(fragmentWindow(toc, 0, (i) => prog[i]!)).toEqual({ offset: 25, length: 275 });
    expect(fragmentWindow(toc, 0, (i) => prog[i]!, 200)).toEqual({ offset: 25, length: 200 });
    const prog2 = [100, 0, 30];
    expect(fragmentWindow(toc, 0, (i) => prog2[i]!)).toEqual({ offset: 100, length: 100 });
    expect(fragmentWindow(toc, 0, () => 100)).toBeUndefined();
    expect(fragmentWindow(toc, 1, () => 0)).toBeUndefined();
  });
  it('caps the ranges of one request', () => {
    const many = Array.from({ length: 100 }, (_, i) => ({ offset: i * 10, length: 5, index: i, at: i * 5 }));
    expect(capRanges(many, 64)).toHaveLength(64);
  });
});
