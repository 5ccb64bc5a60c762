import { afterEach, describe, expect, test } from 'vitest';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, readdir, rm, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { startServer, type RunningServer, type ServeOptions } from '../../src/server/index.js';
import { PROTOCOL_GUID } from '../../src/protocol/headers.js';
import { loadServerConfigFile, parseServerSize } from '../../src/server/config.js';
import { RawConnection, bitsRequest, buildRequest, type RawResponse } from '../helpers/raw-http.js';

const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  while (cleanups.length) await cleanups.pop()!();
});

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const GUID_RE = /^\{[0-9A-F]{8}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{12}\}$/;

async function tempRoot(): Promise<string> {
  const root = await mkdtemp(path.join(os.tmpdir(), 'bits-upload-'));
  cleanups.push(() => rm(root, { recursive: true, force: true }));
  return root;
}

async function serve(root: string, opts: Partial<ServeOptions> = {}): Promise<RunningServer> {
  const s = await startServer({ root, ...opts });
  let closed = false;
  const close = s.close;
  s.close = async () => {
    if (closed) return;
    closed = true;
    await close();
  };
  cleanups.push(() => s.close());
  return s;
}

/** A tiny BITS client over one raw connection: exact control of every header. */
class Bits {
  constructor(
    readonly conn: RawConnection,
    readonly target: string,
  ) {}

  static async open(server: RunningServer, target: string): Promise<Bits> {
    const c = await RawConnection.connect(server.port);
    cleanups.push(async () => c.destroy());
    return new Bits(c, target);
  }

  send(type: string, headers: Record<string, string | number> = {}, body?: Buffer, target = this.target): Promise<RawResponse> {
    return this.conn.request(bitsRequest(target, type, headers, body));
  }

  async create(headers: Record<string, string | number> = {}): Promise<RawResponse> {
    return this.send('Create-Session', { 'BITS-Supported-Protocols': PROTOCOL_GUID, ...headers });
  }

  async session(): Promise<string> {
    const r = await this.create();
    expect(r.status).toBe(200);
    return r.headers['bits-session-id']!;
  }

  fragment(sid: string, first: number, data: Buffer, total: number, extra: Record<string, string | number> = {}): Promise<RawResponse> {
    return this.send(
      'Fragment',
      { 'BITS-Session-Id': sid, 'Content-Range': `bytes ${first}-${first + data.length - 1}/${total}`, ...extra },
      data,
    );
  }

  close(sid: string): Promise<RawResponse> {
    return this.send('Close-Session', { 'BITS-Session-Id': sid });
  }

  cancel(sid: string): Promise<RawResponse> {
    return this.send('Cancel-Session', { 'BITS-Session-Id': sid });
  }
}

/** A FRAGMENT of `length` bytes at `first` whose connection delivers only `part` of its body (and stays open). */
async function sendFragmentPart(b: Bits, sid: string, first: number, length: number, total: number, part: Buffer): Promise<void> {
  const head = bitsRequest(b.target, 'Fragment', {
    'BITS-Session-Id': sid,
    'Content-Range': `bytes ${first}-${first + length - 1}/${total}`,
    'Content-Length': length,
  });
  // `head` has Content-Length set explicitly and no body: it goes out with just `part`.
  await b.conn.write(Buffer.concat([head, part]));
}

/** Polls (bounded: 2 s) until the file has `size` bytes. */
async function sizeBecomes(file: string, size: number): Promise<void> {
  for (let i = 0; i < 200 && (await stat(file)).size !== size; i++) await sleep(10);
  expect((await stat(file)).size).toBe(size);
}

function expectError(r: RawResponse, status: number, hr: string, ctx = '0x5'): void {
  expect({ status: r.status, error: r.headers['bits-error'], ctx: r.headers['bits-error-context'] }).toEqual({
    status,
    error: hr,
    ctx,
  });
  // Both names of the HRESULT header: MC-BUP's BITS-Error and the SDK pages' BITS-Error-Code.
  expect(r.headers['bits-error-code']).toBe(hr);
  expect(r.headers['bits-packet-type']).toBe('Ack');
  expect(r.headers['content-length']).toBe('0');
}

const E_INVALIDARG = '0x80070057';
const E_ACCESSDENIED = '0x80070005';
const BG_E_SESSION_NOT_FOUND = '0x8020001F';

function sessionDir(root: string, vdir: string, sid: string): string {
  return path.join(root, vdir, 'BITS-Sessions', 'Requests', sid);
}

