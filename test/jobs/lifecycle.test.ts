import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import {
  canTransition,
  effectiveState,
  formatJobError,
  isCleanable,
  isResumable,
  isTerminal,
  jobErrorFrom,
  progressPercent,
  summarize,
} from '../../src/jobs/lifecycle.js';
import { formatJobTable, isHiddenByDefault, relativeTime, shorten } from '../../src/cli/output/job-format.js';
import { claimJob, releaseJob, runnerAlive } from '../../src/jobs/running.js';
import { JOB_STATES, openJobStore, type Job, type JobState } from '../../src/store/index.js';
import { ServerError, TimeoutError, UsageError } from '../../src/errors.js';

const NOW = Date.parse('2025-01-02T03:04:05.000Z');
const job = (over: Partial<Job> = {}): Job => ({
  id: 'abc123',
  kind: 'upload',
  source: '/data/a.iso',
  destination: 'https://127.0.0.1/up/a.iso',
  state: 'queued',
  bytesDone: 0,
  createdAt: new Date(NOW - 3600_000).toISOString(),
  updatedAt: new Date(NOW - 60_000).toISOString(),
  ...over,
});

describe('lifecycle', () => {
  it('complete and cancelled are terminal; everything else can be cancelled; error and suspended can resume', () => {
    for (const from of JOB_STATES) {
      expect(canTransition(from, from)).toBe(true);
      for (const to of JOB_STATES) {
        if (from === to) continue;
        if (isTerminal(from)) expect(canTransition(from, to), `${from}->${to}`).toBe(false);
      }
      if (!isTerminal(from)) expect(canTransition(from, 'cancelled'), from).toBe(true);
    }
    expect(canTransition('error', 'transferring')).toBe(true);
    expect(canTransition('suspended', 'transferring')).toBe(true);
    expect(canTransition('transferring', 'complete')).toBe(true);
    expect(canTransition('suspended', 'complete')).toBe(false);
  });

  it('effective state: a dead runner means suspended, a live one transferring; terminal states stay', () => {
    expect(effectiveState(job({ state: 'transferring' }), false)).toBe('suspended');
    expect(effectiveState(job({ state: 'transferring' }), true)).toBe('transferring');
    expect(effectiveState(job({ state: 'error' }), true)).toBe('transferring');
    expect(effectiveState(job({ state: 'complete' }), true)).toBe('complete');
    expect(effectiveState(job({ state: 'queued' }), false)).toBe('queued');
  });

  it('resumable: queued, suspended, a resumable error; never while running or finished', () => {
    const cases: Array<[JobState, boolean, boolean]> = [
      ['queued', false, true],
      ['suspended', false, true],
      ['transferring', false, true], // its process died
      ['transferring', true, false],
      ['error', false, true],
      ['complete', false, false],
      ['cancelled', false, false],
    ];
    for (const [state, alive, want] of cases) expect(isResumable(job({ state }), alive), `${state}/${alive}`).toBe(want);
    const fatal = job({ state: 'error', lastError: { code: 'SourceChangedError', exitCode: 9, message: 'changed', resumable: false } });
    expect(isResumable(fatal)).toBe(false);
  });

  it('cleanable: finished jobs; failed ones only with --all; never a running one', () => {
    expect(isCleanable(job({ state: 'complete' }), false, false)).toBe(true);
    expect(isCleanable(job({ state: 'cancelled' }), false, false)).toBe(true);
    expect(isCleanable(job({ state: 'error' }), false, false)).toBe(false);
    expect(isCleanable(job({ state: 'error' }), false, true)).toBe(true);
    expect(isCleanable(job({ state: 'error' }), true, true)).toBe(false);
    expect(isCleanable(job({ state: 'complete' }), true, true)).toBe(false);
    expect(isCleanable(job({ state: 'suspended' }), false, true)).toBe(false);
  });

  it('progress percent', () => {
    expect(progressPercent({ state: 'transferring', bytesDone: 1, totalBytes: 3 })).toBe(33.3);
    expect(progressPercent({ state: 'transferring', bytesDone: 5, totalBytes: 0 })).toBe(0);
    expect(progressPercent({ state: 'complete', bytesDone: 0, totalBytes: 0 })).toBe(100);
    expect(progressPercent({ state: 'queued', bytesDone: 5 })).toBeUndefined();
  });

  it('the last error as one line with HTTP status and HRESULT name/hex, not repeating what the message says', () => {
    const server = jobErrorFrom(new ServerError({ httpStatus: 413, bitsError: 0x80200020, bitsErrorContext: 5, request: 'FRAGMENT' }), new Date(NOW));
    expect(server.at).toBe(new Date(NOW).toISOString());
    const line = formatJobError(server);
    expect(line).toMatch(/^ServerError: server refused FRAGMENT: HTTP 413/);
    expect(line).not.toContain('\n');
    expect(line.match(/0x80200020/g)).toHaveLength(1);
    const timeout = formatJobError(jobErrorFrom(new TimeoutError('no response in 120 s', 'response')));
    expect(timeout).toBe('TimeoutError: no response in 120 s [ERROR_TIMEOUT 0x800705B4]');
    // The message already has the hex; the name is added.
    expect(formatJobError(jobErrorFrom(new ServerError({ httpStatus: 500, request: 'FRAGMENT' }))))
      .toBe('ServerError: server refused FRAGMENT: HTTP 500 internal server error (0x801901F4) [BG_E_HTTP_ERROR_500]');
    expect(formatJobError({ code: 'ServerError', exitCode: 5, message: 'refused\n  twice', resumable: true, httpStatus: 404, hresult: '0x80190194' }))
      .toBe('ServerError: refused twice [HTTP 404, BG_E_HTTP_ERROR_404 0x80190194]');
  });

  it('summarize', () => {
    const s = summarize(job({ state: 'transferring', bytesDone: 50, totalBytes: 200 }), false);
    expect(s).toMatchObject({ id: 'abc123', state: 'suspended', running: false, resumable: true, percent: 25 });
  });
});

