/**
 * The HTTPUploader reducer (MC-BUP §3.1.5.1) without sockets: every transition,
 * fed with Acks classified from header records like the §4 captures.
 */
import { describe, expect, it } from 'vitest';
import { classifyAck, FALLBACK_TIMEOUT_INFINITE, type Ack } from '../../src/protocol/ack.js';
import {
  createUploader,
  MIN_FRAGMENT_SIZE,
  next,
  planFragmentLength,
  MAX_CONSECUTIVE_RESYNCS,
  restoreUploader,
  shrinkFragmentSize,
  snapshot,
  type HttpUploader,
  type Step,
  type UploaderOptions,
} from '../../src/protocol/uploader.js';
import { HRESULT } from '../../src/protocol/hresult.js';
import type { RequestPacketType } from '../../src/protocol/headers.js';

const DEST = 'http://origin.example:8080/upload/file.bin';
const SID = '{A0FF5911-4144-45B3-BF27-27AFC8EC8A67}';
const T0 = 1_700_000_000_000;

function uploader(size: number, opts: Partial<UploaderOptions> = {}): HttpUploader {
  return createUploader({ destination: DEST, sourceEntityName: 'file.bin', sourceEntitySize: size, sourceMtimeMs: 1 }, { fragmentSize: 1000, ...opts });
}

function ack(request: RequestPacketType, status: number, headers: Record<string, string> = {}, sentSessionId?: string): Ack {
  return classifyAck({ request, status, headers: { 'BITS-Packet-Type': 'Ack', ...headers }, sentSessionId });
}

const created = (extra: Record<string, string> = {}) =>
  ack('CREATE-SESSION', 200, { 'BITS-Protocol': '{7df0354d-249b-430f-820d-3d2a9bef4931}', 'BITS-Session-Id': SID, ...extra });
const fragAck = (received: number, status = 200, extra: Record<string, string> = {}) =>
  ack('FRAGMENT', status, { 'BITS-Received-Content-Range': String(received), ...extra }, SID);
const errAck = (request: RequestPacketType, status: number, hr?: number) =>
  ack(request, status, hr === undefined ? {} : { 'BITS-Error': `0x${hr.toString(16)}`, 'BITS-Error-Context': '0x5' });

function start(size: number, opts: Partial<UploaderOptions> = {}): Step {
  return next(uploader(size, opts), { type: 'start' }, T0);
}

/** Runs start + CREATE-SESSION Ack (no host id): the machine is at its first FRAGMENT. */
function atFirstFragment(size: number, opts: Partial<UploaderOptions> = {}): Step {
  return next(start(size, opts).state, { type: 'ack', ack: created() }, T0);
}

describe('§3.1.5.1.1 STATE_INIT', () => {
  it('initialises every field and sends CREATE-SESSION to the origin', () => {
    const u0 = uploader(5000);
    expect(u0.state).toBe('STATE_INIT');
    const s = next(u0, { type: 'start' }, T0);
    expect(s.state.state).toBe('STATE_CREATE_SESSION');
    expect(s.state).toMatchObject({
      fragmentStartOffset: 0,
      fragmentLength: 0,
      httpStatusCode: 0,
      bitsErrorCode: 0,
      bitsErrorContext: 0,
      bytesTransferred: 0,
      originServer: 'origin.example:8080',
      bitsSessionId: null,
      bitsHostId: null,
      bitsHostIdFallbackTimeout: 0xffffffff,
      replyUrl: null,
      uploadSuspended: false,
    });
    expect(s.action).toEqual({ type: 'CREATE-SESSION', url: DEST, contentName: 'file.bin', withCredentials: false });
  });
  it('refuses start outside STATE_INIT', () => {
    expect(() => next(start(1).state, { type: 'start' }, T0)).toThrow();
  });
});

