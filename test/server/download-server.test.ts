/**
 * The §3.5 range download server, end to end: the real startServer on
 * 127.0.0.1, real files in a temp dir, node:http as the client (it sends the
 * request-target exactly as given, so traversal attempts reach the server).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import http from 'node:http';
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { createWriteStream } from 'node:fs';
import { appendFile, mkdir, mkdtemp, readdir, rm, symlink, truncate, utimes, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { startServer, type RunningServer } from '../../src/server/index.js';
import {
  ifRangeMatches,
  isPrivatePath,
  makeEtag,
  notModified,
  planMultipart,
} from '../../src/server/download-server.js';

interface Reply {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
}

let tmp: string;
let root: string;
let server: RunningServer;
const logLines: string[] = [];
const DATA = randomBytes(100_000);
const BIG = 64 * 1024 * 1024;
let bigSha = '';

function sha256(b: Buffer): string {
  return createHash('sha256').update(b).digest('hex');
}

function send(method: string, target: string, headers: Record<string, string> = {}): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port: server.port, method, path: target, headers, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body: Buffer.concat(chunks) }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end();
  });
}

const get = (target: string, headers?: Record<string, string>) => send('GET', target, headers);

/** Writes `size` pseudo-random bytes without holding them in memory; returns the sha256. */
async function writeBigFile(file: string, size: number): Promise<string> {
  const block = randomBytes(1024 * 1024);
  const hash = createHash('sha256');
  const out = createWriteStream(file);
  for (let written = 0; written < size; written += block.length) {
    // Vary each block so a server that repeated or reordered blocks would be caught.
    block.writeUInt32BE(written / block.length, 0);
    const piece = block.subarray(0, Math.min(block.length, size - written));
    hash.update(piece);
    if (!out.write(piece)) await once(out, 'drain');
  }
  out.end();
  await once(out, 'close');
  return hash.digest('hex');
}

/**
 * Parses a multipart/byteranges body strictly: each part's length comes from
 * its Content-Range, and the bytes after it must be exactly the next delimiter.
 */
function parseMultipart(body: Buffer, contentType: string): Array<{ first: number; last: number; total: number; type: string; data: Buffer }> {
  const m = /^multipart\/byteranges;\s*boundary=("?)([^";]+)\1$/.exec(contentType);
  if (!m) throw new Error(`not multipart/byteranges: ${contentType}`);
  const boundary = m[2]!;
  const parts: Array<{ first: number; last: number; total: number; type: string; data: Buffer }> = [];
  let pos = 0;
  const expect = (s: string) => {
    const got = body.subarray(pos, pos + s.length).toString('latin1');
    if (got !== s) throw new Error(`at ${pos}: expected ${JSON.stringify(s)}, got ${JSON.stringify(got)}`);
    pos += s.length;
  };
  if (body.subarray(0, 2).toString('latin1') === '\r\n') pos = 2;
  for (;;) {
    expect(`--${boundary}`);
    if (body.subarray(pos, pos + 2).toString('latin1') === '--') {
      pos += 2;
      expect('\r\n');
      if (pos !== body.length) throw new Error(`${body.length - pos} bytes after the close delimiter`);
      return parts;
    }
    expect('\r\n');
    const headEnd = body.indexOf('\r\n\r\n', pos, 'latin1');
    const head = body.subarray(pos, headEnd).toString('latin1');
    pos = headEnd + 4;
    const fields = Object.fromEntries(
      head.split('\r\n').map((l) => [l.slice(0, l.indexOf(':')).toLowerCase(), l.slice(l.indexOf(':') + 1).trim()]),
    );
    const cr = /^bytes (\d+)-(\d+)\/(\d+)$/.exec(fields['content-range'] ?? '');
    if (!cr) throw new Error(`bad part Content-Range: ${head}`);
    const [first, last, total] = [Number(cr[1]), Number(cr[2]), Number(cr[3])];
    parts.push({ first, last, total, type: fields['content-type'] ?? '', data: body.subarray(pos, pos + last - first + 1) });
    pos += last - first + 1;
    expect('\r\n');
  }
}