describe('presentation helpers', () => {
  it('shorten keeps both ends, mostly the end', () => {
    expect(shorten('short', 10)).toBe('short');
    const s = shorten('/very/long/path/to/some/deep/folder/file-name.iso', 24);
    expect(s).toHaveLength(24);
    expect(s.startsWith('/very')).toBe(true);
    expect(s.endsWith('file-name.iso')).toBe(true);
  });

  it('relative times and hiding finished jobs after a day', () => {
    expect(relativeTime(new Date(NOW - 5_000).toISOString(), NOW)).toBe('5s ago');
    expect(relativeTime(new Date(NOW - 3 * 3600_000).toISOString(), NOW)).toBe('3h ago');
    expect(relativeTime(new Date(NOW - 30 * 86400_000).toISOString(), NOW)).toBe('2024-12-03');
    expect(isHiddenByDefault(job({ state: 'complete', updatedAt: new Date(NOW - 25 * 3600_000).toISOString() }), NOW)).toBe(true);
    expect(isHiddenByDefault(job({ state: 'complete', updatedAt: new Date(NOW - 23 * 3600_000).toISOString() }), NOW)).toBe(false);
    expect(isHiddenByDefault(job({ state: 'error', updatedAt: new Date(NOW - 30 * 86400_000).toISOString() }), NOW)).toBe(false);
  });

  it('the table fits the terminal width by shortening source → destination', () => {
    const long = job({ source: '/a/' + 'x'.repeat(120) + '/file.iso', destination: 'https://127.0.0.1/' + 'y'.repeat(120) + '/file.iso' });
    const out = formatJobTable([{ job: long, alive: false }], NOW, 100);
    for (const line of out.trimEnd().split('\n')) expect(line.length).toBeLessThanOrEqual(100);
    expect(out).toMatch(/file\.iso → .*file\.iso\n$/);
    const wide = formatJobTable([{ job: long, alive: false }], NOW, undefined);
    expect(wide).toContain(long.source);
  });
});

describe('runner claims (real store, real pids)', () => {
  let home: string;
  beforeEach(() => {
    home = fs.mkdtempSync(path.join(os.tmpdir(), 'bits-jobs-'));
  });
  afterEach(() => {
    fs.rmSync(home, { recursive: true, force: true });
  });

  it('a job claimed by a live process cannot be claimed again; a dead runner is replaced; release clears only our claim', async () => {
    const store = await openJobStore({ home });
    const a = await store.create({ kind: 'upload', source: '/a', destination: 'https://127.0.0.1/a' });
    const claimed = await claimJob(store, a.id, { state: 'transferring' });
    expect(claimed.runner).toMatchObject({ pid: process.pid, host: os.hostname() });
    expect(claimed.state).toBe('transferring');
    expect(runnerAlive(claimed)).toBe(true);
    // Same process claiming again (e.g. after a retry) is fine.
    await claimJob(store, a.id);
    // Pretend another live process holds it: pid 1 exists on every POSIX system.
    if (process.platform !== 'win32') {
      await store.update(a.id, { runner: { pid: 1, host: os.hostname(), since: new Date().toISOString() } });
      const err = await claimJob(store, a.id).then(() => undefined, (e: unknown) => e);
      expect(err).toBeInstanceOf(UsageError);
      expect((err as Error).message).toMatch(/is being transferred by pid 1/);
      // Release by someone else leaves the claim alone.
      expect((await releaseJob(store, a.id)).runner?.pid).toBe(1);
    }
    const dead = Number(spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'], { encoding: 'utf8' }).stdout);
    await store.update(a.id, { runner: { pid: dead, host: os.hostname(), since: new Date().toISOString() } });
    expect(runnerAlive(await store.get(a.id))).toBe(false);
    await claimJob(store, a.id);
    const released = await releaseJob(store, a.id, { state: 'suspended' });
    expect(released.runner).toBeUndefined();
    expect(released.state).toBe('suspended');
  });

  it('a runner on another host is trusted only while the job keeps being updated', () => {
    const j = job({ runner: { pid: 4242, host: 'another-host.invalid', since: new Date(NOW).toISOString() } });
    expect(runnerAlive({ ...j, updatedAt: new Date(NOW - 60_000).toISOString() }, NOW)).toBe(true);
    expect(runnerAlive({ ...j, updatedAt: new Date(NOW - 3600_000).toISOString() }, NOW)).toBe(false);
  });
});
