/**
 * MC-BUP §3.6 — the download client's decisions, without I/O (the uploader's
 * counterpart, src/protocol/uploader.ts). The driver (src/client/download/)
 * asks this table what to request next, hands it each answer's status and
 * headers, and tells it which bytes reached the file and which of those are
 * durable; everything the spec decides is decided here:
 *
 * - §3.6.1 the Table of Contents: a row per APPLICATION_RANGES entry, split by
 *   segment, each with its Source (origin or mirror) and the bytes it holds;
 * - §3.6.3 which source and which segment claims which rows;
 * - §3.6.5.2.4.3/4 what to request next: FRAGMENT_RANGES for a segment, as a
 *   single range or a multi-range request (SINGLE_RANGE_ONLY), trimmed to one
 *   source, overlapping ranges merged, Range suppressed for the whole URL,
 *   If-Range with a strong validator;
 * - §3.6.5.2.4.2 how an answer is validated (status, Content-Range, multipart,
 *   validators): continue, fall back to single ranges, take bytes from a 200,
 *   start again (the content changed) or fail;
 * - where a chunk of URL bytes goes (every row it extends, never out of place);
 * - issue 12.7 which bytes a resume without validators re-reads first.
 *
 * No I/O, no clocks: the driver passes bytes, statuses and headers in.
 */
import { formatRangeHeader } from './content-range.js';
import {
  buildToc,
  capRanges,
  chooseRanges,
  coalesceRanges,
  fragmentWindow,
  planSegments,
  suppressRangeHeader,
  totalBytes,
  trimToSingleUrl,
  type AppRange,
  type TocRow,
} from './download-ranges.js';
import { answerKind, hasValidators, ifRangeValue, validateRangeResponse, type Validators } from './download-validate.js';
import type { ByteRange } from './content-range.js';

/** A Source of the content (§3.6.1): the origin URL or a mirror serving the same bytes. */
export interface SourceState {
  url: string;
  /** What this source stated in STATE_SIZE (ETags differ between mirrors). */
  validators: Validators;
  /** SINGLE_RANGE_ONLY (§3.6.1) for this source. */
  singleRangeOnly: boolean;
  /** The source answers ranged GETs with 200 and the whole content. */
  ignoresRanges: boolean;
  /** Why the source is no longer used. */
  dropped?: string;
  /** Where the source's redirects led last (src/client/download/redirects.ts): asked first, `url` again if it fails. */
  finalUrl?: string;
}

/** One GET for FRAGMENT_RANGES of a segment. */
export interface FragmentRequest {
  segment: number;
  source: SourceState;
  /** The URL ranges on the wire (merged), in request order. */
  ranges: AppRange[];
  /** The segment's rows the answer may fill. */
  rows: number[];
  /** Request headers: Range and If-Range, or none for the whole URL. */
  headers: Record<string, string>;
  rangeSent: boolean;
}

/** What the driver does with an answer. */
export type FragmentAnswer =
  /** Not 200/206/416: a ServerError from the status (src/protocol/failure.ts decides retry or not). */
  | { kind: 'failure' }
  /** A new version (§3.6.5.2.4.2 -> STATE_INIT): start again, or drop the mirror. */
  | { kind: 'changed'; reason: string }
  /** The answer contradicts itself or the request: ProtocolError. */
  | { kind: 'error'; message: string }
  /** The body holds URL bytes from `offset` (`length` of them when stated) for `rows`. */
  | { kind: 'body'; offset: number; length?: number; rows: number[]; adopted: number[] }
  /** multipart/byteranges: parse with these expectations. */
  | { kind: 'multipart'; boundary: string; expected: ByteRange[]; total?: number; rows: number[] }
  /** Nothing usable in the body (a multi-range failure): ask again, now with single ranges. */
  | { kind: 'none' };

/** A write the driver makes: `data[from, from+length)` to aggregate offset `at`, extending row `row`. */
export interface Placement {
  row: number;
  from: number;
  length: number;
  at: number;
}

export interface SegmentProgressRow {
  index: number;
  bytesDone: number;
  totalBytes: number;
  source?: string;
}

/** Bytes of each row re-read before a resume trusts a partial file from a server without validators. */
export const OVERLAP_WINDOW = 64 * 1024;

