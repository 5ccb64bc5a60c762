/**
 * The §3.1.2 timers against servers that stall at each stage, and keep-alive reuse.
 */
import net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { TimeoutError } from '../../src/errors.js';
import { HttpTransport } from '../../src/transport/http.js';
import { echoApp, startRawServer } from '../helpers/auth-servers.js';

const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0)) await c();
});

/** A TCP server whose connection handler decides how to stall. */
async function tcp(onSocket: (s: net.Socket) => void): Promise<string> {
  const sockets = new Set<net.Socket>();
  const srv = net.createServer((s) => {
    sockets.add(s);
    s.on('error', () => {});
    onSocket(s);
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()));
  cleanups.push(
    () =>
      new Promise<void>((r) => {
        for (const s of sockets) s.destroy();
        srv.close(() => r());
      }),
  );
  return `127.0.0.1:${(srv.address() as net.AddressInfo).port}`;
}

function transport(o: ConstructorParameters<typeof HttpTransport>[0]): HttpTransport {
  const t = new HttpTransport({ env: {}, ...o });
  cleanups.push(() => t.destroy());
  return t;
}

async function timeoutOf(p: Promise<unknown>): Promise<TimeoutError> {
  const e = await p.then(
    () => undefined,
    (err: unknown) => err,
  );
  expect(e).toBeInstanceOf(TimeoutError);
  return e as TimeoutError;
}

describe('timers', () => {
  it('response timer: request read, no answer', async () => {
    const host = await tcp((s) => s.resume());
    const e = await timeoutOf(transport({ responseTimeoutMs: 300 }).request({ method: 'GET', url: new URL(`http://${host}/`) }));
    expect(e.timer).toBe('response');
    expect(e.exitCode).toBe(4);
    expect(e.resumable).toBe(true);
  });

  it('request timer: the server stops reading the body', async () => {
    const host = await tcp((s) => s.pause());
    const big = Buffer.alloc(1024 * 1024);
    const total = 64 * big.length;
    const e = await timeoutOf(
      transport({ requestTimeoutMs: 400, responseTimeoutMs: 60_000 }).request({
        method: 'BITS_POST',
        url: new URL(`http://${host}/`),
        headers: { 'Content-Length': String(total) },
        body: (async function* () {
          for (let i = 0; i < 64; i++) yield big;
        })(),
      }),
    );
    expect(e.timer).toBe('request');
  });

  it('response timer also covers a stalled response body', async () => {
    const host = await tcp((s) =>
      s.once('data', () => s.write('HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly part')),
    );
    const res = await transport({ responseTimeoutMs: 300 }).request({ method: 'GET', url: new URL(`http://${host}/`) });
    const e = await timeoutOf(res.text());
    expect(e.timer).toBe('response');
  });

  it('connect timer: a proxy that accepts but never answers CONNECT (https target)', async () => {
    const host = await tcp((s) => s.resume());
    const e = await timeoutOf(transport({ connectTimeoutMs: 300, proxy: `http://${host}` }).request({ method: 'GET', url: new URL('https://127.0.0.1:9/') }));
    expect(e.timer).toBe('connect');
  });

  it('response timer: a proxy that accepts but never answers an absolute-form request (http target)', async () => {
    const host = await tcp((s) => s.resume());
    const e = await timeoutOf(transport({ connectTimeoutMs: 5000, responseTimeoutMs: 300, proxy: `http://${host}` }).request({ method: 'GET', url: new URL('http://127.0.0.1:9/') }));
    expect(e.timer).toBe('response');
  });

  it('a slow but moving rate-limited body does not trip the request timer', async () => {
    const s = await startRawServer(echoApp);
    cleanups.push(() => s.close());
    const body = Buffer.alloc(300 * 1024, 1);
    // 300 KiB at 512 KiB/s takes ~0.6 s, longer than the 250 ms request timer.
    const res = await transport({ requestTimeoutMs: 250, limitRateBytesPerSec: 512 * 1024 }).request({ method: 'PUT', url: new URL(`${s.url}/`), body });
    expect(res.status).toBe(200);
    expect(JSON.parse(await res.text())).toMatchObject({ length: body.length });
  });
});

describe('keep-alive', () => {
  it('sequential requests share one connection; the caller can abort', async () => {
    const s = await startRawServer(echoApp);
    cleanups.push(() => s.close());
    const t = transport({});
    for (let i = 0; i < 5; i++) {
      const r = await t.request({ method: 'BITS_POST', url: new URL(`${s.url}/k${i}`), headers: { 'Content-Length': '3' }, body: () => 'abc' });
      await r.discard();
    }
    expect(s.connections).toBe(1);
    expect(s.requests.map((q) => q.body.toString())).toEqual(['abc', 'abc', 'abc', 'abc', 'abc']);
    const ac = new AbortController();
    ac.abort(new Error('stop'));
    await expect(t.request({ method: 'GET', url: new URL(`${s.url}/x`), signal: ac.signal })).rejects.toThrow(/stop/);
  });
});
