/**
 * End to end through the doors Windows BITS uses: `bits upload` then `bits download`
 * (the built CLI, as child processes) against `bits serve --basic-auth`, and through a
 * real reverse proxy that requires Digest (MD5, SHA-256) or NTLM before forwarding
 * byte-for-byte to `bits serve`. Each round trip ends byte-identical (sha256).
 */
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startAuthGateway, type AuthGateway, type GatewayScheme } from '../helpers/auth-gateway.js';
import { ensureBuilt, expectOk, jsonEvents, lines, makeRandomFile, sandbox, serve, sha256File, type Sandbox, type Served } from './e2e.js';

const MiB = 1024 * 1024;

let box: Sandbox;
let small: string;
let smallSha: string;

beforeAll(async () => {
  ensureBuilt();
  box = await sandbox('bits-e2e-auth-');
  small = await makeRandomFile(box.file('small.bin'), 3 * MiB + 123);
  smallSha = await sha256File(small);
});
afterAll(async () => {
  await box?.cleanup();
});

async function roundTrip(base: string, name: string, src: string, srcSha: string, auth: { args?: string[]; env?: Record<string, string> }) {
  const up = await box.bits(['upload', src, `${base}/up/${name}`, '--json', ...(auth.args ?? [])], auth.env);
  expectOk(up, `upload ${name}`);
  const out = box.file(`${name}.down`);
  const down = await box.bits(['download', `${base}/up/${name}`, '-o', out, '--json', ...(auth.args ?? [])], auth.env);
  expectOk(down, `download ${name}`);
  expect(await sha256File(out)).toBe(srcSha);
  const done = jsonEvents(up.stdout).at(-1)!;
  expect(done.type).toBe('complete');
  expect(jsonEvents(down.stdout).at(-1)!.type).toBe('complete');
}

describe('bits serve --basic-auth', () => {
  let srv: Served;
  let counter: AuthGateway;
  beforeAll(async () => {
    srv = await serve(path.join(box.dir, 'basic-root'), ['--basic-auth', 'alice:open sesame']);
    // Counts what reaches the server (bits serve does not log refused requests).
    counter = await startAuthGateway({ upstream: { port: srv.port }, scheme: 'none' });
  });
  afterAll(async () => {
    await counter?.close();
    await srv?.stop();
  });

  it('credentials via --user NAME:PASSWORD', async () => {
    await roundTrip(srv.url, 'flag.bin', small, smallSha, { args: ['--user', 'alice:open sesame'] });
    expect(await sha256File(path.join(srv.root, 'up', 'flag.bin'))).toBe(smallSha);
  });

  it('credentials via BITS_USER / BITS_PASSWORD', async () => {
    await roundTrip(srv.url, 'env.bin', small, smallSha, { env: { BITS_USER: 'alice', BITS_PASSWORD: 'open sesame' } });
  });

  it('a wrong password: exit 6, one error line, and a bounded number of requests (no loop)', async () => {
    const up = await box.bits(['upload', small, `${counter.url}/up/wrong.bin`, '--user', 'alice:not it']);
    expect(up.code).toBe(6);
    const errs = lines(up.stderr).filter((l) => /error/i.test(l));
    expect(errs).toHaveLength(1);
    expect(lines(up.stderr).at(-1)).toMatch(/rejected the credentials for user "alice" \(HTTP 401, Basic\)/);
    const afterUpload = counter.requests.length;
    expect(afterUpload).toBeGreaterThanOrEqual(2);
    expect(afterUpload).toBeLessThanOrEqual(3);
    expect(counter.requests[0]!.packetType).toBe('Create-Session');
    const down = await box.bits(['download', `${counter.url}/up/flag.bin`, '-o', box.file('wrong.down'), '--json'], { BITS_USER: 'alice', BITS_PASSWORD: 'nope' });
    expect(down.code).toBe(6);
    expect(lines(down.stderr)).toHaveLength(1);
    expect(jsonEvents(down.stdout).at(-1)!.error!.exitCode).toBe(6);
    // An unauthenticated try and one with the credentials; never a retry loop.
    const seen = counter.requests.length - afterUpload;
    expect(seen).toBeGreaterThanOrEqual(2);
    expect(seen).toBeLessThanOrEqual(3);
    // eslint-disable-next-line no-console
    console.log(`[basic] wrong password: upload sent ${afterUpload} requests, download ${seen}`);
  });
});

