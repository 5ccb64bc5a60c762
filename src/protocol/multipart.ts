/**
 * Incremental parser for multipart/byteranges (RFC 7233 appendix A, RFC 2616
 * §19.2), the answer to a multi-range GET (§3.6.5.2.4.2). Pure: fed Buffer
 * chunks of any size (one byte at a time works), it returns events; body bytes
 * are emitted as slices of the input, never buffered, so a part of any size
 * streams straight to disk.
 *
 * Every part must carry a Content-Range, which gives its exact length: the body
 * is read by count rather than by scanning for the boundary, and the delimiter
 * is then required right after it. That is both faster and stricter (a part
 * whose length disagrees with its Content-Range is caught). Each Content-Range
 * is checked against the range asked for at that position, because §3.5.5.1
 * requires ranges in request order with no merging.
 */
import { parseContentRange, type ByteRange, type ContentRange } from './content-range.js';

export type MultipartEvent =
  | { type: 'part'; index: number; headers: Record<string, string>; range: ContentRange }
  /** `offset` is the URL offset of data[0]. */
  | { type: 'data'; index: number; offset: number; data: Buffer }
  | { type: 'partEnd'; index: number }
  | { type: 'end'; parts: number };

export class MultipartError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'MultipartError';
  }
}

export interface MultipartOptions {
  boundary: string;
  /** The ranges requested, in order; part i must equal expected[i]. */
  expected?: readonly ByteRange[];
  /** The known complete length; every part's total must equal it. */
  total?: number;
  /** Limit on preamble and on each part's header block. */
  maxHeaderBytes?: number;
}

/** The boundary parameter of `multipart/byteranges; boundary=…`, or undefined. */
export function parseByterangesBoundary(contentType: string | undefined): string | undefined {
  if (!contentType) return undefined;
  const m = /^\s*multipart\/byteranges\s*;(.*)$/i.exec(contentType);
  if (!m) return undefined;
  const p = /(?:^|;)\s*boundary\s*=\s*(?:"((?:[^"\\]|\\.){1,200})"|([^;\s"]{1,200}))/i.exec(m[1]!);
  if (!p) return undefined;
  const b = p[1] !== undefined ? p[1].replace(/\\(.)/g, '$1') : p[2]!;
  // RFC 2046 §5.1.1: 1-70 characters, not ending in a space.
  if (b.length < 1 || b.length > 70 || b.endsWith(' ')) return undefined;
  return b;
}

type State = 'preamble' | 'afterDelimiter' | 'headers' | 'body' | 'delimiter' | 'epilogue';

const CRLF = Buffer.from('\r\n');
const CRLFCRLF = Buffer.from('\r\n\r\n');

export class ByterangesParser {
  private state: State = 'preamble';
  /** Bytes of the current non-body element not yet consumed. */
  private pending: Buffer = Buffer.from('\r\n');
  private readonly delimiter: Buffer;
  private readonly maxHeaderBytes: number;
  private index = -1;
  private partOffset = 0;
  private partRemaining = 0;
  private preambleSeen = 0;

  constructor(private readonly opts: MultipartOptions) {
    this.delimiter = Buffer.from(`\r\n--${opts.boundary}`, 'latin1');
    this.maxHeaderBytes = opts.maxHeaderBytes ?? 16 * 1024;
  }

  get done(): boolean {
    return this.state === 'epilogue';
  }

  /** Parses one chunk; throws MultipartError on malformed or unexpected input. */
  feed(chunk: Buffer): MultipartEvent[] {
    const out: MultipartEvent[] = [];
    let buf = chunk;
    while (buf.length > 0) {
      if (this.state === 'body') {
        const n = Math.min(this.partRemaining, buf.length);
        out.push({ type: 'data', index: this.index, offset: this.partOffset, data: buf.subarray(0, n) });
        this.partOffset += n;
        this.partRemaining -= n;
        buf = buf.subarray(n);
        if (this.partRemaining === 0) {
          out.push({ type: 'partEnd', index: this.index });
          this.state = 'delimiter';
        }
        continue;
      }
      if (this.state === 'epilogue') break; // RFC 2046: the epilogue is ignored
      // Non-body states work on `pending` so a token split across chunks is seen whole.
      this.pending = this.pending.length === 0 ? buf : Buffer.concat([this.pending, buf]);
      buf = Buffer.alloc(0);
      const rest = this.step(out);
      if (rest !== undefined) {
        buf = rest;
        this.pending = Buffer.alloc(0);
      } else {
        // Waiting for more input. `pending` may be the caller's buffer: copy what we keep.
        this.pending = Buffer.from(this.pending);
      }
    }
    return out;
  }

  /** Call at end of input: throws unless the close delimiter was seen. */
  finish(): MultipartEvent[] {
    if (this.state !== 'epilogue') {
      throw new MultipartError(
        this.state === 'body'
          ? `multipart body ended inside part ${this.index + 1} (${this.partRemaining} bytes missing)`
          : 'multipart body ended before its closing boundary',
      );
    }
    return [];
  }

