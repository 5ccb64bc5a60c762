/**
 * STATE_DOWNLOAD with segments: workers claim segments from the table and
 * fetch them; a failure is dropped to another source when there is one, or
 * waited out with the one retry policy (RetryBudget.wait) until the
 * no-progress deadline; a changed origin restarts the whole download.
 */
import { InterruptedError, ProtocolError, ServerError, toBitsError } from '../../errors.js';
import type { DownloadTable } from '../../protocol/downloader.js';
import type { RetryBudget } from '../retry.js';
import { ContentChanged, fetchFragment, type FetchContext } from './fetch.js';

/** Another segment failed: this one stops (an InterruptedError so every abort path keeps it as is). */
export class AbortedByRun extends InterruptedError {
  constructor() {
    super('stopped because another segment failed');
  }
}

/** The origin's content changed: start again from STATE_INIT. */
export class RestartRequired extends Error {}

/** A server answering this many times in a row without a requested byte is broken, not slow. */
const MAX_IDLE_ANSWERS = 4;

export interface SegmentHost extends FetchContext {
  readonly table: DownloadTable;
  readonly workers: number;
  readonly fragmentSize: number;
  /** Aborts the attempt's other workers. */
  abortRun(reason: Error): void;
  /** Why the attempt's signal fired (user, another worker, the deadline), or undefined. */
  abortReason(): Error | undefined;
  newBudget(): RetryBudget;
  checkpoint(): Promise<void>;
  phase(p: 'retrying' | 'transferring', detail?: string): void;
}

export async function runWorkers(host: SegmentHost): Promise<void> {
  const n = Math.max(1, Math.min(host.table.segmentCount, host.workers));
  host.phase('transferring');
  const results = await Promise.allSettled(Array.from({ length: n }, () => worker(host)));
  const failures = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected').map((r) => r.reason as unknown);
  await host.checkpoint();
  if (failures.length === 0) {
    if (!host.table.complete) throw new ProtocolError('download ended with ranges missing');
    return;
  }
  const restart = failures.find((f) => f instanceof RestartRequired);
  if (restart) throw restart;
  // The first real failure, not the aborts it caused in the other workers.
  throw failures.find((f) => !(f instanceof AbortedByRun)) ?? failures[0];
}

async function worker(host: SegmentHost): Promise<void> {
  try {
    for (;;) {
      const seg = host.table.claimSegment();
      if (seg === undefined) return;
      await downloadSegment(host, seg);
    }
  } catch (err) {
    // One worker's failure ends the attempt: stop the others promptly.
    host.abortRun(new AbortedByRun());
    throw err;
  }
}

async function downloadSegment(host: SegmentHost, segment: number): Promise<void> {
  const table = host.table;
  let budget = host.newBudget();
  let idle = 0;
  for (;;) {
    const aborted = host.abortReason();
    if (aborted) throw aborted;
    const req = table.nextRequest(segment, host.fragmentSize, host.dataLength);
    if (!req) {
      if (!table.rowsComplete(table.rowsOfSegment(segment))) throw new ProtocolError('no usable source left');
      return;
    }
    const src = req.source;
    try {
      const got = await fetchFragment(host, req);
      if (got > 0) {
        budget = host.newBudget();
        idle = 0;
      } else if (++idle > MAX_IDLE_ANSWERS) {
        throw new ProtocolError(`${src.url} keeps answering without the requested bytes`);
      }
    } catch (err) {
      const why = host.abortReason();
      if (why) throw why;
      if (err instanceof RestartRequired) throw err;
      if (err instanceof ContentChanged) {
        if (err.source === table.liveSources()[0]) throw new RestartRequired(err.reason);
        table.drop(err.source, `mirror ${err.source.url} changed (${err.reason}); no longer used`);
        host.flushWarnings();
        continue;
      }
      const e = toBitsError(err);
      const others = table.liveSources().some((s) => s !== src);
      // With other sources at hand a failing one is not waited for (auth failures included).
      if ((e.disposition === 'retry' || e instanceof ProtocolError || e instanceof ServerError) && others) {
        table.drop(src, `source ${src.url} failed (${e.message}); its ranges go to the other sources`);
        host.flushWarnings();
        await host.checkpoint();
        continue;
      }
      if (e.disposition !== 'retry') throw e;
      await host.checkpoint();
      host.phase('retrying', e.message);
      await budget.wait(e);
      host.phase('transferring');
    }
  }
}
