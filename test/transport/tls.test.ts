/**
 * TLS against real loopback servers with a CA made for the test.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import http from 'node:http';
import { join } from 'node:path';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LocalFileError, TlsError, UsageError } from '../../src/errors.js';
import { HttpTransport } from '../../src/transport/http.js';
import { loadTlsFiles, refusalHint, type TlsSettings } from '../../src/transport/tls.js';
import { nginxMissing, startClientCertNginx, type RunningProxy } from '../helpers/daemons.js';
import { echoApp, startRawServer, type RawServer } from '../helpers/auth-servers.js';
import { makeTestPki, type TestPki } from '../helpers/tls.js';

let pki: TestPki;
const servers: RawServer[] = [];
const transports: HttpTransport[] = [];
const warnings: string[] = [];

beforeAll(() => {
  pki = makeTestPki();
});
afterAll(async () => {
  await Promise.all(transports.map((t) => t.destroy()));
  await Promise.all(servers.map((s) => s.close()));
  pki.cleanup();
});

async function serve(pair: { cert: Buffer; key: Buffer }, extra: object = {}): Promise<string> {
  const s = await startRawServer(echoApp, { tls: { cert: pair.cert, key: pair.key, ...extra } });
  servers.push(s);
  return s.url;
}

async function get(url: string, tls?: TlsSettings, host?: string): Promise<number> {
  const t = new HttpTransport({ tls, env: {}, warn: (m) => warnings.push(m), connectTimeoutMs: 5000 });
  transports.push(t);
  const u = new URL(url);
  if (host) u.hostname = host;
  const res = await t.request({ method: 'GET', url: u });
  await res.discard();
  return res.status;
}

async function tlsFailure(p: Promise<unknown>): Promise<TlsError> {
  const e = await p.then(
    () => undefined,
    (err: unknown) => err,
  );
  expect(e).toBeInstanceOf(TlsError);
  expect((e as TlsError).exitCode).toBe(12);
  expect((e as Error).message).not.toContain('\n');
  return e as TlsError;
}

describe('server certificates', () => {
  it('--cacert: the test CA is trusted, by IP and by name', async () => {
    const url = await serve(pki.server);
    const tls = loadTlsFiles({ cacert: pki.caFile });
    expect(await get(url, tls)).toBe(200);
    expect(await get(url, tls, 'localhost')).toBe(200);
  });

  it('unknown CA (system store) -> TlsError naming it', async () => {
    const e = await tlsFailure(get(await serve(pki.server)));
    expect(e.message).toMatch(/unknown CA.*--cacert/);
  });

  it('self-signed -> TlsError naming it', async () => {
    const e = await tlsFailure(get(await serve(pki.selfSigned), { ca: pki.ca }));
    expect(e.message).toMatch(/self-signed/);
  });

  it('expired -> TlsError naming it', async () => {
    const e = await tlsFailure(get(await serve(pki.expired), { ca: pki.ca }));
    expect(e.message).toMatch(/expired/);
  });

  it('host name mismatch -> TlsError naming it', async () => {
    const e = await tlsFailure(get(await serve(pki.wrongHost), { ca: pki.ca }));
    expect(e.message).toMatch(/does not match the host name/);
  });

  it('--insecure accepts them all and warns once', async () => {
    warnings.length = 0;
    expect(await get(await serve(pki.selfSigned), { insecure: true })).toBe(200);
    expect(await get(await serve(pki.expired), { insecure: true })).toBe(200);
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toMatch(/--insecure/);
  });

  it('plain http spoken to an https URL -> TlsError', async () => {
    const s = http.createServer((_q, r) => r.end('plain'));
    await new Promise<void>((r) => s.listen(0, '127.0.0.1', () => r()));
    const port = (s.address() as AddressInfo).port;
    const e = await tlsFailure(get(`https://127.0.0.1:${port}/`, { ca: pki.ca })).finally(() => {
      s.closeAllConnections();
      s.close();
    });
    expect(e.message).toMatch(/did not answer with TLS/);
  });
});

describe('client certificates', () => {
  const required = () => ({ requestCert: true, rejectUnauthorized: true, ca: pki.ca });

  it('sent with --cert/--key when the server requires one', async () => {
    const url = await serve(pki.server, required());
    expect(await get(url, loadTlsFiles({ cacert: pki.caFile, cert: pki.client.certFile, key: pki.client.keyFile }))).toBe(200);
  });

  it('missing -> TlsError saying a client certificate is required', async () => {
    const url = await serve(pki.server, required());
    const e = await tlsFailure(get(url, { ca: pki.ca }));
    expect(e.message).toMatch(/client certificate/);
  });

  it('from a CA the server does not trust -> TlsError', async () => {
    const url = await serve(pki.server, required());
    const e = await tlsFailure(get(url, loadTlsFiles({ cacert: pki.caFile, cert: pki.otherClient.certFile, key: pki.otherClient.keyFile })));
    expect(e.message).toMatch(/client certificate|issuer/);
  });

  it('file problems are reported before connecting', () => {
    expect(() => loadTlsFiles({ cacert: '/nonexistent/ca.pem' })).toThrow(LocalFileError);
    expect(() => loadTlsFiles({ cert: pki.client.certFile, key: pki.otherClient.keyFile })).toThrow(/do not belong together/);
    expect(() => loadTlsFiles({ cert: pki.client.certFile })).toThrow(UsageError);
    expect(() => loadTlsFiles({ cacert: pki.client.keyFile })).toThrow(/no PEM certificate/);
  });
});

describe('client certificate and key files in the common formats (made with openssl here)', () => {
  const ossl = (...args: string[]) => execFileSync('openssl', args, { cwd: pki.dir, stdio: ['ignore', 'ignore', 'pipe'] });
  const f = (name: string) => join(pki.dir, name);
  /** A client key in `form`, and its certificate from the test CA. */
  const keyForms: Array<[string, (name: string) => void]> = [
    ['RSA, PKCS#8 PEM', (n) => ossl('genpkey', '-algorithm', 'RSA', '-pkeyopt', 'rsa_keygen_bits:2048', '-out', f(`${n}.key`))],
    ['RSA, PKCS#1 PEM (BEGIN RSA PRIVATE KEY)', (n) => {
      ossl('genpkey', '-algorithm', 'RSA', '-pkeyopt', 'rsa_keygen_bits:2048', '-out', f(`${n}.p8`));
      ossl('rsa', '-in', f(`${n}.p8`), '-traditional', '-out', f(`${n}.key`));
    }],
    ['EC, SEC1 PEM after EC PARAMETERS (openssl ecparam -genkey)', (n) => ossl('ecparam', '-name', 'prime256v1', '-genkey', '-out', f(`${n}.key`))],
    ['EC, PKCS#8 PEM', (n) => ossl('genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', f(`${n}.key`))],
    ['EC, DER key file', (n) => {
      ossl('genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-384', '-out', f(`${n}.pem`));
      ossl('pkey', '-in', f(`${n}.pem`), '-outform', 'DER', '-out', f(`${n}.key`));
    }],
  ];
  let url: string;
  beforeAll(async () => {
    url = await serve(pki.server, { requestCert: true, rejectUnauthorized: true, ca: pki.ca });
  });

  function issueClient(name: string, make: (name: string) => void): void {
    make(name);
    const keyArgs = readFileSync(f(`${name}.key`)).includes('-----BEGIN') ? [] : ['-keyform', 'DER'];
    ossl('req', '-new', '-key', f(`${name}.key`), ...keyArgs, '-subj', `/CN=${name}`, '-out', f(`${name}.csr`));
    writeFileSync(f(`${name}.ext`), 'extendedKeyUsage=clientAuth\n');
    ossl('x509', '-req', '-in', f(`${name}.csr`), '-CA', pki.caFile, '-CAkey', f('ca.key'), '-CAcreateserial', '-days', '2', '-extfile', f(`${name}.ext`), '-out', f(`${name}.crt`));
  }

  it.each(keyForms.map(([label, make], i) => [label, make, i] as const))('%s: separate files, cert+key and key+cert in one file', async (_label, make, i) => {
    const n = `form${i}`;
    issueClient(n, make);
    const cert = readFileSync(f(`${n}.crt`));
    const key = readFileSync(f(`${n}.key`));
    const files: Array<{ cert: string; key?: string }> = [{ cert: f(`${n}.crt`), key: f(`${n}.key`) }];
    if (key.includes('-----BEGIN')) {
      writeFileSync(f(`${n}.certkey.pem`), Buffer.concat([cert, key]));
      writeFileSync(f(`${n}.keycert.pem`), Buffer.concat([key, cert]));
      files.push({ cert: f(`${n}.certkey.pem`) }, { cert: f(`${n}.keycert.pem`) }, { cert: f(`${n}.crt`), key: f(`${n}.keycert.pem`) });
    }
    for (const given of files) {
      expect(await get(url, loadTlsFiles({ cacert: pki.caFile, ...given })), JSON.stringify(given)).toBe(200);
    }
  });

  it('a DER certificate with a PEM key works; mismatches of any key type and encrypted keys are refused up front, each with its own message', () => {
    issueClient('der', keyForms[3]![1]);
    ossl('x509', '-in', f('der.crt'), '-outform', 'DER', '-out', f('der.cer'));
    expect(loadTlsFiles({ cert: f('der.cer'), key: f('der.key') }).cert!.toString()).toMatch(/^-----BEGIN CERTIFICATE-----/);
    // An RSA key for an EC certificate: OpenSSL keeps them in different slots and would not notice.
    issueClient('rsa', keyForms[0]![1]);
    expect(() => loadTlsFiles({ cert: f('der.crt'), key: f('rsa.key') })).toThrow(/do not belong together/);
    ossl('pkey', '-in', f('der.key'), '-aes256', '-passout', 'pass:secret', '-out', f('enc.key'));
    expect(() => loadTlsFiles({ cert: f('der.crt'), key: f('enc.key') })).toThrow(/encrypted.*openssl pkey/);
    expect(() => loadTlsFiles({ cert: f('der.crt'), key: f('der.crt') })).toThrow(/--key .*no private key in the file/);
    expect(() => loadTlsFiles({ cert: f('der.key') })).toThrow(/no certificate in the file/);
    expect(() => loadTlsFiles({ cert: f('der.crt') })).toThrow(/holds no private key: add --key FILE/);
  });
});

