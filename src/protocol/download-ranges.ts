/**
 * Range bookkeeping of the download client, MC-BUP §3.6. Pure: no I/O.
 *
 * Two offset spaces exist and every name says which one it uses:
 * - URL offsets: positions in the remote content (what a Range header names).
 * - aggregate offsets ("at"): positions in APPLICATION_RANGES considered as one
 *   collection of bytes (§3.6.5.2.4.3), which is also the position in
 *   DATA_BUFFER, i.e. in the output file. For a whole-URL download both agree.
 */
import { resolveRanges, type RangeSpec } from './content-range.js';

/** One entry of APPLICATION_RANGES (§3.6.1): offset and length in the URL. */
export interface AppRange {
  offset: number;
  length: number;
}

/** One entry of FRAGMENT_RANGES: a URL range plus where its bytes go. */
export interface FragmentRange extends AppRange {
  /** Index of the APPLICATION_RANGES row holding the first byte. */
  index: number;
  /** Aggregate offset (position in DATA_BUFFER) of the first byte. */
  at: number;
}

/**
 * A server may cap the ranges of one request (our own server answers 416
 * beyond 100, Apache/IIS have limits too); a long --range list is sent in
 * several requests instead.
 */
export const MAX_RANGES_PER_REQUEST = 64;

/** Total bytes in APPLICATION_RANGES (the size of DATA_BUFFER). */
export function totalBytes(ranges: readonly AppRange[]): number {
  let n = 0;
  for (const r of ranges) n += r.length;
  return n;
}

/**
 * APPLICATION_RANGES from the user's list, resolved against DATA_LENGTH.
 * Without a list the array is a single range encompassing the entire URL, as
 * §3.6.1 recommends. `unsatisfiable` counts specs that name no byte of the URL
 * (the caller decides whether that is an error).
 */
export function resolveApplicationRanges(
  specs: readonly RangeSpec[] | undefined,
  dataLength: number,
): { ranges: AppRange[]; unsatisfiable: number } {
  if (!specs) return { ranges: [{ offset: 0, length: dataLength }], unsatisfiable: 0 };
  const resolved = resolveRanges([...specs], dataLength);
  return {
    ranges: resolved.map((r) => ({ offset: r.first, length: r.last - r.first + 1 })),
    unsatisfiable: specs.length - resolved.length,
  };
}

/** True when APPLICATION_RANGES is the single range covering the whole URL. */
export function isWholeUrl(ranges: readonly AppRange[], dataLength: number | undefined): boolean {
  return ranges.length === 1 && ranges[0]!.offset === 0 && dataLength !== undefined && ranges[0]!.length === dataLength;
}

/**
 * §3.6.5.2.4.2: "If FRAGMENT_RANGES is a single range covering the entire URL,
 * the client SHOULD suppress the Range header."
 */
export function suppressRangeHeader(fragment: readonly AppRange[], dataLength: number | undefined): boolean {
  return isWholeUrl(fragment, dataLength);
}

/**
 * §3.6.5.2.4.3 Choosing Ranges: the bytes [FRAGMENT_OFFSET,
 * FRAGMENT_OFFSET+FRAGMENT_LENGTH) of APPLICATION_RANGES seen as one collection,
 * as URL ranges in APPLICATION_RANGES order. FRAGMENT_LENGTH is reduced at the
 * end of the collection; with SINGLE_RANGE_ONLY only the first range is kept
 * and FRAGMENT_LENGTH becomes its length.
 */
