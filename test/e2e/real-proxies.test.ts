/**
 * The built `bits` through real proxies on loopback: squid with Debian's stock
 * CONNECT rules (`http_access deny CONNECT !SSL_ports`) plus Basic auth, and
 * tinyproxy (which answers a wrong password with 401, not 407), to a real
 * `bits serve`; and nginx demanding a client certificate. sha256 of what arrived at the end.
 */
import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { nginxMissing, squidMissing, startClientCertNginx, startSquid, startTinyproxy, tinyproxyMissing, type RunningProxy } from '../helpers/daemons.js';
import { makeTestPki, type TestPki } from '../helpers/tls.js';
import { ensureBuilt, expectOk, lines, makeRandomFile, sandbox, serve, sha256File, type Sandbox, type Served } from './e2e.js';

const USER = 'puser';
const SQUID_PASS = 'squid pass 7';
const TINY_PASS = 'tinypass5';

let box: Sandbox;
let server: Served;
let src: string;
let srcSha: string;

beforeAll(async () => {
  ensureBuilt();
  box = await sandbox('bits-e2e-proxies-');
  src = await makeRandomFile(box.file('src.bin'), 3 * 1024 * 1024 + 123);
  srcSha = await sha256File(src);
  server = await serve(path.join(box.dir, 'root'));
});
afterAll(async () => {
  await server?.stop();
  await box?.cleanup();
});

describe.skipIf(squidMissing !== undefined)(`squid, stock CONNECT rules + Basic auth${squidMissing ? ` (skipped: ${squidMissing})` : ''}`, () => {
  let squid: RunningProxy;
  beforeAll(async () => {
    squid = await startSquid(USER, SQUID_PASS);
  });
  afterAll(async () => {
    await squid?.stop();
  });

  it('plain-http BITS upload and download go through in absolute form, byte-identical', async () => {
    const url = `${server.url}/in/squid.bin`;
    const via = ['--proxy', squid.url, '--proxy-user', `${USER}:${SQUID_PASS}`];
    expectOk(await box.bits(['upload', src, url, ...via]), 'upload through squid');
    expect(await sha256File(path.join(server.root, 'in', 'squid.bin'))).toBe(srcSha);
    const out = box.file('squid.down');
    expectOk(await box.bits(['download', url, '-o', out, ...via]), 'download through squid');
    expect(await sha256File(out)).toBe(srcSha);
    const log = squid.accessLog();
    // squid authenticated and forwarded every request; it never saw (and so never refused) a CONNECT.
    expect(log.filter((l) => / TCP_MISS\/200 \d+ BITS_POST http:\/\/127\.0\.0\.1:\d+\/in\/squid\.bin puser /.test(l)).length).toBeGreaterThanOrEqual(3);
    expect(log.some((l) => / TCP_MISS\/20[06] \d+ GET http:\/\/127\.0\.0\.1:\d+\/in\/squid\.bin puser /.test(l))).toBe(true);
    expect(log.some((l) => / CONNECT /.test(l))).toBe(false);
  });

  it('a script: HTTP_PROXY plus BITS_PROXY_USER/BITS_PROXY_PASSWORD, no terminal; no proxy password in the store', async () => {
    const out = box.file('script.down');
    const r = await box.bits(['download', `${server.url}/in/squid.bin`, '-o', out, '--json'], {
      HTTP_PROXY: squid.url,
      BITS_PROXY_USER: USER,
      BITS_PROXY_PASSWORD: SQUID_PASS,
    });
    expectOk(r, 'download with the proxy from the environment');
    expect(await sha256File(out)).toBe(srcSha);
    expect(readFileSync(path.join(box.home, 'jobs.json'), 'utf8')).not.toContain(SQUID_PASS);
    expect(r.stdout + r.stderr).not.toContain(SQUID_PASS);
  });

  it('wrong proxy password: exit 6 naming the proxy', async () => {
    const r = await box.bits(['download', `${server.url}/in/squid.bin`, '-o', box.file('bad.down'), '--proxy', squid.url, '--proxy-user', `${USER}:wrong`]);
    expect(r.code).toBe(6);
    expect(lines(r.stderr).at(-1)).toMatch(new RegExp(`proxy 127\\.0\\.0\\.1:${squid.port} rejected the proxy credentials \\(HTTP 407`));
  });

  it('https to a port other than 443 is still refused by the stock rules: exit 5, the proxy named', async () => {
    const r = await box.bits(['download', `https://127.0.0.1:${server.port}/in/squid.bin`, '-o', box.file('tls.down'), '--proxy', squid.url, '--proxy-user', `${USER}:${SQUID_PASS}`]);
    expect(r.code).toBe(5);
    expect(lines(r.stderr).at(-1)).toMatch(/proxy 127\.0\.0\.1:\d+ refused to open a tunnel .*HTTP 403/);
  });
});

