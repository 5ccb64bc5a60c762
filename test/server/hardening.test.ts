/**
 * Issue 17: `bits serve` against hostile and careless clients. The built binary on
 * loopback, with short configured limits (a 2 s rate grace, a 3 s head deadline) so each
 * test takes seconds; the defaults give the same guarantees on a minute's scale.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, readdirSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, rm, symlink, writeFile, readFile } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { request } from 'undici';
import { ensureBuilt, runBits, startBits, type RunningBits } from '../helpers/cli.js';
import { RawConnection, bitsRequest, buildRequest, rawRequest, type RawResponse } from '../helpers/raw-http.js';
import { makeTestPki } from '../helpers/tls.js';

const PROTOCOL = '{7df0354d-249b-430f-820d-3d2a9bef4931}';
const E_OUTOFMEMORY = '0x8007000E';
let tmp: string;

interface Serve {
  bits: RunningBits;
  url: string;
  port: number;
  pid: number;
  stop(): Promise<void>;
}

async function serve(root: string, extra: string[], timeoutMs = 60_000): Promise<Serve> {
  const bits = startBits(['serve', '--root', root, '--port', '0', '--json', ...extra], { timeoutMs });
  await bits.waitFor(/"type":"listening"/, 'stdout', 15_000);
  const url = (JSON.parse(bits.stdout.split('\n')[0]!) as { url: string }).url;
  return {
    bits,
    url,
    port: Number(new URL(url).port),
    pid: bits.child.pid!,
    async stop() {
      bits.child.kill('SIGTERM');
      await bits.done;
    },
  };
}

function fdCount(pid: number): number {
  return readdirSync(`/proc/${pid}/fd`).length;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Polls until cond() holds; bounded in time. */
async function until(cond: () => boolean, timeoutMs: number, what: string): Promise<number> {
  const start = Date.now();
  while (!cond()) {
    if (Date.now() - start > timeoutMs) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(100);
  }
  return Date.now() - start;
}

/** A raw TCP connection from a chosen loopback address, which tracks when the server closes it. */
function connectFrom(port: number, localAddress = '127.0.0.1'): Promise<net.Socket & { closedAt?: number }> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ port, host: '127.0.0.1', localAddress }, () => resolve(s)) as net.Socket & { closedAt?: number };
    s.on('error', () => {});
    s.once('error', reject);
    s.on('close', () => (s.closedAt = Date.now()));
    s.on('data', () => {});
  });
}

async function createSession(port: number, target: string, localAddress = '127.0.0.1'): Promise<RawResponse> {
  const raw = await RawConnection.connect(port, '127.0.0.1', localAddress);
  try {
    return await raw.request(bitsRequest(target, 'Create-Session', { 'BITS-Supported-Protocols': PROTOCOL }));
  } finally {
    raw.destroy();
  }
}

beforeAll(async () => {
  ensureBuilt();
  tmp = await mkdtemp(path.join(os.tmpdir(), 'bits-hardening-'));
});

afterAll(async () => {
  if (tmp) await rm(tmp, { recursive: true, force: true });
});

async function freshRoot(name: string): Promise<string> {
  const root = path.join(tmp, name);
  await mkdir(root, { recursive: true });
  return root;
}