beforeAll(async () => {
  tmp = await mkdtemp(path.join(os.tmpdir(), 'bits-dl-'));
  root = path.join(tmp, 'root');
  await mkdir(path.join(root, 'sub', 'deeper'), { recursive: true });
  await mkdir(path.join(root, 'up', 'BITS-Sessions', 'Requests', '{GUID}'), { recursive: true });
  await mkdir(path.join(root, 'up', 'BITS-Sessions', 'Replies', '{GUID}'), { recursive: true });
  await writeFile(path.join(root, 'data.bin'), DATA);
  await writeFile(path.join(root, 'empty.bin'), Buffer.alloc(0));
  await writeFile(path.join(root, 'sub', 'a b.txt'), 'spaced name');
  await writeFile(path.join(root, 'up', 'BITS-Sessions', 'Requests', '{GUID}', 'state.json'), '{"secret":1}');
  await writeFile(path.join(root, 'up', 'BITS-Sessions', 'Replies', '{GUID}', 'responsefile.bin'), 'the reply');
  await writeFile(path.join(tmp, 'outside.txt'), 'TOP SECRET');
  await symlink(path.join(tmp, 'outside.txt'), path.join(root, 'link-out'));
  await symlink(tmp, path.join(root, 'dir-link-out'));
  await symlink(path.join(root, 'data.bin'), path.join(root, 'link-in'));
  await symlink(path.join(root, 'up', 'BITS-Sessions', 'Requests'), path.join(root, 'sneaky'));
  bigSha = await writeBigFile(path.join(root, 'big.bin'), BIG);
  server = await startServer({ root, log: (l) => logLines.push(l) });
});

afterAll(async () => {
  await server?.close();
  if (tmp) await rm(tmp, { recursive: true, force: true });
});

describe('full GET and HEAD', () => {
  it('serves the whole file with validators and the §3.5.5 headers', async () => {
    const r = await get('/data.bin');
    expect(r.status).toBe(200);
    expect(sha256(r.body)).toBe(sha256(DATA));
    expect(r.headers['content-length']).toBe(String(DATA.length));
    expect(r.headers['accept-ranges']).toBe('bytes');
    expect(r.headers['content-type']).toBe('application/octet-stream');
    expect(r.headers['etag']).toMatch(/^"[0-9a-f]+-[0-9a-f]+-[0-9a-f]+"$/);
    expect(Date.parse(r.headers['last-modified']!)).not.toBeNaN();
    expect(logLines).toContain(`GET /data.bin 200 ${DATA.length}`);
  });

  it('HEAD carries the same headers as GET and no body', async () => {
    const g = await get('/data.bin');
    const h = await send('HEAD', '/data.bin');
    expect(h.status).toBe(200);
    expect(h.body.length).toBe(0);
    const strip = (x: http.IncomingHttpHeaders) => {
      const { date: _d, connection: _c, 'keep-alive': _k, ...rest } = x;
      return rest;
    };
    expect(strip(h.headers)).toEqual(strip(g.headers));
  });

  it('HEAD with a Range answers like the ranged GET (§3.5.5.2)', async () => {
    const g = await get('/data.bin', { Range: 'bytes=10-19' });
    const h = await send('HEAD', '/data.bin', { Range: 'bytes=10-19' });
    expect(h.status).toBe(206);
    expect(h.headers['content-range']).toBe(g.headers['content-range']);
    expect(h.headers['content-length']).toBe('10');
    expect(h.body.length).toBe(0);
  });

  it('serves a percent-encoded name', async () => {
    const r = await get('/sub/a%20b.txt');
    expect(r.status).toBe(200);
    expect(r.body.toString()).toBe('spaced name');
  });

  it('serves a 0-byte file, ignoring Range on it', async () => {
    const r = await get('/empty.bin');
    expect(r.status).toBe(200);
    expect(r.headers['content-length']).toBe('0');
    expect(r.body.length).toBe(0);
    const ranged = await get('/empty.bin', { Range: 'bytes=0-' });
    expect(ranged.status).toBe(200);
    expect(ranged.headers['content-length']).toBe('0');
  });
});

