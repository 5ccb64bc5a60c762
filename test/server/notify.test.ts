import { afterEach, describe, expect, test } from 'vitest';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { startServer, type RunningServer, type ServeOptions } from '../../src/server/index.js';
import { PROTOCOL_GUID } from '../../src/protocol/headers.js';
import { resolveReplyUrl } from '../../src/protocol/urls.js';
import { RawConnection, bitsRequest, buildRequest, type RawResponse } from '../helpers/raw-http.js';

const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  while (cleanups.length) await cleanups.pop()!();
});

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

interface AppCall {
  headers: http.IncomingHttpHeaders;
  body: Buffer;
}
type AppBehaviour = (call: AppCall, res: http.ServerResponse) => void | Promise<void>;

/** A real server application (§3.4) on loopback; `behaviour` decides each answer. */
async function startApp(behaviour: AppBehaviour): Promise<{ url: string; calls: AppCall[]; setBehaviour(b: AppBehaviour): void }> {
  const calls: AppCall[] = [];
  let current = behaviour;
  const server = http.createServer((req, res) => {
    const parts: Buffer[] = [];
    req.on('data', (c: Buffer) => parts.push(c));
    req.on('end', () => {
      const call = { headers: req.headers, body: Buffer.concat(parts) };
      calls.push(call);
      Promise.resolve(current(call, res)).catch(() => res.destroy());
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  cleanups.push(
    () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  );
  const port = (server.address() as { port: number }).port;
  return { url: `http://127.0.0.1:${port}/app/notify`, calls, setBehaviour: (b) => (current = b) };
}

async function tempRoot(): Promise<string> {
  const root = await mkdtemp(path.join(os.tmpdir(), 'bits-notify-'));
  cleanups.push(() => rm(root, { recursive: true, force: true }));
  return root;
}

async function serve(root: string, opts: Partial<ServeOptions>): Promise<RunningServer> {
  const s = await startServer({ root, ...opts });
  cleanups.push(() => s.close());
  return s;
}

class Bits {
  constructor(
    readonly conn: RawConnection,
    readonly target: string,
  ) {}
  static async open(srv: RunningServer, target: string): Promise<Bits> {
    const c = await RawConnection.connect(srv.port);
    cleanups.push(async () => c.destroy());
    return new Bits(c, target);
  }
  send(type: string, headers: Record<string, string | number> = {}, body?: Buffer): Promise<RawResponse> {
    const host = `127.0.0.1:${this.conn.socket.remotePort}`;
    return this.conn.request(bitsRequest(this.target, type, { Host: host, ...headers }, body), { timeoutMs: 15_000 });
  }
  async session(): Promise<string> {
    const r = await this.send('Create-Session', { 'BITS-Supported-Protocols': PROTOCOL_GUID });
    expect(r.status).toBe(200);
    return r.headers['bits-session-id']!;
  }
  fragment(sid: string, first: number, data: Buffer, total: number): Promise<RawResponse> {
    return this.send('Fragment', { 'BITS-Session-Id': sid, 'Content-Range': `bytes ${first}-${first + data.length - 1}/${total}` }, data);
  }
  /** Sends `data` in two fragments; returns the Ack of the last. */
  async upload(sid: string, data: Buffer): Promise<RawResponse> {
    const half = Math.floor(data.length / 2);
    const first = await this.fragment(sid, 0, data.subarray(0, half), data.length);
    expect(first.status).toBe(200);
    // §2.2.7.2: only the Ack of the last fragment carries the reply URL.
    expect(first.headers['bits-reply-url']).toBeUndefined();
    return this.fragment(sid, half, data.subarray(half), data.length);
  }
  close(sid: string): Promise<RawResponse> {
    return this.send('Close-Session', { 'BITS-Session-Id': sid });
  }
}

/** GETs the reply through the server's download side, as a BITS client would (§4.2-19). */
async function fetchReply(srv: RunningServer, destination: string, replyUrl: string): Promise<RawResponse> {
  const u = resolveReplyUrl(`${srv.url}${destination}`, replyUrl);
  const c = await RawConnection.connect(srv.port);
  try {
    return await c.request(buildRequest('GET', u.pathname), { timeoutMs: 10_000 });
  } finally {
    c.destroy();
  }
}

function replyFileOnDisk(root: string, vdir: string, sid: string): string {
  return path.join(root, vdir, 'BITS-Sessions', 'Replies', sid, 'responsefile.bin');
}

describe('§3.3 back-end notification', () => {
  test('by reference: the app reads the request file and writes the reply file', async () => {
    const root = await tempRoot();
    const app = await startApp(async (call, res) => {
      const input = await readFile(String(call.headers['bits-request-datafile-name']));
      await writeFile(String(call.headers['bits-response-datafile-name']), Buffer.from(input.toString('latin1').toUpperCase(), 'latin1'));
      res.writeHead(200, { 'Content-Type': 'text/html' });
      res.end();
    });
    const srv = await serve(root, { directories: { '/ref': { notificationType: 'by-reference', notificationUrl: app.url } } });
    const b = await Bits.open(srv, '/ref/in.txt');
    const sid = await b.session();
    const data = Buffer.from('hello, upload-reply world '.repeat(400));
    const ack = await b.upload(sid, data);
    expect(ack.status).toBe(200);
    expect(ack.headers['bits-received-content-range']).toBe(String(data.length));
    expect(ack.headers['bits-reply-url']).toBe(`BITS-Sessions\\Replies\\${sid}\\responsefile.bin`);

    expect(app.calls).toHaveLength(1);
    const h = app.calls[0]!.headers;
    expect(h['bits-original-request-url']).toBe(`${srv.url}/ref/in.txt`);
    expect(path.isAbsolute(String(h['bits-request-datafile-name']))).toBe(true);
    expect(String(h['bits-request-datafile-name'])).toMatch(/BITS-Sessions[\\/]Requests[\\/]\{[0-9A-F-]+\}[\\/]requestfile\.bin$/);
    expect(String(h['bits-response-datafile-name'])).toBe(await realPathOf(replyFileOnDisk(root, 'ref', sid)));
    expect(h['content-length']).toBe('0');
    expect(app.calls[0]!.body.length).toBe(0);

    const expected = Buffer.from(data.toString('latin1').toUpperCase(), 'latin1');
    expect(sha(await readFile(replyFileOnDisk(root, 'ref', sid)))).toBe(sha(expected));
    const got = await fetchReply(srv, '/ref/in.txt', ack.headers['bits-reply-url']!);
    expect(got.status).toBe(200);
    expect(sha(got.body)).toBe(sha(expected));

    expect((await b.close(sid)).status).toBe(200);
    // §3.3.5.2.1: with notification and no BITS-Copy-File-To-Destination the destination stays empty.
    expect(existsSync(path.join(root, 'ref', 'in.txt'))).toBe(false);
    // §3.2.5.2.7: the response entity is deleted at close.
    expect(existsSync(replyFileOnDisk(root, 'ref', sid))).toBe(false);
  });

  test('by value: the entity is the request body and the response body becomes the reply', async () => {
    const root = await tempRoot();
    const app = await startApp((call, res) => {
      const out = Buffer.from(call.body).reverse();
      res.writeHead(200, { 'Content-Length': out.length });
      res.end(out);
    });
    const srv = await serve(root, { directories: { '/val': { notificationType: 'by-value', notificationUrl: app.url } } });
    const b = await Bits.open(srv, '/val/blob.bin');
    const sid = await b.session();
    const data = randomBytes(300_000);
    const ack = await b.upload(sid, data);
    expect(ack.status).toBe(200);
    expect(app.calls).toHaveLength(1);
    expect(sha(app.calls[0]!.body)).toBe(sha(data));
    expect(app.calls[0]!.headers['bits-request-datafile-name']).toBeUndefined();
    expect(app.calls[0]!.headers['bits-response-datafile-name']).toBeUndefined();
    expect(app.calls[0]!.headers['bits-original-request-url']).toBe(`${srv.url}/val/blob.bin`);
    const reversed = Buffer.from(data).reverse();
    expect(sha(await readFile(replyFileOnDisk(root, 'val', sid)))).toBe(sha(reversed));
    expect((await b.close(sid)).status).toBe(200);
    expect(existsSync(path.join(root, 'val', 'blob.bin'))).toBe(false);
  });

  test('a static response URL is sent as the reply URL, as is', async () => {
    const root = await tempRoot();
    const staticUrl = 'http://127.0.0.1:9/static/answer.xml';
    const app = await startApp((_call, res) => {
      res.writeHead(200, { 'BITS-Static-Response-URL': staticUrl, 'Content-Length': 0 });
      res.end();
    });
    const srv = await serve(root, { directories: { '/st': { notificationType: 'by-value', notificationUrl: app.url } } });
    const b = await Bits.open(srv, '/st/x.bin');
    const sid = await b.session();
    const ack = await b.upload(sid, randomBytes(1000));
    expect(ack.status).toBe(200);
    expect(ack.headers['bits-reply-url']).toBe(staticUrl);
    expect(existsSync(path.join(root, 'st', 'BITS-Sessions', 'Replies', sid))).toBe(false);
    expect((await b.close(sid)).status).toBe(200);
  });

  test('BITS-Copy-File-To-Destination also populates the destination at close', async () => {
    const root = await tempRoot();
    const app = await startApp((_call, res) => {
      res.writeHead(200, { 'BITS-Copy-File-To-Destination': 'true', 'Content-Length': 2 });
      res.end('ok');
    });
    const srv = await serve(root, { directories: { '/cp': { notificationType: 'by-reference', notificationUrl: app.url } } });
    const b = await Bits.open(srv, '/cp/kept.bin');
    const sid = await b.session();
    const data = randomBytes(50_000);
    const ack = await b.upload(sid, data);
    expect(ack.status).toBe(200);
    // The app wrote no reply file but answered with a body: that body is the reply (§3.4.5.2).
    expect(await readFile(replyFileOnDisk(root, 'cp', sid), 'utf8')).toBe('ok');
    expect(existsSync(path.join(root, 'cp', 'kept.bin'))).toBe(false);
    expect((await b.close(sid)).status).toBe(200);
    expect(sha(await readFile(path.join(root, 'cp', 'kept.bin')))).toBe(sha(data));
  });

  test('an app failure is reported with context 0x7; a resent last fragment retries; then NotifyCache', async () => {
    const root = await tempRoot();
    const app = await startApp((_call, res) => {
      res.writeHead(503, { 'BITS-Error': '0x80004005', 'Content-Length': 0 });
      res.end();
    });
    const srv = await serve(root, { directories: { '/f': { notificationType: 'by-value', notificationUrl: app.url } } });
    const b = await Bits.open(srv, '/f/x.bin');
    const sid = await b.session();
    const data = randomBytes(2000);
    const bad = await b.upload(sid, data);
    expect(bad.status).toBe(503);
    expect(bad.headers['bits-error']).toBe('0x80004005');
    expect(bad.headers['bits-error-context']).toBe('0x7');
    expect(bad.headers['bits-packet-type']).toBe('Ack');
    expect(bad.headers['bits-reply-url']).toBeUndefined();

    // Without a BITS-Error from the app, the HTTP status is mapped to an HRESULT.
    app.setBehaviour((_call, res) => {
      res.writeHead(500, { 'Content-Length': 0 });
      res.end();
    });
    const bad2 = await b.fragment(sid, 1000, data.subarray(1000), 2000);
    expect(bad2.status).toBe(500);
    expect(bad2.headers['bits-error']).toBe('0x801901F4');
    expect(bad2.headers['bits-error-context']).toBe('0x7');

    app.setBehaviour((_call, res) => {
      res.writeHead(200, { 'Content-Length': 5 });
      res.end('reply');
    });
    const good = await b.fragment(sid, 1000, data.subarray(1000), 2000);
    expect(good.status).toBe(200);
    expect(good.headers['bits-reply-url']).toBe(`BITS-Sessions\\Replies\\${sid}\\responsefile.bin`);
    expect(app.calls).toHaveLength(3);
    // NotifyCache: the same Ack again, without a fourth notification.
    const again = await b.fragment(sid, 1000, data.subarray(1000), 2000);
    expect(again.status).toBe(200);
    expect(again.headers['bits-reply-url']).toBe(good.headers['bits-reply-url']);
    expect(app.calls).toHaveLength(3);
    expect((await b.close(sid)).status).toBe(200);
  });

  test('a notification that times out is 408 with 0x80070112 and context 0x7', async () => {
    const root = await tempRoot();
    const app = await startApp(() => {
      /* never answers */
    });
    const srv = await serve(root, {
      directories: { '/slow': { notificationType: 'by-reference', notificationUrl: app.url, notificationTimeoutSeconds: 0.3 } },
    });
    const b = await Bits.open(srv, '/slow/x.bin');
    const sid = await b.session();
    const r = await b.upload(sid, randomBytes(100));
    expect(r.status).toBe(408);
    expect(r.headers['bits-error']).toBe('0x80070112');
    expect(r.headers['bits-error-context']).toBe('0x7');
  });

  test('an unreachable app is an error with context 0x7, and CLOSE-SESSION cannot skip the notification', async () => {
    const root = await tempRoot();
    const srv = await serve(root, {
      directories: { '/gone': { notificationType: 'by-value', notificationUrl: 'http://127.0.0.1:9/nothing' } },
    });
    const b = await Bits.open(srv, '/gone/x.bin');
    const sid = await b.session();
    const r = await b.upload(sid, randomBytes(100));
    expect(r.status).toBeGreaterThanOrEqual(500);
    expect(r.headers['bits-error-context']).toBe('0x7');
    const c = await b.close(sid);
    expect(c.status).toBeGreaterThanOrEqual(500);
    expect(c.headers['bits-error-context']).toBe('0x7');
    expect(existsSync(path.join(root, 'gone', 'x.bin'))).toBe(false);
  });

  test('an empty file is notified at CLOSE-SESSION', async () => {
    const root = await tempRoot();
    const app = await startApp((call, res) => {
      res.writeHead(200, { 'Content-Length': 0, 'BITS-Copy-File-To-Destination': '1' });
      res.end();
    });
    const srv = await serve(root, { directories: { '/e': { notificationType: 'by-value', notificationUrl: app.url } } });
    const b = await Bits.open(srv, '/e/empty.bin');
    const sid = await b.session();
    expect((await b.close(sid)).status).toBe(200);
    expect(app.calls).toHaveLength(1);
    expect(app.calls[0]!.body.length).toBe(0);
    expect((await readFile(path.join(root, 'e', 'empty.bin'))).length).toBe(0);
  });
});

async function realPathOf(p: string): Promise<string> {
  const { realpath } = await import('node:fs/promises');
  return path.join(await realpath(path.dirname(path.dirname(p))), path.basename(path.dirname(p)), path.basename(p));
}