  /**
   * Advances through `pending` in a non-body state. Returns the unconsumed
   * remainder when it moved on to a state that consumes input directly, or
   * undefined when it needs more bytes.
   */
  private step(out: MultipartEvent[]): Buffer | undefined {
    for (;;) {
      const p = this.pending;
      switch (this.state) {
        case 'preamble': {
          // `pending` starts with a virtual CRLF, so a body opening directly with
          // the dash-boundary and one with a preamble look the same.
          const i = p.indexOf(this.delimiter);
          if (i < 0) {
            const keep = Math.min(p.length, this.delimiter.length - 1);
            this.preambleSeen += p.length - keep;
            if (this.preambleSeen > this.maxHeaderBytes) throw new MultipartError('no multipart boundary found');
            this.pending = p.subarray(p.length - keep);
            return undefined;
          }
          this.pending = p.subarray(i + this.delimiter.length);
          this.state = 'afterDelimiter';
          continue;
        }
        case 'delimiter': {
          if (p.length < this.delimiter.length) {
            if (!this.delimiter.subarray(0, p.length).equals(p)) throw this.badDelimiter();
            return undefined;
          }
          if (!p.subarray(0, this.delimiter.length).equals(this.delimiter)) throw this.badDelimiter();
          this.pending = p.subarray(this.delimiter.length);
          this.state = 'afterDelimiter';
          continue;
        }
        case 'afterDelimiter': {
          // `--` closes; otherwise optional transport padding (LWSP) then CRLF.
          if (p.length < 2) return undefined;
          if (p[0] === 0x2d && p[1] === 0x2d) {
            this.checkAllPartsSeen();
            this.state = 'epilogue';
            out.push({ type: 'end', parts: this.index + 1 });
            this.pending = Buffer.alloc(0);
            return Buffer.alloc(0);
          }
          const i = p.indexOf(CRLF);
          if (i < 0) {
            if (p.length > 256) throw new MultipartError('malformed multipart boundary line');
            return undefined;
          }
          if (!/^[ \t]*$/.test(p.subarray(0, i).toString('latin1'))) throw new MultipartError('malformed multipart boundary line');
          this.pending = p.subarray(i + 2);
          this.state = 'headers';
          continue;
        }
        case 'headers': {
          // A part with no headers starts with the blank line directly.
          let end: number;
          let bodyStart: number;
          if (p.length >= 2 && p[0] === 0x0d && p[1] === 0x0a) {
            end = 0;
            bodyStart = 2;
          } else {
            const i = p.indexOf(CRLFCRLF);
            if (i < 0) {
              if (p.length > this.maxHeaderBytes) throw new MultipartError('multipart part headers too large');
              return undefined;
            }
            end = i;
            bodyStart = i + 4;
          }
          this.startPart(p.subarray(0, end).toString('latin1'), out);
          return p.subarray(bodyStart);
        }
        default:
          return Buffer.alloc(0);
      }
    }
  }

  private startPart(block: string, out: MultipartEvent[]): void {
    const headers: Record<string, string> = {};
    if (block.length > 0) {
      for (const line of block.split('\r\n')) {
        const c = line.indexOf(':');
        if (c <= 0) throw new MultipartError(`malformed multipart part header: ${JSON.stringify(line.slice(0, 80))}`);
        headers[line.slice(0, c).trim().toLowerCase()] = line.slice(c + 1).trim();
      }
    }
    const index = this.index + 1;
    const range = parseContentRange(headers['content-range']);
    if (!range) throw new MultipartError(`multipart part ${index + 1} has no valid Content-Range`);
    const want = this.opts.expected;
    if (want) {
      const w = want[index];
      if (!w) throw new MultipartError(`multipart response has more parts than the ${want.length} ranges requested`);
      if (w.first !== range.first || w.last !== range.last) {
        throw new MultipartError(`multipart part ${index + 1} is bytes ${range.first}-${range.last}, requested ${w.first}-${w.last}`);
      }
    }
    if (this.opts.total !== undefined && range.total !== undefined && range.total !== this.opts.total) {
      throw new MultipartError(`multipart part ${index + 1} gives length ${range.total}, expected ${this.opts.total}`);
    }
    this.index = index;
    this.partOffset = range.first;
    this.partRemaining = range.last - range.first + 1;
    this.state = 'body';
    out.push({ type: 'part', index, headers, range });
  }

  private checkAllPartsSeen(): void {
    const want = this.opts.expected;
    if (this.index < 0) throw new MultipartError('multipart response has no parts');
    if (want && this.index + 1 !== want.length) {
      throw new MultipartError(`multipart response has ${this.index + 1} parts, ${want.length} ranges were requested`);
    }
  }

  private badDelimiter(): MultipartError {
    return new MultipartError(`multipart part ${this.index + 1} is not followed by its boundary (length differs from its Content-Range?)`);
  }
}
