/**
 * Running a job in the foreground of a terminal or a CI log: progress on
 * stderr (or --json on stdout), the job id in every JSON object, the outcome
 * as the last line, and Ctrl-C. The job itself runs in the jobs layer
 * (src/jobs/runner.ts), which knows nothing of signals or printing.
 *
 * Ctrl-C once: the job is saved suspended and the line says `bits resume <id>`
 * (exit 10); twice within 2 s: CANCEL-SESSION (bounded by short timers), job
 * cancelled (exit 11). The run and the cancel are API calls (src/api/jobs.ts
 * run / cancelNow), as a program using bits makes them: the CLI adds only
 * the terminal. One Ctrl-C delivered twice at once (a process group,
 * `timeout`) counts once: see onInterrupt in run.ts.
 */
import { AuthError, CancelledError, InterruptedError, TlsError, formatErrorLine, toBitsError, type BitsError } from '../errors.js';
import type { Job } from '../api.js';
import { isResumable } from '../store/index.js';
import { cancelNow, get, run } from '../api/jobs.js';
import type { PreparedTransport } from '../api/options.js';
import { finalStateFor, outcomeForError } from '../jobs/outcome.js';
import { createReporter, type Reporter } from './output/reporter.js';
import { jobResultFields } from './output/final.js';
import type { CombinedProgress } from './output/combined.js';
import { onInterrupt, printFinal, type OutputOptions, type OutputSession } from './run.js';

/** A second SIGINT within this long of the first cancels the job instead of suspending it. */
export const CANCEL_WINDOW_MS = 2000;

interface JobInterrupt {
  readonly signal: AbortSignal;
  /** The first signal, once one arrived. */
  readonly first: NodeJS.Signals | undefined;
  /**
   * After a SIGINT: resolves true if a second one arrives within the window
   * (the user asks to cancel), false when the window passes.
   */
  cancelRequested(): Promise<boolean>;
  dispose(): void;
}

/**
 * Removes the other SIGINT/SIGTERM listeners while a job runs, and gives them
 * back after. conf (the job store) loads atomically -> when-exit, whose
 * listener re-sends the first signal to the process, expecting it to die of
 * it; here that echo would arrive as a second Ctrl-C and cancel the job.
 */
function takeSignals(): () => void {
  const removed: Array<[NodeJS.Signals, (...args: unknown[]) => void]> = [];
  for (const sig of ['SIGINT', 'SIGTERM'] as const) {
    for (const l of process.rawListeners(sig) as Array<(...args: unknown[]) => void>) {
      process.removeListener(sig, l);
      removed.push([sig, l]);
    }
  }
  return () => {
    for (const [sig, l] of removed) process.on(sig, l);
  };
}

function jobInterrupt(session: OutputSession | undefined, windowMs = CANCEL_WINDOW_MS): JobInterrupt {
  const giveBack = takeSignals();
  let first: NodeJS.Signals | undefined;
  let firstAt = 0;
  let second = false;
  let wake: (() => void) | undefined;
  const intr = onInterrupt(
    (sig) => {
      first = sig;
      firstAt = Date.now();
    },
    {
      ...(session ? { session } : {}),
      forceWindowMs: windowMs,
      secondHint: `press Ctrl-C again within ${Math.round(windowMs / 1000)} s to cancel the job instead`,
      onSecond: () => {
        second = true;
        wake?.();
      },
    },
  );
  return {
    signal: intr.signal,
    get first() {
      return first;
    },
    cancelRequested() {
      if (second) return Promise.resolve(true);
      const left = firstAt + windowMs - Date.now();
      if (left <= 0) return Promise.resolve(false);
      return new Promise<boolean>((resolve) => {
        const t = setTimeout(() => resolve(second), left);
        wake = () => {
          clearTimeout(t);
          resolve(true);
        };
      });
    },
    dispose() {
      intr.dispose();
      giveBack();
    },
  };
}

export interface ExecuteOptions extends OutputOptions {
  /** The run's transport (a new `bits upload` has the password in memory); default rebuilt from the job. */
  prepared?: PreparedTransport;
  /** Called with the reporter before the transfer starts (e.g. to warn). */
  beforeStart?: (reporter: Reporter) => void;
  /** Several files in one command: the one line this job's progress goes to. */
  combined?: CombinedProgress;
}

/**
 * Runs one job in the foreground. Throws the BitsError the process should
 * exit with, after printing it.
 */
export async function executeJob(job: Job, out: ExecuteOptions): Promise<Job> {
  const reporter = createReporter({ json: out.json, quiet: out.quiet, stdout: out.stdout, stderr: out.stderr, kind: job.kind, jobId: job.id, session: out.session, ...(out.combined ? { combined: out.combined } : {}) });
  out.beforeStart?.(reporter);
  const intr = jobInterrupt(out.session);
  const started = Date.now();
  try {
    // Before the first request and the bars; signals now suspend the job (upload and download asked already).
    if (out.prepared) await out.prepared.askPasswords();
    const done = await run(job.id, { onEvent: reporter.listener, signal: intr.signal, ...(out.prepared ? { prepared: out.prepared } : {}) });
    reporter.finish();
    // Normally already printed by the reporter on 'complete'; this covers a client that did not send one.
    printFinal(out, { state: 'complete', ...jobResultFields(done), elapsedMs: Date.now() - started });
    return done;
  } catch (err) {
    reporter.finish();
    let e = toBitsError(err);
    if (e instanceof InterruptedError && intr.first === 'SIGINT' && (await intr.cancelRequested())) {
      e = await cancelNow(job.id, { ...(out.prepared ? { prepared: out.prepared } : {}) });
    }
    const latest = await get(job.id).catch(() => undefined);
    printJobOutcome(out, latest ?? job, e);
    throw e;
  } finally {
    intr.dispose();
  }
}

/** What to run next for a job that failed, as a command that works (resume takes the transport options). */
export function nextStepHint(job: Job, e: BitsError): string {
  if (!isResumable(job, false)) return `cancel it with: bits cancel ${job.id}`;
  if (e instanceof AuthError) return `retry with credentials: bits resume ${job.id} --user NAME (the password is asked for, or read from BITS_PASSWORD)`;
  if (e instanceof TlsError) return `retry with the right certificates: bits resume ${job.id} --cacert FILE (or --cert FILE --key FILE), or cancel it: bits cancel ${job.id}`;
  return `fix the cause, then: bits resume ${job.id} (or remove it: bits cancel ${job.id})`;
}

/** The last line (and JSON object) for a job that did not complete. */
export function printJobOutcome(out: OutputOptions, job: Job, e: BitsError): boolean {
  // A record still saying transferring is one this run could not update: the error decides.
  const state = job.state === 'transferring' || job.state === 'queued' ? finalStateFor(outcomeForError(e).state) : finalStateFor(job.state);
  let message: string | undefined;
  if (state === 'error' && job.state === 'error') {
    message = `${formatErrorLine(e)}; job ${job.id} stopped with an error, ${nextStepHint(job, e)}`;
  } else if (state === 'cancelled') {
    message = e instanceof CancelledError ? e.message : `job ${job.id} cancelled`;
  }
  return printFinal(out, {
    state,
    ...jobResultFields(job),
    error: { ...e.toJSON(), message: formatErrorLine(e) },
    ...(message ? { message } : {}),
  });
}