describe('upload server: the basic flow', () => {
  test('multi-fragment upload lands byte for byte, with IIS layout while in progress', async () => {
    const root = await tempRoot();
    const srv = await serve(root);
    const b = await Bits.open(srv, '/vdir/data.bin');
    const created = await b.create();
    expect(created.status).toBe(200);
    expect(created.headers['bits-packet-type']).toBe('Ack');
    expect(created.headers['bits-protocol']).toBe(PROTOCOL_GUID);
    expect(created.headers['content-length']).toBe('0');
    expect(created.headers['bits-host-id']).toBeUndefined();
    const sid = created.headers['bits-session-id']!;
    expect(sid).toMatch(GUID_RE);

    const data = randomBytes(1_000_003);
    const sizes = [1, 65_536, 300_000, 400_000];
    let off = 0;
    for (const size of [...sizes, data.length - sizes.reduce((a, x) => a + x, 0)]) {
      const r = await b.fragment(sid, off, data.subarray(off, off + size), data.length);
      off += size;
      expect(r.status).toBe(200);
      expect(r.headers['bits-packet-type']).toBe('Ack');
      expect(r.headers['bits-received-content-range']).toBe(String(off));
      expect(r.headers['bits-session-id']).toBe(sid);
      expect(r.headers['bits-reply-url']).toBeUndefined();
      if (off < data.length) {
        // In progress: the entity lives in the session folder, not at the destination.
        const dir = sessionDir(root, 'vdir', sid);
        expect((await stat(path.join(dir, 'requestfile.bin'))).size).toBe(off);
        const rec = JSON.parse(await readFile(path.join(dir, 'session.json'), 'utf8'));
        expect(rec.totalLength).toBe(data.length);
        expect(rec.urlPath).toBe('/vdir/data.bin');
        expect(existsSync(path.join(root, 'vdir', 'data.bin'))).toBe(false);
      }
    }
    const closed = await b.close(sid);
    expect(closed.status).toBe(200);
    expect(closed.headers['bits-session-id']).toBe(sid);
    expect(sha(await readFile(path.join(root, 'vdir', 'data.bin')))).toBe(sha(data));
    expect(existsSync(sessionDir(root, 'vdir', sid))).toBe(false);
    // A resent CLOSE-SESSION (its Ack was lost) is acknowledged again.
    expect((await b.close(sid)).status).toBe(200);
  });

  test('packet types are case-insensitive', async () => {
    const root = await tempRoot();
    const srv = await serve(root);
    const b = await Bits.open(srv, '/up/f.txt');
    expect((await b.send('ping')).status).toBe(200);
    const c = await b.send('create-session', { 'BITS-Supported-Protocols': PROTOCOL_GUID });
    expect(c.status).toBe(200);
    const sid = c.headers['bits-session-id']!;
    expect(
      (await b.send('Fragment', { 'BITS-Session-Id': sid, 'Content-Range': 'bytes 0-2/3' }, Buffer.from('abc'))).status,
    ).toBe(200);
    expect((await b.send('CLOSE-SESSION', { 'BITS-Session-Id': sid })).status).toBe(200);
    expect(await readFile(path.join(root, 'up', 'f.txt'), 'utf8')).toBe('abc');
  });

  test('PING needs no session and gets a bare Ack', async () => {
    const root = await tempRoot();
    const srv = await serve(root);
    const b = await Bits.open(srv, '/anything/at/all.bin');
    const r = await b.send('Ping');
    expect(r.status).toBe(200);
    expect(r.headers['bits-packet-type']).toBe('Ack');
    expect(r.headers['bits-error']).toBeUndefined();
    expect(r.headers['bits-session-id']).toBeUndefined();
  });

  test('the protocol GUID may come anywhere in the offered list, in any case', async () => {
    const root = await tempRoot();
    const srv = await serve(root);
    const b = await Bits.open(srv, '/u/x');
    const r = await b.send('Create-Session', {
      'BITS-Supported-Protocols': `{11111111-2222-3333-4444-555555555555}, ${PROTOCOL_GUID.toUpperCase()}`,
    });
    expect(r.status).toBe(200);
    expect(r.headers['bits-protocol']).toBe(PROTOCOL_GUID);
  });

  test('an empty file: CREATE-SESSION then CLOSE-SESSION commits 0 bytes', async () => {
    const root = await tempRoot();
    const srv = await serve(root);
    const b = await Bits.open(srv, '/u/empty.txt');
    const sid = await b.session();
    expect((await b.close(sid)).status).toBe(200);
    expect((await stat(path.join(root, 'u', 'empty.txt'))).size).toBe(0);
  });

  test('CANCEL-SESSION deletes the session data', async () => {
    const root = await tempRoot();
    const srv = await serve(root);
    const b = await Bits.open(srv, '/u/c.bin');
    const sid = await b.session();
    expect((await b.fragment(sid, 0, Buffer.from('hello'), 10)).status).toBe(200);
    expect(existsSync(sessionDir(root, 'u', sid))).toBe(true);
    const r = await b.cancel(sid);
    expect(r.status).toBe(200);
    expect(r.headers['bits-session-id']).toBe(sid);
    expect(existsSync(sessionDir(root, 'u', sid))).toBe(false);
    expect(existsSync(path.join(root, 'u', 'c.bin'))).toBe(false);
    expectError(await b.fragment(sid, 5, Buffer.from('world'), 10), 500, BG_E_SESSION_NOT_FOUND);
  });

  test('the CREATE-SESSION Ack carries BITS-Host-Id and the fallback timeout when configured', async () => {
    const root = await tempRoot();
    const srv = await serve(root, { directories: { '/farm': { hostId: 'node7.example', hostIdFallbackTimeout: 110 } } });
    const b = await Bits.open(srv, '/farm/x.bin');
    const r = await b.create();
    expect(r.headers['bits-host-id']).toBe('node7.example');
    expect(r.headers['bits-host-id-fallback-timeout']).toBe('110');
    const other = await (await Bits.open(srv, '/other/x.bin')).create();
    expect(other.headers['bits-host-id']).toBeUndefined();
  });
});

