/** The agent's pure rules: queue order, when a wait is over, a job's exit code, -i lists, folder-URL uploads, unit quoting. */
import { describe, expect, it } from 'vitest';
import { compareQueue, jobExitCode, waitIsOver, type Job } from '../../src/store/index.js';
import { parseInputList, uploadTargets } from '../../src/cli/multi.js';
import { serviceFile } from '../../src/cli/agent-install.js';

const base: Job = { id: 'aaaaaa', kind: 'upload', source: '/f', destination: 'http://127.0.0.1/u/f', state: 'queued', bytesDone: 0, createdAt: '2026-01-01T00:00:00.000Z', updatedAt: '2026-01-01T00:00:00.000Z' };
const j = (over: Partial<Job>): Job => ({ ...base, ...over });

describe('agent rules', () => {
  it('orders by priority, then by age', () => {
    const jobs = [
      j({ id: 'low001', priority: 'low', createdAt: '2026-01-01T00:00:00.000Z' }),
      j({ id: 'nrm002', priority: 'normal', createdAt: '2026-01-01T00:00:02.000Z' }),
      j({ id: 'hgh003', priority: 'high', createdAt: '2026-01-01T00:00:03.000Z' }),
      j({ id: 'nrm001', priority: 'normal', createdAt: '2026-01-01T00:00:01.000Z' }),
    ];
    expect(jobs.sort(compareQueue).map((x) => x.id)).toEqual(['hgh003', 'nrm001', 'nrm002', 'low001']);
  });

  it('a background job queued or left transferring by a dead runner is still waited for; a foreground one is not', () => {
    expect(waitIsOver(j({ priority: 'normal', state: 'queued' }), false)).toBe(false);
    expect(waitIsOver(j({ priority: 'normal', state: 'transferring' }), false)).toBe(false);
    expect(waitIsOver(j({ priority: 'normal', state: 'suspended' }), false)).toBe(true);
    expect(waitIsOver(j({ state: 'transferring' }), false)).toBe(true);
    expect(waitIsOver(j({ state: 'transferring' }), true)).toBe(false);
    expect(waitIsOver(j({ priority: 'low', state: 'error' }), true)).toBe(true);
  });

  it('exit codes come from the job', () => {
    expect(jobExitCode(j({ state: 'complete' }))).toBe(0);
    expect(jobExitCode(j({ state: 'cancelled' }))).toBe(11);
    expect(jobExitCode(j({ state: 'error', lastError: { code: 'ServerError', message: 'x', exitCode: 5 } }))).toBe(5);
    expect(jobExitCode(j({ state: 'suspended' }))).toBe(10);
  });

  it('-i lists: URL and optional name, comments and blank lines skipped', () => {
    expect(parseInputList('# c\n\nhttp://a/x  my name.bin \r\n  http://a/y\n', 'l')).toEqual([{ url: 'http://a/x', name: 'my name.bin' }, { url: 'http://a/y' }]);
    expect(() => parseInputList('http://a/x -\n', 'l')).toThrow(/l:1/);
  });

  it('several uploads need a folder URL and distinct names', () => {
    expect(uploadTargets(['/d/a b.bin', '/e/c.bin', 'http://h/up/'])).toEqual([
      { file: '/d/a b.bin', url: 'http://h/up/a%20b.bin' },
      { file: '/e/c.bin', url: 'http://h/up/c.bin' },
    ]);
    expect(() => uploadTargets(['/d/a', '/e/a', 'http://h/up/'])).toThrow(/two files/);
    expect(() => uploadTargets(['/d/a', '/e/b', 'http://h/up'])).toThrow(/ending in \//);
  });

  it('service files quote paths with spaces', () => {
    const u = serviceFile('linux', { node: '/opt/my node/node', bin: '/x/bin/bits', home: '/h/with space', userHome: '/home/u' });
    expect(u.content).toContain('ExecStart="/opt/my node/node" /x/bin/bits agent');
    expect(u.content).toContain('Environment="BITS_HOME=/h/with space"');
    expect(u.path).toBe('/home/u/.config/systemd/user/bits-agent.service');
    const p = serviceFile('darwin', { node: '/n&', bin: '/b', userHome: '/Users/u' });
    expect(p.content).toContain('<string>/n&amp;</string>');
    expect(() => serviceFile('win32', { node: 'n', bin: 'b' })).toThrow(/linux/);
  });
});