describe('§3.1.5.1.2 STATE_CREATE_SESSION', () => {
  it('without BITS-Host-Id: stores the session id and goes to FRAGMENT', () => {
    const s = atFirstFragment(2500);
    expect(s.state.bitsSessionId).toBe(SID);
    expect(s.state.state).toBe('STATE_FRAGMENT');
    expect(s.action).toMatchObject({ type: 'FRAGMENT', url: DEST, sessionId: SID, offset: 0, length: 1000, total: 2500 });
  });

  it('with BITS-Host-Id: PING the alternate host, then FRAGMENT there (§1.3.4.2)', () => {
    let s = next(start(2500).state, { type: 'ack', ack: created({ 'BITS-Host-Id': '127.0.0.2', 'BITS-Host-Id-Fallback-Timeout': '110' }) }, T0);
    expect(s.state.state).toBe('STATE_PING');
    expect(s.state.bitsHostId).toBe('127.0.0.2');
    expect(s.state.bitsHostIdFallbackTimeout).toBe(110);
    expect(s.action).toEqual({ type: 'PING', url: 'http://127.0.0.2:8080/upload/file.bin', withCredentials: false });
    expect(s.notes).toContainEqual({ type: 'host-id', hostId: '127.0.0.2', fallbackSeconds: 110 });
    s = next(s.state, { type: 'ack', ack: ack('PING', 200) }, T0);
    expect(s.state.state).toBe('STATE_FRAGMENT');
    expect(s.action).toMatchObject({ type: 'FRAGMENT', url: 'http://127.0.0.2:8080/upload/file.bin', offset: 0 });
  });

  it('ignores an unusable BITS-Host-Id with a warning', () => {
    const s = next(start(10).state, { type: 'ack', ack: created({ 'BITS-Host-Id': 'host:81' }) }, T0);
    expect(s.state.bitsHostId).toBeNull();
    expect(s.state.state).toBe('STATE_FRAGMENT');
    expect(s.notes[0]).toMatchObject({ type: 'warning' });
  });

  it('an Ack without BITS-Session-Id is discarded: protocol error', () => {
    const s = next(start(10).state, { type: 'ack', ack: ack('CREATE-SESSION', 200) }, T0);
    expect(s.state.state).toBe('STATE_ERROR');
    expect(s.action).toMatchObject({ type: 'REPORT-ERROR', error: { kind: 'protocol' } });
  });

  it('an empty file goes straight from CREATE-SESSION to CLOSE-SESSION', () => {
    const s = atFirstFragment(0);
    expect(s.state.state).toBe('STATE_COMPLETE');
    expect(s.action).toMatchObject({ type: 'CLOSE-SESSION', sessionId: SID });
  });

  it('a transport error returns the error as transient', () => {
    const s = next(start(10).state, { type: 'transport-error', message: 'connection refused', retryable: true }, T0);
    expect(s.state.state).toBe('STATE_ERROR');
    expect(s.action).toMatchObject({ type: 'REPORT-ERROR', error: { kind: 'transient', httpStatus: 0, request: 'CREATE-SESSION' } });
  });
});

describe('§3.1.5.1.3 STATE_PING', () => {
  it('resume (§3.1.4.3) sends PING without a session id, then FRAGMENT from the saved offset', () => {
    let s = atFirstFragment(2500);
    s = next(s.state, { type: 'transport-error', message: 'reset', retryable: true }, T0);
    expect(s.action.type).toBe('REPORT-ERROR');
    s = next(s.state, { type: 'resume' }, T0);
    expect(s.state.state).toBe('STATE_PING');
    expect(s.action).toEqual({ type: 'PING', url: DEST, withCredentials: false });
    s = next(s.state, { type: 'ack', ack: ack('PING', 200) }, T0);
    expect(s.action).toMatchObject({ type: 'FRAGMENT', offset: 0, length: 1000 });
  });
  it('a PING error goes to ERROR', () => {
    let s = next(atFirstFragment(10).state, { type: 'transport-error', message: 'x', retryable: true }, T0);
    s = next(s.state, { type: 'resume' }, T0);
    s = next(s.state, { type: 'ack', ack: errAck('PING', 503) }, T0);
    expect(s.state.state).toBe('STATE_ERROR');
    expect(s.action).toMatchObject({ type: 'REPORT-ERROR', error: { kind: 'transient', httpStatus: 503 } });
  });
});

