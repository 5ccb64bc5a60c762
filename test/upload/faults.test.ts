/**
 * The upload client through a real faulty TCP proxy in front of a real
 * `bits serve`: cut connections mid-body, 503s without BITS-Error, responses
 * held past the response timeout, servers that forget every session, 413 from
 * a small fragment limit, BITS-Host-Id to a live and to a dead alternate host.
 * Every upload must end byte-identical (sha256) to its source.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { promises as fsp } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import { startServer, type RunningServer, type ServeOptions } from '../../src/server/index.js';
import { uploadFile, type UploadOptions } from '../../src/client/upload.js';
import type { TransferEvent } from '../../src/client/events.js';
import { ExitCode, TimeoutError } from '../../src/errors.js';
import { startFaultProxy, type Fault, type FaultProxy } from '../helpers/fault-proxy.js';
import { makeRandomFile, makeTempDir, seededRandom, sha256File } from '../helpers/files.js';

const FRAG = 64 * 1024;
const RESPONSE_TIMEOUT_MS = 700;

let tmp: { dir: string; cleanup: () => Promise<void> };
let srcDir: string;

beforeAll(async () => {
  tmp = await makeTempDir('bits-upload-faults-');
  srcDir = join(tmp.dir, 'src');
  await fsp.mkdir(srcDir);
});
afterAll(async () => {
  await tmp?.cleanup();
});

let toClose: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const c of toClose.reverse()) await c().catch(() => undefined);
  toClose = [];
});

/** A server on a fresh root, restartable with its session table wiped. */
async function serverFixture(name: string, extra: Partial<ServeOptions> = {}) {
  const root = join(tmp.dir, name);
  await fsp.mkdir(join(root, 'up'), { recursive: true });
  const opts: ServeOptions = { root, port: 0, ...extra };
  const fx = {
    root,
    server: await startServer(opts),
    /** (d) the server forgets every session: restart it with BITS-Sessions deleted. */
    async forgetSessions(proxy: FaultProxy) {
      await fx.server.close();
      await fsp.rm(join(root, 'up', 'BITS-Sessions'), { recursive: true, force: true });
      fx.server = await startServer(opts);
      proxy.setTarget({ host: '127.0.0.1', port: fx.server.port });
    },
  };
  toClose.push(() => fx.server.close());
  return fx;
}

function clientOpts(extra: Partial<UploadOptions> = {}): Partial<UploadOptions> {
  return {
    fragmentSize: FRAG,
    retryBaseMs: 10,
    retryMaxMs: 150,
    noProgressTimeoutMs: 20_000,
    transport: { responseTimeoutMs: RESPONSE_TIMEOUT_MS, requestTimeoutMs: 5_000, connectTimeoutMs: 2_000 },
    ...extra,
  };
}

describe('fault loop', () => {
  it('30+ uploads with random faults all end sha256-identical', async () => {
    const fx = await serverFixture('loop');
    const rnd = seededRandom(0xb175);
    let forgotThisUpload = false;
    const proxy = await startFaultProxy({ target: { host: '127.0.0.1', port: fx.server.port } });
    toClose.push(proxy.close);
    let faultsOn = true;
    let pending503 = 0;
    const counts: Record<string, number> = {};
    proxy.decide = (req): Fault | undefined => {
      if (!faultsOn) return undefined;
      if (pending503 > 0) {
        pending503--;
        return { type: 'status', status: 503 };
      }
      const x = rnd();
      let f: Fault | undefined;
      if (x < 0.07) f = { type: 'cut', afterBodyBytes: Math.floor(rnd() * (req.contentLength + 1)) };
      else if (x < 0.12) {
        pending503 = Math.floor(rnd() * 2); // this one and up to one more
        f = { type: 'status', status: 503 };
      } else if (x < 0.13) f = { type: 'delay', ms: RESPONSE_TIMEOUT_MS + 300 };
      else if (x < 0.15 && !forgotThisUpload) {
        forgotThisUpload = true;
        f = { type: 'hook', run: () => fx.forgetSessions(proxy) };
      }
      if (f) counts[f.type] = (counts[f.type] ?? 0) + 1;
      return f;
    };

    const N = 32;
    const deadline = Date.now() + 30_000;
    let identical = 0;
    let done = 0;
    let retries = 0;
    for (let i = 0; i < N && Date.now() < deadline; i++) {
      forgotThisUpload = false;
      const size = 200 * 1024 + Math.floor(rnd() * 0.8 * 1024 * 1024);
      const file = join(srcDir, `loop-${i}.bin`);
      await makeRandomFile(file, size, i);
      const r = await uploadFile({ file, url: `http://127.0.0.1:${proxy.port}/up/loop-${i}.bin`, ...clientOpts() });
      retries += r.retries;
      done++;
      if ((await sha256File(join(fx.root, 'up', `loop-${i}.bin`))) === (await sha256File(file))) identical++;
      await fsp.rm(file);
    }
    faultsOn = false;
    const faulted = proxy.requests.filter((r) => r.fault).length;
    console.log(`${done} faulty uploads, ${identical} identical (${faulted} injected faults: ${JSON.stringify(counts)}; ${retries} client retries)`);
    expect(done).toBeGreaterThanOrEqual(30);
    expect(identical).toBe(done);
    // The loop must really have been faulty.
    expect(counts.cut ?? 0).toBeGreaterThan(0);
    expect(counts.status ?? 0).toBeGreaterThan(0);
    expect(counts.delay ?? 0).toBeGreaterThan(0);
    expect(counts.hook ?? 0).toBeGreaterThan(0);
  });
});