describe('single ranges', () => {
  it('first-last -> 206 with Content-Range', async () => {
    const r = await get('/data.bin', { Range: 'bytes=100-199' });
    expect(r.status).toBe(206);
    expect(r.headers['content-range']).toBe(`bytes 100-199/${DATA.length}`);
    expect(r.headers['content-length']).toBe('100');
    expect(r.body.equals(DATA.subarray(100, 200))).toBe(true);
  });

  it('suffix range -N -> the last N bytes', async () => {
    const r = await get('/data.bin', { Range: 'bytes=-500' });
    expect(r.status).toBe(206);
    expect(r.headers['content-range']).toBe(`bytes ${DATA.length - 500}-${DATA.length - 1}/${DATA.length}`);
    expect(r.body.equals(DATA.subarray(DATA.length - 500))).toBe(true);
  });

  it('suffix longer than the file -> the whole file as 206', async () => {
    const r = await get('/data.bin', { Range: 'bytes=-999999' });
    expect(r.status).toBe(206);
    expect(r.headers['content-range']).toBe(`bytes 0-${DATA.length - 1}/${DATA.length}`);
    expect(r.body.equals(DATA)).toBe(true);
  });

  it('open range first- -> to the end; last beyond the end is clamped', async () => {
    const r = await get('/data.bin', { Range: 'bytes=99000-' });
    expect(r.status).toBe(206);
    expect(r.headers['content-range']).toBe(`bytes 99000-99999/100000`);
    expect(r.body.equals(DATA.subarray(99000))).toBe(true);
    const c = await get('/data.bin', { Range: 'bytes=99990-200000' });
    expect(c.headers['content-range']).toBe(`bytes 99990-99999/100000`);
    expect(c.body.equals(DATA.subarray(99990))).toBe(true);
  });

  it('unsatisfiable -> 416 with bytes */LEN', async () => {
    const r = await get('/data.bin', { Range: 'bytes=100000-' });
    expect(r.status).toBe(416);
    expect(r.headers['content-range']).toBe(`bytes */${DATA.length}`);
    expect(r.body.length).toBe(0);
    const z = await get('/data.bin', { Range: 'bytes=-0' });
    expect(z.status).toBe(416);
  });

  it.each(['bytes=abc', 'bytes=5-2', 'items=0-5', 'bytes=', 'bytes=--5', '0-5'])('invalid Range %j is ignored (200 full)', async (range) => {
    const r = await get('/data.bin', { Range: range });
    expect(r.status).toBe(200);
    expect(r.headers['content-range']).toBeUndefined();
    expect(r.body.equals(DATA)).toBe(true);
  });

  it('more than 100 ranges -> ignored, 200 full', async () => {
    const many = Array.from({ length: 101 }, (_, i) => `${i}-${i}`).join(',');
    const r = await get('/data.bin', { Range: `bytes=${many}` });
    expect(r.status).toBe(200);
    expect(r.body.equals(DATA)).toBe(true);
  });
});

describe('multiple ranges (multipart/byteranges)', () => {
  async function checkMulti(spec: string, expected: Array<[number, number]>): Promise<void> {
    const r = await get('/data.bin', { Range: `bytes=${spec}` });
    expect(r.status).toBe(206);
    expect(r.headers['content-range']).toBeUndefined();
    expect(Number(r.headers['content-length'])).toBe(r.body.length);
    const parts = parseMultipart(r.body, r.headers['content-type']!);
    expect(parts.map((p) => [p.first, p.last])).toEqual(expected);
    for (const p of parts) {
      expect(p.total).toBe(DATA.length);
      expect(p.type).toBe('application/octet-stream');
      expect(p.data.equals(DATA.subarray(p.first, p.last + 1))).toBe(true);
    }
  }

  it('returns the parts in request order', async () => {
    await checkMulti('0-9,500-599,99990-', [
      [0, 9],
      [500, 599],
      [99990, 99999],
    ]);
  });

  it('keeps the order asked (§3.5.5.1) but merges neighbours that overlap or touch (issue 17)', async () => {
    await checkMulti('5000-5999,0-99,50-149,150-199,5000-5999,-10', [
      [5000, 5999],
      [0, 199],
      [5000, 5999],
      [99990, 99999],
    ]);
  });

  it('100 overlapping ranges are answered with no more than the file: 200 with the whole file', async () => {
    const specs = [
      Array(100).fill('0-').join(','),
      Array.from({ length: 100 }, (_, i) => (i % 2 ? '0-60000' : '40000-')).join(','),
      // Neighbours that do not touch: nothing merges, the sum is 50 × 10,010 bytes.
      Array.from({ length: 100 }, (_, i) => (i % 2 ? '50000-59999' : '0-9')).join(','),
    ];
    for (const spec of specs) {
      const r = await get('/data.bin', { Range: `bytes=${spec}` });
      expect(r.body.length).toBeLessThanOrEqual(DATA.length);
      expect(Number(r.headers['content-length'])).toBeLessThanOrEqual(DATA.length);
      expect(r.status).toBe(200);
      expect(r.body.equals(DATA)).toBe(true);
    }
  });

  it('drops unsatisfiable ranges but keeps multipart when several were asked', async () => {
    await checkMulti('200000-,10-19', [[10, 19]]);
  });

  it('all ranges unsatisfiable -> 416', async () => {
    const r = await get('/data.bin', { Range: 'bytes=100000-100010,200000-' });
    expect(r.status).toBe(416);
    expect(r.headers['content-range']).toBe(`bytes */${DATA.length}`);
  });

  it('HEAD declares the exact multipart length', async () => {
    const h = await send('HEAD', '/data.bin', { Range: 'bytes=0-9,20-29' });
    const g = await get('/data.bin', { Range: 'bytes=0-9,20-29' });
    expect(h.status).toBe(206);
    // Boundaries are random per response but of fixed length.
    expect(h.headers['content-length']).toBe(g.headers['content-length']);
    expect(h.headers['content-type']).toMatch(/^multipart\/byteranges; boundary=[0-9a-f]{32}$/);
  });
});

