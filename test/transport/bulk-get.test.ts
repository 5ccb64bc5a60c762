/**
 * The download data path's own HTTP/1.1 reader (src/transport/bulk-get.ts),
 * through HttpTransport as the download driver uses it (`bulk: true`, bodies
 * read with bodyBatches), against real servers on 127.0.0.1: keep-alive reuse,
 * servers that close idle connections, answers it declines (chunked, 401) and
 * that undici then reads, cut and stalled bodies, aborts, Connection: close,
 * and https.
 */
import { createHash, randomBytes } from 'node:crypto';
import http from 'node:http';
import https from 'node:https';
import net, { type AddressInfo, type Socket } from 'node:net';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { AuthError, TimeoutError, TransportError } from '../../src/errors.js';
import { bodyBatches, HttpTransport, type HttpResponse } from '../../src/transport/http.js';
import { parseHead } from '../../src/transport/bulk-get.js';
import { makeTestPki, type TestPki } from '../helpers/tls.js';

const DATA = randomBytes(3 * 1024 * 1024 + 17);
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

interface Seen {
  connections: number;
  /** Every request: method, url, range, the connection's number. */
  requests: Array<{ method: string; range?: string; conn: number }>;
}

/** A range server over DATA; `answer` may take over a request. */
async function rangeServer(
  opts: { answer?: (req: http.IncomingMessage, res: http.ServerResponse, seen: Seen) => boolean; secure?: { cert: Buffer; key: Buffer } } = {},
): Promise<{ url: string; seen: Seen; close: () => Promise<void> }> {
  const seen: Seen = { connections: 0, requests: [] };
  const ids = new WeakMap<Socket, number>();
  const handler = (req: http.IncomingMessage, res: http.ServerResponse) => {
    seen.requests.push({ method: req.method!, ...(req.headers.range ? { range: req.headers.range } : {}), conn: ids.get(req.socket) ?? -1 });
    if (opts.answer?.(req, res, seen)) return;
    const m = /^bytes=(\d+)-(\d*)$/.exec(req.headers.range ?? '');
    if (!m) {
      res.writeHead(200, { 'content-length': DATA.length, 'accept-ranges': 'bytes' });
      res.end(req.method === 'HEAD' ? undefined : DATA);
      return;
    }
    const start = Number(m[1]);
    const end = m[2] ? Math.min(Number(m[2]), DATA.length - 1) : DATA.length - 1;
    res.writeHead(206, { 'content-length': end - start + 1, 'content-range': `bytes ${start}-${end}/${DATA.length}` });
    res.end(DATA.subarray(start, end + 1));
  };
  const server = opts.secure ? https.createServer({ cert: opts.secure.cert, key: opts.secure.key }, handler) : http.createServer(handler);
  server.keepAliveTimeout = 5000;
  server.on(opts.secure ? 'secureConnection' : 'connection', (s: Socket) => ids.set(s, ++seen.connections));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const port = (server.address() as AddressInfo).port;
  return {
    url: `${opts.secure ? 'https' : 'http'}://127.0.0.1:${port}`,
    seen,
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}

/** Answers 1000 bytes, sends 10 and then nothing. */
async function stallingServer() {
  const s = await rangeServer({
    answer: (_req, res) => {
      res.writeHead(206, { 'content-length': 1000, 'content-range': `bytes 0-999/${DATA.length}` });
      res.write(DATA.subarray(0, 10));
      return true;
    },
  });
  cleanups.push(s.close);
  return s;
}

const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});
let pki: TestPki;
beforeAll(() => {
  pki = makeTestPki();
});
afterAll(() => pki.cleanup());

function transport(opts: ConstructorParameters<typeof HttpTransport>[0] = {}): HttpTransport {
  const t = new HttpTransport({ env: {}, ...opts });
  cleanups.push(() => t.destroy());
  return t;
}