/** A range to re-read and compare with the partial file (issue 12.7). */
export interface OverlapCheck {
  source: SourceState;
  /** URL offset of the first byte. */
  offset: number;
  length: number;
  /** Where the same bytes are in the partial file. */
  at: number;
}

export interface TableInit {
  appRanges: AppRange[];
  toc: TocRow[];
  sources: SourceState[];
}

/**
 * The Table of Contents with its live state: bytes written per row (ahead of
 * the durable `done`), segments claimed by workers, sources and their flags.
 */
export class DownloadTable {
  readonly appRanges: AppRange[];
  readonly toc: TocRow[];
  readonly sources: SourceState[];
  /** Bytes written (not necessarily durable yet) at the start of each row. */
  readonly written: number[];
  private readonly claimed = new Set<number>();
  private readonly warnings: string[] = [];

  constructor(init: TableInit) {
    this.appRanges = init.appRanges;
    this.toc = init.toc;
    this.sources = init.sources;
    this.written = this.toc.map((r) => r.done);
  }

  /**
   * §3.6.1 a fresh table: APPLICATION_RANGES split into `segments` of at least
   * `minSegment` bytes, each segment's rows given a live source round-robin.
   */
  static plan(appRanges: AppRange[], sources: SourceState[], segments: number, minSegment: number): DownloadTable {
    const starts = planSegments(totalBytes(appRanges), segments, minSegment);
    const live = sources.filter((s) => !s.dropped).map((s) => s.url);
    return new DownloadTable({ appRanges, toc: buildToc(appRanges, starts, live), sources });
  }

  /** Warnings produced since the last call (a source dropped, SINGLE_RANGE_ONLY set, …). */
  takeWarnings(): string[] {
    return this.warnings.splice(0);
  }

  get total(): number {
    return totalBytes(this.appRanges);
  }

  get segmentCount(): number {
    return new Set(this.toc.map((r) => r.segment)).size;
  }

  /** Durable bytes (what the last checkpoint reported). */
  get bytesDone(): number {
    return this.toc.reduce((n, r) => n + r.done, 0);
  }

  get bytesWritten(): number {
    return this.written.reduce((a, b) => a + b, 0);
  }

  liveSources(): SourceState[] {
    return this.sources.filter((s) => !s.dropped);
  }

  // -------------------------------------------------------------------------
  // Segments and sources (§3.6.3)

  /** The next segment with bytes missing that no worker holds. */
  claimSegment(): number | undefined {
    for (let i = 0; i < this.toc.length; i++) {
      const r = this.toc[i]!;
      if (this.written[i]! < r.length && !this.claimed.has(r.segment)) {
        this.claimed.add(r.segment);
        return r.segment;
      }
    }
    return undefined;
  }

  release(segment: number): void {
    this.claimed.delete(segment);
  }

  rowsOfSegment(segment: number): number[] {
    const out: number[] = [];
    this.toc.forEach((r, i) => {
      if (r.segment === segment) out.push(i);
    });
    return out;
  }

  rowsComplete(rows: readonly number[]): boolean {
    return rows.every((i) => this.written[i]! >= this.toc[i]!.length);
  }

  get complete(): boolean {
    return this.toc.every((r, i) => this.written[i]! >= r.length);
  }

  /** Stops using a source; its unfinished rows go to the others, segment by segment. */
  drop(src: SourceState, why: string): void {
    if (src.dropped) return;
    src.dropped = why;
    this.warnings.push(why);
    const live = this.liveSources();
    if (live.length === 0) return;
    this.toc.forEach((r, i) => {
      if (r.source === src.url && this.written[i]! < r.length) r.source = live[r.segment % live.length]!.url;
    });
  }

  /** The source serving a segment now (reassigned when its own was dropped); undefined when none is left. */
  sourceFor(segment: number): SourceState | undefined {
    const live = this.liveSources();
    if (live.length === 0) return undefined;
    const row = this.toc.find((r, i) => r.segment === segment && this.written[i]! < r.length);
    let src = row ? this.sources.find((s) => s.url === row.source && !s.dropped) : undefined;
    if (!src) {
      src = live[segment % live.length]!;
      for (const r of this.toc) if (r.segment === segment) r.source = src.url;
    }
    return src;
  }

  // -------------------------------------------------------------------------
  // §3.6.5.2.4.3/4: what to request next

