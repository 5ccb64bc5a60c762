/**
 * Proxies: NO_PROXY/env resolution (curl rules), and real tunnels through an
 * authenticating forward proxy (the `proxy` package: 407 Basic, then closes) and
 * our own NTLM-demanding proxy (407 with keep-alive, handshake on one connection).
 */
import { createHash, randomBytes } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { createProxy } from 'proxy';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AuthError, TransportError } from '../../src/errors.js';
import { Credentials } from '../../src/transport/credentials.js';
import { HttpTransport } from '../../src/transport/http.js';
import { isProxyRefusal401, matchesNoProxy, rememberProxyRealms, resolveProxy } from '../../src/transport/proxy.js';
import { parseChallenges } from '../../src/transport/auth/challenge.js';
import { echoApp, ntlmAuth, startNtlmProxy, startRawServer, type RawServer } from '../helpers/auth-servers.js';
import { makeTestPki, type TestPki } from '../helpers/tls.js';

describe('NO_PROXY matching (curl rules)', () => {
  const u = (s: string) => new URL(s);
  it.each([
    ['http://example.com/', 'example.com', true],
    ['http://www.example.com/', 'example.com', true],
    ['http://www.example.com/', '.example.com', true],
    ['http://notexample.com/', 'example.com', false],
    ['http://example.com/', '*', true],
    ['http://example.com:8080/', 'example.com:8080', true],
    ['http://example.com:8081/', 'example.com:8080', false],
    ['https://example.com/', 'example.com:443', true],
    ['http://127.0.0.1:9/', '127.0.0.1', true],
    ['http://127.0.0.2:9/', '127.0.0.1', false],
    ['http://127.0.0.5/', '127.0.0.0/8', true],
    ['http://10.0.0.1/', '127.0.0.0/8', false],
    ['http://[::1]:9/', '::1', true],
    ['http://[::1]:9/', '[::1]:9', true],
    ['http://HOST.Example.COM/', 'example.com', true],
    ['http://a.b/', 'x.y, ,a.b', true],
    ['http://a.b/', '', false],
  ])('%s vs NO_PROXY=%s -> %s', (url, np, want) => expect(matchesNoProxy(u(url), np)).toBe(want));

  it('environment: lower case first, scheme-specific, ALL_PROXY fallback, NO_PROXY applies to --proxy too', () => {
    const env = { http_proxy: 'http://lower:1', HTTP_PROXY: 'http://upper:2', HTTPS_PROXY: 'proxy.example:3128', ALL_PROXY: 'http://all:9' };
    expect(resolveProxy(u('http://t/'), { env })?.host).toBe('lower:1');
    expect(resolveProxy(u('https://t/'), { env })?.href).toBe('http://proxy.example:3128/');
    expect(resolveProxy(u('https://t/'), { env: { ALL_PROXY: 'http://all:9' } })?.host).toBe('all:9');
    expect(resolveProxy(u('https://t/'), { env: { ...env, NO_PROXY: 't' } })).toBeUndefined();
    expect(resolveProxy(u('https://t/'), { env, proxy: 'http://cli:7' })?.host).toBe('cli:7');
    expect(resolveProxy(u('https://t/'), { env: { no_proxy: 't' }, proxy: 'http://cli:7' })).toBeUndefined();
    expect(resolveProxy(u('https://t/'), { env, proxy: false })).toBeUndefined();
    // Loopback is proxied when asked: no implicit bypass.
    expect(resolveProxy(u('http://127.0.0.1:80/'), { env: {}, proxy: 'http://p:1' })?.host).toBe('p:1');
    expect(() => resolveProxy(u('http://t/'), { env: {}, proxy: 'socks5://p:1' })).toThrow(/socks5 proxies are not supported/);
  });
});

describe('a 401 from the proxy itself (tinyproxy) vs from the server', () => {
  it('the proxy\'s own realm and no Via: the proxy; a Via, another realm, or no 407 seen yet: the server', () => {
    const auth = {};
    expect(isProxyRefusal401(auth, 'Basic realm="Tinyproxy"', undefined)).toBe(false);
    rememberProxyRealms(auth, parseChallenges('Basic realm="Tinyproxy"'));
    expect(isProxyRefusal401(auth, 'Basic realm="Tinyproxy"', undefined)).toBe(true);
    expect(isProxyRefusal401(auth, 'basic realm="tinyproxy"', undefined)).toBe(true);
    expect(isProxyRefusal401(auth, 'Basic realm="Tinyproxy"', '1.1 tinyproxy (tinyproxy/1.11.1)')).toBe(false);
    expect(isProxyRefusal401(auth, 'Basic realm="files"', undefined)).toBe(false);
    expect(isProxyRefusal401(auth, 'Digest realm="Tinyproxy", nonce="n"', undefined)).toBe(false);
  });
});

