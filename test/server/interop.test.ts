/**
 * `bits serve` (the built binary, spawned on 127.0.0.1) against what real BITS peers
 * send, with raw requests (issue 12, server items): both HRESULT header names on every
 * error answer, bodiless packets without Content-Length, POST with
 * X-Http-Method-Override, the session-id echo rules, and every sequence a client may use
 * for a 0-byte file.
 */
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { ensureBuilt, serve, type Served } from '../e2e/e2e.js';
import { makeTempDir, sha256 } from '../helpers/files.js';
import { RawConnection, bitsRequest, buildRequest, type RawResponse } from '../helpers/raw-http.js';
import { PROTOCOL_GUID } from '../../src/protocol/headers.js';

const E_INVALIDARG = '0x80070057';
const E_ACCESSDENIED = '0x80070005';
const E_OUTOFMEMORY = '0x8007000E';
const BG_E_SESSION_NOT_FOUND = '0x8020001F';
const BG_E_TOO_LARGE = '0x80200020';

let tmp: { dir: string; cleanup: () => Promise<void> };
let root: string;
let srv: Served;
const conns: RawConnection[] = [];

beforeAll(async () => {
  ensureBuilt();
  tmp = await makeTempDir('bits-interop-');
  root = path.join(tmp.dir, 'root');
  await mkdir(path.join(root, 'keep'), { recursive: true });
  await writeFile(path.join(root, 'keep', 'existing.txt'), 'do not replace');
  const config = path.join(tmp.dir, 'serve.json');
  await writeFile(
    config,
    JSON.stringify({
      directories: {
        '/off': { uploadsEnabled: false },
        '/keep': { allowOverwrites: false },
        '/small': { maxUploadSize: 100 },
      },
      limits: { maxFragmentBytes: 4096, maxSessions: 50 },
    }),
  );
  srv = await serve(root, ['--config', config]);
});

afterAll(async () => {
  for (const c of conns) c.destroy();
  await srv?.stop();
  await tmp?.cleanup();
});

async function connect(): Promise<RawConnection> {
  const c = await RawConnection.connect(srv.port);
  conns.push(c);
  return c;
}

/** A raw request with exactly these headers: no Content-Length unless given. */
function bare(method: string, target: string, headers: Record<string, string | number>): Buffer {
  return buildRequest(method, target, headers, undefined, { noContentLength: true });
}

async function createSession(c: RawConnection, target: string): Promise<string> {
  const r = await c.request(bitsRequest(target, 'Create-Session', { 'BITS-Supported-Protocols': PROTOCOL_GUID }));
  expect(r.status).toBe(200);
  return r.headers['bits-session-id']!;
}

function fragment(target: string, sid: string, first: number, data: Buffer, total: number): Buffer {
  return bitsRequest(target, 'Fragment', { 'BITS-Session-Id': sid, 'Content-Range': `bytes ${first}-${first + data.length - 1}/${total}` }, data);
}

/** An error answer names its HRESULT twice, identically, with the context. */
function expectBitsError(r: RawResponse, status: number, hr: string): void {
  expect({ status: r.status, error: r.headers['bits-error'], code: r.headers['bits-error-code'], ctx: r.headers['bits-error-context'] }).toEqual({
    status,
    error: hr,
    code: hr,
    ctx: '0x5',
  });
}