describe('connection limits and deadlines', () => {
  it('cuts 300 connections dripping a FRAGMENT body (1 byte / 5 s) and 100 idle ones; descriptors return to baseline while an upload and a download complete', async () => {
    const root = await freshRoot('drip');
    const payload = randomBytes(3 * 1024 * 1024);
    await writeFile(path.join(root, 'get.bin'), payload);
    const s = await serve(root, [
      '--quiet',
      '--rate-grace', '2',
      '--min-rate', '100',
      '--header-timeout', '3',
      '--max-sessions-per-client', '1000',
      '--sessions-per-minute', '1000',
    ], 90_000);
    try {
      // Warm up (thread pool, lazily opened descriptors), then take the baseline.
      expect((await request(`${s.url}/get.bin`)).statusCode).toBe(200);
      await sleep(300);
      const baseline = fdCount(s.pid);

      // 60 sessions, 5 connections each: one holds the lock, four queue behind it.
      const ids: string[] = [];
      for (let i = 0; i < 60; i++) {
        const r = await createSession(s.port, `/in/drip-${i}.bin`);
        expect(r.status).toBe(200);
        ids.push(r.headers['bits-session-id']!);
      }
      const start = Date.now();
      const drips: Array<net.Socket & { closedAt?: number }> = [];
      for (let i = 0; i < 300; i++) {
        const c = await connectFrom(s.port);
        const id = ids[i % 60]!;
        const head = buildRequest(
          'BITS_POST',
          `/in/drip-${i % 60}.bin`,
          { 'BITS-Packet-Type': 'Fragment', 'BITS-Session-Id': id, 'Content-Range': 'bytes 0-999/1000', 'Content-Length': 1000 },
        );
        c.write(head);
        drips.push(c);
      }
      const idle: Array<net.Socket & { closedAt?: number }> = [];
      for (let i = 0; i < 100; i++) idle.push(await connectFrom(s.port));
      const dripper = setInterval(() => {
        for (const c of drips) if (!c.destroyed) c.write('x');
      }, 5000);

      // Meanwhile an honest upload and download through the CLI.
      const src = path.join(tmp, 'honest.bin');
      await writeFile(src, randomBytes(2 * 1024 * 1024));
      const home = await mkdtemp(path.join(tmp, 'home-'));
      const env = { BITS_HOME: home };
      const [up, down] = await Promise.all([
        runBits(['upload', src, `${s.url}/in/honest.bin`], { env, timeoutMs: 60_000 }),
        runBits(['download', `${s.url}/get.bin`, '-o', path.join(tmp, 'got.bin')], { env, timeoutMs: 60_000 }),
      ]);
      expect(up.code, up.stderr).toBe(0);
      expect(down.code, down.stderr).toBe(0);
      expect(sha(await readFile(path.join(root, 'in', 'honest.bin')))).toBe(sha(await readFile(src)));
      expect(sha(await readFile(path.join(tmp, 'got.bin')))).toBe(sha(payload));

      try {
        await until(() => [...drips, ...idle].every((c) => c.closedAt !== undefined), 55_000, 'the server to cut every hostile connection');
      } finally {
        clearInterval(dripper);
      }
      const slowest = Math.max(...[...drips, ...idle].map((c) => c.closedAt! - start));
      expect(slowest).toBeLessThan(60_000);
      // Idle connections go at the head deadline (3 s), well before the drips queued behind locks.
      expect(Math.max(...idle.map((c) => c.closedAt! - start))).toBeLessThan(15_000);
      await until(() => fdCount(s.pid) <= baseline, 10_000, `descriptors back to ${baseline} (now ${fdCount(s.pid)})`);
    } finally {
      await s.stop();
    }
  }, 120_000);

  it('at most 4 FRAGMENTs wait for one session: the next gets 503 with Retry-After at once, without its body being read', async () => {
    const root = await freshRoot('waiters');
    const s = await serve(root, ['--quiet', '--rate-grace', '3', '--min-rate', '100']);
    try {
      const r = await createSession(s.port, '/w/x.bin');
      const id = r.headers['bits-session-id']!;
      const frag = buildRequest('BITS_POST', '/w/x.bin', {
        'BITS-Packet-Type': 'Fragment',
        'BITS-Session-Id': id,
        'Content-Range': 'bytes 0-999/1000',
        'Content-Length': 1000,
      });
      // One holds the lock (dripping), four wait.
      const held: RawConnection[] = [];
      for (let i = 0; i < 5; i++) {
        const c = await RawConnection.connect(s.port);
        await c.write(Buffer.concat([frag, Buffer.from('x')]));
        held.push(c);
        await sleep(50);
      }
      const sixth = await RawConnection.connect(s.port);
      const t0 = Date.now();
      const res = await sixth.request(frag, { timeoutMs: 2000 });
      expect(Date.now() - t0).toBeLessThan(1500);
      expect(res.status).toBe(503);
      expect(res.headers['retry-after']).toBe('5');
      expect(res.headers['bits-error']).toBe(E_OUTOFMEMORY);
      for (const c of [...held, sixth]) c.destroy();
    } finally {
      await s.stop();
    }
  });

  it('beyond --max-connections a request gets 503 with Retry-After; established connections keep working', async () => {
    const root = await freshRoot('cap');
    await writeFile(path.join(root, 'f.txt'), 'hello');
    const s = await serve(root, ['--quiet', '--max-connections', '20']);
    try {
      const held: RawConnection[] = [];
      for (let i = 0; i < 20; i++) held.push(await RawConnection.connect(s.port));
      const over = await rawRequest(s.port, buildRequest('GET', '/f.txt'));
      expect(over.status).toBe(503);
      expect(over.headers['retry-after']).toMatch(/^\d+$/);
      // An established client is not reset and is served.
      const ok = await held[0]!.request(buildRequest('GET', '/f.txt'));
      expect(ok.status).toBe(200);
      expect(ok.body.toString()).toBe('hello');
      for (const h of held) h.destroy();
      await sleep(300);
      expect((await rawRequest(s.port, buildRequest('GET', '/f.txt'))).status).toBe(200);
    } finally {
      await s.stop();
    }
  });

  it('a reader that stops reading a response is cut, and its descriptors are released', async () => {
    const root = await freshRoot('noread');
    await writeFile(path.join(root, 'big.bin'), randomBytes(48 * 1024 * 1024));
    const s = await serve(root, ['--quiet', '--rate-grace', '2', '--min-rate', '100000']);
    try {
      expect((await request(`${s.url}/big.bin`, { headers: { range: 'bytes=0-9' } })).statusCode).toBe(206);
      await sleep(300);
      const baseline = fdCount(s.pid);
      const socks: net.Socket[] = [];
      for (let i = 0; i < 20; i++) {
        const c = await connectFrom(s.port);
        c.pause();
        c.removeAllListeners('data');
        c.write(buildRequest('GET', '/big.bin'));
        socks.push(c);
      }
      await until(() => fdCount(s.pid) >= baseline + 20, 5000, 'the readers to be served');
      // 20 sockets + 20 open files while they stall; all released after the rate window.
      await until(() => fdCount(s.pid) <= baseline, 20_000, `descriptors back to ${baseline}`);
      for (const c of socks) c.destroy();
    } finally {
      await s.stop();
    }
  });

  it('keep-alive idle timeout, head deadline and TLS handshake timeout close the connection', async () => {
    const root = await freshRoot('idle');
    await writeFile(path.join(root, 'f.txt'), 'x');
    const pki = makeTestPki();
    const certFile = path.join(tmp, 'cert.pem');
    const keyFile = path.join(tmp, 'key.pem');
    await writeFile(certFile, pki.server.cert);
    await writeFile(keyFile, pki.server.key);
    const plain = await serve(root, ['--quiet', '--keep-alive-timeout', '1', '--header-timeout', '2']);
    // A folder of its own: a second `bits serve` process on one folder refuses to start (root-lock.ts).
    const tlsRoot = await freshRoot('idle-tls');
    await writeFile(path.join(tlsRoot, 'f.txt'), 'x');
    const secure = await serve(tlsRoot, ['--quiet', '--tls-cert', certFile, '--tls-key', keyFile, '--tls-handshake-timeout', '1']);
    try {
      const ka = await RawConnection.connect(plain.port);
      expect((await ka.request(buildRequest('GET', '/f.txt'))).status).toBe(200);
      const t0 = Date.now();
      await ka.waitClosed(5000);
      expect(Date.now() - t0).toBeLessThan(4000);

      // Half a request head, then nothing: 408 at the head deadline.
      const half = await RawConnection.connect(plain.port);
      await half.write('GET /f.txt HTTP/1.1\r\nHost: x\r\n');
      expect((await half.readResponse({ timeoutMs: 5000 })).status).toBe(408);

      // A TCP connection to the HTTPS port that never starts a handshake.
      const raw = await connectFrom(secure.port);
      const t1 = Date.now();
      await until(() => raw.closedAt !== undefined, 5000, 'the handshake timeout');
      expect(raw.closedAt! - t1).toBeLessThan(4000);
    } finally {
      await plain.stop();
      await secure.stop();
    }
  });
});

