/**
 * `bits __demo-progress` (hidden): a synthetic transfer through the real
 * reporter, runAction and Ctrl-C handling, so the presentation layer can be
 * tested end to end in a pipe and in a pseudo-terminal without a server.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { TransportError, InterruptedError, UsageError } from '../../errors.js';
import { onInterrupt, runAction } from '../run.js';
import { createReporter } from './reporter.js';
import type { TransferEvent } from '../../client/events.js';

function int(v: unknown, name: string, min: number, max: number): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < min || n > max) throw new UsageError(`${name} out of range`);
  return n;
}

export async function runDemo(opts: Record<string, string | boolean | undefined>): Promise<void> {
  const json = opts.json === true;
  const quiet = opts.quiet === true;
  await runAction({ json, quiet }, async (session) => {
    const size = int(opts.size, '--size', 1, 2 ** 50);
    const steps = int(opts.steps, '--steps', 1, 10_000);
    const stepMs = int(opts.stepMs, '--step-ms', 0, 10_000);
    const segs = int(opts.segments, '--segments', 0, 64);
    const jobId = String(opts.jobId);
    const { signal } = onInterrupt(undefined, { session });
    const reporter = createReporter({ json, quiet, session });
    const emit = (e: TransferEvent) => reporter.listener(e);

    emit({ type: 'start', kind: 'upload', jobId, source: 'demo.bin', destination: 'http://127.0.0.1/demo/demo.bin', totalBytes: size });
    emit({ type: 'phase', phase: 'connecting' });
    emit({ type: 'phase', phase: 'creating-session' });
    emit({ type: 'phase', phase: 'transferring' });
    const segSize = segs > 0 ? Math.ceil(size / segs) : 0;
    for (let i = 1; i <= steps; i++) {
      if (signal.aborted) break;
      const done = Math.floor((size * i) / steps);
      if (segs > 0) {
        // Segments fill one after the other; report each one this step touched, so finished ones show 100%.
        const prev = Math.floor((size * (i - 1)) / steps);
        const first = Math.min(segs - 1, Math.floor(prev / segSize));
        const last = Math.min(segs - 1, Math.floor((done - 1) / segSize));
        const segments = [];
        for (let segment = first; segment <= last; segment++) {
          const segTotal = Math.min(segSize, size - segment * segSize);
          const segDone = Math.max(0, Math.min(segTotal, done - segment * segSize));
          segments.push({ index: segment, bytesDone: segDone, totalBytes: segTotal });
        }
        emit({ type: 'progress', bytesDone: done, totalBytes: size, segments });
      } else {
        emit({ type: 'progress', bytesDone: done, totalBytes: size });
      }
      if (opts.retry && i === Math.floor(steps / 2)) {
        emit({ type: 'retry', attempt: 1, delayMs: stepMs * 2, reason: 'connection reset (synthetic)' });
        emit({ type: 'warning', message: 'synthetic warning' });
        // The server held less than was sent: every event type a real transfer can emit appears in the demo.
        emit({ type: 'resync', from: done, to: Math.floor(done / 2) });
        emit({ type: 'info', message: 'synthetic info' });
        emit({ type: 'progress', bytesDone: done, totalBytes: size });
      }
      if (opts.wait && i === Math.floor(steps / 2)) {
        // Bounded wait: a test that forgets to send SIGINT still ends.
        await sleep(30_000, undefined, { signal }).catch(() => {});
        break;
      }
      if (opts.fail && i === Math.floor(steps / 2)) {
        reporter.finish();
        throw new TransportError('connection reset by peer (synthetic)');
      }
      if (stepMs > 0) await sleep(stepMs);
    }
    if (signal.aborted) {
      // --suspend-ms: a slow suspend (as over a dead network), so a second Ctrl-C can be tested.
      const suspendMs = int(opts.suspendMs ?? '0', '--suspend-ms', 0, 60_000);
      if (suspendMs > 0) await sleep(suspendMs);
      emit({ type: 'phase', phase: 'suspended' });
      reporter.finish();
      throw signal.reason instanceof Error ? signal.reason : new InterruptedError();
    }
    emit({ type: 'phase', phase: 'closing' });
    emit({ type: 'complete', bytes: size, destination: 'http://127.0.0.1/demo/demo.bin' });
    reporter.finish();
  });
}