describe('upload server: resync rules', () => {
  test('a fragment ahead of the received offset gets 416 with the expected offset', async () => {
    const root = await tempRoot();
    const srv = await serve(root);
    const b = await Bits.open(srv, '/u/r.bin');
    const sid = await b.session();
    const data = randomBytes(3000);
    expect((await b.fragment(sid, 0, data.subarray(0, 1000), 3000)).status).toBe(200);
    const r = await b.fragment(sid, 2000, data.subarray(2000), 3000);
    expect(r.status).toBe(416);
    expect(r.headers['bits-received-content-range']).toBe('1000');
    expect(r.headers['bits-packet-type']).toBe('Ack');
    expect(r.headers['bits-session-id']).toBe(sid);
    // The connection stays usable; continue where the server says.
    expect((await b.fragment(sid, 1000, data.subarray(1000), 3000)).status).toBe(200);
    expect((await b.close(sid)).status).toBe(200);
    expect(sha(await readFile(path.join(root, 'u', 'r.bin')))).toBe(sha(data));
  });

  test('an overlapping resend with different bytes never corrupts the file', async () => {
    const root = await tempRoot();
    const srv = await serve(root);
    const b = await Bits.open(srv, '/u/o.bin');
    const sid = await b.session();
    const data = randomBytes(4000);
    expect((await b.fragment(sid, 0, data.subarray(0, 2000), 4000)).status).toBe(200);
    // 1500..2499 overlaps the held 1500..1999; poison the overlapping part to detect any rewrite.
    const poisoned = Buffer.from(data.subarray(1500, 2500));
    poisoned.fill(0xee, 0, 500);
    const r = await b.fragment(sid, 1500, poisoned, 4000);
    expect(r.status).toBe(416);
    expect(r.headers['bits-received-content-range']).toBe('2000');
    expect((await stat(path.join(sessionDir(root, 'u', sid), 'requestfile.bin'))).size).toBe(2000);
    expect((await b.fragment(sid, 2000, data.subarray(2000), 4000)).status).toBe(200);
    expect((await b.close(sid)).status).toBe(200);
    expect(sha(await readFile(path.join(root, 'u', 'o.bin')))).toBe(sha(data));
  });

  test('a resend of held bytes is acknowledged with the current offset (idempotent)', async () => {
    const root = await tempRoot();
    const srv = await serve(root);
    const b = await Bits.open(srv, '/u/i.bin');
    const sid = await b.session();
    const data = randomBytes(3000);
    expect((await b.fragment(sid, 0, data.subarray(0, 1000), 3000)).status).toBe(200);
    expect((await b.fragment(sid, 1000, data.subarray(1000, 2000), 3000)).status).toBe(200);
    for (const [a, z] of [
      [0, 1000],
      [1000, 2000],
      [500, 1500],
    ] as const) {
      const r = await b.fragment(sid, a, Buffer.alloc(z - a, 0xaa), 3000);
      expect(r.status).toBe(200);
      expect(r.headers['bits-received-content-range']).toBe('2000');
    }
    expect((await b.fragment(sid, 2000, data.subarray(2000), 3000)).headers['bits-received-content-range']).toBe('3000');
    // The final fragment again: same Ack.
    const again = await b.fragment(sid, 2000, data.subarray(2000), 3000);
    expect(again.status).toBe(200);
    expect(again.headers['bits-received-content-range']).toBe('3000');
    expect((await b.close(sid)).status).toBe(200);
    expect(sha(await readFile(path.join(root, 'u', 'i.bin')))).toBe(sha(data));
  });

  test('a client that drops mid-fragment leaves only acknowledged bytes', async () => {
    const root = await tempRoot();
    const srv = await serve(root);
    const b = await Bits.open(srv, '/u/d.bin');
    const sid = await b.session();
    const data = randomBytes(200_000);
    expect((await b.fragment(sid, 0, data.subarray(0, 50_000), data.length)).status).toBe(200);
    // Half of the second fragment, then the connection dies.
    await sendFragmentPart(b, sid, 50_000, 150_000, data.length, data.subarray(50_000, 120_000));
    const file = path.join(sessionDir(root, 'u', sid), 'requestfile.bin');
    await sizeBecomes(file, 120_000);
    b.conn.destroy();
    // The server cuts the file back to the acknowledged 50 000 bytes.
    await sizeBecomes(file, 50_000);
    const b2 = await Bits.open(srv, '/u/d.bin');
    const probe = await b2.fragment(sid, 120_000, data.subarray(120_000), data.length);
    expect(probe.status).toBe(416);
    expect(probe.headers['bits-received-content-range']).toBe('50000');
    const r = await b2.fragment(sid, 50_000, data.subarray(50_000), data.length);
    expect(r.status).toBe(200);
    expect(r.headers['bits-received-content-range']).toBe(String(data.length));
    expect((await b2.close(sid)).status).toBe(200);
    expect(sha(await readFile(path.join(root, 'u', 'd.bin')))).toBe(sha(data));
  });
});

