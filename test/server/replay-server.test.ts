/**
 * Replays the exact Windows client bytes of the MC-BUP §4 captures against our
 * server, over one raw TCP connection each, and checks the answers against the
 * captured IIS answers (same status, same BITS headers, a session id of our own).
 */
import { afterEach, describe, expect, test } from 'vitest';
import { readFileSync, readdirSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { startServer, type RunningServer } from '../../src/server/index.js';
import { PROTOCOL_GUID } from '../../src/protocol/headers.js';
import { resolveReplyUrl } from '../../src/protocol/urls.js';
import { RawConnection, type RawResponse } from '../helpers/raw-http.js';

const FIXTURES = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'fixtures', 'spec-examples');
const fixture = (name: string): Buffer => readFileSync(path.join(FIXTURES, name));
/** A capture by its number, e.g. `4.1-03`. */
const find = (prefix: string): Buffer => {
  const name = readdirSync(FIXTURES).find((n) => n.startsWith(prefix + '-'));
  if (!name) throw new Error(`no fixture ${prefix}`);
  return fixture(name);
};

const SESSION_41 = '{A0FF5911-4144-45B3-BF27-27AFC8EC8A67}';
const SESSION_42 = '{C85B4E0A-9EB9-4114-BFA4-8A43B4710091}';

const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  while (cleanups.length) await cleanups.pop()!();
});

/** The captured bytes with the capture's session id replaced by ours (same length, so Content-Length holds). */
function withSession(bytes: Buffer, captured: string, ours: string): Buffer {
  expect(ours).toHaveLength(captured.length);
  const text = bytes.toString('latin1');
  expect(text.split(captured)).toHaveLength(2);
  const out = Buffer.from(text.replace(captured, ours), 'latin1');
  expect(out.length).toBe(bytes.length);
  return out;
}

/** Parses a captured IIS response (head only) into lower-cased headers. */
function capturedHeaders(bytes: Buffer): { status: number; headers: Record<string, string> } {
  const [statusLine, ...lines] = bytes.toString('latin1').split('\r\n\r\n')[0]!.split('\r\n');
  const headers: Record<string, string> = {};
  for (const l of lines) {
    const i = l.indexOf(':');
    headers[l.slice(0, i).toLowerCase()] = l.slice(i + 1).trim();
  }
  return { status: Number(statusLine!.split(' ')[1]), headers };
}

/** Our answer has the captured status and every captured BITS header with the same value (session id aside). */
function expectLikeCapture(ours: RawResponse, captured: Buffer, sessionId?: string): void {
  const cap = capturedHeaders(captured);
  expect(ours.status).toBe(cap.status);
  expect(ours.headers['content-length']).toBe('0');
  for (const [k, v] of Object.entries(cap.headers)) {
    if (!k.startsWith('bits-')) continue;
    if (k === 'bits-session-id') expect(ours.headers[k]).toBe(sessionId);
    else expect({ [k]: ours.headers[k] }).toEqual({ [k]: v });
  }
  expect(ours.headers['bits-error']).toBeUndefined();
  expect(ours.headers['bits-error-code']).toBeUndefined();
}

async function tempRoot(): Promise<string> {
  const root = await mkdtemp(path.join(os.tmpdir(), 'bits-replay-'));
  cleanups.push(() => rm(root, { recursive: true, force: true }));
  return root;
}

async function serve(opts: Parameters<typeof startServer>[0]): Promise<RunningServer> {
  const s = await startServer(opts);
  cleanups.push(() => s.close());
  return s;
}