export function chooseRanges(
  applicationRanges: readonly AppRange[],
  fragmentOffset: number,
  fragmentLength: number,
  singleRangeOnly: boolean,
): { ranges: FragmentRange[]; length: number } {
  const total = totalBytes(applicationRanges);
  const start = Math.max(0, fragmentOffset);
  const end = Math.min(total, start + Math.max(0, fragmentLength));
  const ranges: FragmentRange[] = [];
  let at = 0;
  for (let index = 0; index < applicationRanges.length && at < end; index++) {
    const r = applicationRanges[index]!;
    const rowEnd = at + r.length;
    if (rowEnd > start && r.length > 0) {
      const from = Math.max(start, at);
      const to = Math.min(end, rowEnd);
      ranges.push({ offset: r.offset + (from - at), length: to - from, index, at: from });
      if (singleRangeOnly) break;
    }
    at = rowEnd;
  }
  return { ranges, length: totalBytes(ranges) };
}

// ---------------------------------------------------------------------------
// Table of Contents (§3.6.1)

/**
 * A row of the Table of Contents: a byte range of DATA_BUFFER, the URL range it
 * comes from, and the Source to fetch it from.
 *
 * The spec's table has a row per APPLICATION_RANGES entry and exists so rows can
 * be served by MS-BPCR peer servers (Record-ID, peer offsets). BITS peer caching
 * is deprecated since Windows 7 and is not implemented here, so Record-ID is
 * always NULL and row offsets stay origin offsets; but the table stays open to
 * other sources: mirrors serving the same content are Sources, and segments
 * (--segments) split rows further so each row belongs to one segment.
 */
export interface TocRow {
  /** Aggregate offset (position in DATA_BUFFER / the output file). */
  at: number;
  length: number;
  /** URL offset of the first byte. */
  offset: number;
  /** APPLICATION_RANGES index this row belongs to. */
  index: number;
  /** Segment (parallel download unit) this row belongs to. */
  segment: number;
  /** URL of the server to fetch from; null = not assigned yet (§3.6.3). */
  source: string | null;
  /** Bytes at the start of the row known to be in DATA_BUFFER. */
  done: number;
}

/**
 * Splits `total` aggregate bytes into at most `count` segments of near-equal
 * size, none smaller than `minSegment` (many tiny segments cost more in
 * requests than they gain in parallelism). Returns segment start offsets.
 */
export function planSegments(total: number, count: number, minSegment = 1024 * 1024): number[] {
  const n = Math.max(1, Math.min(Math.floor(count), Math.floor(total / Math.max(1, minSegment)) || 1));
  const starts: number[] = [];
  for (let i = 0; i < n; i++) starts.push(Math.floor((total * i) / n));
  return starts;
}

/**
 * Builds the Table of Contents: a row per APPLICATION_RANGES entry, split where
 * a segment starts, each segment's rows given a source round-robin.
 */
export function buildToc(
  applicationRanges: readonly AppRange[],
  segmentStarts: readonly number[],
  sources: readonly (string | null)[],
): TocRow[] {
  const rows: TocRow[] = [];
  const starts = segmentStarts.length > 0 ? segmentStarts : [0];
  const segmentOf = (at: number) => {
    let s = 0;
    while (s + 1 < starts.length && starts[s + 1]! <= at) s++;
    return s;
  };
  const srcFor = (segment: number) => (sources.length > 0 ? sources[segment % sources.length]! : null);
  let at = 0;
  applicationRanges.forEach((r, index) => {
    let pos = 0;
    while (pos < r.length) {
      const segment = segmentOf(at + pos);
      const nextStart = segment + 1 < starts.length ? starts[segment + 1]! : Infinity;
      const len = Math.min(r.length - pos, nextStart - (at + pos));
      rows.push({ at: at + pos, length: len, offset: r.offset + pos, index, segment, source: srcFor(segment), done: 0 });
      pos += len;
    }
    at += r.length;
  });
  return rows;
}

/** The row containing aggregate offset `at` (rows are sorted and contiguous). */
export function rowIndexAt(toc: readonly TocRow[], at: number): number {
  let lo = 0;
  let hi = toc.length - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    const r = toc[mid]!;
    if (at < r.at) hi = mid - 1;
    else if (at >= r.at + r.length) lo = mid + 1;
    else return mid;
  }
  return -1;
}