describe('upload server: concurrency', () => {
  test('the same fragment sent on two connections at once is written once', async () => {
    const root = await tempRoot();
    const srv = await serve(root);
    const b1 = await Bits.open(srv, '/u/cc.bin');
    const b2 = await Bits.open(srv, '/u/cc.bin');
    const sid = await b1.session();
    const data = randomBytes(600_000);
    const [r1, r2] = await Promise.all([
      b1.fragment(sid, 0, data.subarray(0, 300_000), data.length),
      b2.fragment(sid, 0, data.subarray(0, 300_000), data.length),
    ]);
    // One wrote, the other found the bytes held already.
    expect([r1.status, r2.status]).toEqual([200, 200]);
    expect(r1.headers['bits-received-content-range']).toBe('300000');
    expect(r2.headers['bits-received-content-range']).toBe('300000');
    expect((await b2.fragment(sid, 300_000, data.subarray(300_000), data.length)).status).toBe(200);
    expect((await b1.close(sid)).status).toBe(200);
    expect(sha(await readFile(path.join(root, 'u', 'cc.bin')))).toBe(sha(data));
  });

  test('a resume while a killed client\'s fragment is still arriving waits for it; none of the cut-off bytes stay', async () => {
    // What `kill -9` then `bits resume` can make: the dead client's connection is still delivering (or not yet
    // closing) a fragment body when the resume sends the same range on a new connection.
    const root = await tempRoot();
    const srv = await serve(root);
    const old = await Bits.open(srv, '/u/k.bin');
    const sid = await old.session();
    const data = randomBytes(200_000);
    expect((await old.fragment(sid, 0, data.subarray(0, 50_000), data.length)).status).toBe(200);
    // Other bytes than the file's: any of them left in the result would show in its sha256.
    await sendFragmentPart(old, sid, 50_000, 150_000, data.length, randomBytes(70_000));
    const file = path.join(sessionDir(root, 'u', sid), 'requestfile.bin');
    await sizeBecomes(file, 120_000);

    const resumed = await Bits.open(srv, '/u/k.bin');
    expect((await resumed.send('Ping')).status).toBe(200);
    let answered = false;
    const resend = resumed.fragment(sid, 50_000, data.subarray(50_000), data.length).finally(() => (answered = true));
    await sleep(300);
    // Serialized per session: it waits for the fragment in progress, and has not touched the file.
    expect(answered).toBe(false);
    expect((await stat(file)).size).toBe(120_000);
    old.conn.destroy();
    const r = await resend;
    expect(r.status).toBe(200);
    expect(r.headers['bits-received-content-range']).toBe(String(data.length));
    expect((await resumed.close(sid)).status).toBe(200);
    expect(sha(await readFile(path.join(root, 'u', 'k.bin')))).toBe(sha(data));
  });
});

