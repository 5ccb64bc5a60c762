/**
 * Proxy credentials for scripts: BITS_PROXY_USER / BITS_PROXY_PASSWORD (never
 * BITS_PASSWORD, which is the server's), as a storable source (kind 'env', user name
 * only), and read by the transport itself when nothing else names proxy credentials
 * (a resumed job). Real authenticating proxy on loopback (the `proxy` package).
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { PassThrough } from 'node:stream';
import { createProxy } from 'proxy';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AuthError, UsageError } from '../../src/errors.js';
import { proxyCredentialSourceFrom, proxyCredentialsFromEnv, proxyCredentialsOption, resolveCredentials } from '../../src/transport/credentials.js';
import { HttpTransport } from '../../src/transport/http.js';
import { proxyCredentialsFromUrl } from '../../src/transport/proxy.js';
import { echoApp, startRawServer, type RawServer } from '../helpers/auth-servers.js';

const PROXY_PASS = 'proxy-only secret 4';
const noTty = { input: Object.assign(new PassThrough(), { isTTY: false }) };

describe('where proxy credentials come from', () => {
  it('--proxy-user wins; its missing password comes from BITS_PROXY_PASSWORD; else BITS_PROXY_USER; BITS_PASSWORD never', () => {
    expect(proxyCredentialSourceFrom('p:flagpw', { BITS_PROXY_USER: 'e', BITS_PROXY_PASSWORD: 'x' })).toEqual({ source: { kind: 'flag', user: 'p' }, password: 'flagpw' });
    expect(proxyCredentialSourceFrom('p', { BITS_PROXY_PASSWORD: 'x' })).toEqual({ source: { kind: 'env', user: 'p' }, password: 'x' });
    expect(proxyCredentialSourceFrom(undefined, { BITS_PROXY_USER: 'e', BITS_PROXY_PASSWORD: 'x' })).toEqual({ source: { kind: 'env', user: 'e' }, password: 'x' });
    expect(proxyCredentialSourceFrom(undefined, { BITS_PROXY_USER: 'e', BITS_PASSWORD: 'server' })).toEqual({ source: { kind: 'prompt', user: 'e' } });
    expect(proxyCredentialSourceFrom('p', { BITS_PASSWORD: 'server' })).toEqual({ source: { kind: 'prompt', user: 'p' } });
    expect(proxyCredentialSourceFrom(undefined, { BITS_USER: 'u', BITS_PASSWORD: 'server' })).toBeUndefined();
  });

  it('a stored source (kind env, user only) resolves from BITS_PROXY_PASSWORD; no password and no terminal is a UsageError naming it', async () => {
    const c = await resolveCredentials({ kind: 'env', user: 'e' }, { env: { BITS_PROXY_PASSWORD: 'x', BITS_PASSWORD: 'server' }, target: 'proxy' });
    expect([c.user, c.password]).toEqual(['e', 'x']);
    const err = await resolveCredentials({ kind: 'env', user: 'e' }, { env: { BITS_PASSWORD: 'server' }, target: 'proxy', ...noTty }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(UsageError);
    expect((err as Error).message).toMatch(/BITS_PROXY_PASSWORD/);
    expect(() => proxyCredentialsOption(undefined, { env: { BITS_PROXY_USER: 'e' }, ...noTty })).toThrow(/BITS_PROXY_PASSWORD/);
    const opt = proxyCredentialsOption(undefined, { env: { BITS_PROXY_USER: 'e', BITS_PROXY_PASSWORD: 'x' }, ...noTty })!;
    expect(opt.source).toEqual({ kind: 'env', user: 'e' });
    expect(Object.keys(opt.source).sort()).toEqual(['kind', 'user']);
    expect((await opt.provider()).password).toBe('x');
  });

  it('a proxy URL with a user and no password (what a job keeps) takes BITS_PROXY_PASSWORD', () => {
    expect(proxyCredentialsFromUrl(new URL('http://alice@p:1'), { BITS_PROXY_PASSWORD: 'x' })?.password).toBe('x');
    expect(proxyCredentialsFromUrl(new URL('http://alice:url%20pw@p:1'), { BITS_PROXY_PASSWORD: 'x' })?.password).toBe('url pw');
    expect(proxyCredentialsFromEnv({ BITS_PROXY_USER: 'e' })).toBeUndefined();
  });
});

describe('the transport reads BITS_PROXY_USER/BITS_PROXY_PASSWORD itself', () => {
  let origin: RawServer;
  let proxyServer: http.Server;
  let proxyUrl: string;
  const seen: Array<string | undefined> = [];
  const transports: HttpTransport[] = [];

  beforeAll(async () => {
    origin = await startRawServer(echoApp);
    proxyServer = createProxy(http.createServer());
    (proxyServer as ReturnType<typeof createProxy>).authenticate = (req) => {
      seen.push(req.headers['proxy-authorization']);
      return req.headers['proxy-authorization'] === 'Basic ' + Buffer.from(`puser:${PROXY_PASS}`).toString('base64');
    };
    await new Promise<void>((r) => proxyServer.listen(0, '127.0.0.1', () => r()));
    proxyUrl = `http://127.0.0.1:${(proxyServer.address() as AddressInfo).port}`;
  });
  afterAll(async () => {
    await Promise.all(transports.map((t) => t.destroy()));
    await origin.close();
    proxyServer.closeAllConnections?.();
    await new Promise<void>((r) => proxyServer.close(() => r()));
  });

  const get = async (env: NodeJS.ProcessEnv) => {
    const t = new HttpTransport({ env: { HTTP_PROXY: proxyUrl, ...env } });
    transports.push(t);
    const res = await t.request({ method: 'GET', url: new URL(`${origin.url}/x`) });
    await res.discard();
    return res.status;
  };

  it('with both set: 407, then the credentials, then 200', async () => {
    seen.length = 0;
    expect(await get({ BITS_PROXY_USER: 'puser', BITS_PROXY_PASSWORD: PROXY_PASS })).toBe(200);
    expect(seen).toEqual([undefined, 'Basic ' + Buffer.from(`puser:${PROXY_PASS}`).toString('base64')]);
  });

  it('BITS_USER/BITS_PASSWORD are the server’s: the proxy never gets them (AuthError 407)', async () => {
    seen.length = 0;
    const err = await get({ BITS_USER: 'puser', BITS_PASSWORD: PROXY_PASS }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(AuthError);
    expect((err as AuthError).httpStatus).toBe(407);
    expect((err as Error).message).toMatch(/BITS_PROXY_USER/);
    expect(seen).toEqual([undefined]);
  });
});
