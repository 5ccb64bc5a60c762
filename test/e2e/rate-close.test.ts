/**
 * --limit-rate end to end (a 20 MiB upload and download against `bits serve`, the
 * transfer time taken from the --json events), and regression tests for undici 7's
 * uncatchable `assert(!this.paused)` (nodejs/undici#5360): a server that sends a
 * multi-MiB body with `Connection: close` and closes while the client holds the body
 * back (the rate limit guarantees it). Before HttpTransport guarded against it, the
 * download crashed the process every time.
 */
import { readFile } from 'node:fs/promises';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ensureBuilt, expectOk, jsonEvents, makeRandomFile, sandbox, serve, sha256, sha256File, type JsonEvent, type Sandbox, type Served } from './e2e.js';

const MiB = 1024 * 1024;
const RATE = 8 * MiB; // --limit-rate 8M
const BIG = 20 * MiB;

let box: Sandbox;
let srv: Served;
let big: string;
let bigSha: string;

beforeAll(async () => {
  ensureBuilt();
  box = await sandbox('bits-e2e-rate-');
  big = await makeRandomFile(box.file('big.bin'), BIG, 20);
  bigSha = await sha256File(big);
  srv = await serve(path.join(box.dir, 'root'));
});
afterAll(async () => {
  await srv?.stop();
  await box?.cleanup();
});

function at(events: JsonEvent[], pred: (e: JsonEvent) => boolean, what: string): number {
  const e = events.find(pred);
  if (!e) throw new Error(`no ${what} event in ${JSON.stringify(events.map((x) => x.type + ':' + (x.phase ?? '')))}`);
  return Date.parse(e.time);
}

/** Bytes per second over the transfer part, checked against the limit. */
function checkRate(what: string, bytes: number, ms: number): number {
  const rate = (bytes * 1000) / ms;
  // eslint-disable-next-line no-console
  console.log(`[rate] ${what}: ${bytes} B in ${ms} ms = ${(rate / MiB).toFixed(2)} MiB/s (limit ${RATE / MiB} MiB/s, ${((rate / RATE - 1) * 100).toFixed(1)} %)`);
  // Never faster than the limit (+10 %, the events' millisecond clock and the first slice).
  expect(rate).toBeLessThanOrEqual(RATE * 1.1);
  // Not slower than -10 % either when the machine is idle; a loaded 2-core CI box can
  // lose time to scheduling, so the floor here is looser than the measured numbers.
  expect(rate).toBeGreaterThanOrEqual(RATE * 0.75);
  return rate;
}

describe('--limit-rate 8M over 20 MiB', () => {
  it('upload: the transfer part runs at the limit; byte-identical', async () => {
    const r = await box.bits(['upload', big, `${srv.url}/up/big.bin`, '--limit-rate', '8M', '--json']);
    expectOk(r, 'upload');
    const ev = jsonEvents(r.stdout);
    const t0 = at(ev, (e) => e.type === 'phase' && e.phase === 'transferring', 'transferring');
    const t1 = at(ev, (e) => e.type === 'phase' && e.phase === 'closing', 'closing');
    checkRate('upload', BIG, t1 - t0);
    expect(await sha256File(path.join(srv.root, 'up', 'big.bin'))).toBe(bigSha);
  });

  it('download: the transfer part runs at the limit; byte-identical', async () => {
    const out = box.file('big.down');
    const r = await box.bits(['download', `${srv.url}/up/big.bin`, '-o', out, '--limit-rate', '8M', '--json']);
    expectOk(r, 'download');
    const ev = jsonEvents(r.stdout);
    const t0 = at(ev, (e) => e.type === 'phase' && e.phase === 'transferring', 'transferring');
    const t1 = at(ev, (e) => e.type === 'complete', 'complete');
    checkRate('download', BIG, t1 - t0);
    expect(await sha256File(out)).toBe(bigSha);
  });
});

/**
 * Serves `body` to every GET with `Connection: close` and closes at once; HEAD gets the
 * headers. No ranges. The body is written in one go (a few MiB, held by the test), so the
 * FIN follows the data closely: the condition undici 7 trips over, made reliable.
 */
async function startClosingServer(body: Buffer): Promise<{ url: string; gets: number; close(): Promise<void> }> {
  const size = body.length;
  const sockets = new Set<net.Socket>();
  const state = { url: '', gets: 0, close: async () => {} };
  const server = net.createServer((s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => {});
    let head = '';
    const onData = (d: Buffer) => {
      head += d.toString('latin1');
      if (!head.includes('\r\n\r\n')) return;
      s.off('data', onData);
      const h = `HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: ${size}\r\nConnection: close\r\n\r\n`;
      if (head.startsWith('HEAD ')) {
        s.end(h);
        return;
      }
      state.gets++;
      s.write(h);
      s.end(body);
    };
    s.on('data', onData);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  state.url = `http://127.0.0.1:${(server.address() as net.AddressInfo).port}`;
  state.close = () =>
    new Promise<void>((r) => {
      for (const s of sockets) s.destroy();
      server.close(() => r());
    });
  return state;
}

describe('undici #5360: a Connection: close server and a body held back', () => {
  it('download --limit-rate from a Connection: close server completes (used to crash with assert(!this.paused))', async () => {
    const body = await readFile(await makeRandomFile(box.file('close.bin'), 8 * MiB, 5360));
    const closing = await startClosingServer(body);
    try {
      const out = box.file('close.down');
      const r = await box.bits(['download', `${closing.url}/close.bin`, '-o', out, '--limit-rate', '16M', '--json']);
      expect(r.stderr).not.toMatch(/AssertionError|paused/);
      expectOk(r, 'download from a closing server');
      expect(await sha256File(out)).toBe(sha256(body));
    } finally {
      await closing.close();
    }
  });

  it('upload --reply-file: the reply GET from a Connection: close server completes', async () => {
    const reply = await readFile(await makeRandomFile(box.file('reply.src'), 8 * MiB, 77));
    const closing = await startClosingServer(reply);
    // The server application (§3.4, by value): takes the entity, answers with a static reply URL.
    const seen: string[] = [];
    const app = http.createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        seen.push(sha256(Buffer.concat(chunks)));
        res.writeHead(200, { 'BITS-Static-Response-URL': `${closing.url}/reply.bin`, 'Content-Length': 0 });
        res.end();
      });
    });
    await new Promise<void>((r) => app.listen(0, '127.0.0.1', () => r()));
    const appUrl = `http://127.0.0.1:${(app.address() as net.AddressInfo).port}/notify`;
    const replySrv = await serve(path.join(box.dir, 'reply-root'), ['--notification-type', 'by-value', '--notification-url', appUrl]);
    try {
      const entity = await makeRandomFile(box.file('entity.bin'), 64 * 1024 + 5, 9);
      const out = box.file('reply.got');
      const r = await box.bits(['upload', entity, `${replySrv.url}/app/entity.bin`, '--reply-file', out, '--limit-rate', '16M', '--json']);
      expect(r.stderr).not.toMatch(/AssertionError|paused/);
      expectOk(r, 'upload with reply');
      expect(seen).toEqual([await sha256File(entity)]);
      expect(closing.gets).toBe(1);
      expect(await sha256File(out)).toBe(sha256(reply));
    } finally {
      await replySrv.stop();
      app.closeAllConnections();
      await new Promise<void>((r) => app.close(() => r()));
      await closing.close();
    }
  });
});