describe.each<[GatewayScheme]>([['digest-md5'], ['digest-sha256'], ['ntlm'], ['negotiate']])('through a %s gateway', (scheme) => {
  let srv: Served;
  let gw: AuthGateway;
  const user = scheme === 'ntlm' || scheme === 'negotiate' ? 'CORP\\bob' : 'bob';
  beforeAll(async () => {
    srv = await serve(path.join(box.dir, `${scheme}-root`));
    gw = await startAuthGateway({ upstream: { port: srv.port }, scheme, user: 'bob', domain: user.includes('\\') ? 'CORP' : undefined, password: 'Pa55 word' });
  });
  afterAll(async () => {
    await gw?.close();
    await srv?.stop();
  });

  it('upload and download byte-identical; no body sent just to be refused', async () => {
    // Two fragments (8 MiB default): the second one rides on the authenticated connection/nonce.
    const big = scheme === 'ntlm' ? await makeRandomFile(box.file('big-ntlm.bin'), 9 * MiB + 7) : small;
    const bigSha = big === small ? smallSha : await sha256File(big);
    await roundTrip(gw.url, `${scheme}.bin`, big, bigSha, { args: ['--user', `${user}:Pa55 word`] });
    expect(await sha256File(path.join(srv.root, 'up', `${scheme}.bin`))).toBe(bigSha);

    const uploadReqs = gw.requests.filter((r) => r.method === 'BITS_POST');
    const fragments = uploadReqs.filter((r) => /fragment/i.test(r.packetType ?? ''));
    expect(fragments.every((r) => r.outcome === 'forwarded')).toBe(true);
    // Nothing but empty requests was refused: the 8 MiB body was never sent just to get a 401.
    expect(gw.deniedBodyBytes).toBe(0);
    if (scheme.startsWith('digest')) {
      expect(gw.digestLog).toContain(`ok:${scheme === 'digest-md5' ? 'MD5' : 'SHA-256'}`);
      expect(gw.digestLog).not.toContain('bad-response');
      expect(gw.digestLog).not.toContain('nc-replay');
    } else {
      const st = gw.ntlm!;
      expect(st.failed).toBe(0);
      expect(st.wrongSocket).toBe(0);
      // One handshake per client connection: the upload's BITS messages all share the first one.
      expect(new Set(uploadReqs.map((r) => r.socketId)).size).toBe(1);
      expect(st.verified).toBe(gw.connections);
      // eslint-disable-next-line no-console
      console.log(`[${scheme}] upload request sequence: ${uploadReqs.map((r) => `${r.packetType}${r.outcome === 'forwarded' ? '' : `(${r.outcome})`}`).join(' ')}`);
    }
  });

  it('a wrong password: exit 6 with one line, a bounded number of requests', async () => {
    const before = gw.requests.length;
    const up = await box.bits(['upload', small, `${gw.url}/up/nope.bin`, '--user', `${user}:wrong`]);
    expect(up.code).toBe(6);
    expect(lines(up.stderr).filter((l) => /error/i.test(l))).toHaveLength(1);
    expect(lines(up.stderr).at(-1)).toMatch(/rejected the credentials/);
    const seen = gw.requests.length - before;
    expect(seen).toBeGreaterThanOrEqual(2);
    expect(seen).toBeLessThanOrEqual(4);
    expect(gw.deniedBodyBytes).toBe(0);
  });
});