describe.skipIf(tinyproxyMissing !== undefined)(`tinyproxy, BasicAuth${tinyproxyMissing ? ` (skipped: ${tinyproxyMissing})` : ''}`, () => {
  let tiny: RunningProxy;
  beforeAll(async () => {
    tiny = await startTinyproxy(USER, TINY_PASS);
    expectOk(await box.bits(['upload', src, `${server.url}/in/tiny.bin`]), 'direct upload');
  });
  afterAll(async () => {
    await tiny?.stop();
  });

  it('right password: download byte-identical', async () => {
    const out = box.file('tiny.down');
    expectOk(await box.bits(['download', `${server.url}/in/tiny.bin`, '-o', out, '--proxy', tiny.url, '--proxy-user', `${USER}:${TINY_PASS}`]), 'download through tinyproxy');
    expect(await sha256File(out)).toBe(srcSha);
  });

  it.each([['http'], ['https']])('wrong password answered with 401 (%s target): exit 6, the message names the proxy', async (scheme) => {
    const r = await box.bits(['download', `${scheme}://127.0.0.1:${server.port}/in/tiny.bin`, '-o', box.file(`tiny-bad-${scheme}.down`), '--proxy', tiny.url, '--proxy-user', `${USER}:wrong`]);
    expect(r.code).toBe(6);
    expect(lines(r.stderr)).toHaveLength(1);
    expect(r.stderr).toMatch(new RegExp(`proxy 127\\.0\\.0\\.1:${tiny.port} rejected the proxy credentials \\(it answered HTTP 401 instead of 407`));
  });
});

describe.skipIf(nginxMissing !== undefined)(`nginx with ssl_verify_client on${nginxMissing ? ` (skipped: ${nginxMissing})` : ''}`, () => {
  let pki: TestPki;
  let nginx: RunningProxy;
  beforeAll(async () => {
    pki = makeTestPki();
    const root = path.join(box.dir, 'nginx-root');
    mkdirSync(root);
    copyFileSync(src, path.join(root, 'f.bin'));
    nginx = await startClientCertNginx(root, { certFile: path.join(pki.dir, 'server.crt'), keyFile: path.join(pki.dir, 'server.key'), clientCaFile: pki.caFile });
  });
  afterAll(async () => {
    await nginx?.stop();
    pki?.cleanup();
  });

  it('--cert client.crt --key client.key (separate files) and a combined file: downloads byte-identical', async () => {
    const combined = box.file('client-combined.pem');
    writeFileSync(combined, Buffer.concat([pki.client.key, pki.client.cert]));
    for (const [i, certArgs] of [['--cert', pki.client.certFile, '--key', pki.client.keyFile], ['--cert', combined]].entries()) {
      const out = box.file(`nginx-${i}.down`);
      expectOk(await box.bits(['download', `${nginx.url}/f.bin`, '-o', out, '--cacert', pki.caFile, ...certArgs]), `download with ${certArgs.join(' ')}`);
      expect(await sha256File(out)).toBe(srcSha);
    }
  });

  it('without a client certificate: exit 5, and the line says the server may want one', async () => {
    const r = await box.bits(['download', `${nginx.url}/f.bin`, '-o', box.file('nocert.down'), '--cacert', pki.caFile]);
    expect(r.code).toBe(5);
    expect(r.stderr).toMatch(/client certificate.*--cert FILE --key FILE/);
  });
});
