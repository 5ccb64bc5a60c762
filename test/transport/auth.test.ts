/**
 * HttpTransport.request against real authenticating servers on loopback.
 */
import { createHash } from 'node:crypto';
import { Readable } from 'node:stream';
import { afterEach, describe, expect, it } from 'vitest';
import { AuthError } from '../../src/errors.js';
import { Credentials } from '../../src/transport/credentials.js';
import { HttpTransport } from '../../src/transport/http.js';
import { basicAuth, digestAuth, echoApp, ntlmAuth, startRawServer, type Handler, type RawServer } from '../helpers/auth-servers.js';

const USER = 'alice';
const PASSWORD = 'correct horse 42';
const good = new Credentials(USER, PASSWORD);
const bad = new Credentials(USER, 'wrong password 42');

let servers: RawServer[] = [];
let transports: HttpTransport[] = [];
afterEach(async () => {
  await Promise.all(transports.map((t) => t.destroy()));
  await Promise.all(servers.map((s) => s.close()));
  servers = [];
  transports = [];
});

async function serve(h: Handler): Promise<RawServer> {
  const s = await startRawServer(h);
  servers.push(s);
  return s;
}
function transport(creds?: Credentials): HttpTransport {
  const t = new HttpTransport({ credentials: creds, requestTimeoutMs: 10_000, responseTimeoutMs: 10_000 });
  transports.push(t);
  return t;
}
async function getJson(t: HttpTransport, url: string, init: { method?: string; body?: Parameters<HttpTransport['request']>[0]['body']; headers?: Record<string, string> } = {}) {
  const res = await t.request({ method: init.method ?? 'GET', url: new URL(url), body: init.body, headers: init.headers });
  const text = await res.text();
  return { status: res.status, json: res.status === 200 ? (JSON.parse(text) as { method: string; sha256: string; length: number }) : undefined };
}

const fragment = Buffer.alloc(256 * 1024, 7);
for (let i = 0; i < fragment.length; i += 4096) fragment[i] = i & 0xff;
const fragmentSha = createHash('sha256').update(fragment).digest('hex');

