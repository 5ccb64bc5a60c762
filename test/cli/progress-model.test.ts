/** The progress model without a terminal: events in, a state object out, the clock passed in. */
import { describe, expect, it } from 'vitest';
import { applyEvent, bytesThisRun, currentRate, eta, initialProgress, phaseText, tick } from '../../src/cli/output/progress-model.js';
import { mainLine, segmentLine } from '../../src/cli/output/render-tty.js';
import { startLine, statusLine } from '../../src/cli/output/render-lines.js';
import { Chalk } from 'chalk';

const MiB = 1024 * 1024;
const plain = new Chalk({ level: 0 });

describe('progress model', () => {
  it('a resumed run: bytes this run and the rate count only what this run moved', () => {
    const s = initialProgress({ jobId: 'abc123' }, 0);
    applyEvent(s, { type: 'start', kind: 'download', source: 'http://h/f', destination: '/tmp/f', totalBytes: 200 * MiB, resumedAt: 150 * MiB }, 1000);
    expect(s).toMatchObject({ kind: 'download', done: 150 * MiB, runStartBytes: 150 * MiB, startedAt: 1000, jobId: 'abc123' });
    applyEvent(s, { type: 'progress', bytesDone: 160 * MiB, totalBytes: 200 * MiB }, 2000);
    expect(bytesThisRun(s)).toBe(10 * MiB);
    expect(currentRate(s, 2000)).toBe(10 * MiB); // 10 MiB in 1 s, not 160 MiB
    expect(eta(s, currentRate(s, 2000))).toBe(4);
    applyEvent(s, { type: 'complete', bytes: 200 * MiB, destination: '/tmp/f' }, 5000);
    expect(bytesThisRun(s)).toBe(50 * MiB);
    expect(s.completed).toBe(true);
  });

  it('the rate falls during a stall and the window forgets old samples', () => {
    const s = initialProgress({}, 0);
    applyEvent(s, { type: 'start', kind: 'upload', source: 'a', destination: 'b', totalBytes: 100 }, 0);
    applyEvent(s, { type: 'progress', bytesDone: 50 }, 1000);
    expect(currentRate(s, 1000)).toBe(50);
    expect(currentRate(s, 5000)).toBe(10); // nothing since: 50 bytes over 5 s
    tick(s, 20_000);
    expect(s.samples).toEqual([{ t: 1000, b: 50 }, { t: 20_000, b: 50 }]);
    expect(currentRate(s, 20_000)).toBe(0);
  });

  it('a resync back to a lower offset drops the samples instead of showing a negative rate', () => {
    const s = initialProgress({}, 0);
    applyEvent(s, { type: 'start', kind: 'upload', source: 'a', destination: 'b', totalBytes: 100 }, 0);
    applyEvent(s, { type: 'progress', bytesDone: 80 }, 1000);
    applyEvent(s, { type: 'resync', from: 80, to: 40 }, 1500);
    expect(s.done).toBe(40);
    expect(currentRate(s, 1500)).toBe(0);
  });

  it('segments: a table in index order from the progress events\' segments[]', () => {
    const s = initialProgress({}, 0);
    applyEvent(s, { type: 'start', kind: 'download', source: 'a', destination: 'b', totalBytes: 300 }, 0);
    applyEvent(s, { type: 'progress', bytesDone: 30, segments: [{ index: 2, bytesDone: 10, totalBytes: 100 }, { index: 0, bytesDone: 20, totalBytes: 100, source: 'http://m/' }] }, 10);
    applyEvent(s, { type: 'progress', bytesDone: 80, segments: [{ index: 1, bytesDone: 50, totalBytes: 100 }] }, 20);
    expect(s.segments).toEqual([
      { index: 0, done: 20, total: 100, source: 'http://m/' },
      { index: 1, done: 50, total: 100 },
      { index: 2, done: 10, total: 100 },
    ]);
    expect(segmentLine(s.segments[1]!, plain, 10)).toBe('  #2     █████░░░░░  50%  50 B / 100 B');
  });

  it('phase text: a retry countdown, then back to transferring once bytes move after it', () => {
    const s = initialProgress({}, 0);
    applyEvent(s, { type: 'start', kind: 'upload', source: 'a', destination: 'b' }, 0);
    applyEvent(s, { type: 'phase', phase: 'closing' }, 0);
    expect(phaseText(s, 0)).toBe('closing session');
    applyEvent(s, { type: 'retry', attempt: 2, delayMs: 4000, reason: 'reset' }, 1000);
    expect(phaseText(s, 1000)).toBe('retrying in 4s (attempt 2)');
    expect(phaseText(s, 3500)).toBe('retrying in 2s (attempt 2)');
    applyEvent(s, { type: 'progress', bytesDone: 10 }, 6000);
    expect(s.phase).toBe('transferring');
    expect(phaseText(s, 6000)).toBe('');
  });

  it('the renderings read the same state: CI status line, start line, bar line', () => {
    const s = initialProgress({ jobId: 'k3x9qa' }, 0);
    applyEvent(s, { type: 'start', kind: 'upload', source: 'big.bin', destination: 'http://h/big.bin', totalBytes: 100 * MiB, resumedAt: 25 * MiB }, 0);
    applyEvent(s, { type: 'progress', bytesDone: 50 * MiB }, 1000);
    expect(startLine(s, 25 * MiB)).toBe('bits: upload big.bin -> http://h/big.bin (100 MiB, resuming at 25.0 MiB) job k3x9qa\n');
    expect(statusLine(s, 1000)).toBe('bits: upload 50.0 MiB / 100 MiB (50%) 25.0 MiB/s ETA 2s\n');
    expect(mainLine(s, 1000, plain, 10)).toBe('upload   █████░░░░░  50%  50.0 MiB / 100 MiB  25.0 MiB/s  ETA 2s');
  });
});