describe('§3.1.5.1.4 STATE_FRAGMENT', () => {
  it('a normal Ack advances FRAGMENT-START-OFFSET and BytesTransferred', () => {
    let s = atFirstFragment(2500);
    s = next(s.state, { type: 'ack', ack: fragAck(1000) }, T0);
    expect(s.state).toMatchObject({ fragmentStartOffset: 1000, bytesTransferred: 1000, state: 'STATE_FRAGMENT' });
    expect(s.action).toMatchObject({ type: 'FRAGMENT', offset: 1000, length: 1000 });
    s = next(s.state, { type: 'ack', ack: fragAck(2000) }, T0);
    expect(s.action).toMatchObject({ type: 'FRAGMENT', offset: 2000, length: 500 });
    s = next(s.state, { type: 'ack', ack: fragAck(2500) }, T0);
    expect(s.state.state).toBe('STATE_COMPLETE');
    expect(s.action).toMatchObject({ type: 'CLOSE-SESSION', sessionId: SID, url: DEST });
    s = next(s.state, { type: 'ack', ack: ack('CLOSE-SESSION', 200) }, T0);
    expect(s.action).toEqual({ type: 'DONE', result: 'complete' });
    expect(s.state.finished).toBe('complete');
  });

  it('the §4.1-05 Ack (no BITS-Session-Id) is accepted', () => {
    const s = next(atFirstFragment(4892, { fragmentSize: 8192 }).state, { type: 'ack', ack: ack('FRAGMENT', 200, { 'BITS-Received-Content-Range': '4892' }, SID) }, T0);
    expect(s.action.type).toBe('CLOSE-SESSION');
  });

  it('an Ack for another session is discarded', () => {
    const s = next(atFirstFragment(4892).state, { type: 'ack', ack: fragAck(1000, 200, { 'BITS-Session-Id': '{11111111-1111-1111-1111-111111111111}' }) }, T0);
    expect(s.action).toMatchObject({ type: 'REPORT-ERROR', error: { kind: 'protocol' } });
  });

  it('416 resync: continue from the server offset, within the fragment or backwards', () => {
    let s = atFirstFragment(5000);
    s = next(s.state, { type: 'ack', ack: fragAck(600, 416) }, T0);
    expect(s.notes).toContainEqual({ type: 'resync', from: 1000, to: 600 });
    expect(s.action).toMatchObject({ type: 'FRAGMENT', offset: 600, length: 1000 });
    expect(s.state.highWaterMark).toBe(600);
    s = next(s.state, { type: 'ack', ack: fragAck(300, 416) }, T0);
    expect(s.action).toMatchObject({ type: 'FRAGMENT', offset: 300, length: 1000 });
    expect(s.state.bytesTransferred).toBe(300);
    expect(s.state.highWaterMark).toBe(600);
  });

  it('a 416 naming exactly the end of the fragment is a lost 200', () => {
    let s = atFirstFragment(5000);
    s = next(s.state, { type: 'ack', ack: fragAck(1000, 416) }, T0);
    expect(s.notes.filter((n) => n.type === 'resync')).toEqual([]);
    expect(s.action).toMatchObject({ type: 'FRAGMENT', offset: 1000 });
  });

  it('an Ack claiming bytes beyond the fragment in flight (200 or 416) is a protocol error (issue 11.4)', () => {
    for (const status of [200, 416]) {
      const s = next(atFirstFragment(5000).state, { type: 'ack', ack: fragAck(1001, status) }, T0);
      expect(s.action).toMatchObject({ type: 'REPORT-ERROR', error: { kind: 'protocol' } });
      expect((s.action as { error: { message: string } }).error.message).toMatch(/acknowledged 1001 bytes, but bits had sent only 1000/);
    }
  });

  it('an offset beyond the file is a protocol error', () => {
    const s = next(atFirstFragment(5000).state, { type: 'ack', ack: fragAck(5001) }, T0);
    expect(s.action).toMatchObject({ type: 'REPORT-ERROR', error: { kind: 'protocol' } });
  });

  it('a 416 asking for the offset we just sent is a protocol error', () => {
    const s = next(atFirstFragment(5000).state, { type: 'ack', ack: fragAck(0, 416) }, T0);
    expect(s.action).toMatchObject({ type: 'REPORT-ERROR', error: { kind: 'protocol' } });
  });

  it('a 416 without BITS-Received-Content-Range, or a 200 without it, is discarded', () => {
    expect(next(atFirstFragment(5000).state, { type: 'ack', ack: ack('FRAGMENT', 416, {}, SID) }, T0).action).toMatchObject({
      type: 'REPORT-ERROR',
      error: { kind: 'protocol' },
    });
    expect(next(atFirstFragment(5000).state, { type: 'ack', ack: ack('FRAGMENT', 200, {}, SID) }, T0).action).toMatchObject({
      type: 'REPORT-ERROR',
      error: { kind: 'protocol' },
    });
  });

  it('resyncs that never pass the high-water mark end in a transient error after MAX_CONSECUTIVE_RESYNCS', () => {
    // The issue 11 server: fragment 0 acknowledged every time, every later fragment 416 back to 0.
    let s = atFirstFragment(100_000);
    let i = 0;
    while (s.action.type === 'FRAGMENT' && i < 100) {
      const off = s.action.offset;
      s = next(s.state, { type: 'ack', ack: off === 0 ? fragAck(1000) : fragAck(0, 416) }, T0);
      i++;
    }
    expect(s.action).toMatchObject({ type: 'REPORT-ERROR', error: { kind: 'transient' } });
    expect(s.state.consecutiveResyncs).toBe(MAX_CONSECUTIVE_RESYNCS + 1);
    // Re-acknowledging fragment 0 is not progress: it reset nothing.
    expect(i).toBe(2 * (MAX_CONSECUTIVE_RESYNCS + 1));
    expect(s.state.highWaterMark).toBe(1000);
    // After the retry wait, resume; the next resync reports again at once (no progress in between).
    s = next(s.state, { type: 'resume' }, T0);
    expect(s.action.type).toBe('PING');
    s = next(s.state, { type: 'ack', ack: ack('PING', 200) }, T0);
    expect(s.action).toMatchObject({ type: 'FRAGMENT', offset: 0 });
    s = next(s.state, { type: 'ack', ack: fragAck(1000) }, T0);
    s = next(s.state, { type: 'ack', ack: fragAck(0, 416) }, T0);
    expect(s.action).toMatchObject({ type: 'REPORT-ERROR', error: { kind: 'transient' } });
  });

  it('only progress beyond the high-water mark resets the resync count', () => {
    let s = atFirstFragment(100_000);
    s = next(s.state, { type: 'ack', ack: fragAck(1000) }, T0);
    s = next(s.state, { type: 'ack', ack: fragAck(0, 416) }, T0);
    expect(s.state.consecutiveResyncs).toBe(1);
    s = next(s.state, { type: 'ack', ack: fragAck(1000) }, T0);
    expect(s.state.consecutiveResyncs).toBe(1);
    s = next(s.state, { type: 'ack', ack: fragAck(2000) }, T0);
    expect(s.state.consecutiveResyncs).toBe(0);
    expect(s.state.highWaterMark).toBe(2000);
  });

  it('final Ack with a relative BITS-Reply-URL -> GET_REPLY resolved against the destination', () => {
    let s = atFirstFragment(4892, { fragmentSize: 8192 });
    s = next(
      s.state,
      { type: 'ack', ack: fragAck(4892, 200, { 'BITS-Reply-URL': 'BITS-Sessions\\Replies\\{C85B4E0A-9EB9-4114-BFA4-8A43B4710091}\\responsefile.bin' }) },
      T0,
    );
    expect(s.state.state).toBe('STATE_GET_REPLY');
    expect(s.action).toEqual({
      type: 'GET-REPLY',
      url: 'http://origin.example:8080/upload/BITS-Sessions/Replies/%7BC85B4E0A-9EB9-4114-BFA4-8A43B4710091%7D/responsefile.bin',
    });
    s = next(s.state, { type: 'reply-downloaded' }, T0);
    expect(s.action.type).toBe('CLOSE-SESSION');
  });

  it('a failed reply download goes to ERROR and resumes to GET_REPLY', () => {
    let s = atFirstFragment(10);
    s = next(s.state, { type: 'ack', ack: fragAck(10, 200, { 'BITS-Reply-URL': 'r.bin' }) }, T0);
    s = next(s.state, { type: 'reply-failed', message: 'HTTP 503', retryable: true, httpStatus: 503 }, T0);
    expect(s.action).toMatchObject({ type: 'REPORT-ERROR', error: { kind: 'transient', httpStatus: 503 } });
    s = next(s.state, { type: 'resume' }, T0);
    expect(s.action.type).toBe('PING');
    s = next(s.state, { type: 'ack', ack: ack('PING', 200) }, T0);
    expect(s.action).toMatchObject({ type: 'GET-REPLY', url: 'http://origin.example:8080/upload/r.bin' });
  });

  it('final Ack without a reply URL: COMPLETE, or an error in upload-reply mode (§3.1.5.2.4)', () => {
    expect(next(atFirstFragment(10).state, { type: 'ack', ack: fragAck(10) }, T0).action.type).toBe('CLOSE-SESSION');
    const s = next(atFirstFragment(10, { requireReply: true }).state, { type: 'ack', ack: fragAck(10) }, T0);
    expect(s.action).toMatchObject({ type: 'REPORT-ERROR', error: { kind: 'protocol' } });
  });
});

