import { describe, expect, it } from 'vitest';
import { ByterangesParser, MultipartError, parseByterangesBoundary, type MultipartEvent } from '../../src/protocol/multipart.js';

const content = Buffer.from(Array.from({ length: 2000 }, (_, i) => (i * 7 + 3) & 0xff));

function build(boundary: string, ranges: [number, number][], total = content.length, opts: { preamble?: string; epilogue?: string } = {}): Buffer {
  const parts: Buffer[] = [];
  if (opts.preamble) parts.push(Buffer.from(opts.preamble + '\r\n'));
  for (const [a, b] of ranges) {
    parts.push(Buffer.from(`--${boundary}\r\nContent-Type: application/octet-stream\r\nContent-Range: bytes ${a}-${b}/${total}\r\n\r\n`));
    parts.push(content.subarray(a, b + 1));
    parts.push(Buffer.from('\r\n'));
  }
  parts.push(Buffer.from(`--${boundary}--\r\n${opts.epilogue ?? ''}`));
  return Buffer.concat(parts);
}

/** Feeds `body` split at the given points; returns the bytes per part. */
function run(p: ByterangesParser, body: Buffer, cuts: number[]): { parts: Buffer[]; events: MultipartEvent[] } {
  const events: MultipartEvent[] = [];
  let prev = 0;
  for (const c of [...cuts, body.length]) {
    events.push(...p.feed(body.subarray(prev, c)));
    prev = c;
  }
  events.push(...p.finish());
  const parts: Buffer[] = [];
  for (const e of events) {
    if (e.type === 'part') parts[e.index] = Buffer.alloc(0);
    if (e.type === 'data') {
      const part = events.find((x) => x.type === 'part' && x.index === e.index) as Extract<MultipartEvent, { type: 'part' }>;
      expect(e.offset).toBe(part.range.first + parts[e.index]!.length);
      parts[e.index] = Buffer.concat([parts[e.index]!, e.data]);
    }
  }
  return { parts, events };
}

const RANGES: [number, number][] = [[125, 199], [1000, 1099], [200, 224]];
const expected = RANGES.map(([a, b]) => ({ first: a, last: b }));

describe('multipart/byteranges parser', () => {
  it('parses the boundary parameter', () => {
    expect(parseByterangesBoundary('multipart/byteranges; boundary=THIS_STRING')).toBe('THIS_STRING');
    expect(parseByterangesBoundary('multipart/byteranges; charset=x; boundary="a b:c"')).toBe('a b:c');
    expect(parseByterangesBoundary('multipart/byteranges')).toBeUndefined();
    expect(parseByterangesBoundary('multipart/mixed; boundary=x')).toBeUndefined();
    expect(parseByterangesBoundary(`multipart/byteranges; boundary=${'x'.repeat(71)}`)).toBeUndefined();
  });

  it('yields the same parts when split at every byte boundary', () => {
    const body = build('B0UND', RANGES, content.length, { preamble: 'ignored preamble', epilogue: 'ignored epilogue' });
    for (let cut = 0; cut <= body.length; cut++) {
      const { parts, events } = run(new ByterangesParser({ boundary: 'B0UND', expected, total: content.length }), body, [cut]);
      expect(parts.map((p) => p.toString('hex'))).toEqual(RANGES.map(([a, b]) => content.subarray(a, b + 1).toString('hex')));
      expect(events.at(-1)).toEqual({ type: 'end', parts: 3 });
    }
  });

  it('works fed one byte at a time, and with the boundary string inside a body', () => {
    // Body bytes that contain the delimiter text must not confuse a length-based reader.
    const boundary = 'XYZ';
    const trap = Buffer.from('\r\n--XYZ--\r\n');
    const data = Buffer.concat([trap, Buffer.alloc(5, 1)]);
    const body = Buffer.concat([
      Buffer.from(`--${boundary}\r\nContent-Range: bytes 0-${data.length - 1}/${data.length}\r\n\r\n`),
      data,
      Buffer.from(`\r\n--${boundary}--`),
    ]);
    const cuts = Array.from({ length: body.length - 1 }, (_, i) => i + 1);
    const p = new ByterangesParser({ boundary, expected: [{ first: 0, last: data.length - 1 }] });
    const events: MultipartEvent[] = [];
    let prev = 0;
    for (const c of [...cuts, body.length]) {
      events.push(...p.feed(body.subarray(prev, c)));
      prev = c;
    }
    p.finish();
    const got = Buffer.concat(events.flatMap((e) => (e.type === 'data' ? [e.data] : [])));
    expect(got.equals(data)).toBe(true);
  });

  it('rejects a wrong boundary', () => {
    const body = build('RIGHT', RANGES);
    const p = new ByterangesParser({ boundary: 'WRONG', expected, maxHeaderBytes: 256 });
    expect(() => {
      p.feed(body);
      p.finish();
    }).toThrow(MultipartError);
  });

  it('rejects a part whose Content-Range is not what was asked', () => {
    const body = build('B', [[125, 199], [1000, 1098], [200, 224]]);
    expect(() => new ByterangesParser({ boundary: 'B', expected }).feed(body)).toThrow(/part 2 is bytes 1000-1098, requested 1000-1099/);
    const reordered = build('B', [[125, 199], [200, 224], [1000, 1099]]);
    expect(() => new ByterangesParser({ boundary: 'B', expected }).feed(reordered)).toThrow(MultipartError);
  });

  it('rejects a wrong total length, missing parts, extra parts, no Content-Range', () => {
    expect(() => new ByterangesParser({ boundary: 'B', expected, total: 5000 }).feed(build('B', RANGES))).toThrow(/length 2000, expected 5000/);
    expect(() => new ByterangesParser({ boundary: 'B', expected }).feed(build('B', RANGES.slice(0, 2)))).toThrow(/2 parts, 3 ranges/);
    expect(() => new ByterangesParser({ boundary: 'B', expected: expected.slice(0, 2) }).feed(build('B', RANGES))).toThrow(/more parts/);
    const noCr = Buffer.from('--B\r\nContent-Type: text/plain\r\n\r\nabc\r\n--B--');
    expect(() => new ByterangesParser({ boundary: 'B' }).feed(noCr)).toThrow(/no valid Content-Range/);
  });

  it('rejects a part longer than its Content-Range and a truncated body', () => {
    const long = Buffer.from('--B\r\nContent-Range: bytes 0-2/10\r\n\r\nabcd\r\n--B--');
    expect(() => new ByterangesParser({ boundary: 'B' }).feed(long)).toThrow(/not followed by its boundary/);
    const body = build('B', RANGES);
    const p = new ByterangesParser({ boundary: 'B', expected });
    p.feed(body.subarray(0, body.length - 20));
    expect(() => p.finish()).toThrow(MultipartError);
  });
});