describe('Basic', () => {
  it('answers the 401 and then authenticates pre-emptively', async () => {
    const s = await serve(basicAuth({ user: USER, password: PASSWORD }));
    const t = transport(good);
    const r1 = await getJson(t, `${s.url}/a`);
    expect(r1.status).toBe(200);
    expect(s.requests).toHaveLength(2);
    const r2 = await getJson(t, `${s.url}/b`);
    expect(r2.status).toBe(200);
    expect(s.requests).toHaveLength(3); // no second 401: saved a round trip
    expect(s.requests[2]!.headers['authorization']).toMatch(/^Basic /);
    expect(s.connections).toBe(1); // keep-alive
    expect(s.requests[0]!.headers['user-agent']).toMatch(/^bits\/\d+\.\d+\.\d+/);
  });

  it('a wrong password is an AuthError after exactly one retry, not a loop', async () => {
    const s = await serve(basicAuth({ user: USER, password: PASSWORD }));
    const t = transport(bad);
    const err = await t.request({ method: 'GET', url: new URL(`${s.url}/x`) }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(AuthError);
    expect((err as AuthError).httpStatus).toBe(401);
    expect((err as AuthError).exitCode).toBe(6);
    expect(s.requests).toHaveLength(2);
  });

  it('no credentials configured: AuthError naming the offered scheme', async () => {
    const s = await serve(basicAuth({ user: USER, password: PASSWORD }));
    const err = await transport().request({ method: 'GET', url: new URL(`${s.url}/x`) }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(AuthError);
    expect((err as Error).message).toMatch(/requires authentication .*Basic.*--user/);
    expect(s.requests).toHaveLength(1);
  });

  it('BITS_POST with a factory body is re-sent whole after the 401', async () => {
    const s = await serve(basicAuth({ user: USER, password: PASSWORD }));
    const t = transport(good);
    let made = 0;
    const r = await getJson(t, `${s.url}/upload/file.bin`, {
      method: 'BITS_POST',
      headers: { 'BITS-Packet-Type': 'Fragment', 'Content-Range': `bytes 0-${fragment.length - 1}/${fragment.length}`, 'Content-Length': String(fragment.length) },
      body: () => {
        made++;
        return Readable.from([fragment.subarray(0, 1000), fragment.subarray(1000)]);
      },
    });
    expect(made).toBe(2);
    expect(r.json).toMatchObject({ method: 'BITS_POST', length: fragment.length, sha256: fragmentSha });
    expect(s.requests.map((q) => [q.method, q.body.length])).toEqual([
      ['BITS_POST', fragment.length],
      ['BITS_POST', fragment.length],
    ]);
  });

  it('a stream body that is not a factory cannot be re-sent: AuthError, one request', async () => {
    const s = await serve(basicAuth({ user: USER, password: PASSWORD }));
    const err = await transport(good)
      .request({ method: 'BITS_POST', url: new URL(`${s.url}/u`), headers: { 'Content-Length': '1000' }, body: Readable.from([Buffer.alloc(1000)]) })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(AuthError);
    expect((err as Error).message).toMatch(/cannot be sent again/);
    expect(s.requests).toHaveLength(1);
  });

  it('asks the credential provider only when challenged, and once', async () => {
    const s = await serve(basicAuth({ user: USER, password: PASSWORD }));
    let asked = 0;
    const t = new HttpTransport({ credentials: async () => (asked++, good) });
    transports.push(t);
    const open = await serve(echoApp);
    expect((await getJson(t, `${open.url}/`)).status).toBe(200);
    expect(asked).toBe(0);
    await getJson(t, `${s.url}/1`);
    await getJson(t, `${s.url}/2`);
    expect(asked).toBe(1);
  });
});

describe('Digest', () => {
  for (const algorithm of ['MD5', 'SHA-256'] as const) {
    it(`${algorithm} with qop=auth, verified by the server, then pre-emptive with nc counting`, async () => {
      const h = digestAuth({ user: USER, password: PASSWORD, algorithm });
      const s = await serve(h);
      const t = transport(good);
      expect((await getJson(t, `${s.url}/dir/a?x=1`)).status).toBe(200);
      expect((await getJson(t, `${s.url}/dir/b`, { method: 'BITS_POST', body: () => fragment, headers: { 'BITS-Packet-Type': 'Fragment' } })).json).toMatchObject({ sha256: fragmentSha });
      expect(h.log).toEqual(['none', `ok:${algorithm}`, `ok:${algorithm}`]);
      const ncs = s.requests.slice(1).map((q) => /nc=(\w+)/.exec(q.headers['authorization']!)![1]);
      expect(ncs).toEqual(['00000001', '00000002']);
    });
  }

  it('picks SHA-256 when both are offered', async () => {
    const h = digestAuth({ user: USER, password: PASSWORD, offer: ['MD5', 'SHA-256'] });
    const s = await serve(h);
    expect((await getJson(transport(good), `${s.url}/`)).status).toBe(200);
    expect(h.log).toEqual(['none', 'ok:SHA-256']);
  });

  it('stale=true: retries with the new nonce without counting a failure', async () => {
    const h = digestAuth({ user: USER, password: PASSWORD, algorithm: 'SHA-256', staleFirst: true });
    const s = await serve(h);
    expect((await getJson(transport(good), `${s.url}/`, { method: 'BITS_POST', body: () => fragment })).json).toMatchObject({ sha256: fragmentSha });
    expect(h.log).toEqual(['none', 'stale', 'ok:SHA-256']);
  });

  it('userhash=true', async () => {
    const h = digestAuth({ user: USER, password: PASSWORD, algorithm: 'SHA-256', userhash: true });
    const s = await serve(h);
    expect((await getJson(transport(good), `${s.url}/`)).status).toBe(200);
    expect(s.requests[1]!.headers['authorization']).not.toContain(USER);
  });

  it('wrong password: AuthError after one retry', async () => {
    const h = digestAuth({ user: USER, password: PASSWORD });
    const s = await serve(h);
    const err = await transport(bad).request({ method: 'GET', url: new URL(`${s.url}/`) }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(AuthError);
    expect(h.log).toEqual(['none', 'bad-response']);
    expect(s.requests).toHaveLength(2);
  });
});

describe('NTLM (NTLMv2, connection-bound)', () => {
  it('Type1 -> 401 Type2 -> Type3 on the same socket; verified with the password; then the connection stays authenticated', async () => {
    const h = ntlmAuth({ user: USER, password: PASSWORD, domain: 'CORP' });
    const s = await serve(h);
    const t = transport(new Credentials(`CORP\\${USER}`, PASSWORD));
    let made = 0;
    const r = await getJson(t, `${s.url}/upload/x`, {
      method: 'BITS_POST',
      headers: { 'BITS-Packet-Type': 'Fragment', 'Content-Length': String(fragment.length) },
      body: () => (made++, Readable.from([fragment])),
    });
    expect(r.json).toMatchObject({ method: 'BITS_POST', sha256: fragmentSha });
    expect(made).toBe(3);
    expect(h.state).toMatchObject({ verified: 1, failed: 0, wrongSocket: 0 });
    expect(new Set(s.requests.map((q) => q.socketId)).size).toBe(1);
    expect(s.requests[1]!.headers['authorization']).toMatch(/^NTLM /);
    // Later requests ride the authenticated connection with no new handshake.
    expect((await getJson(t, `${s.url}/again`)).status).toBe(200);
    expect(s.requests).toHaveLength(4);
    expect(s.requests[3]!.headers['authorization']).toBeUndefined();
  });

  it('with 3 connections per origin, concurrent handshakes still keep each on its own socket', async () => {
    const h = ntlmAuth({ user: USER, password: PASSWORD });
    const s = await serve(h);
    const t = new HttpTransport({ credentials: good, connections: 3 });
    transports.push(t);
    const rs = await Promise.all([1, 2, 3, 4, 5, 6].map((i) => getJson(t, `${s.url}/c${i}`)));
    expect(rs.every((r) => r.status === 200)).toBe(true);
    expect(h.state.wrongSocket).toBe(0);
    expect(h.state.failed).toBe(0);
    expect(s.connections).toBeLessThanOrEqual(3);
  });

  it('Negotiate offered: answered with NTLM tokens under the Negotiate scheme', async () => {
    const h = ntlmAuth({ user: USER, password: PASSWORD, offer: ['Negotiate', 'NTLM'] });
    const s = await serve(h);
    expect((await getJson(transport(good), `${s.url}/n`)).status).toBe(200);
    expect(s.requests[1]!.headers['authorization']).toMatch(/^Negotiate TlRMTVNT/);
    expect(h.state.verified).toBe(1);
  });

  it('wrong password: AuthError after Type3, three requests in all', async () => {
    const h = ntlmAuth({ user: USER, password: PASSWORD });
    const s = await serve(h);
    const err = await transport(bad).request({ method: 'GET', url: new URL(`${s.url}/`) }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(AuthError);
    expect((err as Error).message).toMatch(/rejected the credentials.*NTLM/);
    expect(h.state.failed).toBe(1);
    expect(s.requests).toHaveLength(3);
  });

  it('a server that closes the connection mid-handshake is reported, not retried forever', async () => {
    const inner = ntlmAuth({ user: USER, password: PASSWORD });
    const s = await serve(async (req) => {
      const r = await inner(req);
      return r.status === 401 && /NTLM \S/.test(r.headers?.['WWW-Authenticate'] ?? '') ? { ...r, close: true } : r;
    });
    const err = await transport(good).request({ method: 'GET', url: new URL(`${s.url}/`) }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(AuthError);
    expect((err as Error).message).toMatch(/closed the connection during the NTLM handshake/);
  });
});

it('prefers the strongest scheme offered (NTLM over Digest over Basic)', async () => {
  const ntlm = ntlmAuth({ user: USER, password: PASSWORD });
  const s = await serve(async (req) => {
    const r = await ntlm(req);
    if (r.status === 401 && r.headers?.['WWW-Authenticate'] === 'NTLM') {
      r.headers['WWW-Authenticate'] = 'Basic realm="x", Digest realm="r", nonce="abc", qop="auth", NTLM';
    }
    return r;
  });
  expect((await getJson(transport(good), `${s.url}/`)).status).toBe(200);
  expect(s.requests[1]!.headers['authorization']).toMatch(/^NTLM /);
});
