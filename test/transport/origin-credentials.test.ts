/**
 * Issue 18.2/18.14/18.1 for uploads, with the built `bits upload` against a real
 * `bits serve` on 127.0.0.1: an absolute BITS-Reply-URL on another origin that
 * answers 401 must receive no credentials; an https upload's reply URL may not be
 * http; a destination ending in `/` gets the file's name; a BITS_POST answered
 * with a redirect is not followed and the error names the Location.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createHash, randomBytes } from 'node:crypto';
import * as fsp from 'node:fs/promises';
import * as http from 'node:http';
import * as net from 'node:net';
import * as path from 'node:path';
import { startServer, type RunningServer } from '../../src/server/index.js';
import { ensureBuilt, runBits } from '../helpers/cli.js';
import { makeTestPki, type TestPki } from '../helpers/tls.js';
import { tempDir } from '../download/helpers.js';
import { startFaultProxy } from '../helpers/fault-proxy.js';

interface Plain {
  url: string;
  seen: Array<{ method: string; url: string; headers: http.IncomingHttpHeaders }>;
  close(): Promise<void>;
}

/** A plain server of our own: records each request and answers with `answer`. */
async function plainServer(answer: (req: http.IncomingMessage, res: http.ServerResponse) => void): Promise<Plain> {
  const seen: Plain['seen'] = [];
  const server = http.createServer((req, res) => {
    seen.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers });
    req.resume();
    req.on('end', () => answer(req, res));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const port = (server.address() as { port: number }).port;
  return {
    url: `http://127.0.0.1:${port}`,
    seen,
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}

let dir: string;
let home: string;
let root: string;
let pki: TestPki;
const closers: Array<() => Promise<unknown>> = [];

function upload(args: string[]) {
  return runBits(['upload', ...args], { cwd: dir, env: { BITS_HOME: home, NO_COLOR: '1' }, timeoutMs: 30_000 });
}

async function sha(p: string): Promise<string> {
  return createHash('sha256').update(await fsp.readFile(p)).digest('hex');
}

async function serve(opts: Parameters<typeof startServer>[0]): Promise<RunningServer> {
  const s = await startServer(opts);
  closers.push(() => s.close());
  return s;
}

beforeAll(async () => {
  ensureBuilt();
  dir = await tempDir('bits-origin-');
  home = path.join(dir, 'home');
  root = path.join(dir, 'root');
  await fsp.mkdir(path.join(root, 'dir'), { recursive: true });
  pki = makeTestPki();
});

afterAll(async () => {
  for (const c of closers.reverse()) await c().catch(() => undefined);
  pki?.cleanup();
  await fsp.rm(dir, { recursive: true, force: true });
});

describe('credentials stay with the upload server (issue 18.2)', () => {
  it('an absolute BITS-Reply-URL on another origin answering 401 gets no Authorization, no secret header', async () => {
    const replyHost = await plainServer((_req, res) => {
      res.writeHead(401, { 'www-authenticate': 'Basic realm="elsewhere"', 'content-length': 0 });
      res.end();
    });
    closers.push(() => replyHost.close());
    // The server application names a static reply on the other origin (BITS-Static-Response-URL).
    const app = await plainServer((_req, res) => {
      res.writeHead(200, { 'BITS-Static-Response-URL': `${replyHost.url}/reply.xml`, 'content-length': 0 });
      res.end();
    });
    closers.push(() => app.close());
    const srv = await serve({ root, port: 0, directories: { '/app': { notificationType: 'by-value', notificationUrl: `${app.url}/notify` } } });
    await fsp.mkdir(path.join(root, 'app'), { recursive: true });
    const file = path.join(dir, 'in.bin');
    await fsp.writeFile(file, randomBytes(50_000));
    const r = await upload([
      file,
      `${srv.url}/app/in.bin`,
      '--user',
      'alice:upl0ad-secret',
      '-H',
      'X-Api-Key: key-123',
      '-H',
      'X-Amz-Security-Token: amz-456',
      '--reply-file',
      path.join(dir, 'reply.xml'),
    ]);
    // Refused at once as an authentication failure (exit 6), not retried as if the network failed.
    expect(r.code).toBe(6);
    expect(r.stderr).not.toMatch(/retrying/);
    expect(r.stderr).not.toContain('upl0ad-secret');
    expect(replyHost.seen.length).toBeGreaterThan(0);
    for (const s of replyHost.seen) {
      expect(s.url).toBe('/reply.xml');
      expect(s.headers.authorization).toBeUndefined();
      expect(s.headers['x-api-key']).toBeUndefined();
      expect(s.headers['x-amz-security-token']).toBeUndefined();
    }
    expect(r.stderr).toMatch(/not sent to another origin/);
  });

  it('an https upload whose reply URL is http: exit 7, nothing fetched over http', async () => {
    const replyHost = await plainServer((_req, res) => {
      res.writeHead(200, { 'content-length': 2 });
      res.end('ok');
    });
    closers.push(() => replyHost.close());
    const app = await plainServer((_req, res) => {
      res.writeHead(200, { 'BITS-Static-Response-URL': `${replyHost.url}/reply.xml`, 'content-length': 0 });
      res.end();
    });
    closers.push(() => app.close());
    const srv = await serve({
      root,
      port: 0,
      host: '127.0.0.1',
      tls: { cert: pki.server.cert, key: pki.server.key },
      directories: { '/app': { notificationType: 'by-value', notificationUrl: `${app.url}/notify` } },
    });
    const file = path.join(dir, 'tls.bin');
    await fsp.writeFile(file, randomBytes(20_000));
    const r = await upload([file, `https://127.0.0.1:${srv.port}/app/tls.bin`, '--cacert', pki.caFile, '--reply-file', path.join(dir, 'tls-reply.xml')]);
    expect(r.code).toBe(7);
    expect(r.stderr).toMatch(/BITS-Reply-URL .* is http for an https upload/);
    expect(replyHost.seen).toHaveLength(0);
  });
});

describe('BITS-Host-Id keeps the credentials (the session moves there, the server said so)', () => {
  it('a Basic-auth bits serve moving the session to 127.0.0.2: every BITS_POST there is authenticated, sha256-identical', async (ctx) => {
    const canListen = await new Promise<boolean>((resolve) => {
      const t = net.createServer();
      t.once('error', () => resolve(false));
      t.listen(0, '127.0.0.2', () => t.close(() => resolve(true)));
    });
    if (!canListen) ctx.skip();
    const hostRoot = path.join(dir, 'hostroot');
    await fsp.mkdir(path.join(hostRoot, 'up'), { recursive: true });
    const srv = await serve({ root: hostRoot, port: 0, basicAuth: { user: 'alice', password: 'h0st-pw' }, defaults: { hostId: '127.0.0.2', hostIdFallbackTimeout: 5 } });
    const proxy = await startFaultProxy({ target: { host: '127.0.0.1', port: srv.port }, hosts: ['127.0.0.1', '127.0.0.2'] });
    closers.push(() => proxy.close());
    const file = path.join(dir, 'hosted.bin');
    await fsp.writeFile(file, randomBytes(200_000));
    const r = await upload([file, `http://127.0.0.1:${proxy.port}/up/hosted.bin`, '--user', 'alice:h0st-pw']);
    expect(r.stderr).not.toMatch(/error/i);
    expect(r.code).toBe(0);
    expect(await sha(path.join(hostRoot, 'up', 'hosted.bin'))).toBe(await sha(file));
    const moved = proxy.requests.filter((q) => q.listener === '127.0.0.2' && q.method === 'BITS_POST');
    expect(moved.length).toBeGreaterThan(1);
    // Answered, not refused: the last request there carried the credentials.
    expect(moved.at(-1)!.headers['authorization'] ?? moved.at(-1)!.headers['Authorization']).toMatch(/^Basic /);
  });
});

describe('upload to a URL ending in / (issue 18.14)', () => {
  it('lands as dir/<name> on bits serve, the name percent-encoded', async () => {
    const srv = await serve({ root, port: 0 });
    const file = path.join(dir, 'report 2026 #1.bin');
    await fsp.writeFile(file, randomBytes(300_000));
    const r = await upload([file, `${srv.url}/dir/`]);
    expect(r.stderr).not.toMatch(/error/i);
    expect(r.code).toBe(0);
    expect(await sha(path.join(root, 'dir', 'report 2026 #1.bin'))).toBe(await sha(file));
    expect(r.stderr + r.stdout).toContain('/dir/report%202026%20%231.bin');
  });
});

describe('BITS_POST is never redirected (issue 18.1)', () => {
  it('a 307 to Create-Session: exit 5 naming the Location, the target never contacted', async () => {
    const target = await plainServer((_req, res) => {
      res.writeHead(500, { 'content-length': 0 });
      res.end();
    });
    closers.push(() => target.close());
    // node:http refuses the BITS_POST method: a raw server answers every request head with a 307.
    const heads: string[] = [];
    const mover = net.createServer((sock) => {
      let buf = '';
      sock.on('data', (d: Buffer) => {
        buf += d.toString('latin1');
        for (let i = buf.indexOf('\r\n\r\n'); i >= 0; i = buf.indexOf('\r\n\r\n')) {
          heads.push(buf.slice(0, i));
          buf = buf.slice(i + 4);
          sock.write(`HTTP/1.1 307 Temporary Redirect\r\nLocation: ${target.url}/elsewhere/x.bin\r\nContent-Length: 0\r\n\r\n`);
        }
      });
      sock.on('error', () => undefined);
    });
    await new Promise<void>((r) => mover.listen(0, '127.0.0.1', () => r()));
    closers.push(() => new Promise((r) => mover.close(r)));
    const moverUrl = `http://127.0.0.1:${(mover.address() as net.AddressInfo).port}`;
    const file = path.join(dir, 'moved.bin');
    await fsp.writeFile(file, randomBytes(1000));
    const r = await upload([file, `${moverUrl}/up/x.bin`, '--user', 'alice:pw-abc']);
    expect(r.code).toBe(5);
    expect(r.stderr).toContain(`${target.url}/elsewhere/x.bin`);
    expect(r.stderr).toMatch(/not redirected/);
    expect(target.seen).toHaveLength(0);
    // Refused at once: one Create-Session, not a retry loop.
    expect(heads.filter((h) => h.startsWith('BITS_POST '))).toHaveLength(1);
  });
});