describe('§3.1.5.1.7 STATE_ERROR', () => {
  it('BG_E_SESSION_NOT_FOUND: a new CREATE-SESSION from byte 0', () => {
    let s = atFirstFragment(5000);
    s = next(s.state, { type: 'ack', ack: fragAck(1000) }, T0);
    s = next(s.state, { type: 'ack', ack: errAck('FRAGMENT', 500, HRESULT.BG_E_SESSION_NOT_FOUND) }, T0);
    expect(s.state.state).toBe('STATE_CREATE_SESSION');
    expect(s.action.type).toBe('CREATE-SESSION');
    expect(s.state).toMatchObject({ bitsSessionId: null, fragmentStartOffset: 0, bytesTransferred: 0, sessionRestarts: 1 });
    s = next(s.state, { type: 'ack', ack: created() }, T0);
    expect(s.action).toMatchObject({ type: 'FRAGMENT', offset: 0 });
  });

  it('after 3 restarts without progress beyond the high-water mark, each further one waits (transient); only new bytes reset the count', () => {
    let s = atFirstFragment(5000);
    s = next(s.state, { type: 'ack', ack: fragAck(1000) }, T0);
    for (let i = 0; i < 3; i++) {
      s = next(s.state, { type: 'ack', ack: errAck('FRAGMENT', 500, HRESULT.BG_E_SESSION_NOT_FOUND) }, T0);
      expect(s.action.type).toBe('CREATE-SESSION');
      s = next(s.state, { type: 'ack', ack: created() }, T0);
      // The new session's fragment 0 re-acknowledges bytes already confirmed once: not progress.
      s = next(s.state, { type: 'ack', ack: fragAck(1000) }, T0);
      expect(s.state.sessionRestarts).toBe(i + 1);
    }
    const last = next(s.state, { type: 'ack', ack: errAck('FRAGMENT', 500, HRESULT.BG_E_SESSION_NOT_FOUND) }, T0);
    expect(last.action).toMatchObject({ type: 'REPORT-ERROR', error: { kind: 'transient', bitsError: HRESULT.BG_E_SESSION_NOT_FOUND } });
    // Resumed after the wait: a new session, from byte 0.
    const resumed = next(last.state, { type: 'resume' }, T0);
    expect(resumed.action.type).toBe('CREATE-SESSION');
    s = next(s.state, { type: 'ack', ack: fragAck(2000) }, T0);
    expect(s.state.sessionRestarts).toBe(0);
  });

  it('BG_E_SESSION_NOT_FOUND on CLOSE-SESSION restarts too; on CANCEL-SESSION it means done', () => {
    let s = next(atFirstFragment(10).state, { type: 'ack', ack: fragAck(10) }, T0);
    s = next(s.state, { type: 'ack', ack: errAck('CLOSE-SESSION', 500, HRESULT.BG_E_SESSION_NOT_FOUND) }, T0);
    expect(s.action.type).toBe('CREATE-SESSION');
    let c = next(atFirstFragment(10).state, { type: 'cancel' }, T0);
    c = next(c.state, { type: 'ack', ack: errAck('CANCEL-SESSION', 500, HRESULT.BG_E_SESSION_NOT_FOUND) }, T0);
    expect(c.action).toEqual({ type: 'DONE', result: 'cancelled' });
  });

  it('413: halve the fragment and resend from the same offset; never below 5 KiB', () => {
    let s = atFirstFragment(100_000, { fragmentSize: 40 * 1024 });
    s = next(s.state, { type: 'ack', ack: errAck('FRAGMENT', 413) }, T0);
    expect(s.notes).toContainEqual({ type: 'fragment-size', from: 40 * 1024, to: 20 * 1024 });
    expect(s.action).toMatchObject({ type: 'FRAGMENT', offset: 0, length: 20 * 1024 });
    s = next(s.state, { type: 'ack', ack: errAck('FRAGMENT', 413) }, T0);
    s = next(s.state, { type: 'ack', ack: errAck('FRAGMENT', 413) }, T0);
    expect(s.action).toMatchObject({ type: 'FRAGMENT', length: 5 * 1024 });
    s = next(s.state, { type: 'ack', ack: errAck('FRAGMENT', 413) }, T0);
    expect(s.action).toMatchObject({ type: 'REPORT-ERROR', error: { kind: 'permanent', httpStatus: 413 } });
  });

  it('401 once with credentials available: resend the same message with credentials, then report', () => {
    let s = atFirstFragment(5000, { credentials: true });
    const sent = s.action;
    s = next(s.state, { type: 'ack', ack: errAck('FRAGMENT', 401) }, T0);
    expect(s.state.state).toBe('STATE_FRAGMENT');
    expect(s.action).toEqual({ ...sent, withCredentials: true });
    s = next(s.state, { type: 'ack', ack: errAck('FRAGMENT', 401) }, T0);
    expect(s.action).toMatchObject({ type: 'REPORT-ERROR', error: { kind: 'auth', httpStatus: 401 } });
  });

  it('401 without credentials, and 407: reported as auth errors', () => {
    expect(next(start(10).state, { type: 'ack', ack: errAck('CREATE-SESSION', 401) }, T0).action).toMatchObject({ error: { kind: 'auth' } });
    expect(next(start(10).state, { type: 'ack', ack: errAck('CREATE-SESSION', 407) }, T0).action).toMatchObject({ error: { kind: 'auth' } });
  });

  it.each([
    [403, HRESULT.E_ACCESSDENIED],
    [501, HRESULT.E_ACCESSDENIED],
    [500, HRESULT.BG_E_TOO_LARGE],
    [400, HRESULT.E_INVALIDARG],
    [500, HRESULT.ERROR_DISK_FULL],
    [404, undefined],
  ])('HTTP %i BITS-Error %s is permanent, with status, HRESULT and context kept', (status, hr) => {
    const s = next(start(10).state, { type: 'ack', ack: errAck('CREATE-SESSION', status, hr) }, T0);
    expect(s.action).toMatchObject({ type: 'REPORT-ERROR', error: { kind: 'permanent', httpStatus: status, bitsError: hr } });
    expect(s.state).toMatchObject({ httpStatusCode: status, bitsErrorCode: hr ?? 0, bitsErrorContext: hr === undefined ? 0 : 5 });
  });

  it.each([408, 429, 503, 500, 502])('HTTP %i without BITS-Error is transient', (status) => {
    expect(next(start(10).state, { type: 'ack', ack: errAck('CREATE-SESSION', status) }, T0).action).toMatchObject({ error: { kind: 'transient' } });
  });

  it('200 without BITS-Packet-Type: Ack (a plain web server) is a protocol error', () => {
    const a = classifyAck({ request: 'CREATE-SESSION', status: 200, headers: { 'content-type': 'text/html' } });
    expect(a.kind).toBe('invalid');
  });
});