function sha(b: Buffer): string {
  return createHash('sha256').update(b).digest('hex');
}

describe('per-client session quotas', () => {
  it('one client hits its quota (503 + Retry-After, E_OUTOFMEMORY); a second client still creates a session', async () => {
    const root = await freshRoot('quota');
    // From the config file's `limits` this time (the other tests use flags).
    const config = path.join(tmp, 'quota.json');
    await writeFile(config, JSON.stringify({ limits: { maxSessionsPerClient: 3 } }));
    const s = await serve(root, ['--config', config]);
    try {
      for (let i = 0; i < 3; i++) expect((await createSession(s.port, `/q/a${i}`)).status).toBe(200);
      const refused = await createSession(s.port, '/q/a3');
      expect(refused.status).toBe(503);
      expect(refused.headers['bits-error']).toBe(E_OUTOFMEMORY);
      expect(refused.headers['retry-after']).toMatch(/^\d+$/);
      const other = await createSession(s.port, '/q/b0', '127.0.0.2');
      expect(other.status).toBe(200);
      expect(s.bits.stderr).toMatch(/addr:127\.0\.0\.1 holds 3 sessions \(limit 3\)/);
    } finally {
      await s.stop();
    }
  });

  it('more creations per minute than allowed get 429 + Retry-After', async () => {
    const root = await freshRoot('rate');
    const s = await serve(root, ['--quiet', '--sessions-per-minute', '2']);
    try {
      expect((await createSession(s.port, '/r/1')).status).toBe(200);
      expect((await createSession(s.port, '/r/2')).status).toBe(200);
      const r = await createSession(s.port, '/r/3');
      expect(r.status).toBe(429);
      expect(r.headers['bits-error']).toBe(E_OUTOFMEMORY);
      expect(Number(r.headers['retry-after'])).toBeGreaterThan(0);
      expect((await createSession(s.port, '/r/4', '127.0.0.3')).status).toBe(200);
    } finally {
      await s.stop();
    }
  });

  it('a session that never received a byte expires after --empty-session-timeout', async () => {
    const root = await freshRoot('empty');
    const s = await serve(root, ['--empty-session-timeout', '1']);
    try {
      const r = await createSession(s.port, '/e/x.bin');
      const id = r.headers['bits-session-id']!;
      expect(existsSync(path.join(root, 'e', 'BITS-Sessions', 'Requests', id))).toBe(true);
      await until(() => !existsSync(path.join(root, 'e')), 8000, 'the empty session and its folders to go');
      const frag = await rawRequest(
        s.port,
        bitsRequest('/e/x.bin', 'Fragment', { 'BITS-Session-Id': id, 'Content-Range': 'bytes 0-0/1' }, Buffer.from('a')),
      );
      expect(frag.status).toBe(500);
      expect(frag.headers['bits-error']).toBe('0x8020001F');
    } finally {
      await s.stop();
    }
  });
});