describe('item 12: BITS-Error and BITS-Error-Code on every error answer', () => {
  test('every HRESULT the upload server sends comes under both names', async () => {
    const c = await connect();
    const create = (target: string, extra: Record<string, string> = {}, body?: Buffer) =>
      c.request(bitsRequest(target, 'Create-Session', { 'BITS-Supported-Protocols': PROTOCOL_GUID, ...extra }, body));
    expectBitsError(await c.request(bitsRequest('/e/a.bin', 'Frobnicate')), 400, E_INVALIDARG);
    expectBitsError(await c.request(bitsRequest('/e/a.bin', 'Create-Session')), 400, E_INVALIDARG);
    expectBitsError(await create('/e/a.bin', {}, Buffer.from('x')), 400, E_INVALIDARG);
    expectBitsError(await create('/keep/existing.txt'), 403, E_ACCESSDENIED);
    expectBitsError(await create('/e/BITS-Sessions/x'), 403, E_ACCESSDENIED);
    expectBitsError(await create('/off/a.bin'), 501, E_ACCESSDENIED);
    const unknown = '{00000000-1111-2222-3333-444444444444}';
    expectBitsError(await c.request(fragment('/e/a.bin', unknown, 0, Buffer.from('a'), 1)), 500, BG_E_SESSION_NOT_FOUND);
    expectBitsError(await c.request(bitsRequest('/e/a.bin', 'Close-Session', { 'BITS-Session-Id': unknown })), 500, BG_E_SESSION_NOT_FOUND);
    const small = await createSession(c, '/small/big.bin');
    expectBitsError(await c.request(fragment('/small/big.bin', small, 0, Buffer.from('abc'), 101)), 500, BG_E_TOO_LARGE);
    const sid = await createSession(c, '/e/a.bin');
    expectBitsError(
      await c.request(bare('BITS_POST', '/e/a.bin', { 'BITS-Packet-Type': 'Fragment', 'BITS-Session-Id': sid, 'Content-Range': 'bytes 0-2/3' })),
      411,
      E_INVALIDARG,
    );
    // Answers that are not errors in the §2.2.1.2 sense carry neither name: a 416 resync (HRESULT 0) …
    expect((await c.request(fragment('/e/a.bin', sid, 0, Buffer.from('abc'), 6))).status).toBe(200);
    const resync = await c.request(fragment('/e/a.bin', sid, 4, Buffer.from('ef'), 6));
    expect(resync.status).toBe(416);
    expect(resync.headers['bits-received-content-range']).toBe('3');
    expect([resync.headers['bits-error'], resync.headers['bits-error-code']]).toEqual([undefined, undefined]);
    // … and a 200 Ack.
    const ok = await c.request(fragment('/e/a.bin', sid, 3, Buffer.from('def'), 6));
    expect(ok.status).toBe(200);
    expect([ok.headers['bits-error'], ok.headers['bits-error-code']]).toEqual([undefined, undefined]);
    // … a 413 (fragment over --max-fragment-size; the connection closes) …
    const c2 = await connect();
    const sid2 = await createSession(c2, '/e/b.bin');
    const big = await c2.request(fragment('/e/b.bin', sid2, 0, randomBytes(5000), 5000));
    expect([big.status, big.headers['bits-error'], big.headers['bits-error-code']]).toEqual([413, undefined, undefined]);
    // … and the 404 of §3.2.5.2.7 (the request entity was deleted).
    const c3 = await connect();
    const sid3 = await createSession(c3, '/e/c.bin');
    await rm(path.join(root, 'e', 'BITS-Sessions', 'Requests', sid3, 'requestfile.bin'));
    const gone = await c3.request(bitsRequest('/e/c.bin', 'Close-Session', { 'BITS-Session-Id': sid3 }));
    expect([gone.status, gone.headers['bits-error'], gone.headers['bits-error-code']]).toEqual([404, undefined, undefined]);
    expect(c.ended).toBe(false);
  });

  test('a full session table is E_OUTOFMEMORY under both names', async () => {
    const c = await connect();
    const made: Array<[string, string]> = [];
    let last: RawResponse | undefined;
    try {
      // maxSessions is 50 (other tests hold a few): bounded at 60 tries.
      for (let i = 0; i < 60; i++) {
        const target = `/full/f${i}.bin`;
        last = await c.request(bitsRequest(target, 'Create-Session', { 'BITS-Supported-Protocols': PROTOCOL_GUID }));
        if (last.status !== 200) break;
        made.push([target, last.headers['bits-session-id']!]);
      }
      expectBitsError(last!, 500, E_OUTOFMEMORY);
    } finally {
      // Free the table for the tests after this one, pass or fail.
      for (const [target, sid] of made) await c.request(bitsRequest(target, 'Cancel-Session', { 'BITS-Session-Id': sid }));
    }
    expect(made.length).toBeGreaterThan(40);
  });

  test('errors found by the HTTP layer carry both names too, for BITS_POST and for an overridden POST', async () => {
    const long = 'a'.repeat(5000);
    for (const [method, extra] of [
      ['BITS_POST', {}],
      ['POST', { 'X-Http-Method-Override': 'BITS_POST' }],
    ] as const) {
      const conflicting = await connect();
      const r1 = await conflicting.request(
        buildRequest(method, '/e/h.bin', [
          ...Object.entries(extra),
          ['BITS-Packet-Type', 'Ping'],
          ['Content-Length', '0'],
          ['Content-Length', '5'],
        ]),
      );
      expectBitsError(r1, 400, E_INVALIDARG);
      const chunked = await connect();
      const r2 = await chunked.request(bare(method, '/e/h.bin', { ...extra, 'BITS-Packet-Type': 'Ping', 'Transfer-Encoding': 'chunked' }));
      expectBitsError(r2, 411, E_INVALIDARG);
      if (method === 'BITS_POST') {
        // A value over 4 KB (§2.2.1) is found before the headers are complete: only a BITS_POST is known by then.
        const big = await connect();
        expectBitsError(await big.request(bitsRequest('/e/h.bin', 'Ping', { 'X-Long': long })), 400, E_INVALIDARG);
      }
    }
  });
});