describe('single faults', () => {
  async function upload(fx: { root: string }, proxyPort: number, name: string, size: number, extra: Partial<UploadOptions> = {}) {
    const file = join(srcDir, name);
    await makeRandomFile(file, size);
    const events: TransferEvent[] = [];
    const r = await uploadFile({ file, url: `http://127.0.0.1:${proxyPort}/up/${name}`, ...clientOpts(extra), onEvent: (e) => events.push(e) });
    expect(await sha256File(join(fx.root, 'up', name))).toBe(await sha256File(file));
    return { r, events };
  }

  it('a cut in the middle of a FRAGMENT body resumes with PING then FRAGMENT (§3.1.4.3)', async () => {
    const fx = await serverFixture('cut');
    let cutDone = false;
    const proxy = await startFaultProxy({
      target: { host: '127.0.0.1', port: fx.server.port },
      decide: (req) => {
        if (!cutDone && req.packetType === 'Fragment' && /bytes 131072-/.test(req.headers['content-range'] ?? '')) {
          cutDone = true;
          return { type: 'cut', afterBodyBytes: 1000 };
        }
        return undefined;
      },
    });
    toClose.push(proxy.close);
    const { r } = await upload(fx, proxy.port, 'cut.bin', 300_000);
    expect(r.retries).toBe(1);
    const types = proxy.requests.map((q) => q.packetType);
    const at = proxy.requests.findIndex((q) => q.fault === 'cut');
    expect(types.slice(at, at + 3)).toEqual(['Fragment', 'Ping', 'Fragment']);
    expect(proxy.requests[at + 2]!.headers['content-range']).toMatch(/^bytes 131072-/);
    // A new connection after the cut, one connection before it.
    expect(new Set(proxy.requests.slice(0, at + 1).map((q) => q.conn)).size).toBe(1);
  });

  it('a lost Ack (response held past the timeout) is recovered from the server offset', async () => {
    const fx = await serverFixture('delay');
    let n = 0;
    const proxy = await startFaultProxy({
      target: { host: '127.0.0.1', port: fx.server.port },
      decide: (req) => (req.packetType === 'Fragment' && ++n === 2 ? { type: 'delay', ms: RESPONSE_TIMEOUT_MS + 500 } : undefined),
    });
    toClose.push(proxy.close);
    const { r } = await upload(fx, proxy.port, 'delay.bin', 5 * FRAG + 7);
    expect(r.retries).toBe(1);
  });

  it('503 without BITS-Error on the next K requests is retried', async () => {
    const fx = await serverFixture('s503');
    let k = 0;
    const proxy = await startFaultProxy({
      target: { host: '127.0.0.1', port: fx.server.port },
      decide: (req) => (req.index >= 2 && k++ < 4 ? { type: 'status', status: 503 } : undefined),
    });
    toClose.push(proxy.close);
    const { r, events } = await upload(fx, proxy.port, 's503.bin', 3 * FRAG);
    expect(r.retries).toBe(4);
    expect(events.filter((e) => e.type === 'retry')).toHaveLength(4);
  });

  it('no acknowledged byte within --no-progress-timeout: TimeoutError no-progress, resumable, exit 4', async () => {
    const fx = await serverFixture('noprog');
    const proxy = await startFaultProxy({
      target: { host: '127.0.0.1', port: fx.server.port },
      decide: (req) => (req.packetType === 'Fragment' ? { type: 'status', status: 503 } : undefined),
    });
    toClose.push(proxy.close);
    const file = join(srcDir, 'noprog.bin');
    await makeRandomFile(file, 100_000);
    const t0 = Date.now();
    const err = await uploadFile({ file, url: `http://127.0.0.1:${proxy.port}/up/noprog.bin`, ...clientOpts({ noProgressTimeoutMs: 800 }) }).catch(
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(TimeoutError);
    expect((err as TimeoutError).timer).toBe('no-progress');
    expect((err as TimeoutError).resumable).toBe(true);
    expect((err as TimeoutError).exitCode).toBe(ExitCode.NETWORK);
    expect((err as Error).message).toMatch(/no progress .*HTTP 503/);
    expect(Date.now() - t0).toBeLessThan(10_000);
  });

  it('a server that forgot the session: BG_E_SESSION_NOT_FOUND -> new CREATE-SESSION from byte 0', async () => {
    const fx = await serverFixture('forget');
    let forgot = false;
    const proxy: FaultProxy = await startFaultProxy({
      target: { host: '127.0.0.1', port: fx.server.port },
      decide: (req) => {
        if (!forgot && req.packetType === 'Fragment' && /bytes 196608-/.test(req.headers['content-range'] ?? '')) {
          forgot = true;
          return { type: 'hook', run: () => fx.forgetSessions(proxy) };
        }
        return undefined;
      },
    });
    toClose.push(proxy.close);
    const { events } = await upload(fx, proxy.port, 'forget.bin', 5 * FRAG);
    expect(proxy.requests.filter((q) => q.packetType === 'Create-Session')).toHaveLength(2);
    expect(events.some((e) => e.type === 'warning' && /BG_E_SESSION_NOT_FOUND/.test(e.message))).toBe(true);
  });

  it('(e) 413 from limits.maxFragmentBytes halves the fragment until accepted', async () => {
    const fx = await serverFixture('f413', { limits: { maxFragmentBytes: 20 * 1024 } });
    const proxy = await startFaultProxy({ target: { host: '127.0.0.1', port: fx.server.port } });
    toClose.push(proxy.close);
    await upload(fx, proxy.port, 'f413.bin', 100_000);
    const lengths = proxy.requests.filter((q) => q.packetType === 'Fragment').map((q) => q.contentLength);
    expect(lengths.slice(0, 3)).toEqual([65536, 32768, 16384]);
    expect(Math.max(...lengths.slice(2))).toBe(16384);
  });

  async function canListen(host: string): Promise<boolean> {
    return new Promise((resolve) => {
      const s = net.createServer();
      s.once('error', () => resolve(false));
      s.listen(0, host, () => s.close(() => resolve(true)));
    });
  }

  it('(f) BITS-Host-Id 127.0.0.2, live: PING, FRAGMENTs and CLOSE-SESSION go there', async (ctx) => {
    if (!(await canListen('127.0.0.2'))) ctx.skip();
    const fx = await serverFixture('hostlive', { defaults: { hostId: '127.0.0.2', hostIdFallbackTimeout: 2 } });
    const proxy = await startFaultProxy({ target: { host: '127.0.0.1', port: fx.server.port }, hosts: ['127.0.0.1', '127.0.0.2'] });
    toClose.push(proxy.close);
    await upload(fx, proxy.port, 'hostlive.bin', 3 * FRAG + 5);
    const seen = proxy.requests.map((q) => `${q.listener} ${q.packetType}`);
    expect(seen).toEqual([
      '127.0.0.1 Create-Session',
      '127.0.0.2 Ping',
      '127.0.0.2 Fragment',
      '127.0.0.2 Fragment',
      '127.0.0.2 Fragment',
      '127.0.0.2 Fragment',
      '127.0.0.2 Close-Session',
    ]);
  });

  it('(f) BITS-Host-Id 127.0.0.2, dead: falls back to the origin after BITS-Host-Id-Fallback-Timeout', async (ctx) => {
    if (!(await canListen('127.0.0.2'))) ctx.skip();
    const fx = await serverFixture('hostdead', { defaults: { hostId: '127.0.0.2', hostIdFallbackTimeout: 1 } });
    const proxy = await startFaultProxy({ target: { host: '127.0.0.1', port: fx.server.port } });
    toClose.push(proxy.close);
    const t0 = Date.now();
    const { events } = await upload(fx, proxy.port, 'hostdead.bin', 2 * FRAG);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(1000);
    expect(events.some((e) => e.type === 'phase' && e.phase === 'waiting-host-fallback')).toBe(true);
    // Everything after CREATE-SESSION reached the origin only once the timer fired.
    expect(proxy.requests.map((q) => q.packetType)).toEqual(['Create-Session', 'Ping', 'Fragment', 'Fragment', 'Close-Session']);
  });
});
