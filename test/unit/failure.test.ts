import { describe, expect, it } from 'vitest';
import { classifyHttpFailure, nextRetryDelay, parseRetryAfter, DEFAULT_RETRY_POLICY } from '../../src/protocol/failure.js';
import { HRESULT } from '../../src/protocol/hresult.js';
import { AuthError, InterruptedError, LocalFileError, ProtocolError, ServerError, SourceChangedError, TimeoutError, TlsError, TransportError } from '../../src/errors.js';

describe('the failure table (src/protocol/failure.ts)', () => {
  it('408, 429 and 503 are transient even with a BITS error', () => {
    for (const s of [408, 429, 503]) {
      expect(classifyHttpFailure(s)).toBe('retry');
      expect(classifyHttpFailure(s, HRESULT.E_ACCESSDENIED)).toBe('retry');
    }
  });
  it('a 5xx without a BITS error is transient, except 501 (the server does not implement the method) and 505', () => {
    for (const s of [500, 502, 504]) expect(classifyHttpFailure(s)).toBe('retry');
    expect(classifyHttpFailure(501)).toBe('fail');
    expect(classifyHttpFailure(505)).toBe('fail');
  });
  it('a 500 naming a BITS refusal and every 4xx fail for good', () => {
    expect(classifyHttpFailure(500, HRESULT.BG_E_TOO_LARGE)).toBe('fail');
    expect(classifyHttpFailure(501, HRESULT.E_ACCESSDENIED)).toBe('fail');
    for (const s of [400, 403, 404, 410, 401, 407]) expect(classifyHttpFailure(s)).toBe('fail');
  });
  it('every typed error has one disposition', () => {
    expect(new TransportError('reset').disposition).toBe('retry');
    expect(new TimeoutError('t', 'response').disposition).toBe('retry');
    expect(new TimeoutError('t', 'no-progress').disposition).toBe('suspend');
    expect(new ServerError({ httpStatus: 404 }).disposition).toBe('fail');
    expect(new ServerError({ httpStatus: 502 }).disposition).toBe('retry');
    expect(new AuthError({ httpStatus: 503 }).disposition).toBe('fail');
    expect(new ProtocolError('x').disposition).toBe('fail');
    expect(new TlsError('x').disposition).toBe('fail');
    expect(new SourceChangedError('x', 'local').disposition).toBe('fail');
    expect(new LocalFileError('full', 'f', { resumable: true }).disposition).toBe('suspend');
    expect(new LocalFileError('missing', 'f').disposition).toBe('fail');
    expect(new InterruptedError().disposition).toBe('suspend');
  });
});

describe('nextRetryDelay', () => {
  const base = { sinceProgressMs: 0, noProgressTimeoutMs: 600_000 };
  it('backs off exponentially with equal jitter, capped', () => {
    expect(nextRetryDelay({ ...base, attempt: 0, random: 0 })).toBe(500);
    expect(nextRetryDelay({ ...base, attempt: 0, random: 0.999999 })).toBe(999);
    expect(nextRetryDelay({ ...base, attempt: 3, random: 0 })).toBe(4000);
    expect(nextRetryDelay({ ...base, attempt: 50, random: 0 })).toBe(DEFAULT_RETRY_POLICY.maxMs / 2);
  });
  it('a Retry-After replaces the backoff, 0 included, capped at the policy maximum', () => {
    expect(nextRetryDelay({ ...base, attempt: 5, random: 0.5, retryAfterMs: 0 })).toBe(0);
    expect(nextRetryDelay({ ...base, attempt: 0, random: 0.5, retryAfterMs: 2000 })).toBe(2000);
    expect(nextRetryDelay({ ...base, noProgressTimeoutMs: 10 ** 9, attempt: 0, random: 0, retryAfterMs: 86_400_000 })).toBe(DEFAULT_RETRY_POLICY.maxRetryAfterMs);
  });
  it('never waits past the no-progress deadline, and gives up once it passed', () => {
    expect(nextRetryDelay({ attempt: 10, random: 0.5, sinceProgressMs: 9_000, noProgressTimeoutMs: 10_000 })).toBe(1000);
    expect(nextRetryDelay({ attempt: 0, random: 0.5, sinceProgressMs: 10_000, noProgressTimeoutMs: 10_000 })).toBeUndefined();
  });
  it('parses Retry-After as seconds or an HTTP date', () => {
    expect(parseRetryAfter('3', 0)).toBe(3000);
    expect(parseRetryAfter(new Date(10_000).toUTCString(), 4_000)).toBe(6000);
    expect(parseRetryAfter('soon', 0)).toBeUndefined();
    expect(parseRetryAfter(undefined, 0)).toBeUndefined();
  });
});