describe('upload server: durability', () => {
  test('a session survives a server restart', async () => {
    const root = await tempRoot();
    const data = randomBytes(100_000);
    const srv1 = await serve(root);
    const b1 = await Bits.open(srv1, '/keep/r.bin');
    const sid = await b1.session();
    expect((await b1.fragment(sid, 0, data.subarray(0, 40_000), data.length)).status).toBe(200);
    b1.conn.destroy();
    await srv1.close();

    const srv2 = await serve(root);
    const b2 = await Bits.open(srv2, '/keep/r.bin');
    // The restarted server knows where we were.
    const probe = await b2.fragment(sid, 60_000, data.subarray(60_000), data.length);
    expect(probe.status).toBe(416);
    expect(probe.headers['bits-received-content-range']).toBe('40000');
    expect((await b2.fragment(sid, 40_000, data.subarray(40_000), data.length)).status).toBe(200);
    expect((await b2.close(sid)).status).toBe(200);
    expect(sha(await readFile(path.join(root, 'keep', 'r.bin')))).toBe(sha(data));
  });

  test('the received offset after a restart is the request file size, whatever session.json says', async () => {
    const root = await tempRoot();
    const srv1 = await serve(root);
    const b1 = await Bits.open(srv1, '/k/x.bin');
    const sid = await b1.session();
    expect((await b1.fragment(sid, 0, Buffer.alloc(1000, 1), 3000)).status).toBe(200);
    b1.conn.destroy();
    await srv1.close();
    // Simulate a crash that lost the tail of the last write.
    const file = path.join(sessionDir(root, 'k', sid), 'requestfile.bin');
    await writeFile(file, Buffer.alloc(600, 1));
    const srv2 = await serve(root);
    const b2 = await Bits.open(srv2, '/k/x.bin');
    const r = await b2.fragment(sid, 1000, Buffer.alloc(2000, 1), 3000);
    expect(r.status).toBe(416);
    expect(r.headers['bits-received-content-range']).toBe('600');
  });

  const record = async (root: string, vdir: string, sid: string): Promise<{ durableLength?: number }> =>
    JSON.parse(await readFile(path.join(sessionDir(root, vdir, sid), 'session.json'), 'utf8')) as { durableLength?: number };
  const requestSize = async (root: string, vdir: string, sid: string): Promise<number> =>
    (await stat(path.join(sessionDir(root, vdir, sid), 'requestfile.bin'))).size;
  /** Polls (bounded: 3 s) until the record's durable length is `want`. */
  async function durableBecomes(root: string, vdir: string, sid: string, want: number): Promise<void> {
    for (let i = 0; i < 150 && (await record(root, vdir, sid)).durableLength !== want; i++) await sleep(20);
    expect((await record(root, vdir, sid)).durableLength).toBe(want);
  }

  test('group commit: Acks run ahead of the recorded durable length until a sync, by size or by time', async () => {
    const root = await tempRoot();
    const data = randomBytes(10_000);
    // By time: nothing is recorded durable before syncEverySeconds.
    const srv = await serve(root, { durability: { syncEveryBytes: 1e12, syncEverySeconds: 0.4 } });
    const b = await Bits.open(srv, '/g/t.bin');
    const sid = await b.session();
    expect((await record(root, 'g', sid)).durableLength).toBe(0);
    expect((await b.fragment(sid, 0, data.subarray(0, 3000), data.length)).status).toBe(200);
    expect(await requestSize(root, 'g', sid)).toBe(3000);
    expect((await record(root, 'g', sid)).durableLength).toBe(0);
    await durableBecomes(root, 'g', sid, 3000);
    // The final fragment's Ack waits for the sync, and the record says so before the Ack.
    expect((await b.fragment(sid, 3000, data.subarray(3000), data.length)).status).toBe(200);
    expect((await record(root, 'g', sid)).durableLength).toBe(data.length);
    expect((await b.close(sid)).status).toBe(200);
    expect(sha(await readFile(path.join(root, 'g', 't.bin')))).toBe(sha(data));

    // By size: a fragment that brings syncEveryBytes starts a sync at once.
    const root2 = await tempRoot();
    const srv2 = await serve(root2, { durability: { syncEveryBytes: 2000, syncEverySeconds: 3600 } });
    const b2 = await Bits.open(srv2, '/g/s.bin');
    const sid2 = await b2.session();
    expect((await b2.fragment(sid2, 0, data.subarray(0, 1000), data.length)).status).toBe(200);
    expect((await b2.fragment(sid2, 1000, data.subarray(1000, 2500), data.length)).status).toBe(200);
    await durableBecomes(root2, 'g', sid2, 2500);
    expect((await b2.fragment(sid2, 2500, data.subarray(2500, 3000), data.length)).status).toBe(200);
    await sleep(200);
    expect((await record(root2, 'g', sid2)).durableLength).toBe(2500);
  });

  test('on reload a request file longer than the durable length is cut back to it, and the client resyncs', async () => {
    const root = await tempRoot();
    const data = randomBytes(10_000);
    const srv1 = await serve(root, { durability: { syncEveryBytes: 1e12, syncEverySeconds: 3600 } });
    const b1 = await Bits.open(srv1, '/c/p.bin');
    const sid = await b1.session();
    expect((await b1.fragment(sid, 0, data.subarray(0, 1000), data.length)).status).toBe(200);
    expect((await b1.fragment(sid, 1000, data.subarray(1000, 4000), data.length)).status).toBe(200);
    b1.conn.destroy();
    // A graceful stop makes everything acknowledged durable, whatever the cadence.
    await srv1.close();
    expect((await record(root, 'c', sid)).durableLength).toBe(4000);
    // What a crash right after the first sync leaves: a record naming 1000 bytes beside a longer file.
    const file = path.join(sessionDir(root, 'c', sid), 'session.json');
    await writeFile(file, JSON.stringify({ ...(await record(root, 'c', sid)), durableLength: 1000 }));
    const srv2 = await serve(root);
    expect(await requestSize(root, 'c', sid)).toBe(1000);
    const b2 = await Bits.open(srv2, '/c/p.bin');
    const probe = await b2.fragment(sid, 4000, data.subarray(4000), data.length);
    expect(probe.status).toBe(416);
    expect(probe.headers['bits-received-content-range']).toBe('1000');
    expect((await b2.fragment(sid, 1000, data.subarray(1000), data.length)).status).toBe(200);
    expect((await b2.close(sid)).status).toBe(200);
    expect(sha(await readFile(path.join(root, 'c', 'p.bin')))).toBe(sha(data));
  });

  test('a record naming more than the file holds is corrected at load (later bytes are never taken for durable)', async () => {
    const root = await tempRoot();
    const srv1 = await serve(root);
    const b1 = await Bits.open(srv1, '/c/q.bin');
    const sid = await b1.session();
    expect((await b1.fragment(sid, 0, Buffer.alloc(3000, 7), 9000)).status).toBe(200);
    b1.conn.destroy();
    await srv1.close();
    await writeFile(path.join(sessionDir(root, 'c', sid), 'requestfile.bin'), Buffer.alloc(500, 7));
    await serve(root);
    expect((await record(root, 'c', sid)).durableLength).toBe(500);
  });

  test('durability ack: no durable length is recorded (the file size is durable); a group-commit session loses its field', async () => {
    const root = await tempRoot();
    const data = randomBytes(6000);
    const g = await serve(root, { durability: { syncEveryBytes: 1e12, syncEverySeconds: 3600 } });
    const b1 = await Bits.open(g, '/a/m.bin');
    const sid = await b1.session();
    expect((await b1.fragment(sid, 0, data.subarray(0, 1000), data.length)).status).toBe(200);
    b1.conn.destroy();
    await g.close();
    expect((await record(root, 'a', sid)).durableLength).toBe(1000);
    const a = await serve(root, { durability: { mode: 'ack' } });
    const b2 = await Bits.open(a, '/a/m.bin');
    expect((await b2.fragment(sid, 1000, data.subarray(1000, 3000), data.length)).status).toBe(200);
    // Right after the Ack, without a sync by size or time: the record trusts the file's size.
    expect((await record(root, 'a', sid)).durableLength).toBeUndefined();
    const sid2 = await b2.session();
    expect((await record(root, 'a', sid2)).durableLength).toBeUndefined();
    expect((await b2.fragment(sid, 3000, data.subarray(3000), data.length)).status).toBe(200);
    expect((await b2.close(sid)).status).toBe(200);
    expect(sha(await readFile(path.join(root, 'a', 'm.bin')))).toBe(sha(data));
  });

  test('expired sessions are removed (on access, by the sweeper, and at start)', async () => {
    const root = await tempRoot();
    const srv = await serve(root, { defaults: { sessionTimeoutSeconds: 0.3 } });
    const b = await Bits.open(srv, '/e/x.bin');
    const sid1 = await b.session();
    const sid2 = await b.session();
    await sleep(450);
    expectError(await b.fragment(sid1, 0, Buffer.from('x'), 1), 500, BG_E_SESSION_NOT_FOUND);
    expect(existsSync(sessionDir(root, 'e', sid1))).toBe(false);
    // The sweeper (runs every second at this timeout) takes the other one without any request.
    for (let i = 0; i < 40 && existsSync(sessionDir(root, 'e', sid2)); i++) await sleep(100);
    expect(existsSync(sessionDir(root, 'e', sid2))).toBe(false);
    await srv.close();

    const srv2 = await serve(root);
    const b2 = await Bits.open(srv2, '/e/y.bin');
    const sid3 = await b2.session();
    await srv2.close();
    await sleep(350);
    const srv3 = await serve(root, { defaults: { sessionTimeoutSeconds: 0.3 } });
    expect(existsSync(sessionDir(root, 'e', sid3))).toBe(false);
    await srv3.close();
  });
});