describe.skipIf(nginxMissing !== undefined)(`nginx with ssl_verify_client on${nginxMissing ? ` (skipped: ${nginxMissing})` : ''}`, () => {
  let nginx: RunningProxy;
  let root: string;
  beforeAll(async () => {
    root = mkdtempSync(join(tmpdir(), 'bits-nginx-root-'));
    writeFileSync(join(root, 'f.bin'), 'client certificates only\n');
    nginx = await startClientCertNginx(root, { certFile: join(pki.dir, 'server.crt'), keyFile: join(pki.dir, 'server.key'), clientCaFile: pki.caFile });
  });
  afterAll(async () => {
    await nginx?.stop();
    rmSync(root, { recursive: true, force: true });
  });

  async function ask(method: string, tls: TlsSettings): Promise<{ status: number; hint?: string; requested?: boolean; body: string }> {
    const t = new HttpTransport({ tls, env: {}, connectTimeoutMs: 5000 });
    transports.push(t);
    const res = await t.request({ method, url: new URL(`${nginx.url}/f.bin`) });
    return { status: res.status, hint: res.hint, requested: res.clientCertificateRequested, body: await res.text() };
  }

  it('no --cert: the handshake succeeds, HEAD and GET get 400, and the response says a client certificate is needed', async () => {
    for (const method of ['HEAD', 'GET']) {
      const r = await ask(method, { ca: pki.ca });
      expect(r.status).toBe(400);
      expect(r.requested).toBe(true);
      expect(r.hint).toMatch(/asked for a client certificate .*none was given: pass --cert FILE --key FILE/);
    }
    expect((await ask('GET', { ca: pki.ca })).body).toMatch(/No required SSL certificate was sent/);
  });

  it('--cert/--key in separate files: 200, no hint', async () => {
    const r = await ask('GET', loadTlsFiles({ cacert: pki.caFile, cert: pki.client.certFile, key: pki.client.keyFile }));
    expect(r).toMatchObject({ status: 200, body: 'client certificates only\n' });
    expect(r.hint).toBeUndefined();
  });

  it('refusalHint: only for https refusals, and only when it has something to say', () => {
    const u = new URL('https://h/');
    expect(refusalHint(400, u, undefined, undefined)).toMatch(/may require a client certificate/);
    expect(refusalHint(400, u, false, undefined)).toBeUndefined();
    expect(refusalHint(404, u, true, undefined)).toBeUndefined();
    expect(refusalHint(400, new URL('http://h/'), undefined, undefined)).toBeUndefined();
    expect(refusalHint(400, u, true, { cert: 'x' })).toMatch(/refused the client certificate/);
  });
});
