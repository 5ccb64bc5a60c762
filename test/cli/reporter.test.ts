/**
 * The reporter against real streams (PassThrough, not a TTY) and real timers:
 * what a CI log and a script reading --json actually receive.
 */
import { PassThrough } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, expect, test } from 'vitest';
import { createReporter, type ReporterOptions } from '../../src/cli/output/reporter.js';
import type { TransferEvent } from '../../src/client/events.js';
import { TransportError } from '../../src/errors.js';

const MiB = 1024 * 1024;
const TOTAL = 100 * MiB;

function capture() {
  const stdout = new PassThrough();
  const stderr = new PassThrough();
  let out = '';
  let err = '';
  stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
  stderr.setEncoding('utf8').on('data', (d: string) => (err += d));
  return {
    stdout,
    stderr,
    get out() {
      return out;
    },
    get err() {
      return err;
    },
  };
}

/** A transfer of TOTAL bytes in `steps` progress events `stepMs` apart, then `end`. */
async function drive(
  opts: ReporterOptions,
  { steps = 10, stepMs = 20, end = 'complete', extra = [] as Array<[number, TransferEvent]> } = {},
) {
  const io = capture();
  const r = createReporter({ ...opts, stdout: io.stdout, stderr: io.stderr });
  r.listener({ type: 'start', kind: 'upload', jobId: 'job-42', source: 'big.bin', destination: 'http://127.0.0.1:1/up/big.bin', totalBytes: TOTAL });
  r.listener({ type: 'phase', phase: 'connecting' });
  r.listener({ type: 'phase', phase: 'transferring' });
  for (let i = 1; i <= steps; i++) {
    for (const [at, e] of extra) if (at === i) r.listener(e);
    if (end === 'error' && i === Math.ceil(steps / 2)) break;
    r.listener({ type: 'progress', bytesDone: Math.floor((TOTAL * i) / steps), totalBytes: TOTAL });
    await sleep(stepMs);
  }
  if (end === 'complete') r.listener({ type: 'complete', bytes: TOTAL, destination: 'http://127.0.0.1:1/up/big.bin' });
  else r.fail(new TransportError('connection reset'));
  r.finish();
  await sleep(5); // let the PassThroughs deliver
  return io;
}

function jsonLines(out: string): Array<Record<string, unknown>> {
  const lines = out.split('\n');
  expect(lines.pop()).toBe(''); // every object ends with a newline
  return lines.map((l) => JSON.parse(l) as Record<string, unknown>);
}

describe('--json', () => {
  test('one object per line, ISO times, job id, progress at most once a second plus a final one', async () => {
    // ~1.6 s of progress events every 40 ms: ~40 events must become 2-3 progress objects.
    const io = await drive({ json: true, quiet: true }, { steps: 40, stepMs: 40 });
    const objs = jsonLines(io.out);
    for (const o of objs) {
      expect(typeof o.type).toBe('string');
      expect(new Date(o.time as string).toISOString()).toBe(o.time);
      expect(o.jobId).toBe('job-42');
    }
    expect(objs[0]).toMatchObject({ type: 'start', kind: 'upload', totalBytes: TOTAL, source: 'big.bin' });
    expect(objs.filter((o) => o.type === 'phase').map((o) => o.phase)).toEqual(['connecting', 'transferring']);
    const progress = objs.filter((o) => o.type === 'progress');
    expect(progress.length).toBeGreaterThanOrEqual(2);
    expect(progress.length).toBeLessThanOrEqual(4);
    // Rate limit: all but the final progress object at least ~1 s apart.
    const times = progress.map((o) => Date.parse(o.time as string));
    for (let i = 1; i < times.length - 1; i++) expect(times[i]! - times[i - 1]!).toBeGreaterThanOrEqual(990);
    for (const p of progress) {
      expect(Number.isInteger(p.bytesDone)).toBe(true);
      expect(Number.isInteger(p.bytesPerSecond)).toBe(true);
    }
    // The final progress object carries the final count, and comes before the outcome.
    expect(progress.at(-1)!.bytesDone).toBe(TOTAL);
    const last = objs.at(-1)!;
    expect(last).toMatchObject({ type: 'complete', jobId: 'job-42', state: 'complete', bytes: TOTAL, totalBytes: TOTAL, error: null });
    expect(objs.filter((o) => o.type === 'complete')).toHaveLength(1);
    expect(io.err).toBe(''); // --quiet
  });

  test('retry, warning and the final error object; human output still on stderr', async () => {
    const io = await drive(
      { json: true, statusIntervalMs: 60_000 },
      {
        steps: 6,
        stepMs: 5,
        end: 'error',
        extra: [
          [2, { type: 'retry', attempt: 1, delayMs: 4000, reason: 'connection reset' }],
          [2, { type: 'warning', message: 'server ignored Content-Name' }],
        ],
      },
    );
    const objs = jsonLines(io.out);
    expect(objs.find((o) => o.type === 'retry')).toMatchObject({ attempt: 1, delayMs: 4000, reason: 'connection reset', jobId: 'job-42' });
    expect(objs.find((o) => o.type === 'warning')).toMatchObject({ message: 'server ignored Content-Name' });
    const last = objs.at(-1)!;
    expect(last).toMatchObject({ type: 'error', jobId: 'job-42', state: 'suspended', bytes: Math.floor((TOTAL * 2) / 6) });
    expect(last.error).toMatchObject({ code: 'TransportError', exitCode: 4, resumable: true });
    expect(io.err).toContain('bits: retrying in 4s (attempt 1): connection reset\n');
    expect(io.err).toContain('bits: warning: server ignored Content-Name\n');
    expect(io.err).toMatch(/bits: error: connection reset; job job-42 is suspended at 33\.3 MiB \/ 100 MiB, continue with: bits resume job-42\n$/);
  });
});