describe('upload server: every error answer', () => {
  test('malformed messages get 400 E_INVALIDARG, context 0x5', async () => {
    const root = await tempRoot();
    const srv = await serve(root);
    const b = await Bits.open(srv, '/u/m.bin');
    const sid = await b.session();
    expectError(await b.send('Frobnicate'), 400, E_INVALIDARG);
    expectError(await b.conn.request(buildRequest('BITS_POST', '/u/m.bin', {})), 400, E_INVALIDARG);
    expectError(await b.send('Create-Session'), 400, E_INVALIDARG);
    expectError(await b.send('Create-Session', { 'BITS-Supported-Protocols': '{11111111-2222-3333-4444-555555555555}' }), 400, E_INVALIDARG);
    expectError(await b.send('Create-Session', { 'BITS-Supported-Protocols': PROTOCOL_GUID }, Buffer.from('x')), 400, E_INVALIDARG);
    // FRAGMENT: missing / malformed / open Content-Range, length mismatch, empty body.
    expectError(await b.send('Fragment', { 'BITS-Session-Id': sid }, Buffer.from('abc')), 400, E_INVALIDARG);
    expectError(await b.send('Fragment', { 'BITS-Session-Id': sid, 'Content-Range': 'bytes=0-2/3' }, Buffer.from('abc')), 400, E_INVALIDARG);
    expectError(await b.send('Fragment', { 'BITS-Session-Id': sid, 'Content-Range': 'bytes 0-2/*' }, Buffer.from('abc')), 400, E_INVALIDARG);
    expectError(await b.send('Fragment', { 'BITS-Session-Id': sid, 'Content-Range': 'bytes 2-0/3' }, Buffer.from('abc')), 400, E_INVALIDARG);
    expectError(await b.send('Fragment', { 'BITS-Session-Id': sid, 'Content-Range': 'bytes 0-3/10' }, Buffer.from('abc')), 400, E_INVALIDARG);
    expectError(await b.send('Fragment', { 'BITS-Session-Id': sid, 'Content-Range': 'bytes 0-0/10' }, Buffer.alloc(0)), 400, E_INVALIDARG);
    // Bad or missing session id.
    expectError(await b.send('Fragment', { 'Content-Range': 'bytes 0-2/3' }, Buffer.from('abc')), 400, E_INVALIDARG);
    expectError(await b.send('Fragment', { 'BITS-Session-Id': 'not-a-guid', 'Content-Range': 'bytes 0-2/3' }, Buffer.from('abc')), 400, E_INVALIDARG);
    // The entity length may not change between fragments.
    expect((await b.fragment(sid, 0, Buffer.from('abc'), 10)).status).toBe(200);
    expectError(await b.fragment(sid, 3, Buffer.from('def'), 11), 400, E_INVALIDARG);
    // CLOSE-SESSION of an incomplete entity would publish a truncated file.
    expectError(await b.close(sid), 400, E_INVALIDARG);
    // The connection survived all of it.
    expect((await b.fragment(sid, 3, Buffer.from('defghij'), 10)).status).toBe(200);
    expect((await b.close(sid)).status).toBe(200);
  });

  test('a FRAGMENT without Content-Length gets 411 with E_INVALIDARG (bodiless packets need none)', async () => {
    const root = await tempRoot();
    const srv = await serve(root);
    const b = await Bits.open(srv, '/u/x');
    const sid = await b.session();
    const r = await b.conn.request(
      buildRequest('BITS_POST', '/u/x', { 'BITS-Packet-Type': 'Fragment', 'BITS-Session-Id': sid, 'Content-Range': 'bytes 0-2/3' }, undefined, {
        noContentLength: true,
      }),
    );
    expectError(r, 411, E_INVALIDARG);
    // RFC 7230 §3.3.3: no Content-Length and no Transfer-Encoding is an empty body (test/server/interop.test.ts).
    const ping = await b.conn.request(buildRequest('BITS_POST', '/u/x', { 'BITS-Packet-Type': 'Ping' }, undefined, { noContentLength: true }));
    expect(ping.status).toBe(200);
  });

  test('destinations that are folders, the root, or escape the root are refused', async () => {
    // The root's parent is private too: an escape to `../x` must not be confused with another process's /tmp/x.
    const root = path.join(await tempRoot(), 'root');
    await mkdir(path.join(root, 'u', 'folder'), { recursive: true });
    const srv = await serve(root);
    const b = await Bits.open(srv, '/u/folder');
    expectError(await b.create(), 400, E_INVALIDARG);
    for (const target of ['/', '/u/folder/', '/../x', '/%2e%2e/x', '/a%2Fb', '/a%5Cb', '/u/%00x']) {
      const r = await b.send('Create-Session', { 'BITS-Supported-Protocols': PROTOCOL_GUID }, undefined, target);
      expectError(r, 400, E_INVALIDARG);
    }
    // Uploading into the session area itself is forbidden.
    expectError(
      await b.send('Create-Session', { 'BITS-Supported-Protocols': PROTOCOL_GUID }, undefined, '/u/BITS-Sessions/x'),
      403,
      E_ACCESSDENIED,
    );
    expect(existsSync(path.join(path.dirname(root), 'x'))).toBe(false);
    // Nothing but the served folder's lock (root-lock.ts) beside u.
    expect((await readdir(root)).sort()).toEqual(['BITS-Sessions', 'u']);
    expect(await readdir(path.join(root, 'BITS-Sessions'))).toEqual(['serve.lock']);
  });

  test('unknown sessions, and sessions addressed at another URL, are BG_E_SESSION_NOT_FOUND', async () => {
    const root = await tempRoot();
    const srv = await serve(root);
    const b = await Bits.open(srv, '/u/s.bin');
    const unknown = '{00000000-1111-2222-3333-444444444444}';
    const r = await b.fragment(unknown, 0, Buffer.from('a'), 1);
    expectError(r, 500, BG_E_SESSION_NOT_FOUND);
    expect(r.headers['bits-session-id']).toBe(unknown);
    expectError(await b.close(unknown), 500, BG_E_SESSION_NOT_FOUND);
    expectError(await b.cancel(unknown), 500, BG_E_SESSION_NOT_FOUND);
    const sid = await b.session();
    const other = await b.send('Fragment', { 'BITS-Session-Id': sid, 'Content-Range': 'bytes 0-0/1' }, Buffer.from('a'), '/u/other.bin');
    expectError(other, 500, BG_E_SESSION_NOT_FOUND);
  });

  test('allowOverwrites false: 403 at CREATE-SESSION, and again at close if the file appeared', async () => {
    const root = await tempRoot();
    await mkdir(path.join(root, 'ro'));
    await writeFile(path.join(root, 'ro', 'exists.txt'), 'original');
    const srv = await serve(root, { directories: { '/ro': { allowOverwrites: false } } });
    const b = await Bits.open(srv, '/ro/exists.txt');
    expectError(await b.create(), 403, E_ACCESSDENIED);
    const b2 = await Bits.open(srv, '/ro/new.txt');
    const sid = await b2.session();
    expect((await b2.fragment(sid, 0, Buffer.from('mine'), 4)).status).toBe(200);
    await writeFile(path.join(root, 'ro', 'new.txt'), 'theirs');
    expectError(await b2.close(sid), 403, E_ACCESSDENIED);
    expect(await readFile(path.join(root, 'ro', 'new.txt'), 'utf8')).toBe('theirs');
    expect(await readFile(path.join(root, 'ro', 'exists.txt'), 'utf8')).toBe('original');
    // Where overwrites are allowed (the default), the destination is replaced.
    await writeFile(path.join(root, 'ow.txt'), 'old');
    const b3 = await Bits.open(srv, '/ow.txt');
    const sid3 = await b3.session();
    expect((await b3.fragment(sid3, 0, Buffer.from('new!'), 4)).status).toBe(200);
    expect((await b3.close(sid3)).status).toBe(200);
    expect(await readFile(path.join(root, 'ow.txt'), 'utf8')).toBe('new!');
  });

  test('uploads disabled for the directory: 501 E_ACCESSDENIED', async () => {
    const root = await tempRoot();
    const srv = await serve(root, { directories: { '/off': { uploadsEnabled: false } } });
    const b = await Bits.open(srv, '/off/x.bin');
    expectError(await b.create(), 501, E_ACCESSDENIED);
    expectError(await b.send('Ping'), 501, E_ACCESSDENIED);
    expect((await (await Bits.open(srv, '/on/x.bin')).create()).status).toBe(200);
  });

  test('an entity over maxUploadSize is BG_E_TOO_LARGE', async () => {
    const root = await tempRoot();
    const srv = await serve(root, { directories: { '/small': { maxUploadSize: 1000 } } });
    const b = await Bits.open(srv, '/small/x.bin');
    const sid = await b.session();
    expectError(await b.fragment(sid, 0, Buffer.alloc(100), 1001), 500, '0x80200020');
    expect((await b.fragment(sid, 0, Buffer.alloc(100), 1000)).status).toBe(200);
  });

  test('a fragment over maxFragmentBytes gets 413 and the connection closes', async () => {
    const root = await tempRoot();
    const srv = await serve(root, { limits: { maxFragmentBytes: 1024 } });
    const b = await Bits.open(srv, '/u/big.bin');
    const sid = await b.session();
    const r = await b.fragment(sid, 0, Buffer.alloc(4096), 8192);
    expect(r.status).toBe(413);
    expect(r.headers['bits-packet-type']).toBe('Ack');
    await b.conn.waitClosed();
    const b2 = await Bits.open(srv, '/u/big.bin');
    expect((await b2.fragment(sid, 0, Buffer.alloc(1024), 8192)).headers['bits-received-content-range']).toBe('1024');
  });

  test('maxSessions: CREATE-SESSION beyond it gets 500 E_OUTOFMEMORY', async () => {
    const root = await tempRoot();
    const srv = await serve(root, { limits: { maxSessions: 2 } });
    const b = await Bits.open(srv, '/u/n.bin');
    await b.session();
    const sid = await b.session();
    expectError(await b.create(), 500, '0x8007000E');
    expect((await b.cancel(sid)).status).toBe(200);
    expect((await b.create()).status).toBe(200);
  });
});