describe('session storage', () => {
  it('a planted symlinked BITS-Sessions (or Requests) writes nothing outside the root', async () => {
    const root = await freshRoot('symlink');
    const outside = await mkdtemp(path.join(tmp, 'outside-'));
    await mkdir(path.join(root, 'u'), { recursive: true });
    await symlink(outside, path.join(root, 'u', 'BITS-Sessions'));
    await mkdir(path.join(root, 'v', 'BITS-Sessions'), { recursive: true });
    await symlink(outside, path.join(root, 'v', 'BITS-Sessions', 'Requests'));
    const s = await serve(root, []);
    try {
      for (const target of ['/u/f.bin', '/v/f.bin']) {
        const r = await createSession(s.port, target);
        expect(r.status).toBe(403);
        expect(r.headers['bits-error']).toBe('0x80070005');
      }
      expect(await readdir(outside)).toEqual([]);
      expect(s.bits.stderr).toMatch(/refusing to follow the symlink .*BITS-Sessions/);

      // Planted after the session exists (the local race): fragments refuse to write through it.
      const ok = await createSession(s.port, '/w/f.bin');
      expect(ok.status).toBe(200);
      const id = ok.headers['bits-session-id']!;
      await rm(path.join(root, 'w', 'BITS-Sessions'), { recursive: true });
      await mkdir(path.join(outside, 'Requests', id), { recursive: true });
      await writeFile(path.join(outside, 'Requests', id, 'requestfile.bin'), '');
      await symlink(outside, path.join(root, 'w', 'BITS-Sessions'));
      const frag = await rawRequest(
        s.port,
        bitsRequest('/w/f.bin', 'Fragment', { 'BITS-Session-Id': id, 'Content-Range': 'bytes 0-4/5' }, Buffer.from('abcde')),
      );
      expect(frag.status).toBe(403);
      expect((await readFile(path.join(outside, 'Requests', id, 'requestfile.bin'))).length).toBe(0);
      expect(await readdir(path.join(outside, 'Requests', id))).toEqual(['requestfile.bin']);
    } finally {
      await s.stop();
    }
  });

  it('a session 32 folders deep survives a restart; deeper is refused; ENAMETOOLONG leaves no folders', async () => {
    const root = await freshRoot('deep');
    const deep = '/' + Array.from({ length: 32 }, (_, i) => `d${i}`).join('/') + '/f.bin';
    const s1 = await serve(root, ['--quiet']);
    let id: string;
    try {
      const r = await createSession(s1.port, deep);
      expect(r.status).toBe(200);
      id = r.headers['bits-session-id']!;
      const tooDeep = await createSession(s1.port, '/x' + deep);
      expect(tooDeep.status).toBe(400);
      // 30 names of 200 bytes: longer than PATH_MAX once joined.
      const long = '/long/' + Array.from({ length: 30 }, (_, i) => `${i}`.padEnd(200, 'n')).join('/') + '/f.bin';
      const tooLong = await createSession(s1.port, long);
      expect(tooLong.status).toBe(400);
      expect(existsSync(path.join(root, 'long'))).toBe(false);
    } finally {
      await s1.stop();
    }
    const s2 = await serve(root, ['--quiet']);
    try {
      const frag = await rawRequest(
        s2.port,
        bitsRequest(deep, 'Fragment', { 'BITS-Session-Id': id, 'Content-Range': 'bytes 0-2/3' }, Buffer.from('abc')),
      );
      expect(frag.status).toBe(200);
      expect((await rawRequest(s2.port, bitsRequest(deep, 'Close-Session', { 'BITS-Session-Id': id }))).status).toBe(200);
      expect((await readFile(path.join(root, ...deep.split('/').filter(Boolean)))).toString()).toBe('abc');
    } finally {
      await s2.stop();
    }
  });
});