describe('validators', () => {
  it('If-Range with the current ETag or date applies the range; otherwise 200 full', async () => {
    const full = await get('/data.bin');
    const etag = full.headers['etag']!;
    const lm = full.headers['last-modified']!;
    expect((await get('/data.bin', { Range: 'bytes=0-9', 'If-Range': etag })).status).toBe(206);
    expect((await get('/data.bin', { Range: 'bytes=0-9', 'If-Range': lm })).status).toBe(206);
    const stale = await get('/data.bin', { Range: 'bytes=0-9', 'If-Range': '"other"' });
    expect(stale.status).toBe(200);
    expect(stale.body.equals(DATA)).toBe(true);
    expect((await get('/data.bin', { Range: 'bytes=0-9', 'If-Range': `W/${etag}` })).status).toBe(200);
    expect((await get('/data.bin', { Range: 'bytes=0-9', 'If-Range': 'Thu, 01 Jan 1998 00:00:00 GMT' })).status).toBe(200);
  });

  it('If-None-Match / If-Modified-Since -> 304 without a body', async () => {
    const full = await get('/data.bin');
    const inm = await get('/data.bin', { 'If-None-Match': `"x", ${full.headers['etag']}` });
    expect(inm.status).toBe(304);
    expect(inm.body.length).toBe(0);
    expect(inm.headers['etag']).toBe(full.headers['etag']);
    expect((await get('/data.bin', { 'If-Modified-Since': full.headers['last-modified']! })).status).toBe(304);
    expect((await get('/data.bin', { 'If-None-Match': '"nope"' })).status).toBe(200);
    expect((await get('/data.bin', { 'If-Modified-Since': 'Thu, 01 Jan 1998 00:00:00 GMT' })).status).toBe(200);
  });

  it('ETag and Last-Modified change when the file does', async () => {
    const file = path.join(root, 'changing.bin');
    await writeFile(file, 'one');
    await utimes(file, 1_000_000, 1_000_000);
    const a = await get('/changing.bin');
    expect(a.headers['last-modified']).toBe(new Date(1_000_000_000).toUTCString());
    await writeFile(file, 'two');
    await utimes(file, 1_000_001, 1_000_001);
    const b = await get('/changing.bin');
    expect(b.headers['etag']).not.toBe(a.headers['etag']);
    expect(b.headers['last-modified']).not.toBe(a.headers['last-modified']);
    expect((await get('/changing.bin', { Range: 'bytes=0-0', 'If-Range': a.headers['etag']! })).status).toBe(200);
  });
});

