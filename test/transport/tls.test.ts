/**
 * TLS against real loopback servers with a CA made for the test.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LocalFileError, TlsError, UsageError } from '../../src/errors.js';
import { HttpTransport } from '../../src/transport/http.js';
import { loadTlsFiles, type TlsSettings } from '../../src/transport/tls.js';
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
