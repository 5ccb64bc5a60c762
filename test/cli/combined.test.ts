/** The several-files line's sums, fed per-job models as the reporters do (no terminal: a log stream). */
import { PassThrough } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { CombinedProgress } from '../../src/cli/output/combined.js';
import { applyEvent, initialProgress } from '../../src/cli/output/progress-model.js';
import { statusLine } from '../../src/cli/output/render-lines.js';

const KiB = 1024;

function combined(jobs: ConstructorParameters<typeof CombinedProgress>[0]) {
  const out = new PassThrough();
  let text = '';
  out.on('data', (d: Buffer) => (text += d.toString()));
  const c = new CombinedProgress(jobs, { stderr: out, tty: false, statusIntervalMs: 60_000 });
  return { c, text: () => text };
}

describe('the combined line of several files', () => {
  it('downloads into a folder: names from the URL (the phase beside it); the bar counts files until every size is known', () => {
    const { c } = combined([
      { kind: 'download', source: 'http://h/a%20b.bin', destination: '/d/' },
      { kind: 'download', source: 'http://h/c.bin', destination: '/d/' },
    ]);
    c.beginJob(0);
    expect(c.note(0)).toBe('a b.bin');
    const s = initialProgress({ kind: 'download' }, 0);
    applyEvent(s, { type: 'start', kind: 'download', source: 'http://h/a%20b.bin', destination: '/d/a b.bin', totalBytes: 100 * KiB }, 0);
    applyEvent(s, { type: 'progress', bytesDone: 50 * KiB }, 500);
    c.feed(s, 500);
    expect(c.note(500)).toBe('a b.bin');
    expect(c.state.total).toBeUndefined(); // c.bin's size is not known yet
    expect(c.state.fraction).toBe(0.25); // half of the first of two files
    expect(statusLine(c.state, 500, '1/2 files')).toMatch(/^bits: 1\/2 files 50\.0 KiB /);
    c.endJob(true);
    c.beginJob(1);
    const t = initialProgress({ kind: 'download' }, 600);
    applyEvent(t, { type: 'start', kind: 'download', source: 'http://h/c.bin', destination: '/d/c.bin', totalBytes: 300 * KiB }, 600);
    applyEvent(t, { type: 'retry', attempt: 2, delayMs: 3000, reason: 'reset' }, 1500);
    c.feed(t, 1500);
    expect(c.note(1500)).toBe('c.bin: retrying in 3s (attempt 2)');
    applyEvent(t, { type: 'progress', bytesDone: 100 * KiB }, 4600);
    c.feed(t, 4600);
    expect(c.state.done).toBe(200 * KiB);
    expect(c.state.total).toBe(400 * KiB);
    expect(c.state.fraction).toBeUndefined();
  });

  it('a file that fails leaves what it did not move out of the total, so the rest can reach 100%', () => {
    const { c } = combined([
      { kind: 'upload', source: '/x/one.bin', destination: 'http://h/up/one.bin', totalBytes: 100 },
      { kind: 'upload', source: '/x/two.bin', destination: 'http://h/up/two.bin', totalBytes: 100 },
    ]);
    expect(c.state.total).toBe(200);
    c.beginJob(0);
    const s = initialProgress({ kind: 'upload' }, 0);
    applyEvent(s, { type: 'start', kind: 'upload', source: '/x/one.bin', destination: 'http://h/up/one.bin', totalBytes: 100 }, 0);
    applyEvent(s, { type: 'progress', bytesDone: 30 }, 100);
    c.feed(s, 100);
    c.endJob(false);
    expect(c.state.total).toBe(130);
    c.beginJob(1);
    const t = initialProgress({ kind: 'upload' }, 200);
    applyEvent(t, { type: 'start', kind: 'upload', source: '/x/two.bin', destination: 'http://h/up/two.bin', totalBytes: 100 }, 200);
    applyEvent(t, { type: 'complete', bytes: 100, destination: 'http://h/up/two.bin' }, 300);
    c.feed(t, 300);
    expect(c.state.done).toBe(c.state.total);
  });

  it('in a log, lines go out as they are (there is no bar to keep them above)', () => {
    const { c, text } = combined([{ kind: 'upload', source: '/x/a', destination: 'http://h/a', totalBytes: 1 }]);
    c.log('bits: hello\n');
    c.stop();
    expect(text()).toBe('bits: hello\n');
  });
});
