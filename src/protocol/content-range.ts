/**
 * Byte-range arithmetic shared by the upload protocol (§2.2.6.1 Content-Range,
 * §2.2.7.2 BITS-Received-Content-Range) and downloads (RFC 7233 Range /
 * Content-Range, §3.5/§3.6). Pure: no I/O. Offsets are JavaScript numbers, exact
 * up to 2^53 bytes.
 */

/** An inclusive byte range, as HTTP writes it: first..last. */
export interface ByteRange {
  first: number;
  last: number;
}

export interface ContentRange extends ByteRange {
  /** Complete length of the entity; undefined when the sender wrote `*`. */
  total: number | undefined;
}

const DIGITS = /^\d{1,16}$/;

function toInt(s: string): number | undefined {
  if (!DIGITS.test(s)) return undefined;
  const n = Number(s);
  return Number.isSafeInteger(n) ? n : undefined;
}

export function rangeLength(r: ByteRange): number {
  return r.last - r.first + 1;
}

/**
 * `bytes first-last/total` for a FRAGMENT. An empty range cannot be written in
 * this syntax (`bytes 10-9/10` is invalid, and some servers corrupt the file on
 * it): callers must never send an empty fragment.
 */
export function formatContentRange(first: number, length: number, total: number): string {
  if (!(Number.isSafeInteger(first) && Number.isSafeInteger(length) && Number.isSafeInteger(total))) {
    throw new RangeError('Content-Range values must be safe integers');
  }
  if (length <= 0) throw new RangeError(`empty Content-Range at offset ${first} (bytes ${first}-${first - 1}/${total})`);
  if (first < 0 || first + length > total) throw new RangeError(`Content-Range ${first}+${length} outside 0..${total}`);
  return `bytes ${first}-${first + length - 1}/${total}`;
}

/**
 * Parses `bytes first-last/total` (total may be `*`). Returns undefined for
 * anything else, including the unsatisfied form and inverted ranges (RFC 7233 §4.2).
 */
export function parseContentRange(value: string | null | undefined): ContentRange | undefined {
  if (value == null) return undefined;
  const m = /^\s*bytes\s+(\d+)\s*-\s*(\d+)\s*\/\s*(\d+|\*)\s*$/i.exec(value);
  if (!m) return undefined;
  const first = toInt(m[1]!);
  const last = toInt(m[2]!);
  const total = m[3] === '*' ? undefined : toInt(m[3]!);
  if (first === undefined || last === undefined || (m[3] !== '*' && total === undefined)) return undefined;
  if (last < first) return undefined;
  if (total !== undefined && last >= total) return undefined;
  return { first, last, total };
}

/** The unsatisfied-range form a 416 carries, `bytes <star>/N`: returns N. */
export function parseUnsatisfiedContentRange(value: string | null | undefined): number | undefined {
  if (value == null) return undefined;
  const m = /^\s*bytes\s+\*\s*\/\s*(\d+)\s*$/i.exec(value);
  return m ? toInt(m[1]!) : undefined;
}

/**
 * §2.2.7.2 BITS-Received-Content-Range: the offset of the next byte the server
 * expects (a fragment 128-212 is acknowledged with 213). Undefined if malformed.
 */
export function parseReceivedContentRange(value: string | null | undefined): number | undefined {
  if (value == null) return undefined;
  return toInt(value.trim());
}

export function formatReceivedContentRange(nextOffset: number): string {
  return String(nextOffset);
}

// ---------------------------------------------------------------------------
// RFC 7233 Range requests (the download server of §3.5 and client of §3.6).

/** One byte-range-spec as requested, before it is resolved against a length. */
export type RangeSpec =
  | { kind: 'from'; first: number; last?: number } // `first-` or `first-last`
  | { kind: 'suffix'; length: number }; // `-length`

/** Parses a `Range: bytes=…` header. Undefined when it is not a valid byte-ranges-specifier. */
export function parseRangeHeader(value: string | null | undefined, maxRanges = 100): RangeSpec[] | undefined {
  if (value == null) return undefined;
  const m = /^\s*bytes\s*=\s*(.+)$/i.exec(value);
  if (!m) return undefined;
  const specs: RangeSpec[] = [];
  for (const raw of m[1]!.split(',')) {
    const part = raw.trim();
    if (part === '') continue; // RFC 7230 #rule allows empty list elements
    const pm = /^(\d*)\s*-\s*(\d*)$/.exec(part);
    if (!pm) return undefined;
    const [, a, b] = pm;
    if (a === '' && b === '') return undefined;
    if (a === '') {
      const length = toInt(b!);
      if (length === undefined) return undefined;
      specs.push({ kind: 'suffix', length });
    } else {
      const first = toInt(a!);
      const last = b === '' ? undefined : toInt(b!);
      if (first === undefined || (b !== '' && last === undefined)) return undefined;
      if (last !== undefined && last < first) return undefined;
      specs.push(last === undefined ? { kind: 'from', first } : { kind: 'from', first, last });
    }
    if (specs.length > maxRanges) return undefined;
  }
  return specs.length > 0 ? specs : undefined;
}

/**
 * Resolves requested specs against the entity length (RFC 7233 §2.1): drops
 * unsatisfiable specs, clamps `last` to length-1. An empty result means 416.
 * Order is kept: §3.5.5.1 forbids merging or reordering.
 */
export function resolveRanges(specs: RangeSpec[], length: number): ByteRange[] {
  const out: ByteRange[] = [];
  for (const s of specs) {
    if (s.kind === 'suffix') {
      if (s.length === 0 || length === 0) continue;
      out.push({ first: Math.max(0, length - s.length), last: length - 1 });
    } else {
      if (s.first >= length) continue;
      out.push({ first: s.first, last: Math.min(s.last ?? length - 1, length - 1) });
    }
  }
  return out;
}

/** `bytes=0-99,1000-1099` for a client request. */
export function formatRangeHeader(ranges: readonly ByteRange[]): string {
  if (ranges.length === 0) throw new RangeError('no ranges');
  return `bytes=${ranges.map((r) => `${r.first}-${r.last}`).join(',')}`;
}

/** `bytes first-last/total` for a 206 response. */
export function formatResponseContentRange(r: ByteRange, total: number): string {
  return `bytes ${r.first}-${r.last}/${total}`;
}

/**
 * Parses an application range list as users type it: `0-99,1000-1099,5000-`.
 * Open-ended and suffix forms are allowed; resolve them with resolveRanges.
 */
export function parseRangeList(value: string): RangeSpec[] | undefined {
  return parseRangeHeader(`bytes=${value}`);
}