describe('§3.1.5.1.7 / §3.1.6.3 host-id fallback timer', () => {
  function onHost(fallback = '2'): Step {
    let s = next(start(5000).state, { type: 'ack', ack: created({ 'BITS-Host-Id': '127.0.0.2', 'BITS-Host-Id-Fallback-Timeout': fallback }) }, T0);
    s = next(s.state, { type: 'ack', ack: ack('PING', 200) }, T0);
    return s;
  }
  const ALT = 'http://127.0.0.2:8080/upload/file.bin';

  it('the first error starts the timer; errors later do not restart it', () => {
    let s = next(onHost().state, { type: 'transport-error', message: 'refused', retryable: true }, T0);
    expect(s.state.hostIdFallbackDeadline).toBe(T0 + 2000);
    s = next(s.state, { type: 'resume' }, T0 + 500);
    expect(s.action).toMatchObject({ type: 'PING', url: ALT });
    s = next(s.state, { type: 'transport-error', message: 'refused', retryable: true }, T0 + 600);
    expect(s.state.hostIdFallbackDeadline).toBe(T0 + 2000);
  });

  it('expiry sends every further message to the origin', () => {
    let s = next(onHost().state, { type: 'transport-error', message: 'refused', retryable: true }, T0);
    s = next(s.state, { type: 'resume' }, T0 + 2000);
    expect(s.notes).toContainEqual({ type: 'host-fallback', hostId: '127.0.0.2' });
    expect(s.state.bitsHostId).toBeNull();
    expect(s.action).toMatchObject({ type: 'PING', url: DEST });
    s = next(s.state, { type: 'ack', ack: ack('PING', 200) }, T0 + 2001);
    expect(s.action).toMatchObject({ type: 'FRAGMENT', url: DEST, offset: 0 });
  });

  it('an acknowledged fragment resets the timer', () => {
    let s = next(onHost().state, { type: 'transport-error', message: 'reset', retryable: true }, T0);
    s = next(s.state, { type: 'resume' }, T0 + 100);
    s = next(s.state, { type: 'ack', ack: ack('PING', 200) }, T0 + 100);
    s = next(s.state, { type: 'ack', ack: fragAck(1000) }, T0 + 200);
    expect(s.state.hostIdFallbackDeadline).toBeNull();
    expect(s.action).toMatchObject({ type: 'FRAGMENT', url: ALT, offset: 1000 });
  });

  it('an infinite (absent) fallback timeout never starts the timer', () => {
    let s = next(start(5000).state, { type: 'ack', ack: created({ 'BITS-Host-Id': '127.0.0.2' }) }, T0);
    expect(s.state.bitsHostIdFallbackTimeout).toBe(FALLBACK_TIMEOUT_INFINITE);
    s = next(s.state, { type: 'transport-error', message: 'refused', retryable: true }, T0);
    expect(s.state.hostIdFallbackDeadline).toBeNull();
  });
});