describe('server config file', () => {
  async function load(content: unknown): Promise<Awaited<ReturnType<typeof loadServerConfigFile>>> {
    const root = await tempRoot();
    const file = path.join(root, 'serve.json');
    await writeFile(file, typeof content === 'string' ? content : JSON.stringify(content));
    return loadServerConfigFile(file);
  }

  test('valid files load, with sizes as numbers or strings', async () => {
    const cfg = await load({
      defaults: { maxUploadSize: '2G', allowOverwrites: false, sessionTimeoutSeconds: 3600 },
      directories: {
        '/reply': { notificationType: 'by-value', notificationUrl: 'http://127.0.0.1:8080/app', hostId: 'node2' },
        '/big': { maxUploadSize: 5000, uploadsEnabled: true },
      },
      limits: { maxFragmentBytes: '16M', maxSessions: 50 },
      durability: { mode: 'group', syncEveryBytes: '32M', syncEverySeconds: 0.5 },
    });
    expect(cfg.durability).toEqual({ mode: 'group', syncEveryBytes: 32 * 1024 ** 2, syncEverySeconds: 0.5 });
    expect(cfg.defaults).toEqual({ maxUploadSize: 2 * 1024 ** 3, allowOverwrites: false, sessionTimeoutSeconds: 3600 });
    expect(cfg.directories!['/reply']!.notificationType).toBe('by-value');
    expect(cfg.directories!['/big']!.maxUploadSize).toBe(5000);
    expect(cfg.limits).toEqual({ maxFragmentBytes: 16 * 1024 ** 2, maxSessions: 50 });
    expect(parseServerSize('1.5K')).toBe(1536);
    expect(parseServerSize('100MiB')).toBe(100 * 1024 ** 2);
    expect(parseServerSize('unlimited')).toBe(Number.POSITIVE_INFINITY);
    expect(parseServerSize('12 parsecs')).toBeUndefined();
  });

  test('errors are one line naming the file and the key', async () => {
    const cases: Array<[unknown, RegExp]> = [
      ['{not json', /serve\.json: not valid JSON/],
      [[], /serve\.json: the top level must be a JSON object/],
      [{ defaults: { maxUploadSize: 'huge' } }, /serve\.json: "defaults\.maxUploadSize" must be/],
      [{ defaults: { colour: 'red' } }, /serve\.json: unknown key "defaults\.colour"/],
      [{ directories: { '/a': { allowOverwrites: 'yes' } } }, /"directories\.\/a\.allowOverwrites" must be true or false/],
      [{ directories: { a: {} } }, /directory "a" must be a URL path/],
      [{ directories: { '/a': { notificationType: 'by-value' } } }, /"directories\.\/a\.notificationUrl" is required/],
      [{ limits: { maxSessions: 0 } }, /"limits\.maxSessions" must be a positive whole number/],
      [{ durability: { mode: 'never' } }, /"durability\.mode" must be "group" or "ack"/],
      [{ durability: { syncEveryBytes: 0 } }, /"durability\.syncEveryBytes" must be/],
      [{ extra: 1 }, /unknown key "extra"/],
    ];
    for (const [content, re] of cases) {
      const err = await load(content).then(
        () => undefined,
        (e: Error) => e,
      );
      expect(err, JSON.stringify(content)).toBeInstanceOf(Error);
      expect(err!.message).toMatch(re);
      expect(err!.message).not.toContain('\n');
    }
    await expect(loadServerConfigFile('/nonexistent/dir/serve.json')).rejects.toThrow(/serve\.json: cannot read/);
  });

  test('a loaded file drives the server', async () => {
    const root = await tempRoot();
    const cfg = await load({ directories: { '/off': { uploadsEnabled: false } }, limits: { maxFragmentBytes: '1K' } });
    const srv = await serve(root, cfg);
    expectError(await (await Bits.open(srv, '/off/x')).create(), 501, E_ACCESSDENIED);
    const b = await Bits.open(srv, '/on/x');
    const sid = await b.session();
    expect((await b.fragment(sid, 0, Buffer.alloc(2048), 2048)).status).toBe(413);
  });
});