describe('large files stream', () => {
  it('serves 64 MiB byte-exact without buffering it', async () => {
    const before = process.memoryUsage().arrayBuffers;
    let peak = 0;
    const hash = createHash('sha256');
    let received = 0;
    await new Promise<void>((resolve, reject) => {
      const req = http.get({ host: '127.0.0.1', port: server.port, path: '/big.bin', agent: false }, (res) => {
        expect(res.headers['content-length']).toBe(String(BIG));
        res.once('data', (c: Buffer) => {
          hash.update(c);
          received += c.length;
          // A slow reader: a server that buffered the file would now hold all of it.
          res.pause();
          setTimeout(() => {
            peak = process.memoryUsage().arrayBuffers - before;
            res.on('data', (d: Buffer) => {
              hash.update(d);
              received += d.length;
            });
            res.resume();
          }, 300);
        });
        res.on('end', resolve);
        res.on('error', reject);
      });
      req.on('error', reject);
    });
    expect(received).toBe(BIG);
    expect(hash.digest('hex')).toBe(bigSha);
    expect(peak).toBeLessThan(32 * 1024 * 1024);
  });

  it('ranges near the end of a large file', async () => {
    const r = await get('/big.bin', { Range: `bytes=${BIG - 10}-,0-3` });
    const parts = parseMultipart(r.body, r.headers['content-type']!);
    expect(parts.map((p) => [p.first, p.last, p.total])).toEqual([
      [BIG - 10, BIG - 1, BIG],
      [0, 3, BIG],
    ]);
    expect(parts[1]!.data.readUInt32BE(0)).toBe(0); // block number written by writeBigFile
  });

  /** Starts a GET, stalls after the headers, runs `mutate`, then reads the rest. */
  function getWhile(target: string, mutate: () => Promise<void>): Promise<{ declared: number; received: number; complete: boolean; sha: string }> {
    return new Promise((resolve) => {
      const hash = createHash('sha256');
      let received = 0;
      const req = http.get({ host: '127.0.0.1', port: server.port, path: target, agent: false }, (res) => {
        const declared = Number(res.headers['content-length']);
        const finish = () => resolve({ declared, received, complete: res.complete, sha: hash.digest('hex') });
        res.pause();
        void mutate().then(() => {
          res.on('data', (d: Buffer) => {
            hash.update(d);
            received += d.length;
          });
          res.resume();
        });
        res.on('end', finish);
        res.on('error', finish);
        res.on('aborted', () => {});
      });
      req.on('error', () => resolve({ declared: -1, received, complete: false, sha: '' }));
    });
  }

  it('a file that grows while served: the body is the size announced', async () => {
    const file = path.join(root, 'grows.bin');
    const sha = await writeBigFile(file, 16 * 1024 * 1024);
    const r = await getWhile('/grows.bin', () => appendFile(file, randomBytes(1024 * 1024)));
    expect(r.declared).toBe(16 * 1024 * 1024);
    expect(r.received).toBe(r.declared);
    expect(r.complete).toBe(true);
    expect(r.sha).toBe(sha);
  });

  it('a file that shrinks while served: the connection is cut, never a short "complete" body', async () => {
    const file = path.join(root, 'shrinks.bin');
    await writeBigFile(file, BIG);
    const r = await getWhile('/shrinks.bin', () => truncate(file, 1024));
    expect(r.declared).toBe(BIG);
    expect(r.complete).toBe(false);
    expect(r.received).toBeLessThan(BIG);
    await rm(file);
  });
});

describe('descriptor lifecycle', () => {
  const fdCount = async () => (await readdir('/proc/self/fd')).length;

  it.runIf(process.platform === 'linux')('clients that hang up mid-body leave no file open', async () => {
    await get('/data.bin'); // warm up lazily opened descriptors
    const before = await fdCount();
    for (let i = 0; i < 10; i++) {
      await new Promise<void>((resolve) => {
        const req = http.get({ host: '127.0.0.1', port: server.port, path: '/big.bin', headers: i % 2 ? { Range: 'bytes=0-9,100-' } : {}, agent: false }, (res) => {
          res.once('data', () => {
            req.destroy();
            resolve();
          });
        });
        req.on('error', () => {});
      });
    }
    // The server notices the hang-ups asynchronously: poll, bounded.
    let after = await fdCount();
    for (let i = 0; i < 50 && after > before; i++) {
      await new Promise((r) => setTimeout(r, 20));
      after = await fdCount();
    }
    expect(after).toBeLessThanOrEqual(before);
  });
});