/**
 * The next fragment window of a segment: from the first byte not yet held to
 * the end of the run of rows that hold nothing yet (a partly filled row after a
 * gap would otherwise be fetched again from its start), capped at maxLength.
 * `progress(i)` gives the bytes held at the start of row i.
 */
export function fragmentWindow(
  toc: readonly TocRow[],
  segment: number,
  progress: (row: number) => number,
  maxLength = Infinity,
): { offset: number; length: number } | undefined {
  let offset = -1;
  let length = 0;
  for (let i = 0; i < toc.length; i++) {
    const r = toc[i]!;
    if (r.segment !== segment) {
      if (offset >= 0) break;
      continue;
    }
    const p = progress(i);
    if (offset < 0) {
      if (p >= r.length) continue;
      offset = r.at + p;
      length = r.length - p;
    } else {
      if (p > 0) break;
      length += r.length;
    }
    if (length >= maxLength) break;
  }
  if (offset < 0) return undefined;
  return { offset, length: Math.min(length, maxLength) };
}

/**
 * §3.6.5.2.4.4 Trimming a Request to a Single URL: keep FRAGMENT_RANGES only
 * while their rows have the Source of the row holding the first byte. A range
 * spanning rows of different sources is cut at the row boundary.
 */
export function trimToSingleUrl(
  ranges: readonly FragmentRange[],
  toc: readonly TocRow[],
): { ranges: FragmentRange[]; length: number; source: string | null } {
  if (ranges.length === 0) return { ranges: [], length: 0, source: null };
  const firstRow = rowIndexAt(toc, ranges[0]!.at);
  const source = firstRow >= 0 ? toc[firstRow]!.source : null;
  const out: FragmentRange[] = [];
  for (const r of ranges) {
    let kept = 0;
    let i = rowIndexAt(toc, r.at);
    while (kept < r.length && i >= 0 && i < toc.length && toc[i]!.source === source) {
      const row = toc[i]!;
      kept = Math.min(r.length, row.at + row.length - r.at);
      i++;
    }
    if (i < 0) kept = r.length; // not in the table: nothing to trim against
    if (kept > 0) out.push({ ...r, length: kept });
    if (kept < r.length) break;
  }
  return { ranges: out, length: totalBytes(out), source };
}

/**
 * The URL ranges to put on the wire for FRAGMENT_RANGES: overlapping and
 * adjacent ranges merged (issue 12.9: `--range …,-500,5000-` asked for
 * 4619-5118,5000-5118, and a server merging them needed extra requests), in
 * the order of first appearance so a sequential sink still gets its bytes in
 * order as far as the list allows. The rows they fill are unchanged: bytes are
 * placed by URL offset into every row they extend, so the output keeps the
 * order asked.
 */
export function coalesceRanges(ranges: readonly AppRange[]): AppRange[] {
  const out: { first: number; end: number }[] = [];
  const touch = (x: { first: number; end: number }, y: { first: number; end: number }) => x.first <= y.end && y.first <= x.end;
  for (const r of ranges) {
    if (r.length <= 0) continue;
    out.push({ first: r.offset, end: r.offset + r.length });
    // Fold until no two entries touch; each fold removes one, so this ends within the list's length.
    for (let merged = true; merged; ) {
      merged = false;
      for (let i = 0; i < out.length && !merged; i++) {
        for (let j = i + 1; j < out.length && !merged; j++) {
          if (!touch(out[i]!, out[j]!)) continue;
          out[i] = { first: Math.min(out[i]!.first, out[j]!.first), end: Math.max(out[i]!.end, out[j]!.end) };
          out.splice(j, 1);
          merged = true;
        }
      }
    }
  }
  return out.map((o) => ({ offset: o.first, length: o.end - o.first }));
}

/** Drops ranges beyond `max` (they are requested by the next fragment). */
export function capRanges(ranges: readonly FragmentRange[], max = MAX_RANGES_PER_REQUEST): FragmentRange[] {
  return ranges.slice(0, Math.max(1, max));
}
