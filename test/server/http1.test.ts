import { afterEach, describe, expect, test } from 'vitest';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { startHttp1Server, type Http1Handler, type Http1Request, type Http1Server } from '../../src/server/http1.js';
import { startServer, type RunningServer } from '../../src/server/index.js';
import { VERSION } from '../../src/version.js';
import { RawConnection, buildRequest, rawRequest } from '../helpers/raw-http.js';
import { makeTestPki } from '../helpers/tls.js';
import tls from 'node:tls';

const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  while (cleanups.length) await cleanups.pop()!();
});

async function serve(handler: Http1Handler, opts: Partial<Parameters<typeof startHttp1Server>[0]> = {}): Promise<Http1Server> {
  const s = await startHttp1Server({ host: '127.0.0.1', port: 0, ...opts }, handler);
  cleanups.push(() => s.close());
  return s;
}

async function readAll(req: Http1Request): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of req.body) parts.push(c as Buffer);
  return Buffer.concat(parts);
}

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Echo handler: answers with method, path and sha256/length of the body. */
const echo: Http1Handler = async (req) => {
  const body = await readAll(req);
  return {
    status: 200,
    headers: { 'X-Method': req.method, 'X-Path': req.rawPath, 'X-Len': body.length, 'X-Sha': sha(body), 'X-Port': req.socket.remotePort ?? 0 },
    body: `${req.method} ${req.target}`,
  };
};