describe('what is not served', () => {
  it('a missing file -> 404, a directory -> 404 (no listings)', async () => {
    expect((await get('/nope.bin')).status).toBe(404);
    expect((await get('/sub')).status).toBe(404);
    expect((await get('/sub/')).status).toBe(404);
    expect((await get('/')).status).toBe(404);
    expect((await get('/data.bin/x')).status).toBe(404);
  });

  it('BITS-Sessions/Requests (session state, partial uploads) -> 403', async () => {
    for (const p of [
      '/up/BITS-Sessions/Requests/%7BGUID%7D/state.json',
      '/up/bits-sessions/requests/%7BGUID%7D/state.json',
      '/up/BITS-Sessions/Requests/',
      '/up/BITS-Sessions',
      '/sneaky/%7BGUID%7D/state.json', // a symlink inside the root to the Requests folder
    ]) {
      const r = await get(p);
      expect(r.status, p).toBe(403);
      expect(r.body.toString()).not.toContain('secret');
    }
    expect(logLines).toContain('GET /up/BITS-Sessions/Requests/%7BGUID%7D/state.json 403 0 (private BITS session state)');
  });

  it('BITS-Sessions/Replies (upload-reply replies) are served', async () => {
    const r = await get('/up/BITS-Sessions/Replies/%7BGUID%7D/responsefile.bin');
    expect(r.status).toBe(200);
    expect(r.body.toString()).toBe('the reply');
  });

  it.each([
    '/../outside.txt',
    '/sub/../../outside.txt',
    '/%2e%2e/outside.txt',
    '/sub/%2E%2E/%2E%2E/outside.txt',
    '/..%2foutside.txt',
    '/sub%2f..%2f..%2foutside.txt',
    '/..%5coutside.txt',
    '/..\\outside.txt',
    '/%00/outside.txt',
    '/%c0%ae%c0%ae/outside.txt',
  ])('traversal %s -> refused', async (p) => {
    const r = await get(p);
    expect([403, 404]).toContain(r.status);
    expect(r.status).toBe(403);
    expect(r.body.toString()).not.toContain('TOP SECRET');
  });

  it('symlinks out of the root are refused; symlinks inside are followed', async () => {
    expect((await get('/link-out')).status).toBe(403);
    expect((await get('/dir-link-out/outside.txt')).status).toBe(403);
    const inside = await get('/link-in');
    expect(inside.status).toBe(200);
    expect(inside.body.equals(DATA)).toBe(true);
  });

  it('other methods -> 405 with Allow', async () => {
    const r = await send('DELETE', '/data.bin');
    expect(r.status).toBe(405);
    expect(r.headers['allow']).toContain('GET');
  });
});

describe('pure parts', () => {
  it('isPrivatePath', () => {
    expect(isPrivatePath(['a', 'BITS-Sessions', 'Requests', 'x'])).toBe(true);
    expect(isPrivatePath(['BITS-Sessions'])).toBe(true);
    expect(isPrivatePath(['BITS-SESSIONS', 'other'])).toBe(true);
    expect(isPrivatePath(['a', 'BITS-Sessions', 'Replies', 'x'])).toBe(false);
    expect(isPrivatePath(['a', 'BITS-Sessions', 'Replies', 'BITS-Sessions', 'Requests'])).toBe(true);
    expect(isPrivatePath(['BITS-Sessions-old', 'x'])).toBe(false);
  });

  it('ETag and validator comparisons', () => {
    const etag = makeEtag(10n, 1_700_000_000_123_456_789n, 42n);
    expect(etag).toBe(`"a-${(1_700_000_000_123_456_789n).toString(16)}-2a"`);
    const info = { etag, mtimeMs: 1_700_000_000_123 };
    expect(ifRangeMatches(etag, info)).toBe(true);
    expect(ifRangeMatches(`W/${etag}`, info)).toBe(false);
    expect(ifRangeMatches(new Date(info.mtimeMs).toUTCString(), info)).toBe(true);
    expect(ifRangeMatches('garbage', info)).toBe(false);
    expect(notModified({ 'if-none-match': '*' }, info)).toBe(true);
    expect(notModified({ 'if-none-match': `W/${etag}` }, info)).toBe(true);
    // If-None-Match wins over If-Modified-Since (RFC 7232 §6).
    expect(notModified({ 'if-none-match': '"x"', 'if-modified-since': new Date(2_000_000_000_000).toUTCString() }, info)).toBe(false);
  });

  it('planMultipart computes the exact length', () => {
    const plan = planMultipart([{ first: 0, last: 9 }, { first: 5, last: 5 }], 100, 'B');
    const built = Buffer.concat([plan.heads[0]!, Buffer.alloc(10), plan.heads[1]!, Buffer.alloc(1), plan.tail]);
    expect(plan.length).toBe(built.length);
    expect(built.toString('latin1')).toBe(
      '--B\r\nContent-Type: application/octet-stream\r\nContent-Range: bytes 0-9/100\r\n\r\n' +
        '\0'.repeat(10) +
        '\r\n--B\r\nContent-Type: application/octet-stream\r\nContent-Range: bytes 5-5/100\r\n\r\n\0\r\n--B--\r\n',
    );
  });
});