describe('item 13: bodiless packets without Content-Length (RFC 7230 §3.3.3)', () => {
  test('Create-Session, Ping and Close-Session without Content-Length upload a file on one connection', async () => {
    const c = await connect();
    const target = '/nocl/data.bin';
    const ping = await c.request(bare('BITS_POST', target, { 'BITS-Packet-Type': 'Ping' }));
    expect(ping.status).toBe(200);
    const created = await c.request(bare('BITS_POST', target, { 'BITS-Packet-Type': 'Create-Session', 'BITS-Supported-Protocols': PROTOCOL_GUID }));
    expect(created.status).toBe(200);
    const sid = created.headers['bits-session-id']!;
    const data = randomBytes(3000);
    expect((await c.request(fragment(target, sid, 0, data, data.length))).status).toBe(200);
    const closed = await c.request(bare('BITS_POST', target, { 'BITS-Packet-Type': 'Close-Session', 'BITS-Session-Id': sid }));
    expect(closed.status).toBe(200);
    expect(sha256(await readFile(path.join(root, 'nocl', 'data.bin')))).toBe(sha256(data));
    expect(c.ended).toBe(false);
  });

  test('Cancel-Session without Content-Length deletes the session', async () => {
    const c = await connect();
    const target = '/nocl/cancelled.bin';
    const sid = await createSession(c, target);
    expect((await c.request(fragment(target, sid, 0, Buffer.from('hello'), 10))).status).toBe(200);
    const dir = path.join(root, 'nocl', 'BITS-Sessions', 'Requests', sid);
    expect(existsSync(dir)).toBe(true);
    const r = await c.request(bare('BITS_POST', target, { 'BITS-Packet-Type': 'Cancel-Session', 'BITS-Session-Id': sid }));
    expect(r.status).toBe(200);
    expect(existsSync(dir)).toBe(false);
    expect(existsSync(path.join(root, 'nocl', 'cancelled.bin'))).toBe(false);
  });

  test('a FRAGMENT without Content-Length is still 411, and the connection stays in sync', async () => {
    const c = await connect();
    const target = '/nocl/frag.bin';
    const sid = await createSession(c, target);
    const r = await c.request(bare('BITS_POST', target, { 'BITS-Packet-Type': 'Fragment', 'BITS-Session-Id': sid, 'Content-Range': 'bytes 0-2/3' }));
    expectBitsError(r, 411, E_INVALIDARG);
    expect((await c.request(fragment(target, sid, 0, Buffer.from('abc'), 3))).status).toBe(200);
    expect((await c.request(bitsRequest(target, 'Close-Session', { 'BITS-Session-Id': sid }))).status).toBe(200);
    expect(await readFile(path.join(root, 'nocl', 'frag.bin'), 'utf8')).toBe('abc');
  });
});