describe('http1 server', () => {
  test('accepts BITS_POST (which node:http refuses) and passes headers and body', async () => {
    let seen: Http1Request | undefined;
    const s = await serve(async (req) => {
      seen = req;
      const body = await readAll(req);
      return { status: 200, headers: { 'X-Len': body.length }, body: '' };
    });
    const r = await rawRequest(
      s.port,
      buildRequest('BITS_POST', '/up/a%20b.bin?x=1', { 'BITS-Packet-Type': 'Ping', 'X-Dup': 'a', 'x-dup': 'b' }, 'abc'),
    );
    expect(r.status).toBe(200);
    expect(r.headers['x-len']).toBe('3');
    expect(r.headers['content-length']).toBe('0');
    expect(seen!.method).toBe('BITS_POST');
    expect(seen!.rawPath).toBe('/up/a%20b.bin');
    expect(seen!.query).toBe('x=1');
    expect(seen!.headers['bits-packet-type']).toBe('Ping');
    expect(seen!.headers['x-dup']).toBe('a, b');
    expect(seen!.rawHeaders.some(([k]) => k === 'BITS-Packet-Type')).toBe(true);
    expect(seen!.contentLength).toBe(3);
    expect(seen!.httpVersion).toBe('1.1');
  });

  test('every response has Date, Server and Content-Length', async () => {
    const s = await serve(async (req) => {
      await req.discardBody();
      return { status: 200, headers: { 'X-A': 'b' } };
    });
    const r = await rawRequest(s.port, buildRequest('GET', '/'));
    expect(r.status).toBe(200);
    expect(r.headers['server']).toBe(`bits/${VERSION}`);
    expect(new Date(r.headers['date']!).getTime()).toBeGreaterThan(Date.now() - 60_000);
    expect(r.headers['content-length']).toBe('0');
    expect(r.body.length).toBe(0);
  });

  test('two pipelined requests in one write get two answers in order', async () => {
    const s = await serve(echo);
    const c = await RawConnection.connect(s.port);
    cleanups.push(async () => c.destroy());
    const a = randomBytes(5000);
    const b = randomBytes(7000);
    await c.write(Buffer.concat([buildRequest('BITS_POST', '/one', {}, a), buildRequest('BITS_POST', '/two', {}, b)]));
    const r1 = await c.readResponse();
    const r2 = await c.readResponse();
    expect(r1.headers['x-path']).toBe('/one');
    expect(r1.headers['x-sha']).toBe(sha(a));
    expect(r2.headers['x-path']).toBe('/two');
    expect(r2.headers['x-sha']).toBe(sha(b));
    expect(r1.body.toString()).toBe('BITS_POST /one');
  });

  test('a body split across TCP writes arrives whole', async () => {
    const s = await serve(echo);
    const c = await RawConnection.connect(s.port);
    cleanups.push(async () => c.destroy());
    const body = randomBytes(300_000);
    const req = buildRequest('BITS_POST', '/split', {}, body);
    // Split inside the head too.
    const cuts = [10, 60, 200, 100_000, 250_000, req.length];
    let prev = 0;
    for (const cut of cuts) {
      await c.write(req.subarray(prev, cut));
      prev = cut;
      await sleep(15);
    }
    const r = await c.readResponse();
    expect(r.status).toBe(200);
    expect(r.headers['x-len']).toBe(String(body.length));
    expect(r.headers['x-sha']).toBe(sha(body));
  });

  test('keep-alive: several requests reuse one connection', async () => {
    const s = await serve(echo);
    const c = await RawConnection.connect(s.port);
    cleanups.push(async () => c.destroy());
    const ports = new Set<string>();
    for (let i = 0; i < 3; i++) {
      const r = await c.request(buildRequest('GET', `/k${i}`));
      expect(r.status).toBe(200);
      expect(r.headers['connection']).toBeUndefined();
      ports.add(r.headers['x-port']!);
    }
    expect(ports.size).toBe(1);
    expect(c.ended).toBe(false);
  });

  test('a body the handler ignores is discarded and the next request still parses', async () => {
    const s = await serve(async (req) => ({ status: 200, body: req.rawPath }));
    const c = await RawConnection.connect(s.port);
    cleanups.push(async () => c.destroy());
    await c.write(Buffer.concat([buildRequest('BITS_POST', '/skip', {}, randomBytes(200_000)), buildRequest('GET', '/after')]));
    expect((await c.readResponse()).body.toString()).toBe('/skip');
    expect((await c.readResponse()).body.toString()).toBe('/after');
  });

  test('Connection: close and HTTP/1.0 close the connection after the answer', async () => {
    const s = await serve(echo);
    const c1 = await RawConnection.connect(s.port);
    cleanups.push(async () => c1.destroy());
    const r1 = await c1.request(buildRequest('GET', '/', { Connection: 'close' }));
    expect(r1.headers['connection']).toBe('close');
    await c1.waitClosed();

    const c2 = await RawConnection.connect(s.port);
    cleanups.push(async () => c2.destroy());
    const r2 = await c2.request(buildRequest('GET', '/', {}, undefined, { version: '1.0' }));
    expect(r2.status).toBe(200);
    expect(r2.headers['connection']).toBe('close');
    await c2.waitClosed();

    const c3 = await RawConnection.connect(s.port);
    cleanups.push(async () => c3.destroy());
    const r3 = await c3.request(buildRequest('GET', '/', { Connection: 'keep-alive' }, undefined, { version: '1.0' }));
    expect(r3.headers['connection']).toBe('keep-alive');
    const r4 = await c3.request(buildRequest('GET', '/again', { Connection: 'keep-alive' }, undefined, { version: '1.0' }));
    expect(r4.status).toBe(200);
  });

  test('an oversized header value gets 400, with E_INVALIDARG for BITS_POST only', async () => {
    const s = await serve(echo);
    const big = 'x'.repeat(4097);
    const r1 = await rawRequest(s.port, buildRequest('BITS_POST', '/a', { 'BITS-Packet-Type': 'Ping', 'X-Big': big }));
    expect(r1.status).toBe(400);
    expect(r1.headers['bits-error']).toBe('0x80070057');
    expect(r1.headers['bits-error-context']).toBe('0x5');
    expect(r1.headers['content-length']).toBe('0');
    const r2 = await rawRequest(s.port, buildRequest('GET', '/a', { 'X-Big': big }));
    expect(r2.status).toBe(400);
    expect(r2.headers['bits-error']).toBeUndefined();
    // Exactly 4096 is allowed.
    const r3 = await rawRequest(s.port, buildRequest('GET', '/a', { 'X-Big': 'y'.repeat(4096) }));
    expect(r3.status).toBe(200);
  });

  test('a request head over the limit gets 400', async () => {
    const s = await serve(echo, { maxHeadBytes: 8192 });
    const headers: Record<string, string> = {};
    for (let i = 0; i < 10; i++) headers[`X-H${i}`] = 'z'.repeat(1000);
    const r = await rawRequest(s.port, buildRequest('BITS_POST', '/a', headers));
    expect(r.status).toBe(400);
    expect(r.headers['bits-error']).toBe('0x80070057');
  });

  test('a chunked body without Content-Length gets 411 and the connection closes', async () => {
    let called = false;
    const s = await serve(async (req) => {
      called = true;
      return echo(req);
    });
    const c = await RawConnection.connect(s.port);
    cleanups.push(async () => c.destroy());
    const head = buildRequest('BITS_POST', '/a', { 'BITS-Packet-Type': 'Fragment', 'Transfer-Encoding': 'chunked' }, undefined, {
      noContentLength: true,
    });
    const r = await c.request(Buffer.concat([head, Buffer.from('5\r\nhello\r\n0\r\n\r\n')]));
    expect(r.status).toBe(411);
    expect(r.headers['bits-error']).toBe('0x80070057');
    expect(r.headers['bits-error-context']).toBe('0x5');
    expect(called).toBe(false);
    await c.waitClosed();
  });

  test('malformed requests get 400 / 505', async () => {
    const s = await serve(echo);
    expect((await rawRequest(s.port, 'GARBAGE\r\n\r\n')).status).toBe(400);
    expect((await rawRequest(s.port, 'GET / HTTP/2.0\r\nHost: x\r\n\r\n')).status).toBe(505);
    expect((await rawRequest(s.port, 'GET / HTTP/1.1\r\nBad Header\r\n\r\n')).status).toBe(400);
    expect((await rawRequest(s.port, 'GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab')).status).toBe(400);
    expect((await rawRequest(s.port, 'GET / HTTP/1.1\r\nContent-Length: -1\r\n\r\n')).status).toBe(400);
  });

  test('HEAD answers keep headers (Content-Length too) and carry no body', async () => {
    const s = await serve(async (req) => {
      await req.discardBody();
      return { status: 200, headers: { 'X-Kind': 'thing' }, body: 'twelve bytes' };
    });
    const c = await RawConnection.connect(s.port);
    cleanups.push(async () => c.destroy());
    // A HEAD then a GET on the same connection: if HEAD leaked a body, the GET answer would be garbled.
    await c.write(Buffer.concat([buildRequest('HEAD', '/x'), buildRequest('GET', '/x')]));
    const h = await c.readResponse({ head: true });
    expect(h.status).toBe(200);
    expect(h.headers['content-length']).toBe('12');
    expect(h.headers['x-kind']).toBe('thing');
    const g = await c.readResponse();
    expect(g.body.toString()).toBe('twelve bytes');
    expect(c.buffered).toBe(0);
  });

  test('streamed response bodies are sent with their Content-Length', async () => {
    const data = randomBytes(1_000_000);
    const s = await serve(async (req) => {
      await req.discardBody();
      async function* gen(): AsyncGenerator<Buffer> {
        for (let i = 0; i < data.length; i += 65536) yield data.subarray(i, i + 65536);
      }
      return { status: 200, headers: { 'Content-Length': data.length }, body: gen() };
    });
    const r = await rawRequest(s.port, buildRequest('GET', '/big'));
    expect(sha(r.body)).toBe(sha(data));
  });

  test('request bodies are not buffered: an unread body holds the client back (backpressure)', async () => {
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const s = await serve(async (req) => {
      await gate;
      return echo(req);
    });
    const c = await RawConnection.connect(s.port);
    cleanups.push(async () => c.destroy());
    const body = randomBytes(32 * 1024 * 1024);
    c.socket.write(buildRequest('BITS_POST', '/bp', {}, body));
    await sleep(300);
    // Kernel buffers take a few MB at most; the rest must still be waiting on the client side.
    expect(c.socket.writableLength).toBeGreaterThan(16 * 1024 * 1024);
    release();
    const r = await c.readResponse({ timeoutMs: 30_000 });
    expect(r.headers['x-sha']).toBe(sha(body));
  });

  test('a client that disconnects mid-body makes the body stream error', async () => {
    let resolveSeen!: (v: string) => void;
    const seen = new Promise<string>((r) => (resolveSeen = r));
    const s = await serve(async (req) => {
      try {
        await readAll(req);
        resolveSeen('complete');
      } catch (err) {
        resolveSeen(`error: ${(err as Error).message}`);
      }
      return { status: 200 };
    });
    const c = await RawConnection.connect(s.port);
    await c.write(Buffer.concat([buildRequest('BITS_POST', '/a', { 'Content-Length': 100_000 }), randomBytes(30_000)]));
    await sleep(50);
    c.destroy();
    expect(await seen).toMatch(/^error: /);
  });

  test('a stalled body times out (body idle timeout) and a stalled head gets 408', async () => {
    let resolveSeen!: (v: string) => void;
    const seen = new Promise<string>((r) => (resolveSeen = r));
    const s = await serve(
      async (req) => {
        try {
          await readAll(req);
          resolveSeen('complete');
        } catch (err) {
          resolveSeen(`error: ${(err as Error).message}`);
        }
        return { status: 200 };
      },
      { bodyIdleTimeoutMs: 200, headersTimeoutMs: 300 },
    );
    const c = await RawConnection.connect(s.port);
    cleanups.push(async () => c.destroy());
    await c.write(Buffer.concat([buildRequest('BITS_POST', '/a', { 'Content-Length': 1000 }), Buffer.from('abc')]));
    expect(await seen).toMatch(/stalled/);
    await c.waitClosed();

    const c2 = await RawConnection.connect(s.port);
    cleanups.push(async () => c2.destroy());
    await c2.write('GET / HTTP/1.1\r\nHost: x\r\n');
    const r = await c2.readResponse();
    expect(r.status).toBe(408);
    await c2.waitClosed();
  });

  test('an idle keep-alive connection is closed after the idle timeout', async () => {
    const s = await serve(echo, { keepAliveTimeoutMs: 200 });
    const c = await RawConnection.connect(s.port);
    cleanups.push(async () => c.destroy());
    expect((await c.request(buildRequest('GET', '/'))).status).toBe(200);
    await c.waitClosed(3000);
  });

  test('a handler exception becomes 500 and the connection closes', async () => {
    const s = await serve(async () => {
      throw new Error('boom');
    });
    const c = await RawConnection.connect(s.port);
    cleanups.push(async () => c.destroy());
    const r = await c.request(buildRequest('GET', '/'));
    expect(r.status).toBe(500);
    expect(r.headers['content-length']).toBe('0');
    await c.waitClosed();
  });

  test('Expect: 100-continue gets an interim 100 once the handler reads', async () => {
    const s = await serve(echo);
    const c = await RawConnection.connect(s.port);
    cleanups.push(async () => c.destroy());
    await c.write(buildRequest('BITS_POST', '/e', { Expect: '100-continue', 'Content-Length': 4 }));
    // Wait for the 100 before sending the body.
    const deadline = Date.now() + 5000;
    while (c.buffered < 25 && Date.now() < deadline) await sleep(10);
    await c.write('data');
    const r = await c.readResponse();
    expect(r.status).toBe(200);
    expect(r.headers['x-len']).toBe('4');
  });

  test('serves HTTPS when given a certificate', async () => {
    const pki = makeTestPki();
    cleanups.push(async () => pki.cleanup());
    let secure: boolean | undefined;
    const s = await serve(
      async (req) => {
        secure = req.secure;
        return echo(req);
      },
      { tls: { cert: pki.server.cert, key: pki.server.key } },
    );
    const sock = tls.connect({ host: '127.0.0.1', port: s.port, ca: pki.ca, servername: 'localhost' });
    cleanups.push(async () => void sock.destroy());
    await new Promise<void>((resolve, reject) => {
      sock.once('secureConnect', () => resolve());
      sock.once('error', reject);
    });
    const chunks: Buffer[] = [];
    sock.on('data', (d: Buffer) => chunks.push(d));
    sock.write(buildRequest('BITS_POST', '/tls', { Connection: 'close' }, 'secret'));
    await new Promise<void>((r) => sock.once('end', () => r()));
    const text = Buffer.concat(chunks).toString('latin1');
    expect(text).toMatch(/^HTTP\/1\.1 200 OK\r\n/);
    expect(text).toContain(`X-Sha: ${sha(Buffer.from('secret'))}`);
    expect(secure).toBe(true);
  });

  test('startServer routes BITS_POST, GET and other methods', async () => {
    const root = await mkdtemp(path.join(os.tmpdir(), 'bits-http1-'));
    cleanups.push(() => rm(root, { recursive: true, force: true }));
    const srv: RunningServer = await startServer({ root });
    cleanups.push(() => srv.close());
    const ping = await rawRequest(srv.port, buildRequest('BITS_POST', '/u/x', { 'BITS-Packet-Type': 'Ping' }));
    expect(ping.status).toBe(200);
    expect(ping.headers['bits-packet-type']).toBe('Ack');
    const put = await rawRequest(srv.port, buildRequest('PUT', '/u/x', {}, 'x'));
    expect(put.status).toBe(405);
  });
});
