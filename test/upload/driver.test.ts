/**
 * The upload driver (src/client/upload.ts) exchange by exchange, over the
 * scripted transport (test/helpers/scripted-transport.ts): what it sends next
 * after each answer — a resync, a lost session, a 413, a 503 with Retry-After,
 * a plain 501, a dead BITS-Host-Id — and that the no-progress deadline ends a
 * request that never answers and a reply body that stalls.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import { uploadFile, type UploadCheckpoint, type UploadOptions } from '../../src/client/upload.js';
import type { TransferEvent } from '../../src/client/events.js';
import { ExitCode, ServerError, TimeoutError } from '../../src/errors.js';
import { connectionReset, ScriptedTransport, type RecordedRequest, type Script, type ScriptedAnswer } from '../helpers/scripted-transport.js';
import { makeRandomFile, makeTempDir } from '../helpers/files.js';

const URL_ = 'http://127.0.0.1:9/up/f.bin';
const SID = '{A0FF5911-4144-45B3-BF27-27AFC8EC8A67}';
const SID2 = '{B0FF5911-4144-45B3-BF27-27AFC8EC8A67}';

let tmp: { dir: string; cleanup: () => Promise<void> };
let file: string;
let data: Buffer;
beforeAll(async () => {
  tmp = await makeTempDir('bits-driver-');
  file = join(tmp.dir, 'f.bin');
  await makeRandomFile(file, 2500, 7);
  data = await fsp.readFile(file);
});
afterAll(async () => {
  await tmp?.cleanup();
});

const ack = (headers: Record<string, string> = {}): ScriptedAnswer => ({ status: 200, headers: { 'BITS-Packet-Type': 'Ack', ...headers } });
const created = (sid = SID, extra: Record<string, string> = {}) => ack({ 'BITS-Session-Id': sid, 'BITS-Protocol': '{7df0354d-249b-430f-820d-3d2a9bef4931}', ...extra });
const received = (n: number, status = 200): ScriptedAnswer => ({ status, headers: { 'BITS-Packet-Type': 'Ack', 'BITS-Received-Content-Range': String(n) } });
const type = (r: RecordedRequest) => r.headers['bits-packet-type'];
const range = (r: RecordedRequest) => r.headers['content-range'];

async function run(script: Script, extra: Partial<UploadOptions> = {}) {
  const t = new ScriptedTransport(script, 200);
  const events: Array<TransferEvent & { at: number }> = [];
  const cps: UploadCheckpoint[] = [];
  const t0 = Date.now();
  let error: unknown;
  const result = await uploadFile({
    file,
    url: URL_,
    fragmentSize: 1000,
    retryBaseMs: 10,
    retryMaxMs: 50,
    noProgressTimeoutMs: 10_000,
    httpTransport: t,
    onEvent: (e) => events.push({ ...e, at: Date.now() }),
    onCheckpoint: (c) => void cps.push(c),
    ...extra,
  }).catch((e: unknown) => {
    error = e;
    return undefined;
  });
  return { t, events, cps, result, error, ms: Date.now() - t0 };
}

function expectBodiesMatch(t: ScriptedTransport): void {
  for (const r of t.requests.filter((q) => type(q) === 'Fragment')) {
    const m = /^bytes (\d+)-(\d+)\/2500$/.exec(range(r)!)!;
    expect(r.body.equals(data.subarray(Number(m[1]), Number(m[2]) + 1)), range(r)).toBe(true);
  }
}

describe('upload driver, exchange by exchange', () => {
  it('416 resync: the next FRAGMENT starts where the server says', async () => {
    const { t, events, result } = await run([created(), received(1000), received(500, 416), received(1500), received(2500), ack()]);
    expect(result?.bytes).toBe(2500);
    expect(t.requests.map(type)).toEqual(['Create-Session', 'Fragment', 'Fragment', 'Fragment', 'Fragment', 'Close-Session']);
    expect(t.requests.filter((r) => type(r) === 'Fragment').map(range)).toEqual(['bytes 0-999/2500', 'bytes 1000-1999/2500', 'bytes 500-1499/2500', 'bytes 1500-2499/2500']);
    expect(events).toContainEqual(expect.objectContaining({ type: 'resync', from: 2000, to: 500 }));
    expect(events.filter((e) => e.type === 'retry')).toEqual([]);
    expectBodiesMatch(t);
  });

  it('BG_E_SESSION_NOT_FOUND: a new CREATE-SESSION, then every byte again in the new session', async () => {
    const lost: ScriptedAnswer = { status: 500, headers: { 'BITS-Error-Code': '0x8020001F', 'BITS-Error-Context': '0x5' } };
    const { t, events, result } = await run([created(SID), received(1000), lost, created(SID2), received(1000), received(2000), received(2500), ack()]);
    expect(result?.sessionId).toBe(SID2);
    expect(t.requests.map((r) => `${type(r)} ${r.headers['bits-session-id'] ?? ''} ${range(r) ?? ''}`.trim())).toEqual([
      'Create-Session',
      `Fragment ${SID} bytes 0-999/2500`,
      `Fragment ${SID} bytes 1000-1999/2500`,
      'Create-Session',
      `Fragment ${SID2} bytes 0-999/2500`,
      `Fragment ${SID2} bytes 1000-1999/2500`,
      `Fragment ${SID2} bytes 2000-2499/2500`,
      `Close-Session ${SID2}`,
    ]);
    expect(events.some((e) => e.type === 'warning' && /BG_E_SESSION_NOT_FOUND/.test(e.message))).toBe(true);
    expectBodiesMatch(t);
  });

  it('413: the same offset again with half the fragment, and the checkpoint keeps the smaller size', async () => {
    const { t, cps, result } = await run([created(), { status: 413 }, received(500), received(1000), received(1500), received(2000), received(2500), ack()], { minFragmentSize: 100 });
    expect(result?.bytes).toBe(2500);
    expect(t.requests.filter((r) => type(r) === 'Fragment').map((r) => r.body.length)).toEqual([1000, 500, 500, 500, 500, 500]);
    expect(cps.at(-1)).toMatchObject({ fragmentSize: 500, bytesTransferred: 2500, highWaterMark: 2500 });
  });

  it('503 with Retry-After: 2 waits at least 2 s (the backoff alone would wait ~10 ms), then PING and the same FRAGMENT', async () => {
    const at: number[] = [];
    const answers = [created(), { status: 503, headers: { 'Retry-After': '2' } }, ack(), received(1000), received(2000), received(2500), ack()];
    const { t, events, result } = await run((_r, i) => {
      at.push(Date.now());
      return answers[i] ?? { status: 599 };
    }, { random: () => 0 });
    expect(result?.bytes).toBe(2500);
    expect(t.requests.map(type).slice(1, 4)).toEqual(['Fragment', 'Ping', 'Fragment']);
    expect(range(t.requests[3]!)).toBe('bytes 0-999/2500');
    const retry = events.find((e) => e.type === 'retry') as { delayMs: number; at: number };
    expect(retry.delayMs).toBe(2000);
    // Measured: the PING went out no sooner than 2 s after the 503.
    expect(at[2]! - at[1]!).toBeGreaterThanOrEqual(2000);
    expect(result?.retries).toBe(1);
  });

  it('a plain 501 (no BITS-Error) fails at once: not a BITS upload server, exit 5, no retry', async () => {
    const { t, events, error, ms } = await run([{ status: 501, headers: { 'Content-Type': 'text/html' }, body: '<h1>Not Implemented</h1>' }]);
    expect(error).toBeInstanceOf(ServerError);
    expect((error as ServerError).exitCode).toBe(ExitCode.SERVER);
    expect((error as ServerError).disposition).toBe('fail');
    expect((error as Error).message).toMatch(/127\.0\.0\.1:9 is not a BITS upload server \(HTTP 501 to BITS_POST CREATE-SESSION\)/);
    expect(t.requests).toHaveLength(1);
    expect(events.filter((e) => e.type === 'retry')).toEqual([]);
    expect(ms).toBeLessThan(1000);
  });

  it('BITS-Host-Id that cannot be reached: retried there until BITS-Host-Id-Fallback-Timeout, then the origin', async () => {
    let firstFail = 0;
    let firstOrigin = 0;
    let phase = 0;
    const { t, events, result } = await run((r) => {
      const host = new URL(r.url).hostname;
      if (host === '127.0.0.2') {
        firstFail ||= Date.now();
        return { error: connectionReset() };
      }
      if (type(r) === 'Create-Session') return created(SID, { 'BITS-Host-Id': '127.0.0.2', 'BITS-Host-Id-Fallback-Timeout': '1' });
      firstOrigin ||= Date.now();
      if (type(r) === 'Ping' || type(r) === 'Close-Session') return ack();
      phase += 1000;
      return received(Math.min(2500, phase));
    });
    expect(result?.bytes).toBe(2500);
    const hosts = t.requests.map((r) => `${new URL(r.url).hostname} ${type(r)}`);
    expect(hosts[0]).toBe('127.0.0.1 Create-Session');
    expect(hosts[1]).toBe('127.0.0.2 Ping');
    expect(hosts.slice(hosts.indexOf('127.0.0.1 Ping'))).toEqual(['127.0.0.1 Ping', '127.0.0.1 Fragment', '127.0.0.1 Fragment', '127.0.0.1 Fragment', '127.0.0.1 Close-Session']);
    expect(firstOrigin - firstFail).toBeGreaterThanOrEqual(1000);
    expect(events.some((e) => e.type === 'phase' && e.phase === 'waiting-host-fallback')).toBe(true);
  });

  it('a FRAGMENT that is never answered ends with the no-progress deadline (the signal reaches the request)', async () => {
    const { error, ms } = await run([created(), { hang: true }], { noProgressTimeoutMs: 600 });
    expect(error).toBeInstanceOf(TimeoutError);
    expect((error as TimeoutError).timer).toBe('no-progress');
    expect(ms).toBeGreaterThanOrEqual(550);
    expect(ms).toBeLessThan(5000);
  });

  it('a reply body that stalls half-way ends with the no-progress deadline', async () => {
    const reply = join(tmp.dir, 'reply.bin');
    const final: ScriptedAnswer = { status: 200, headers: { 'BITS-Packet-Type': 'Ack', 'BITS-Received-Content-Range': '2500', 'BITS-Reply-URL': 'r/reply.bin' } };
    const { t, error } = await run([created(), received(1000), received(2000), final, { status: 200, body: 'x'.repeat(100), stallAfter: 10 }], {
      replyFile: reply,
      noProgressTimeoutMs: 700,
    });
    expect(t.requests.at(-1)).toMatchObject({ method: 'GET', url: 'http://127.0.0.1:9/up/r/reply.bin' });
    expect(error).toBeInstanceOf(TimeoutError);
    expect((error as TimeoutError).timer).toBe('no-progress');
  });
});