describe('item 14: POST with X-Http-Method-Override: BITS_POST', () => {
  test('a whole upload as POST + override (any case of the value) lands byte for byte', async () => {
    const c = await connect();
    const target = '/override/data.bin';
    const post = (type: string, headers: Record<string, string | number>, body?: Buffer, value = 'BITS_POST') =>
      c.request(buildRequest('POST', target, { 'x-http-method-override': value, 'BITS-Packet-Type': type, ...headers }, body));
    expect((await post('Ping', {}, undefined, 'bits_post')).status).toBe(200);
    const created = await post('Create-Session', { 'BITS-Supported-Protocols': PROTOCOL_GUID }, undefined, 'Bits_Post');
    expect(created.status).toBe(200);
    expect(created.headers['bits-protocol']).toBe(PROTOCOL_GUID);
    const sid = created.headers['bits-session-id']!;
    const data = randomBytes(5000);
    for (const [first, last] of [
      [0, 3999],
      [4000, 4999],
    ] as const) {
      const r = await post('Fragment', { 'BITS-Session-Id': sid, 'Content-Range': `bytes ${first}-${last}/${data.length}` }, data.subarray(first, last + 1));
      expect(r.status).toBe(200);
      expect(r.headers['bits-received-content-range']).toBe(String(last + 1));
    }
    // Same rules as BITS_POST: a fragment over --max-fragment-size (4096 here) is 413.
    expect((await post('Fragment', { 'BITS-Session-Id': sid, 'Content-Range': 'bytes 0-4999/5000' }, data)).status).toBe(413);
    const c2 = await connect();
    const closed = await c2.request(buildRequest('POST', target, { 'X-HTTP-Method-Override': ' BITS_POST ', 'BITS-Packet-Type': 'Close-Session', 'BITS-Session-Id': sid }));
    expect(closed.status).toBe(200);
    expect(sha256(await readFile(path.join(root, 'override', 'data.bin')))).toBe(sha256(data));
    expect(srv.log).toMatch(/POST \/override\/data\.bin Create-Session -> 200/);
  });

  test('POST without the override, with another value, or another method with it, is not an upload', async () => {
    const c = await connect();
    const headers = { 'BITS-Packet-Type': 'Create-Session', 'BITS-Supported-Protocols': PROTOCOL_GUID };
    expect((await c.request(buildRequest('POST', '/not-bits/no.bin', headers))).status).toBe(405);
    expect((await c.request(buildRequest('POST', '/not-bits/no.bin', { ...headers, 'X-Http-Method-Override': 'PUT' }))).status).toBe(405);
    expect((await c.request(buildRequest('PUT', '/not-bits/no.bin', { ...headers, 'X-Http-Method-Override': 'BITS_POST' }))).status).toBe(405);
    // GET stays a download even with the header.
    const get = await c.request(buildRequest('GET', '/keep/existing.txt', { 'X-Http-Method-Override': 'BITS_POST' }));
    expect(get.status).toBe(200);
    expect(get.body.toString()).toBe('do not replace');
    expect(existsSync(path.join(root, 'not-bits'))).toBe(false);
  });
});

describe('item 15: BITS-Session-Id echo', () => {
  test('every answer to a request that carried a session id echoes it exactly as sent; PING and CREATE-SESSION as IIS', async () => {
    const c = await connect();
    const target = '/echo/e.bin';
    // A client that sends a session id to CREATE-SESSION gets the new one, not its own back.
    const mine = '{11111111-2222-3333-4444-555555555555}';
    const created = await c.request(bitsRequest(target, 'Create-Session', { 'BITS-Supported-Protocols': PROTOCOL_GUID, 'BITS-Session-Id': mine }));
    const sid = created.headers['bits-session-id']!;
    expect(sid).toMatch(/^\{[0-9A-F-]{36}\}$/);
    expect(sid).not.toBe(mine);
    // The spelling of the request comes back (lower case, no braces, as some clients write it).
    const lower = sid.toLowerCase();
    const bareId = lower.slice(1, -1);
    const f1 = await c.request(fragment(target, lower, 0, Buffer.from('abc'), 6));
    expect([f1.status, f1.headers['bits-session-id']]).toEqual([200, lower]);
    const f416 = await c.request(fragment(target, bareId, 5, Buffer.from('f'), 6));
    expect([f416.status, f416.headers['bits-session-id']]).toEqual([416, bareId]);
    const f2 = await c.request(fragment(target, sid, 3, Buffer.from('def'), 6));
    expect([f2.status, f2.headers['bits-session-id']]).toEqual([200, sid]);
    // PING: §4.1-06 carries no id and §4.1-07 answers with none; one that carries an id gets it back.
    const ping = await c.request(bitsRequest(target, 'Ping'));
    expect([ping.status, ping.headers['bits-session-id']]).toEqual([200, undefined]);
    const pingWithId = await c.request(bitsRequest(target, 'Ping', { 'BITS-Session-Id': lower }));
    expect([pingWithId.status, pingWithId.headers['bits-session-id']]).toEqual([200, lower]);
    const closed = await c.request(bitsRequest(target, 'Close-Session', { 'BITS-Session-Id': lower }));
    expect([closed.status, closed.headers['bits-session-id']]).toEqual([200, lower]);
    expect(await readFile(path.join(root, 'echo', 'e.bin'), 'utf8')).toBe('abcdef');
    // The resent CLOSE-SESSION of a closed session, and an unknown session, both echo too.
    const again = await c.request(bitsRequest(target, 'Close-Session', { 'BITS-Session-Id': sid }));
    expect([again.status, again.headers['bits-session-id']]).toEqual([200, sid]);
    const unknown = '{00000000-1111-2222-3333-444444444444}';
    const lost = await c.request(bitsRequest(target, 'Cancel-Session', { 'BITS-Session-Id': unknown }));
    expect([lost.status, lost.headers['bits-session-id']]).toEqual([500, unknown]);
    // CANCEL-SESSION's Ack.
    const sid2 = await createSession(c, target);
    const cancelled = await c.request(bitsRequest(target, 'Cancel-Session', { 'BITS-Session-Id': sid2 }));
    expect([cancelled.status, cancelled.headers['bits-session-id']]).toEqual([200, sid2]);
  });
});

