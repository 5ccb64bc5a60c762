/**
 * End to end over HTTPS (`bits serve --tls-cert/--tls-key` with a CA made in the
 * test) and through an authenticating forward proxy (the `proxy` package: 407 Basic
 * first), for http (absolute form) and https (CONNECT) targets. The built CLI as child processes; sha256 at the end.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { createProxy } from 'proxy';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeTestPki, type TestPki } from '../helpers/tls.js';
import { ensureBuilt, expectOk, jsonEvents, lines, makeRandomFile, sandbox, serve, sha256File, type Sandbox, type Served } from './e2e.js';

const PROXY_USER = 'puser';
const PROXY_PASS = 'proxy pass 9';

let box: Sandbox;
let pki: TestPki;
let src: string;
let srcSha: string;
let plain: Served;
let secure: Served;
let proxyServer: http.Server;
let proxyUrl: string;
const proxyAuths: Array<{ method: string | undefined; url: string | undefined; auth: string | undefined }> = [];

beforeAll(async () => {
  ensureBuilt();
  box = await sandbox('bits-e2e-tls-');
  pki = makeTestPki();
  src = await makeRandomFile(box.file('src.bin'), 2 * 1024 * 1024 + 77);
  srcSha = await sha256File(src);
  plain = await serve(path.join(box.dir, 'plain-root'));
  secure = await serve(path.join(box.dir, 'tls-root'), ['--tls-cert', path.join(pki.dir, 'server.crt'), '--tls-key', path.join(pki.dir, 'server.key')]);
  proxyServer = createProxy(http.createServer());
  (proxyServer as ReturnType<typeof createProxy>).authenticate = (req) => {
    const auth = req.headers['proxy-authorization'];
    proxyAuths.push({ method: req.method, url: req.url, auth });
    return auth === 'Basic ' + Buffer.from(`${PROXY_USER}:${PROXY_PASS}`).toString('base64');
  };
  await new Promise<void>((r) => proxyServer.listen(0, '127.0.0.1', () => r()));
  proxyUrl = `http://127.0.0.1:${(proxyServer.address() as AddressInfo).port}`;
});
afterAll(async () => {
  await plain?.stop();
  await secure?.stop();
  proxyServer?.closeAllConnections?.();
  await new Promise<void>((r) => (proxyServer ? proxyServer.close(() => r()) : r()));
  pki?.cleanup();
  await box?.cleanup();
});

async function roundTrip(base: string, name: string, extra: string[]): Promise<{ up: string; down: string }> {
  const up = await box.bits(['upload', src, `${base}/in/${name}`, ...extra]);
  expectOk(up, `upload ${name}`);
  const out = box.file(`${name}.down`);
  const down = await box.bits(['download', `${base}/in/${name}`, '-o', out, ...extra]);
  expectOk(down, `download ${name}`);
  expect(await sha256File(out)).toBe(srcSha);
  return { up: up.stderr, down: down.stderr };
}

describe('HTTPS: bits serve --tls-cert/--tls-key', () => {
  it('--cacert with the test CA: upload and download byte-identical', async () => {
    expect(secure.url).toMatch(/^https:/);
    await roundTrip(secure.url, 'ca.bin', ['--cacert', pki.caFile]);
    expect(await sha256File(path.join(secure.root, 'in', 'ca.bin'))).toBe(srcSha);
  });

  it('without --cacert: exit 12 with one line, for upload and download', async () => {
    const up = await box.bits(['upload', src, `${secure.url}/in/untrusted.bin`]);
    expect(up.code).toBe(12);
    expect(lines(up.stderr).filter((l) => /error/i.test(l))).toHaveLength(1);
    expect(lines(up.stderr).at(-1)).toMatch(/certificate/i);
    const down = await box.bits(['download', `${secure.url}/in/ca.bin`, '-o', box.file('untrusted.down'), '--json']);
    expect(down.code).toBe(12);
    expect(lines(down.stderr)).toHaveLength(1);
    expect(jsonEvents(down.stdout).at(-1)!.error!.code).toBe('TlsError');
  });

  it('--insecure: works, with a warning', async () => {
    const { up, down } = await roundTrip(secure.url, 'insecure.bin', ['--insecure']);
    expect(up).toMatch(/insecure|not verif/i);
    expect(down).toMatch(/insecure|not verif/i);
  });
});

describe('through an authenticating forward proxy (407 first)', () => {
  const proxied = () => ['--proxy', proxyUrl, '--proxy-user', `${PROXY_USER}:${PROXY_PASS}`];

  it('https target: upload and download byte-identical, through CONNECT', async () => {
    proxyAuths.length = 0;
    await roundTrip(secure.url, 'proxied-https.bin', [...proxied(), '--cacert', pki.caFile]);
    // Each process: a CONNECT without credentials (407), then one with them; the tunnel carries the rest.
    expect(proxyAuths.length).toBeGreaterThanOrEqual(4);
    expect(proxyAuths.every((a) => a.method === 'CONNECT' && a.url === new URL(secure.url).host)).toBe(true);
    expect(proxyAuths[0]!.auth).toBeUndefined();
    expect(proxyAuths[1]!.auth).toMatch(/^Basic /);
  });

  it('http target: download byte-identical, in absolute form (no CONNECT)', async () => {
    // The `proxy` package sits on Node's HTTP parser, which refuses the BITS_POST method:
    // the upload goes direct here; test/e2e/real-proxies.test.ts uploads through squid.
    expectOk(await box.bits(['upload', src, `${plain.url}/in/proxied-http.bin`]), 'direct upload');
    proxyAuths.length = 0;
    const out = box.file('proxied-http.down');
    expectOk(await box.bits(['download', `${plain.url}/in/proxied-http.bin`, '-o', out, ...proxied()]), 'proxied download');
    expect(await sha256File(out)).toBe(srcSha);
    expect(proxyAuths.length).toBeGreaterThanOrEqual(2);
    expect(proxyAuths.every((a) => a.method !== 'CONNECT' && a.url === `${plain.url}/in/proxied-http.bin`)).toBe(true);
    expect(proxyAuths[0]!.auth).toBeUndefined();
    expect(proxyAuths[1]!.auth).toMatch(/^Basic /);
  });

  it('wrong proxy password: exit 6, one line, a bounded number of tries', async () => {
    proxyAuths.length = 0;
    const r = await box.bits(['download', `${plain.url}/in/proxied-http.bin`, '-o', box.file('p.down'), '--proxy', proxyUrl, '--proxy-user', `${PROXY_USER}:nope`]);
    expect(r.code).toBe(6);
    expect(lines(r.stderr)).toHaveLength(1);
    expect(r.stderr).toMatch(/407/);
    expect(proxyAuths.length).toBeLessThanOrEqual(3);
  });
});
