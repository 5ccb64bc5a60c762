/** The pure parts of the job runner: error -> state, stored options. */
import { describe, expect, it } from 'vitest';
import { resumeRefusal } from '../../src/jobs/runner.js';
import { finalStateFor, finalStateForError, outcomeForError, worstExitCode } from '../../src/jobs/outcome.js';
import { settingsOf, transportFromSettings } from '../../src/jobs/transport.js';
import { settingsFromFlags } from '../../src/cli/transport-options.js';
import { overrideTransportSettings, sanitizeJob } from '../../src/store/index.js';
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
    expect(finalStateFor('error')).toBe('error');
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

describe('stored transport settings never hold a secret', () => {
  const noTty = { input: { isTTY: false } as unknown as NodeJS.ReadableStream };

  it('drops passwords and secret headers, keeps the rest (proxy user name included), makes TLS paths absolute', () => {
    const flags = {
      requestTimeout: '60', responseTimeout: '90', connectTimeout: '5',
      header: ['X-Trace: 1', 'Authorization: Bearer s3cr3t-token', 'Cookie: a=b'],
      user: 'alice:pa55word', proxy: 'http://bob:pr0xypw@127.0.0.1:3128', proxyUser: 'carol:cpw',
      cacert: 'ca.pem', insecure: false, limitRate: '1M',
    };
    // (Authorization cannot be combined with --user; X-Api-Key is the secret header here.)
    flags.header = ['X-Trace: 1', 'X-Api-Key: s3cr3t-token', 'Cookie: a=b', 'Accept: text/plain'];
    const { settings, secrets, droppedHeaders } = settingsFromFlags(flags, { cwd: '/work/dir', env: {} });
    const job: Job = { id: 'abc234', kind: 'upload', source: '/x', destination: 'http://h/x', state: 'queued', bytesDone: 0, createdAt: NOW.toISOString(), updatedAt: NOW.toISOString(), transport: settings };
    const text = JSON.stringify(sanitizeJob(job));
    for (const secret of ['s3cr3t-token', 'pa55word', 'pr0xypw', 'cpw', 'a=b']) expect(text).not.toContain(secret);
    // Only a header known to be harmless keeps its value; the others keep their names (read from BITS_HEADER_* on resume).
    expect(droppedHeaders.sort()).toEqual(['Cookie', 'X-Api-Key', 'X-Trace']);
    expect(sanitizeJob(job).transport?.headers).toEqual({ Accept: 'text/plain' });
    expect(sanitizeJob(job).transport?.secretHeaders?.sort()).toEqual(['Cookie', 'X-Api-Key', 'X-Trace']);
    expect(settings).toMatchObject({ requestTimeoutMs: 60_000, responseTimeoutMs: 90_000, connectTimeoutMs: 5_000 });
    expect(settings).toMatchObject({ user: 'alice', proxyUser: 'carol', cacert: '/work/dir/ca.pem', limitRateBytesPerSec: 1024 * 1024 });
    expect(settings.proxy).toBe('http://bob@127.0.0.1:3128/');
    expect(secrets).toEqual({ password: 'pa55word', proxyPassword: 'cpw' });
    expect(() => validateJob(JSON.parse(text))).not.toThrow();
  });

  it('a stored job is rebuilt with its settings; the user named by the credential source is asked again', () => {
    const job = { transport: { requestTimeoutMs: 60_000, headers: { 'X-Trace': '1' }, user: 'alice', credentialSource: { kind: 'env' as const, user: 'alice' } } };
    const t = transportFromSettings(settingsOf(job), { env: { BITS_PASSWORD: 'pw' }, ...noTty });
    expect(t).toMatchObject({ requestTimeoutMs: 60_000, headers: { 'X-Trace': '1' }, credentialSource: { kind: 'env', user: 'alice' } });
    // No terminal and no password to read: refused before the job runs.
    expect(() => transportFromSettings(settingsOf(job), { env: {}, ...noTty })).toThrow(/--user alice has no password/);
  });

  it('a job written by an older bits (a flag record) resumes with its settings', () => {
    const old = { options: { headers: { Accept: 'text/plain' }, timeouts: { request: 60_000, noProgress: 1000 }, transport: { limitRate: '1M', proxy: 'http://127.0.0.1:3128/' } }, credentialSource: { kind: 'env' as const, user: 'alice' } };
    expect(settingsOf(old)).toEqual({ requestTimeoutMs: 60_000, limitRateBytesPerSec: 1024 * 1024, proxy: 'http://127.0.0.1:3128/', headers: { Accept: 'text/plain' }, user: 'alice', credentialSource: { kind: 'env', user: 'alice' } });
  });

  it('bits resume: typed options override the stored ones, a new user replaces the stored credential source', () => {
    const stored = { connectTimeoutMs: 5000, proxy: 'http://bob@127.0.0.1:3128/', user: 'alice', credentialSource: { kind: 'flag' as const, user: 'alice' }, headers: { A: '1' } };
    const typed = (k: string) => ['user', 'connectTimeout', 'header'].includes(k);
    const o = settingsFromFlags({ user: 'carol', connectTimeout: '7', requestTimeout: '120', header: ['B: 2'] }, { given: typed, env: {} });
    expect(o.settings).toEqual({ connectTimeoutMs: 7000, headers: { B: '2' }, user: 'carol', credentialSource: { kind: 'prompt', user: 'carol' } });
    expect(overrideTransportSettings(stored, o.settings)).toEqual({
      connectTimeoutMs: 7000, proxy: 'http://bob@127.0.0.1:3128/', user: 'carol', credentialSource: { kind: 'prompt', user: 'carol' }, headers: { A: '1', B: '2' },
    });
  });
});

describe('finalStateForError: the outcome of a command, from the one rule', () => {
  it.each([
    [new TransportError('reset'), true, 'suspended'],
    [new TransportError('reset'), false, 'error'],
    [new ServerError({ httpStatus: 404, request: 'GET' }), true, 'error'],
    [new ServerError({ httpStatus: 503, transient: true }), true, 'suspended'],
    [new CancelledError('x'), true, 'cancelled'],
    [new InterruptedError('x'), true, 'suspended'],
  ])('%s (job: %s) -> %s', (err, hasJob, state) => {
    expect(finalStateForError(err, hasJob)).toBe(state);
  });
});