describe('item 11: every way a client may send a 0-byte file creates the empty file', () => {
  for (const [label, steps] of [
    ['CREATE-SESSION then CLOSE-SESSION', []],
    ['an empty FRAGMENT `bytes */0`', ['bytes */0']],
    ['an empty FRAGMENT `bytes 0--1/0` (§3.1.5.1.4 applied literally)', ['bytes 0--1/0']],
    ['an empty FRAGMENT `bytes 0-0/0`', ['bytes 0-0/0']],
    ['the empty FRAGMENT twice (a lost Ack)', ['bytes */0', 'bytes */0']],
  ] as const) {
    test(label, async () => {
      const c = await connect();
      const name = `empty-${label.replace(/[^a-z0-9]+/gi, '-')}.txt`;
      // An existing file is replaced, so the 0 bytes really are the upload's.
      await mkdir(path.join(root, 'empty'), { recursive: true });
      await writeFile(path.join(root, 'empty', name), 'old content');
      const target = `/empty/${name}`;
      const sid = await createSession(c, target);
      for (const range of steps) {
        const r = await c.request(bitsRequest(target, 'Fragment', { 'BITS-Session-Id': sid, 'Content-Range': range }, Buffer.alloc(0)));
        expect([r.status, r.headers['bits-received-content-range'], r.headers['bits-error']]).toEqual([200, '0', undefined]);
      }
      expect((await c.request(bitsRequest(target, 'Close-Session', { 'BITS-Session-Id': sid }))).status).toBe(200);
      expect((await stat(path.join(root, 'empty', name))).size).toBe(0);
      expect(existsSync(path.join(root, 'empty', 'BITS-Sessions', 'Requests', sid))).toBe(false);
    });
  }

  test('an empty FRAGMENT of a non-empty entity, or after bytes arrived, is still E_INVALIDARG', async () => {
    const c = await connect();
    const target = '/empty/not-empty.bin';
    const sid = await createSession(c, target);
    const empty = (range: string) => c.request(bitsRequest(target, 'Fragment', { 'BITS-Session-Id': sid, 'Content-Range': range }, Buffer.alloc(0)));
    expectBitsError(await empty('bytes 0-0/10'), 400, E_INVALIDARG);
    expectBitsError(await empty('bytes */10'), 400, E_INVALIDARG);
    expect((await c.request(fragment(target, sid, 0, Buffer.from('abc'), 3))).status).toBe(200);
    expectBitsError(await empty('bytes */0'), 400, E_INVALIDARG);
    expect((await c.request(bitsRequest(target, 'Close-Session', { 'BITS-Session-Id': sid }))).status).toBe(200);
    expect(await readFile(path.join(root, 'empty', 'not-empty.bin'), 'utf8')).toBe('abc');
  });
});