describe('replaying the §4 Windows captures', () => {
  test('§4.1 successful upload: create, fragment, ping, close on one connection', async () => {
    const root = await tempRoot();
    const srv = await serve({ root });
    const c = await RawConnection.connect(srv.port);
    cleanups.push(async () => c.destroy());

    const created = await c.request(find('4.1-01'));
    const sid = created.headers['bits-session-id']!;
    expect(sid).toMatch(/^\{[0-9A-F]{8}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{12}\}$/);
    expectLikeCapture(created, find('4.1-02'), sid);
    expect(created.headers['bits-protocol']).toBe(PROTOCOL_GUID);

    const body = find('4.1-04');
    expect(body.length).toBe(4892);
    const frag = await c.request(Buffer.concat([withSession(find('4.1-03'), SESSION_41, sid), body]));
    expectLikeCapture(frag, find('4.1-05'), sid);
    expect(frag.headers['bits-received-content-range']).toBe('4892');

    const ping = await c.request(find('4.1-06'));
    expectLikeCapture(ping, find('4.1-07'));
    expect(ping.headers['bits-session-id']).toBeUndefined();

    const closed = await c.request(withSession(find('4.1-08'), SESSION_41, sid));
    expectLikeCapture(closed, find('4.1-09'), sid);
    expect(c.ended).toBe(false);

    const landed = await readFile(path.join(root, 'upload', '2000mb-rfc2119.txt'));
    expect(landed.equals(body)).toBe(true);
  });

  test('§4.2 upload-reply with BITS-Host-Id and a by-reference notification', async () => {
    const root = await tempRoot();
    const reply = Buffer.alloc(10240);
    for (let i = 0; i < reply.length; i++) reply[i] = (i * 31 + 7) & 0xff;
    const calls: http.IncomingHttpHeaders[] = [];
    // The server application of §4.2-16/17: reads the request file, writes a 10240-byte reply,
    // answers like the capture (200, Connection: close, no Content-Length, empty body).
    const app = http.createServer((req, res) => {
      calls.push(req.headers);
      req.resume();
      req.on('end', () => {
        void (async () => {
          const input = await readFile(String(req.headers['bits-request-datafile-name']));
          reply.set(input.subarray(0, 100), 0);
          await writeFile(String(req.headers['bits-response-datafile-name']), reply);
          res.writeHead(200, { Connection: 'close', 'Content-type': 'text/html' });
          res.end();
        })().catch(() => res.destroy());
      });
    });
    await new Promise<void>((r) => app.listen(0, '127.0.0.1', () => r()));
    cleanups.push(() => new Promise<void>((r) => app.close(() => r())));
    const appUrl = `http://127.0.0.1:${(app.address() as { port: number }).port}/bitsasp/test.REPLY`;

    const srv = await serve({
      root,
      directories: {
        '/upload-ref-isapi-WebFarm': {
          hostId: 'FRANKCAO8',
          hostIdFallbackTimeout: 110,
          notificationType: 'by-reference',
          notificationUrl: appUrl,
        },
      },
    });
    const c = await RawConnection.connect(srv.port);
    cleanups.push(async () => c.destroy());

    const created = await c.request(find('4.2-10'));
    const sid = created.headers['bits-session-id']!;
    expectLikeCapture(created, find('4.2-11'), sid);
    expect(created.headers['bits-host-id']).toBe('FRANKCAO8');
    expect(created.headers['bits-host-id-fallback-timeout']).toBe('110');

    expectLikeCapture(await c.request(find('4.2-12')), find('4.2-13'));

    const body = find('4.2-15');
    const frag = await c.request(Buffer.concat([withSession(find('4.2-14'), SESSION_42, sid), body]), { timeoutMs: 15_000 });
    // Like §4.2-18, with our session id in the reply URL.
    const capturedAck = Buffer.from(find('4.2-18').toString('latin1').replace(SESSION_42, sid), 'latin1');
    expectLikeCapture(frag, capturedAck, sid);
    expect(frag.headers['bits-reply-url']).toBe(`BITS-Sessions\\Replies\\${sid}\\responsefile.bin`);

    // The notification matched §4.2-16.
    expect(calls).toHaveLength(1);
    const cap16 = capturedHeaders(find('4.2-16')).headers;
    expect(calls[0]!['bits-original-request-url']).toBe(cap16['bits-original-request-url']);
    expect(String(calls[0]!['bits-request-datafile-name'])).toMatch(
      new RegExp(`upload-ref-isapi-WebFarm[\\\\/]BITS-Sessions[\\\\/]Requests[\\\\/]\\${sid.slice(0, -1)}\\}[\\\\/]requestfile\\.bin$`),
    );
    expect(String(calls[0]!['bits-response-datafile-name'])).toMatch(/BITS-Sessions[\\/]Replies[\\/]\{[0-9A-F-]+\}[\\/]responsefile\.bin$/);
    expect(calls[0]!['content-length']).toBe('0');

    // §4.2-19: the client resolves the reply URL against the destination and GETs it (first 9977 bytes).
    const destination = 'http://frankcao8/upload-ref-isapi-WebFarm/2100mb-rfc2119.txt';
    const replyUrl = resolveReplyUrl(destination, frag.headers['bits-reply-url']!);
    expect(replyUrl.pathname).toBe(`/upload-ref-isapi-WebFarm/BITS-Sessions/Replies/%7B${sid.slice(1, -1)}%7D/responsefile.bin`);
    const get = Buffer.from(
      find('4.2-19').toString('latin1').replace(`%7B${SESSION_42.slice(1, -1)}%7D`, `%7B${sid.slice(1, -1)}%7D`),
      'latin1',
    );
    expect(get.toString('latin1')).toContain(replyUrl.pathname);
    const got = await c.request(get);
    expect(got.status).toBe(206);
    expect(got.headers['content-range']).toBe('bytes 0-9976/10240');
    expect(got.body.equals(reply.subarray(0, 9977))).toBe(true);

    const closed = await c.request(withSession(find('4.2-21'), SESSION_42, sid));
    expectLikeCapture(closed, find('4.2-22'), sid);
  });
});