  /**
   * The next GET of a segment, or undefined when it holds every byte (or no
   * source is left: `sourceFor` says which). `fragmentSize` caps FRAGMENT_LENGTH.
   */
  nextRequest(segment: number, fragmentSize = Infinity, dataLength?: number): FragmentRequest | undefined {
    const win = fragmentWindow(this.toc, segment, (i) => this.written[i]!, fragmentSize);
    if (!win) return undefined;
    const source = this.sourceFor(segment);
    if (!source) return undefined;
    const chosen = chooseRanges(this.appRanges, win.offset, win.length, source.singleRangeOnly);
    const trimmed = capRanges(trimToSingleUrl(chosen.ranges, this.toc).ranges);
    const ranges = coalesceRanges(trimmed);
    if (ranges.length === 0) return undefined;
    const length = source.validators.length ?? dataLength;
    const rangeSent = !source.ignoresRanges && !suppressRangeHeader(ranges, length);
    const headers: Record<string, string> = {};
    if (rangeSent) {
      headers['range'] = formatRangeHeader(ranges.map((r) => ({ first: r.offset, last: r.offset + r.length - 1 })));
      // A resumed range must come from the same version (RFC 7233 §3.2).
      const ir = ifRangeValue(source.validators);
      if (ir) headers['if-range'] = ir;
    }
    return { segment, source, ranges, rows: this.rowsOfSegment(segment), headers, rangeSent };
  }

  // -------------------------------------------------------------------------
  // §3.6.5.2.4.2: validating an answer

  /** What to do with the answer to `req`. `known` adds the origin's validators where the source stated none. */
  judge(req: FragmentRequest, status: number, headers: Record<string, string>, dataLength?: number): FragmentAnswer {
    const kind = answerKind(status);
    if (kind === 'failure') return { kind: 'failure' };
    if (kind === 'unsatisfiable') return { kind: 'changed', reason: 'HTTP 416 for bytes the content had' };
    const src = req.source;
    const length = src.validators.length ?? dataLength;
    const verdict = validateRangeResponse({
      status,
      headers,
      requested: req.ranges,
      rangeSent: req.rangeSent,
      known: { ...src.validators, ...(length !== undefined ? { length } : {}) },
    });
    switch (verdict.kind) {
      case 'changed':
        return { kind: 'changed', reason: verdict.reason };
      case 'error':
        return { kind: 'error', message: verdict.message };
      case 'full': {
        const adopted: number[] = [];
        const rows = [...req.rows];
        if (verdict.ignoredRange) {
          if (!src.ignoresRanges) {
            src.ignoresRanges = true;
            this.warnings.push(`${new URL(src.url).host} ignores Range requests; taking the needed bytes from its full responses`);
          }
          // The whole content is coming anyway: fill the unclaimed segments of this source from it too.
          for (let i = 0; i < this.toc.length; i++) {
            const r = this.toc[i]!;
            if (r.source === src.url && !this.claimed.has(r.segment) && this.written[i]! < r.length) {
              this.claimed.add(r.segment);
              adopted.push(r.segment);
            }
          }
          for (const seg of adopted) rows.push(...this.rowsOfSegment(seg));
        }
        return { kind: 'body', offset: 0, ...(length !== undefined ? { length } : {}), rows, adopted };
      }
      case 'partial':
        return { kind: 'body', offset: verdict.range.first, length: verdict.range.last - verdict.range.first + 1, rows: req.rows, adopted: [] };
      case 'multi-failed':
        this.setSingleRangeOnly(src, verdict.reason);
        if (verdict.usable) {
          const u = verdict.usable;
          return { kind: 'body', offset: u.first, length: u.last - u.first + 1, rows: req.rows, adopted: [] };
        }
        return { kind: 'none' };
      case 'multipart':
        return {
          kind: 'multipart',
          boundary: verdict.boundary,
          expected: req.ranges.map((r) => ({ first: r.offset, last: r.offset + r.length - 1 })),
          ...(length !== undefined ? { total: length } : {}),
          rows: req.rows,
        };
    }
  }

  /** §3.6.5.2.4.2: a multi-range answer failed validation; single ranges from now on. */
  setSingleRangeOnly(src: SourceState, reason: string): void {
    if (src.singleRangeOnly) return;
    src.singleRangeOnly = true;
    this.warnings.push(`${new URL(src.url).host} does not handle multi-range requests (${reason}); using single ranges`);
  }

