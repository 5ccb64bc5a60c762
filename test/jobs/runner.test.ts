/** The pure parts of the job runner: error -> state, stored options. */
import { describe, expect, it } from 'vitest';
import {
  finalStateFor,
  jobTransportOptions,
  outcomeForError,
  resumeRefusal,
  transportFlagsFromJob,
  worstExitCode,
} from '../../src/jobs/runner.js';
import {
  AuthError,
  CancelledError,
  InterruptedError,
  LocalFileError,
  ProtocolError,
  ServerError,
  SourceChangedError,
  TimeoutError,
  TlsError,
  TransportError,
  UsageError,
} from '../../src/errors.js';
import { validateJob, type Job } from '../../src/store/index.js';
import { isResumable } from '../../src/jobs/lifecycle.js';

const NOW = new Date('2026-01-02T03:04:05.000Z');

describe('outcomeForError: how a transfer that threw ends', () => {
  it.each([
    ['Ctrl-C / SIGTERM', new InterruptedError('interrupted'), 'suspended', false],
    ['a network error after the retries', new TransportError('connection reset'), 'suspended', true],
    ['the no-progress timeout', new TimeoutError('no progress for 300 s', 'no-progress'), 'suspended', true],
    ['a transient server error (503)', new ServerError({ httpStatus: 503, transient: true }), 'suspended', true],
    ['a full disk', new LocalFileError('reply: no space left on device', 'reply', { resumable: true }), 'suspended', true],
    ['a permanent server refusal', new ServerError({ httpStatus: 413, bitsError: 0x80200020, request: 'FRAGMENT' }), 'error', true],
    ['an auth failure', new AuthError({ httpStatus: 401 }), 'error', true],
    ['a protocol violation', new ProtocolError('not a BITS Ack'), 'error', true],
    ['TLS', new TlsError('certificate rejected'), 'error', true],
    ['a changed source', new SourceChangedError('x changed', 'local'), 'error', true],
    ['a missing source', new LocalFileError('x: no such file', 'x'), 'error', true],
    ['a bug', new Error('boom'), 'error', true],
    ['cancel', new CancelledError('job x cancelled'), 'cancelled', false],
  ])('%s -> %s', (_label, err, state, hasError) => {
    const out = outcomeForError(err, NOW);
    expect(out.state).toBe(state);
    expect(out.lastError !== undefined).toBe(hasError);
    if (out.lastError) {
      expect(out.lastError.at).toBe(NOW.toISOString());
      expect(out.lastError.message.length).toBeGreaterThan(0);
    }
  });

  it('a server refusal stays resumable (fix the server, then resume); a changed source does not', () => {
    const base: Job = { id: 'abc234', kind: 'upload', source: '/x', destination: 'http://127.0.0.1/x', state: 'error', bytesDone: 0, createdAt: NOW.toISOString(), updatedAt: NOW.toISOString() };
    const refused = { ...base, lastError: outcomeForError(new ServerError({ httpStatus: 500, bitsError: 0x80200020 }), NOW).lastError };
    const changed = { ...base, lastError: outcomeForError(new SourceChangedError('x changed', 'local'), NOW).lastError };
    expect(isResumable(refused)).toBe(true);
    expect(isResumable(changed)).toBe(false);
    expect(resumeRefusal(refused, false)).toBeUndefined();
    expect(resumeRefusal(changed, false)?.message).toMatch(/cannot be resumed \(SourceChangedError: x changed\); cancel it with: bits cancel abc234/);
    // The stored record must pass the store's validator.
    expect(() => validateJob(refused)).not.toThrow();
    expect(() => validateJob(changed)).not.toThrow();
  });

  it('resumeRefusal: terminal and running jobs are refused as usage errors (exit 2)', () => {
    const base: Job = { id: 'abc234', kind: 'upload', source: '/x', destination: 'http://h/x', state: 'suspended', bytesDone: 0, createdAt: NOW.toISOString(), updatedAt: NOW.toISOString() };
    expect(resumeRefusal({ ...base, state: 'complete' }, false)).toBeInstanceOf(UsageError);
    expect(resumeRefusal({ ...base, state: 'cancelled' }, false)?.message).toBe('job abc234 was cancelled; it cannot be resumed');
    const running = { ...base, state: 'transferring' as const, runner: { pid: 999_999, host: 'elsewhere', since: NOW.toISOString() } };
    expect(resumeRefusal(running, true)?.message).toMatch(/being transferred by pid 999999 on elsewhere/);
    expect(resumeRefusal(running, false)).toBeUndefined(); // its runner died: resumable
  });
});

describe('finalStateFor / worstExitCode', () => {
  it('maps job states to the outcome scripts see', () => {
    expect(finalStateFor('complete')).toBe('complete');
    expect(finalStateFor('cancelled')).toBe('cancelled');
    expect(finalStateFor('error')).toBe('failed');
    expect(finalStateFor('suspended')).toBe('suspended');
    expect(finalStateFor('transferring')).toBe('suspended');
  });
  it('the worst exit code wins; all complete is 0', () => {
    expect(worstExitCode([])).toBe(0);
    expect(worstExitCode([0, 0])).toBe(0);
    expect(worstExitCode([0, 4, 5, 0])).toBe(5);
  });
});

// Upload checkpoints in the store: test/upload/checkpoint.test.ts (one schema, no converters).

describe('stored transport options never hold a secret', () => {
  it('drops passwords and secret headers, keeps the rest, makes TLS paths absolute', () => {
    const flags = {
      requestTimeout: '60', responseTimeout: '90', connectTimeout: '5',
      header: ['X-Trace: 1', 'Authorization: Bearer s3cr3t-token', 'Cookie: a=b'],
      user: 'alice:pa55word', proxy: 'http://bob:pr0xypw@127.0.0.1:3128', proxyUser: 'carol:cpw',
      cacert: 'ca.pem', insecure: false, limitRate: '1M',
    };
    const { options, droppedHeaders } = jobTransportOptions(flags, '/work/dir');
    const text = JSON.stringify(options);
    for (const secret of ['s3cr3t-token', 'pa55word', 'pr0xypw', 'cpw', 'a=b']) expect(text).not.toContain(secret);
    expect(droppedHeaders.sort()).toEqual(['Authorization', 'Cookie']);
    expect(options.headers).toEqual({ 'X-Trace': '1' });
    expect(options.timeouts).toEqual({ request: 60_000, response: 90_000, connect: 5_000 });
    expect(options.transport).toMatchObject({ user: 'alice', proxyUser: 'carol', cacert: '/work/dir/ca.pem', limitRate: '1M', insecure: false });
  });

  it('rebuilds the flag record for transportOptionsFrom; the user named by the credential source is asked again', () => {
    const flags = transportFlagsFromJob({ options: { headers: { 'X-Trace': '1' }, transport: { requestTimeout: '60' } }, credentialSource: { kind: 'env', user: 'alice' } });
    expect(flags).toEqual({ requestTimeout: '60', header: ['X-Trace: 1'], user: 'alice' });
  });
});