describe('through real proxies', () => {
  let pki: TestPki;
  let plain: RawServer;
  let secure: RawServer;
  let proxyServer: http.Server;
  let proxyUrl: string;
  let proxyAuths: Array<string | undefined> = [];
  /** `METHOD request-target` of every request the proxy authenticated. */
  let proxyTargets: string[] = [];
  const payload = randomBytes(300_000);
  const payloadSha = createHash('sha256').update(payload).digest('hex');
  const transports: HttpTransport[] = [];
  const mk = (o: ConstructorParameters<typeof HttpTransport>[0]) => {
    const t = new HttpTransport({ env: {}, ...o });
    transports.push(t);
    return t;
  };
  const app = (req: Parameters<typeof echoApp>[0]) => (req.target === '/file' ? { status: 200, body: payload } : echoApp(req));

  beforeAll(async () => {
    pki = makeTestPki();
    plain = await startRawServer(app);
    secure = await startRawServer(app, { tls: { cert: pki.server.cert, key: pki.server.key } });
    proxyServer = createProxy(http.createServer());
    (proxyServer as ReturnType<typeof createProxy>).authenticate = (req) => {
      const h = req.headers['proxy-authorization'];
      proxyAuths.push(h);
      proxyTargets.push(`${req.method} ${req.url}`);
      return h === 'Basic ' + Buffer.from('puser:proxy pass 9').toString('base64');
    };
    await new Promise<void>((r) => proxyServer.listen(0, '127.0.0.1', () => r()));
    proxyUrl = `http://127.0.0.1:${(proxyServer.address() as AddressInfo).port}`;
  });
  afterAll(async () => {
    await Promise.all(transports.map((t) => t.destroy()));
    await plain.close();
    await secure.close();
    proxyServer.closeAllConnections?.();
    await new Promise<void>((r) => proxyServer.close(() => r()));
    pki.cleanup();
  });

  async function fetchFile(t: HttpTransport, base: string): Promise<Buffer> {
    const res = await t.request({ method: 'GET', url: new URL(`${base}/file`) });
    expect(res.status).toBe(200);
    const chunks: Buffer[] = [];
    for await (const c of res.body) chunks.push(c as Buffer);
    return Buffer.concat(chunks);
  }

  it('GET to an http target: absolute form to the proxy, answers the 407 with --proxy-user, byte-identical, proxy connection kept alive', async () => {
    proxyAuths = [];
    proxyTargets = [];
    const t = mk({ proxy: proxyUrl, proxyCredentials: new Credentials('puser', 'proxy pass 9') });
    const body = await fetchFile(t, plain.url);
    expect(createHash('sha256').update(body).digest('hex')).toBe(payloadSha);
    expect(proxyAuths[0]).toBeUndefined(); // 407 first
    expect(proxyAuths[1]).toMatch(/^Basic /);
    const before = plain.connections;
    await fetchFile(t, plain.url);
    expect(plain.connections).toBe(before); // the proxy reused its server connection: ours to it stayed open
    expect(proxyTargets).toEqual([`GET ${plain.url}/file`, `GET ${plain.url}/file`, `GET ${plain.url}/file`]);
    expect(t.proxyFor(new URL(plain.url))?.href).toBe(`${proxyUrl}/`);
  });

  it('credentials in the proxy URL, sent pre-emptively once known', async () => {
    proxyAuths = [];
    const t = mk({ proxy: proxyUrl.replace('http://', 'http://puser:proxy%20pass%209@'), connections: 2 });
    await Promise.all([fetchFile(t, plain.url), fetchFile(t, plain.url)]);
    const n = proxyAuths.length;
    // A tunnel opened after one succeeded skips the 407: one CONNECT, with credentials.
    const res = await fetchFile(t, secure.url).catch((e: unknown) => e);
    expect(proxyAuths.slice(n)).toEqual(['Basic ' + Buffer.from('puser:proxy pass 9').toString('base64')]);
    expect(res).toBeInstanceOf(Error); // no --cacert: TLS through the tunnel must still verify
  });

  it('HTTPS through CONNECT with the test CA', async () => {
    proxyTargets = [];
    const t = mk({ proxy: proxyUrl, proxyCredentials: new Credentials('puser', 'proxy pass 9'), tls: { ca: pki.ca } });
    const body = await fetchFile(t, secure.url);
    expect(createHash('sha256').update(body).digest('hex')).toBe(payloadSha);
    expect(proxyTargets.every((x) => x === `CONNECT ${new URL(secure.url).host}`)).toBe(true);
  });

  it('proxyTunnel: true tunnels an http target too', async () => {
    proxyTargets = [];
    const t = mk({ proxy: proxyUrl, proxyTunnel: true, proxyCredentials: new Credentials('puser', 'proxy pass 9') });
    expect((await fetchFile(t, plain.url)).equals(payload)).toBe(true);
    expect(proxyTargets).toEqual([`CONNECT ${new URL(plain.url).host}`, `CONNECT ${new URL(plain.url).host}`]);
  });

  it('HTTPS_PROXY from the environment', async () => {
    const t = mk({ env: { HTTPS_PROXY: proxyUrl.replace('http://', 'http://puser:proxy%20pass%209@') }, tls: { ca: pki.ca } });
    const body = await fetchFile(t, secure.url);
    expect(body.equals(payload)).toBe(true);
  });

  it('no proxy credentials: AuthError 407 naming the scheme', async () => {
    const err = await mk({ proxy: proxyUrl }).request({ method: 'GET', url: new URL(`${plain.url}/x`) }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(AuthError);
    expect((err as AuthError).httpStatus).toBe(407);
    expect((err as Error).message).toMatch(/requires authentication .*Basic.*--proxy-user/);
  });

  it('wrong proxy password: AuthError after one retry', async () => {
    proxyAuths = [];
    const err = await mk({ proxy: proxyUrl, proxyCredentials: new Credentials('puser', 'nope nope') })
      .request({ method: 'GET', url: new URL(`${plain.url}/x`) })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(AuthError);
    expect((err as Error).message).toMatch(/rejected the proxy credentials/);
    expect(proxyAuths).toHaveLength(2);
  });

  it('a proxy that is not there: TransportError naming the proxy', async () => {
    const dead = http.createServer();
    await new Promise<void>((r) => dead.listen(0, '127.0.0.1', () => r()));
    const port = (dead.address() as AddressInfo).port;
    await new Promise<void>((r) => dead.close(() => r()));
    const err = await mk({ proxy: `http://127.0.0.1:${port}` }).request({ method: 'GET', url: new URL(`${plain.url}/x`) }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(TransportError);
    expect((err as Error).message).toMatch(/proxy 127\.0\.0\.1:\d+: connection refused/);
  });

  it('NTLM to an http origin: the first 401 moves the origin from absolute form to a tunnel, the handshake on one connection', async () => {
    const h = ntlmAuth({ user: 'suser', password: 'server pass', domain: 'CORP' }, (req) => app(req));
    const origin = await startRawServer(h);
    try {
      proxyTargets = [];
      const t = mk({ proxy: proxyUrl, proxyCredentials: new Credentials('puser', 'proxy pass 9'), credentials: new Credentials('CORP\\suser', 'server pass') });
      expect((await fetchFile(t, origin.url)).equals(payload)).toBe(true);
      expect(h.state).toMatchObject({ verified: 1, failed: 0, wrongSocket: 0 });
      const host = new URL(origin.url).host;
      // 407, then the absolute-form GET that met NTLM, then CONNECTs only.
      expect(proxyTargets.slice(0, 2)).toEqual([`GET ${origin.url}/file`, `GET ${origin.url}/file`]);
      expect(proxyTargets.slice(2).length).toBeGreaterThan(0);
      expect(proxyTargets.slice(2).every((x) => x === `CONNECT ${host}`)).toBe(true);
      // The authenticated tunnel is kept: a second request needs no new handshake.
      expect((await fetchFile(t, origin.url)).equals(payload)).toBe(true);
      expect(h.state.verified).toBe(1);
    } finally {
      await origin.close();
    }
  });

  it('NTLM proxy authentication (CONNECT forced with proxyTunnel): the handshake stays on one proxy connection', async () => {
    const p = await startNtlmProxy({ user: 'puser', password: 'proxy pass 9', domain: 'CORP' });
    try {
      const t = mk({ proxy: p.url, proxyTunnel: true, proxyCredentials: new Credentials('CORP\\puser', 'proxy pass 9') });
      const body = await fetchFile(t, plain.url);
      expect(body.equals(payload)).toBe(true);
      expect(p.state).toMatchObject({ verified: 1, failed: 0, wrongSocket: 0 });
      expect(p.connects).toBe(3);
      const bad = mk({ proxy: p.url, proxyTunnel: true, proxyCredentials: new Credentials('CORP\\puser', 'wrong') });
      const err = await bad.request({ method: 'GET', url: new URL(`${plain.url}/file`) }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(AuthError);
      expect(p.state.failed).toBe(1);
    } finally {
      await p.close();
    }
  });
});