/** The whole body; each batch is copied before the next is asked for (bodyBatches' contract: read buffers are reused). */
async function readAll(res: HttpResponse): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const batch of bodyBatches(res)) parts.push(Buffer.concat(batch));
  return Buffer.concat(parts);
}

async function getRange(t: HttpTransport, base: string, start: number, end: number, signal?: AbortSignal): Promise<Buffer> {
  const res = await t.request({ method: 'GET', url: new URL(`${base}/f`), headers: { range: `bytes=${start}-${end}` }, bulk: true, ...(signal ? { signal } : {}) });
  expect(res.status).toBe(206);
  expect(res.headers['content-range']).toBe(`bytes ${start}-${end}/${DATA.length}`);
  return readAll(res);
}

describe('the bulk reader', () => {
  it('reads ranges over ONE keep-alive connection, byte-identical', async () => {
    const s = await rangeServer();
    cleanups.push(s.close);
    const t = transport();
    const step = 400 * 1024;
    const parts: Buffer[] = [];
    for (let at = 0; at < DATA.length; at += step) parts.push(await getRange(t, s.url, at, Math.min(at + step, DATA.length) - 1));
    expect(sha(Buffer.concat(parts))).toBe(sha(DATA));
    expect(s.seen.requests.length).toBe(Math.ceil(DATA.length / step));
    expect(s.seen.connections).toBe(1);
  });

  it('reuses its read buffers (far fewer than the reads), and a consumer keeping to the contract gets every byte right', async () => {
    const big = randomBytes(24 * 1024 * 1024);
    const s = await rangeServer({
      answer: (_req, res) => {
        res.writeHead(206, { 'content-length': big.length, 'content-range': `bytes 0-${big.length - 1}/${big.length}` });
        res.end(big);
        return true;
      },
    });
    cleanups.push(s.close);
    const t = transport();
    const res = await t.request({ method: 'GET', url: new URL(`${s.url}/f`), headers: { range: 'bytes=0-' }, bulk: true });
    const memory = new Set<ArrayBufferLike>();
    let chunks = 0;
    const h = createHash('sha256');
    for await (const batch of bodyBatches(res)) {
      for (const c of batch) {
        memory.add(c.buffer);
        chunks++;
        h.update(c);
      }
      // The consumer is slower than the network now and then, so the queue fills and blocks are handed back and reused.
      if (chunks % 7 === 0) await new Promise((r) => setTimeout(r, 5));
    }
    expect(h.digest('hex')).toBe(sha(big));
    expect(chunks).toBeGreaterThan(50);
    expect(memory.size).toBeLessThanOrEqual(20);
  });

  it('a server that closed the idle connection: the next GET goes out on a new one and succeeds', async () => {
    // The server ends each connection 20 ms after its answer, as an idle keep-alive timeout does.
    const s = await rangeServer({
      answer: (req, res) => {
        res.on('finish', () => setTimeout(() => req.socket.end(), 20));
        return false;
      },
    });
    cleanups.push(s.close);
    const t = transport();
    expect(sha(await getRange(t, s.url, 0, 999))).toBe(sha(DATA.subarray(0, 1000)));
    await new Promise((r) => setTimeout(r, 300));
    expect(sha(await getRange(t, s.url, 1000, 1999))).toBe(sha(DATA.subarray(1000, 2000)));
    expect(s.seen.connections).toBe(2);
  });

  it('a reused connection cut before any answer byte is replaced once (the idle-close race)', async () => {
    // Each connection answers its first request and cuts the next one unanswered.
    let conns = 0;
    const server = net.createServer((sock) => {
      conns++;
      let requests = 0;
      let buf = '';
      sock.on('data', (c) => {
        buf += c.toString('latin1');
        while (buf.includes('\r\n\r\n')) {
          buf = buf.slice(buf.indexOf('\r\n\r\n') + 4);
          if (++requests > 1) {
            sock.destroy();
            return;
          }
          sock.write(`HTTP/1.1 206 Partial Content\r\nContent-Length: 10\r\nContent-Range: bytes 0-9/${DATA.length}\r\n\r\n`);
          sock.write(DATA.subarray(0, 10));
        }
      });
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    cleanups.push(() => new Promise<void>((r) => server.close(() => r())));
    const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    const t = transport();
    for (let i = 0; i < 3; i++) {
      const res = await t.request({ method: 'GET', url: new URL(`${base}/f`), headers: { range: 'bytes=0-9' }, bulk: true });
      expect((await readAll(res)).equals(DATA.subarray(0, 10))).toBe(true);
    }
    expect(conns).toBe(3);
  });

  it('a HEAD has no body whatever its framing headers say; its connection carries the GETs after it', async () => {
    // The download probe's HEAD goes here too (so a plain download never loads undici).
    const s = await rangeServer({
      answer: (req, res) => {
        if (req.method !== 'HEAD' || !req.url!.endsWith('/chunked')) return false;
        // What a GET would get: chunked. RFC 7230 §3.3.3: an answer to HEAD ends at its head all the same.
        res.writeHead(200, { 'transfer-encoding': 'chunked', 'x-length': String(DATA.length) });
        res.end();
        return true;
      },
    });
    cleanups.push(s.close);
    const t = transport();
    const head = await t.request({ method: 'HEAD', url: new URL(`${s.url}/f`), bulk: true });
    expect(head.status).toBe(200);
    expect(head.headers['content-length']).toBe(String(DATA.length));
    expect(await readAll(head)).toEqual(Buffer.alloc(0));
    const chunked = await t.request({ method: 'HEAD', url: new URL(`${s.url}/chunked`), bulk: true });
    expect(chunked.status).toBe(200);
    expect(chunked.headers['x-length']).toBe(String(DATA.length));
    await chunked.discard();
    expect(sha(await getRange(t, s.url, 0, 99_999))).toBe(sha(DATA.subarray(0, 100_000)));
    expect(s.seen.requests.map((r) => [r.method, r.conn])).toEqual([
      ['HEAD', 1],
      ['HEAD', 1],
      ['GET', 1],
    ]);
  });

  it('declines a chunked data answer: undici sends it again and reads it; the origin then stays with undici', async () => {
    const s = await rangeServer({
      answer: (req, res) => {
        if (req.method !== 'GET') return false;
        const m = /^bytes=(\d+)-(\d+)$/.exec(req.headers.range ?? '')!;
        const body = DATA.subarray(Number(m[1]), Number(m[2]) + 1);
        res.writeHead(206, { 'content-range': `bytes ${m[1]}-${m[2]}/${DATA.length}`, 'transfer-encoding': 'chunked' });
        res.write(body.subarray(0, 5000));
        res.end(body.subarray(5000));
        return true;
      },
    });
    cleanups.push(s.close);
    const t = transport();
    expect(sha(await getRange(t, s.url, 0, 99_999))).toBe(sha(DATA.subarray(0, 100_000)));
    expect(sha(await getRange(t, s.url, 100_000, 199_999))).toBe(sha(DATA.subarray(100_000, 200_000)));
    // The first range twice (declined, then sent through undici), the second once.
    expect(s.seen.requests.map((r) => r.range)).toEqual(['bytes=0-99999', 'bytes=0-99999', 'bytes=100000-199999']);
  });

  it('a head whose lines end in bare LF fails at once, as undici fails it (no wait for the response timeout)', async () => {
    let requests = 0;
    const server = net.createServer((sock) => {
      let buf = '';
      sock.on('data', (c) => {
        buf += c.toString('latin1');
        while (buf.includes('\r\n\r\n')) {
          buf = buf.slice(buf.indexOf('\r\n\r\n') + 4);
          requests++;
          sock.write(`HTTP/1.1 206 Partial Content\nContent-Length: 10\nContent-Range: bytes 0-9/${DATA.length}\n\n`);
          sock.write(DATA.subarray(0, 10));
        }
      });
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    cleanups.push(() => new Promise<void>((r) => server.close(() => r())));
    const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    const messages: string[] = [];
    for (const bulk of [true, false]) {
      const t = transport();
      const started = Date.now();
      const err = await t.request({ method: 'GET', url: new URL(`${base}/f`), headers: { range: 'bytes=0-9' }, bulk }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(TransportError);
      expect(Date.now() - started).toBeLessThan(5000);
      messages.push((err as Error).message);
    }
    expect(messages[0]).toBe(messages[1]);
    expect(messages[0]).toMatch(/Missing expected CR after response line/);
    expect(requests).toBe(2);
  });

  it('an answer that is not HTTP fails at once with what came', async () => {
    const server = net.createServer((sock) => sock.once('data', () => sock.write('SSH-2.0-OpenSSH_9.2\r\n')));
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    cleanups.push(() => new Promise<void>((r) => server.close(() => r())));
    const t = transport();
    const started = Date.now();
    const err = await t.request({ method: 'GET', url: new URL(`http://127.0.0.1:${(server.address() as AddressInfo).port}/f`), bulk: true }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(TransportError);
    expect((err as Error).message).toMatch(/not an HTTP\/1\.x response: "SSH-2\.0/);
    expect(Date.now() - started).toBeLessThan(5000);
  });

  it('declines a 401: the error is the one the general path gives', async () => {
    const s = await rangeServer({
      answer: (_req, res) => {
        res.writeHead(401, { 'www-authenticate': 'Basic realm="x"', 'content-length': 0 });
        res.end();
        return true;
      },
    });
    cleanups.push(s.close);
    const t = transport();
    const err = await t.request({ method: 'GET', url: new URL(`${s.url}/f`), headers: { range: 'bytes=0-9' }, bulk: true }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(AuthError);
    expect((err as Error).message).toMatch(/requires authentication \(HTTP 401, offers Basic\): give --user NAME/);
  });

  it('returns other refusals itself, body drained and the connection kept', async () => {
    let n = 0;
    const s = await rangeServer({
      answer: (_req, res) => {
        if (++n > 1) return false;
        res.writeHead(503, { 'retry-after': '1', 'content-length': 5 });
        res.end('busy!');
        return true;
      },
    });
    cleanups.push(s.close);
    const t = transport();
    const res = await t.request({ method: 'GET', url: new URL(`${s.url}/f`), headers: { range: 'bytes=0-9' }, bulk: true });
    expect(res.status).toBe(503);
    expect(res.headers['retry-after']).toBe('1');
    await res.discard();
    expect((await getRange(t, s.url, 0, 9)).equals(DATA.subarray(0, 10))).toBe(true);
    expect(s.seen.requests.length).toBe(2);
    expect(s.seen.connections).toBe(1);
  });

  it('a body cut mid-way is a TransportError, after the bytes that did arrive', async () => {
    const s = await rangeServer({
      answer: (req, res) => {
        res.writeHead(206, { 'content-length': 1_000_000, 'content-range': `bytes 0-999999/${DATA.length}` });
        res.write(DATA.subarray(0, 300_000), () => setTimeout(() => req.socket.destroy(), 50));
        return true;
      },
    });
    cleanups.push(s.close);
    const t = transport();
    const res = await t.request({ method: 'GET', url: new URL(`${s.url}/f`), headers: { range: 'bytes=0-999999' }, bulk: true });
    let got = 0;
    const err = await (async () => {
      for await (const batch of bodyBatches(res)) for (const c of batch) got += c.length;
    })().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(TransportError);
    expect((err as Error).message).toMatch(/connection to 127\.0\.0\.1:\d+ was reset/);
    expect(got).toBe(300_000);
  });

  it('a body that stalls past the response timeout is a TimeoutError', async () => {
    const s = await stallingServer();
    const t = transport({ responseTimeoutMs: 300 });
    const res = await t.request({ method: 'GET', url: new URL(`${s.url}/f`), headers: { range: 'bytes=0-999' }, bulk: true });
    const started = Date.now();
    const err = await readAll(res).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(TimeoutError);
    expect((err as Error).message).toMatch(/stalled past the response timeout/);
    expect(Date.now() - started).toBeLessThan(5000);
  });

  it('no response head within the response timeout is a TimeoutError', async () => {
    const s = await rangeServer({ answer: () => true });
    cleanups.push(s.close);
    const t = transport({ responseTimeoutMs: 300 });
    const err = await t.request({ method: 'GET', url: new URL(`${s.url}/f`), bulk: true }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(TimeoutError);
    expect((err as Error).message).toMatch(/no response from 127\.0\.0\.1:\d+ within 0 s \(response timeout\)/);
  });

  it("the request's signal stops a body mid-way with its reason", async () => {
    const s = await stallingServer();
    const t = transport();
    const ac = new AbortController();
    const res = await t.request({ method: 'GET', url: new URL(`${s.url}/f`), headers: { range: 'bytes=0-999' }, bulk: true, signal: ac.signal });
    const reason = new TimeoutError('no progress for 1 s', 'progress');
    setTimeout(() => ac.abort(reason), 100);
    await expect(readAll(res)).rejects.toBe(reason);
  });

  it('Connection: close is honoured (a new connection for the next GET)', async () => {
    const s = await rangeServer({
      answer: (req, res) => {
        res.shouldKeepAlive = false;
        res.writeHead(206, { 'content-length': 10, 'content-range': `bytes 0-9/${DATA.length}`, connection: 'close' });
        res.end(DATA.subarray(0, 10));
        return true;
      },
    });
    cleanups.push(s.close);
    const t = transport();
    await getRange(t, s.url, 0, 9);
    await getRange(t, s.url, 0, 9);
    expect(s.seen.connections).toBe(2);
  });

  it('https, with the CA given: byte-identical, one connection', async () => {
    const s = await rangeServer({ secure: pki.server });
    cleanups.push(s.close);
    const t = transport({ tls: { ca: pki.ca } });
    const a = await getRange(t, s.url, 0, 1_999_999);
    const b = await getRange(t, s.url, 2_000_000, DATA.length - 1);
    expect(sha(Buffer.concat([a, b]))).toBe(sha(DATA));
    expect(s.seen.connections).toBe(1);
  });

  it('is not used through a proxy, with server credentials, or with --limit-rate (undici carries those)', async () => {
    // A chunked answer shows which path read it: the bulk reader declines it (two requests), undici reads it (one).
    const s = await rangeServer({
      answer: (_req, res) => {
        res.writeHead(206, { 'content-range': `bytes 0-9/${DATA.length}`, 'transfer-encoding': 'chunked' });
        res.end(DATA.subarray(0, 10));
        return true;
      },
    });
    cleanups.push(s.close);
    const { Credentials } = await import('../../src/transport/credentials.js');
    for (const opts of [{ limitRateBytesPerSec: 1_000_000 }, { credentials: new Credentials('u', 'p') }]) {
      s.seen.requests.length = 0;
      const t = transport(opts);
      expect((await getRange(t, s.url, 0, 9)).equals(DATA.subarray(0, 10))).toBe(true);
      expect(s.seen.requests).toHaveLength(1);
    }
  });
});

describe('parseHead', () => {
  it('lower-cases names, joins repeats, keeps the version', () => {
    expect(parseHead('HTTP/1.0 206 Partial Content\r\nContent-Length: 5\r\nX-A: 1\r\nx-a: 2')).toEqual({
      status: 206,
      version: '1.0',
      headers: { 'content-length': '5', 'x-a': '1, 2' },
    });
  });
  it('refuses what is not HTTP/1.x, folded lines and conflicting lengths', () => {
    expect(() => parseHead('SSH-2.0-OpenSSH')).toThrow(/not an HTTP\/1\.x response/);
    expect(() => parseHead('HTTP/1.1 200 OK\r\nA: 1\r\n folded')).toThrow(/malformed response header line/);
    expect(() => parseHead('HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2')).toThrow(/conflicting Content-Length/);
  });
});