describe('requests and logs', () => {
  it('control characters from the path and headers never reach the log raw', async () => {
    const root = await freshRoot('log');
    const s = await serve(root, []);
    try {
      await rawRequest(s.port, bitsRequest('/u/%1B%5B31mred%07.bin', 'Create-\x1b[2JSession\x07'));
      await rawRequest(s.port, buildRequest('GET', '/%1B]0;title%07'));
      await createSession(s.port, '/u/%1B%5B31mred%07.bin');
      await sleep(200);
      const err = s.bits.stderr;
      expect(err).not.toMatch(/[\x00-\x08\x0b-\x1f\x7f]/);
      expect(err).toContain('\\x1b');
      expect(err).toContain('\\x07');
    } finally {
      await s.stop();
    }
  });

  it('a missing Host, a duplicate Host and NUL in a header value get 400', async () => {
    const root = await freshRoot('host');
    await writeFile(path.join(root, 'f.txt'), 'x');
    const s = await serve(root, ['--quiet']);
    try {
      expect((await rawRequest(s.port, 'GET /f.txt HTTP/1.1\r\n\r\n')).status).toBe(400);
      expect((await rawRequest(s.port, 'GET /f.txt HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n')).status).toBe(400);
      expect((await rawRequest(s.port, 'GET /f.txt HTTP/1.1\r\nHost: a\r\nX-A: b\0c\r\n\r\n')).status).toBe(400);
      // HTTP/1.0 needs no Host.
      expect((await rawRequest(s.port, 'GET /f.txt HTTP/1.0\r\n\r\n')).status).toBe(200);
    } finally {
      await s.stop();
    }
  });

  it('100 overlapping ranges are answered with no more than the file', async () => {
    const root = await freshRoot('ranges');
    const data = randomBytes(1024 * 1024);
    await writeFile(path.join(root, 'f.bin'), data);
    const s = await serve(root, ['--quiet']);
    try {
      const r = await rawRequest(s.port, buildRequest('GET', '/f.bin', { Range: `bytes=${Array(100).fill('0-').join(',')}` }));
      expect(Number(r.headers['content-length'])).toBeLessThanOrEqual(data.length);
      expect(r.body.length).toBeLessThanOrEqual(data.length);
      expect(sha(r.body)).toBe(sha(data));
    } finally {
      await s.stop();
    }
  });
});