describe('§3.1.4.2-4 suspend, resume, cancel', () => {
  const states: Array<[string, () => Step]> = [
    ['CREATE_SESSION', () => start(5000)],
    ['FRAGMENT', () => atFirstFragment(5000)],
    ['PING', () => next(next(atFirstFragment(5000).state, { type: 'transport-error', message: 'x', retryable: true }, T0).state, { type: 'resume' }, T0)],
    ['COMPLETE', () => next(atFirstFragment(10).state, { type: 'ack', ack: fragAck(10) }, T0)],
    ['GET_REPLY', () => next(atFirstFragment(10).state, { type: 'ack', ack: fragAck(10, 200, { 'BITS-Reply-URL': 'r' }) }, T0)],
    ['ERROR', () => next(atFirstFragment(5000).state, { type: 'transport-error', message: 'x', retryable: true }, T0)],
  ];
  it.each(states)('suspend from STATE_%s keeps the session and resumes with PING', (_name, make) => {
    const before = make();
    const s = next(before.state, { type: 'suspend' }, T0);
    expect(s.state.state).toBe('STATE_SUSPEND');
    expect(s.action).toEqual({ type: 'SUSPEND' });
    expect(s.state.uploadSuspended).toBe(true);
    expect(s.state.bitsSessionId).toBe(before.state.bitsSessionId);
    const r = next(s.state, { type: 'resume' }, T0);
    expect(r.state.uploadSuspended).toBe(false);
    expect(r.action.type).toBe(before.state.bitsSessionId ? 'PING' : 'CREATE-SESSION');
  });

  it('cancel sends CANCEL-SESSION; its Ack ends the upload', () => {
    let s = next(atFirstFragment(5000).state, { type: 'cancel' }, T0);
    expect(s.action).toMatchObject({ type: 'CANCEL-SESSION', sessionId: SID, url: DEST });
    s = next(s.state, { type: 'ack', ack: ack('CANCEL-SESSION', 200) }, T0);
    expect(s.action).toEqual({ type: 'DONE', result: 'cancelled' });
  });

  it('cancel before any session needs no message', () => {
    expect(next(uploader(10), { type: 'cancel' }, T0).action).toEqual({ type: 'DONE', result: 'cancelled' });
  });

  it('restoreUploader + resume: PING, then FRAGMENT at the saved offset', () => {
    const cp = {
      bitsSessionId: SID,
      bytesTransferred: 3000,
      highWaterMark: 4000,
      bitsHostId: null,
      bitsHostIdFallbackTimeout: FALLBACK_TIMEOUT_INFINITE,
      hostIdFallbackDeadline: null,
      fragmentSize: 2000,
      replyUrl: null,
      sourceEntityName: 'file.bin',
      sourceEntitySize: 5000,
      sourceMtimeMs: 1,
    };
    const u = restoreUploader(DEST, cp, { fragmentSize: 1000 });
    // The checkpoint is the snapshot: one schema, no converters.
    expect(snapshot(u)).toEqual(cp);
    let s = next(u, { type: 'resume' }, T0);
    expect(s.action.type).toBe('PING');
    s = next(s.state, { type: 'ack', ack: ack('PING', 200) }, T0);
    expect(s.action).toMatchObject({ type: 'FRAGMENT', offset: 3000, length: 2000 });
    // The high-water mark survived: re-confirming 4000 is not progress.
    expect(s.state.highWaterMark).toBe(4000);
  });

  it('after a resume, the first Ack may hold more than the checkpoint knew (the store checkpoints once a second); later ones may not', () => {
    const cp = {
      bitsSessionId: SID,
      bytesTransferred: 1000,
      highWaterMark: 1000,
      bitsHostId: null,
      bitsHostIdFallbackTimeout: FALLBACK_TIMEOUT_INFINITE,
      hostIdFallbackDeadline: null,
      fragmentSize: 1000,
      replyUrl: null,
      sourceEntityName: 'file.bin',
      sourceEntitySize: 9000,
      sourceMtimeMs: 1,
    };
    let s = next(restoreUploader(DEST, cp, { fragmentSize: 1000 }), { type: 'resume' }, T0);
    s = next(s.state, { type: 'ack', ack: ack('PING', 200) }, T0);
    expect(s.action).toMatchObject({ type: 'FRAGMENT', offset: 1000, length: 1000 });
    // An earlier run had sent up to 4000 before its kill -9; the server's offset wins (§3.1.4.3).
    s = next(s.state, { type: 'ack', ack: fragAck(4000) }, T0);
    expect(s.action).toMatchObject({ type: 'FRAGMENT', offset: 4000, length: 1000 });
    expect(s.notes).toContainEqual({ type: 'resync', from: 2000, to: 4000 });
    expect(s.state.highWaterMark).toBe(4000);
    // From here on this run knows what it sent: bytes never sent are a protocol error again.
    s = next(s.state, { type: 'ack', ack: fragAck(6000) }, T0);
    expect(s.action).toMatchObject({ type: 'REPORT-ERROR', error: { kind: 'protocol' } });
    // And even the first Ack may not claim more than the file.
    s = next(restoreUploader(DEST, cp, { fragmentSize: 1000 }), { type: 'resume' }, T0);
    s = next(s.state, { type: 'ack', ack: ack('PING', 200) }, T0);
    s = next(s.state, { type: 'ack', ack: fragAck(9001) }, T0);
    expect(s.action).toMatchObject({ type: 'REPORT-ERROR', error: { kind: 'protocol' } });
  });

  it('a checkpoint without a session resumes with CREATE-SESSION', () => {
    const u = restoreUploader(DEST, { ...snapshot(uploader(5000)), sourceMtimeMs: 1 }, { fragmentSize: 1000 });
    expect(next(u, { type: 'resume' }, T0).action.type).toBe('CREATE-SESSION');
  });
});

