/**
 * The built `bits upload` against BITS servers of our own on 127.0.0.1
 * (test/upload/peers.ts) that misbehave as in issue 11, or differ from the
 * text of MC-BUP as real peers do (issue 12). Each run is bounded: the
 * no-progress deadline (--no-progress-timeout 8) ends what cannot finish, and
 * every server stops answering after a fixed number of requests.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import { ensureFreshBuild } from '../jobs/helpers.js';
import { runBits, type RunResult } from '../helpers/cli.js';
import { makeRandomFile, makeTempDir, sha256, sha256File } from '../helpers/files.js';
import { startServer } from '../../src/server/index.js';
import { startPeer, type Peer, type PeerOptions } from './peers.js';

const FRAG = 64 * 1024;
const SIZE = 3 * FRAG + 123;

let tmp: { dir: string; cleanup: () => Promise<void> };
let file: string;
let homes = 0;
const peers: Peer[] = [];

beforeAll(async () => {
  await ensureFreshBuild();
  tmp = await makeTempDir('bits-cli-peers-');
  file = join(tmp.dir, 'src.bin');
  await makeRandomFile(file, SIZE, 11);
}, 180_000);
afterAll(async () => {
  for (const p of peers) await p.close().catch(() => undefined);
  await tmp?.cleanup();
});

async function peer(opts: PeerOptions): Promise<Peer> {
  const p = await startPeer(opts);
  peers.push(p);
  return p;
}

async function upload(p: { url: string }, name: string, extra: string[] = [], source = file): Promise<RunResult & { ms: number }> {
  const home = join(tmp.dir, `home-${homes++}`);
  const t0 = Date.now();
  const r = await runBits(['upload', source, `${p.url}/up/${name}`, '--fragment-size', '64K', '--no-progress-timeout', '8', ...extra], {
    env: { BITS_HOME: home },
    timeoutMs: 45_000,
  });
  return { ...r, ms: Date.now() - t0 };
}

const count = (p: Peer, type: string) => p.requests.filter((q) => q.type === type).length;

describe.concurrent('issue 11: servers that never let an upload progress end with exit 4 (--no-progress-timeout 8)', () => {
  it('(a) fragment 0 acknowledged, every later FRAGMENT 416 with BITS-Received-Content-Range: 0', async () => {
    const p = await peer({
      override: (q, self) => {
        if (q.type !== 'fragment') return undefined;
        if (q.range!.start === 0) {
          self.sessions.set(q.headers['bits-session-id']!, Buffer.alloc(0));
          return undefined;
        }
        return { status: 416, headers: { 'BITS-Packet-Type': 'Ack', 'BITS-Received-Content-Range': '0' } };
      },
    });
    const r = await upload(p, 'a.bin');
    expect(r.code, r.stderr).toBe(4);
    expect(r.stderr).toMatch(/no progress for 8 s/);
    expect(r.ms).toBeLessThan(30_000);
    // Before the fix: ~10,000 requests a minute. Now the retry delay paces every try after the resync limit.
    console.log(`(a) resync to 0: exit ${r.code} after ${r.ms} ms, ${p.requests.length} requests`);
    expect(p.requests.length).toBeLessThan(100);
  }, 60_000);

  it('(b) fragment 0 acknowledged, then BG_E_SESSION_NOT_FOUND forever', async () => {
    const p = await peer({
      override: (q, self) => {
        if ((q.type === 'fragment' && q.range!.start > 0) || q.type === 'ping') return self.error(500, '0x8020001F');
        return undefined;
      },
    });
    const r = await upload(p, 'b.bin');
    expect(r.code, r.stderr).toBe(4);
    expect(r.stderr).toMatch(/no progress for 8 s/);
    expect(r.ms).toBeLessThan(30_000);
    // Before the fix: ~3,600 new sessions a minute.
    console.log(`(b) session lost forever: exit ${r.code} after ${r.ms} ms, ${p.requests.length} requests, ${count(p, 'create-session')} sessions`);
    expect(count(p, 'create-session')).toBeLessThan(15);
  }, 60_000);

  it('(c) a FRAGMENT that is never answered', async () => {
    const p = await peer({ override: (q) => (q.type === 'fragment' ? { status: 0, hang: true } : undefined) });
    const r = await upload(p, 'c.bin');
    expect(r.code, r.stderr).toBe(4);
    expect(r.stderr).toMatch(/no progress for 8 s/);
    expect(r.ms).toBeLessThan(30_000);
    console.log(`(c) FRAGMENT never answered: exit ${r.code} after ${r.ms} ms`);
    expect(count(p, 'fragment')).toBe(1);
  }, 60_000);
});

describe('issue 11: one failure policy', () => {
  it('a 503 with Retry-After: 2 waits 2 s (measured between the requests), then PING and the same FRAGMENT', async () => {
    const at: number[] = [];
    let busy = false;
    const p = await peer({
      override: (q) => {
        at.push(Date.now());
        if (!busy && q.type === 'fragment' && q.range!.start === FRAG) {
          busy = true;
          return { status: 503, headers: { 'Retry-After': '2' } };
        }
        return undefined;
      },
    });
    const r = await upload(p, 'later.bin');
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/retrying in 2s/);
    const i = p.requests.findIndex((q) => q.type === 'fragment' && q.range!.start === FRAG);
    expect(p.requests.slice(i, i + 3).map((q) => q.type)).toEqual(['fragment', 'ping', 'fragment']);
    expect(at[i + 1]! - at[i]!).toBeGreaterThanOrEqual(2000);
    expect(sha256(p.files.get('/up/later.bin')!)).toBe(await sha256File(file));
  }, 60_000);
});

describe('issue 11: (e) a server that acknowledges bytes never sent', () => {
  it('is a protocol error: exit 7, never success', async () => {
    const p = await peer({ override: (q, self) => (q.type === 'fragment' ? self.ack({ 'BITS-Received-Content-Range': String(SIZE) }) : undefined) });
    const r = await upload(p, 'e.bin');
    expect(r.code, r.stderr).toBe(7);
    expect(r.stderr).toMatch(new RegExp(`acknowledged ${SIZE} bytes, but bits had sent only ${FRAG}`));
    expect(count(p, 'close-session')).toBe(0);
  }, 60_000);
});

describe('issue 12: peers that differ from the text of MC-BUP', () => {
  it('12.1 BITS-Error-Code (not BITS-Error) with the session lost mid-upload: restarts at once and ends sha256-identical', async () => {
    let lost = false;
    const p = await peer({
      errorHeader: 'BITS-Error-Code',
      override: (q, self) => {
        if (!lost && q.type === 'fragment' && q.range!.start === 2 * FRAG) {
          lost = true;
          self.sessions.delete(q.headers['bits-session-id']!);
          return self.error(500, '0x8020001F');
        }
        return undefined;
      },
    });
    const r = await upload(p, 'code.bin');
    expect(r.code, r.stderr).toBe(0);
    expect(sha256(p.files.get('/up/code.bin')!)).toBe(await sha256File(file));
    expect(count(p, 'create-session')).toBe(2);
    expect(r.stderr).toMatch(/BG_E_SESSION_NOT_FOUND/);
    expect(r.ms).toBeLessThan(8_000);
  }, 60_000);

  it('12.2 BITS-Error-Code: 1 on a PING Ack is not a failure', async () => {
    let busy = false;
    const p = await peer({
      override: (q, self) => {
        if (!busy && q.type === 'fragment' && q.range!.start === FRAG) {
          busy = true;
          return { status: 503 }; // makes the client resume: PING, then FRAGMENT
        }
        if (q.type === 'ping') return self.ack({ 'BITS-Error-Code': '1' });
        return undefined;
      },
    });
    const r = await upload(p, 'ping.bin');
    expect(r.code, r.stderr).toBe(0);
    expect(count(p, 'ping')).toBe(1);
    expect(sha256(p.files.get('/up/ping.bin')!)).toBe(await sha256File(file));
  }, 60_000);

  it('12.3 an integer session id (Start-BitsTransfer servers) is accepted and sent back exactly', async () => {
    const p = await peer({ sessionId: () => '-5816921724287494047' });
    const r = await upload(p, 'int.bin');
    expect(r.code, r.stderr).toBe(0);
    const sent = p.requests.filter((q) => q.type === 'fragment' || q.type === 'close-session').map((q) => q.headers['bits-session-id']);
    expect(sent.length).toBe(5);
    expect(new Set(sent)).toEqual(new Set(['-5816921724287494047']));
    expect(sha256(p.files.get('/up/int.bin')!)).toBe(await sha256File(file));
  }, 60_000);

  it('12.4 a plain 501 (Apache, lighttpd, http.server): exit 5 at once, saying the server does not speak BITS', async () => {
    const p = await peer({ override: () => ({ status: 501, headers: { 'Content-Type': 'text/html' }, body: '<h1>Not Implemented</h1>' }) });
    const r = await upload(p, 'plain.bin');
    expect(r.code, r.stderr).toBe(5);
    expect(r.stderr).toMatch(/127\.0\.0\.1:\d+ is not a BITS upload server \(HTTP 501 to BITS_POST/);
    expect(r.stderr.trim().split('\n').filter((l) => /501/.test(l))).toHaveLength(1);
    expect(p.requests).toHaveLength(1);
    expect(r.ms).toBeLessThan(5_000);
  }, 60_000);

  it('12.5 a 416 naming the offset in BITS-Recieved-Content-Range (misspelled) is read as the real header', async () => {
    let lostAck = false;
    const p = await peer({
      resyncHeader: 'BITS-Recieved-Content-Range',
      override: (q, self) => {
        if (!lostAck && q.type === 'fragment' && q.range!.start === FRAG) {
          lostAck = true;
          self.honest(q); // the server keeps the bytes, the Ack is lost
          return { status: 503 };
        }
        return undefined;
      },
    });
    const r = await upload(p, 'typo.bin');
    expect(r.code, r.stderr).toBe(0);
    // The re-sent fragment was answered 416 with the misspelled header, and the upload went on from there.
    const frags = p.requests.filter((q) => q.type === 'fragment').map((q) => q.range!.start);
    expect(frags).toEqual([0, FRAG, FRAG, 2 * FRAG, 3 * FRAG]);
    expect(sha256(p.files.get('/up/typo.bin')!)).toBe(await sha256File(file));
  }, 60_000);
});

describe('12.11 empty files', () => {
  let empty: string;
  beforeAll(async () => {
    empty = join(tmp.dir, 'empty.bin');
    await fsp.writeFile(empty, '');
  });

  it('bits serve creates the empty file on CLOSE-SESSION: no warning', async () => {
    const root = join(tmp.dir, 'serve-root');
    await fsp.mkdir(join(root, 'up'), { recursive: true });
    const server = await startServer({ root, port: 0 });
    try {
      const r = await upload(server, 'empty.bin', [], empty);
      expect(r.code, r.stderr).toBe(0);
      expect((await fsp.stat(join(root, 'up', 'empty.bin'))).size).toBe(0);
      expect(r.stderr).not.toMatch(/no sign/);
    } finally {
      await server.close();
    }
  }, 60_000);

  it('a server that creates files only on a FRAGMENT: exit 0 with a warning that it holds no file', async () => {
    const p = await peer({ createEmptyOnClose: false });
    const r = await upload(p, 'empty.bin', [], empty);
    expect(r.code, r.stderr).toBe(0);
    expect(p.files.has('/up/empty.bin')).toBe(false);
    expect(r.stderr).toMatch(/gave no sign it holds one \(HEAD answers HTTP 404\)/);
    expect(p.requests.map((q) => q.type || q.method)).toEqual(['create-session', 'close-session', 'HEAD']);
  }, 60_000);
});