  /** After an answer carrying the whole content: unfinished adopted segments go back to the pool. */
  releaseAdopted(adopted: readonly number[]): void {
    for (const seg of adopted) if (!this.rowsComplete(this.rowsOfSegment(seg))) this.claimed.delete(seg);
  }

  // -------------------------------------------------------------------------
  // Placing bytes

  /**
   * Where URL bytes [offset, offset+length) go: into every row they extend. A
   * row only ever grows by its next byte, so whatever a server sends (more,
   * less, the whole file, merged ranges) nothing is written out of place, and
   * one URL byte asked twice (overlapping --range entries) lands in both rows.
   * The driver writes each placement and then calls `advance`.
   */
  placements(rows: readonly number[], offset: number, length: number): Placement[] {
    const out: Placement[] = [];
    for (const i of rows) {
      const row = this.toc[i]!;
      const w = this.written[i]!;
      if (w >= row.length) continue;
      const want = row.offset + w;
      if (want < offset || want >= offset + length) continue;
      const from = want - offset;
      out.push({ row: i, from, length: Math.min(length - from, row.length - w), at: row.at + w });
    }
    return out;
  }

  advance(p: Placement): void {
    this.written[p.row] = this.written[p.row]! + p.length;
  }

  /** What `written` is now, to be made durable by a checkpoint. */
  snapshot(): number[] {
    return this.written.slice();
  }

  /** The bytes of `snapshot` are on disk (fsynced): they are now `done`. */
  markDurable(snapshot: readonly number[]): void {
    this.toc.forEach((r, i) => {
      if (snapshot[i] !== undefined) r.done = Math.max(r.done, Math.min(r.length, snapshot[i]!));
    });
  }

  /** Every segment's durable progress, in segment order (events.ts SegmentProgress). */
  segmentProgress(): SegmentProgressRow[] {
    const by = new Map<number, SegmentProgressRow>();
    for (const r of this.toc) {
      let s = by.get(r.segment);
      if (!s) {
        s = { index: r.segment, bytesDone: 0, totalBytes: 0, ...(r.source ? { source: r.source } : {}) };
        by.set(r.segment, s);
      }
      s.bytesDone += r.done;
      s.totalBytes += r.length;
      if (r.done < r.length && r.source) s.source = r.source;
    }
    return [...by.values()].sort((a, b) => a.index - b.index);
  }

  // -------------------------------------------------------------------------
  // Resuming (§3.6.4.2)

  /**
   * Trusts only bytes the checkpoint calls durable AND the partial file holds
   * (`fileSize`); returns the offset the file may be truncated to.
   */
  trustPartial(fileSize: number): number {
    for (const r of this.toc) r.done = Math.max(0, Math.min(r.done, r.length, fileSize - r.at));
    this.resetWritten();
    return this.toc.reduce((m, r) => (r.done > 0 ? Math.max(m, r.at + r.done) : m), 0);
  }

  /**
   * Issue 12.7: a server without ETag or Last-Modified cannot say whether the
   * content changed since the bytes held were fetched; the length alone
   * misses an edit in place. Before trusting them, re-read the last
   * `window` bytes before each segment's resume point and compare.
   */
  overlapChecks(window = OVERLAP_WINDOW): OverlapCheck[] {
    const out: OverlapCheck[] = [];
    const seen = new Set<number>();
    for (const r of this.toc) {
      if (r.done === 0 || seen.has(r.segment)) continue;
      const src = this.sources.find((s) => s.url === r.source && !s.dropped) ?? this.liveSources()[0];
      if (!src || hasValidators(src.validators)) continue;
      // The row holding the segment's resume point: its last partly or fully done row.
      const rows = this.toc.filter((x) => x.segment === r.segment && x.done > 0);
      const last = rows[rows.length - 1]!;
      seen.add(r.segment);
      const length = Math.min(window, last.done);
      out.push({ source: src, offset: last.offset + last.done - length, length, at: last.at + last.done - length });
    }
    return out;
  }

  /** Forgets every byte held (the content changed): nothing is durable, nothing claimed. */
  forgetAll(): void {
    for (const r of this.toc) r.done = 0;
    this.resetWritten();
  }

  private resetWritten(): void {
    this.toc.forEach((r, i) => (this.written[i] = r.done));
    this.claimed.clear();
  }
}