describe('fragment planning', () => {
  const F = 1000;
  function plan(size: number): Array<[number, number]> {
    const out: Array<[number, number]> = [];
    let s = atFirstFragment(size, { fragmentSize: F });
    while (s.action.type === 'FRAGMENT') {
      out.push([s.action.offset, s.action.length]);
      s = next(s.state, { type: 'ack', ack: fragAck(s.action.offset + s.action.length) }, T0);
    }
    expect(s.action.type).toBe('CLOSE-SESSION');
    return out;
  }
  it('empty file: no FRAGMENT at all', () => expect(plan(0)).toEqual([]));
  it('1 byte', () => expect(plan(1)).toEqual([[0, 1]]));
  it('k*F - 1', () => expect(plan(3 * F - 1)).toEqual([[0, F], [F, F], [2 * F, F - 1]]));
  it('k*F: no empty last fragment', () => expect(plan(3 * F)).toEqual([[0, F], [F, F], [2 * F, F]]));
  it('k*F + 1', () => expect(plan(3 * F + 1)).toEqual([[0, F], [F, F], [2 * F, F], [3 * F, 1]]));
  it('planFragmentLength never returns a negative or past-the-end length', () => {
    expect(planFragmentLength(10, 10, F)).toBe(0);
    expect(planFragmentLength(11, 10, F)).toBe(0);
    expect(planFragmentLength(0, 10, F)).toBe(10);
  });
  it('shrinkFragmentSize halves down to 5 KiB', () => {
    expect(shrinkFragmentSize(8 * 1024 * 1024)).toBe(4 * 1024 * 1024);
    expect(shrinkFragmentSize(6 * 1024)).toBe(MIN_FRAGMENT_SIZE);
  });
});