describe('not a terminal (CI logs)', () => {
  test('periodic one-line status, no escape sequences, a final line', async () => {
    const io = await drive({ statusIntervalMs: 100 }, { steps: 12, stepMs: 50 });
    expect(io.out).toBe(''); // nothing on stdout without --json
    expect(io.err).not.toMatch(/\u001b/);
    const lines = io.err.trimEnd().split('\n');
    expect(lines[0]).toBe('bits: upload big.bin -> http://127.0.0.1:1/up/big.bin (100 MiB) job job-42');
    const status = lines.filter((l) => /^bits: upload \d/.test(l));
    expect(status.length).toBeGreaterThanOrEqual(2);
    for (const l of status) {
      expect(l).toMatch(/^bits: upload \d+(\.\d)? (B|KiB|MiB) \/ 100 MiB \(\d{1,3}%\) \d+(\.\d)? (B|KiB|MiB|GiB)\/s( ETA (<1s|\d+s))?$/);
    }
    expect(lines.at(-1)).toMatch(/^bits: uploaded 100 MiB in (<1s|\d+s) \(\d+(\.\d)? (MiB|GiB)\/s\) -> http:\/\/127\.0\.0\.1:1\/up\/big\.bin$/);
  });

  test('status lines stop after finish', async () => {
    const io = await drive({ statusIntervalMs: 30 }, { steps: 4, stepMs: 40 });
    const before = io.err;
    await sleep(150);
    expect(io.err).toBe(before);
  });

  test('a retry shows in the next status line as a countdown', async () => {
    const io = capture();
    const r = createReporter({ stdout: io.stdout, stderr: io.stderr, statusIntervalMs: 80 });
    r.listener({ type: 'start', kind: 'download', source: 'http://127.0.0.1:1/f', destination: 'f', totalBytes: undefined });
    r.listener({ type: 'progress', bytesDone: 512 });
    r.listener({ type: 'retry', attempt: 3, delayMs: 9000, reason: 'timeout' });
    await sleep(200);
    r.finish();
    await sleep(5);
    expect(io.err).toContain('bits: download http://127.0.0.1:1/f -> f (size unknown)\n');
    expect(io.err).toContain('bits: retrying in 9s (attempt 3): timeout\n');
    // Unknown total: no percent, no ETA.
    expect(io.err).toMatch(/^bits: download 512 B 0 B\/s, retrying in [89]s \(attempt 3\)$/m);
  });
});

describe('--quiet', () => {
  test('prints nothing on success', async () => {
    const io = await drive({ quiet: true, statusIntervalMs: 20 }, { steps: 5, stepMs: 30 });
    expect(io.err).toBe('');
    expect(io.out).toBe('');
  });

  test('still prints the error, as one line', async () => {
    const io = await drive({ quiet: true, statusIntervalMs: 20 }, { steps: 6, stepMs: 10, end: 'error' });
    expect(io.out).toBe('');
    expect(io.err).toBe('bits: error: connection reset; job job-42 is suspended at 33.3 MiB / 100 MiB, continue with: bits resume job-42\n');
  });
});

test('the outcome is printed once, even if the command also reports it', async () => {
  const io = capture();
  const r = createReporter({ json: true, quiet: true, stdout: io.stdout, stderr: io.stderr });
  r.listener({ type: 'start', kind: 'download', source: 's', destination: 'd', totalBytes: 3 });
  r.listener({ type: 'complete', bytes: 3, destination: 'd' });
  r.listener({ type: 'error', error: { code: 'X', message: 'late', exitCode: 1, resumable: false } });
  r.finish();
  r.finish();
  await sleep(5);
  const objs = jsonLines(io.out);
  expect(objs.map((o) => o.type)).toEqual(['start', 'progress', 'complete']);
});
