/**
 * Runs a command action: turns any error into one clear line on stderr (and a
 * final JSON object on stdout with --json) and the documented exit code; and
 * the Ctrl-C contract shared by every transferring command.
 */
import { formatErrorLine, toBitsError, ExitCode, InterruptedError, UsageError, type BitsError } from '../errors.js';
import { redactSecrets } from '../transport/credentials.js';
import { finalStateForError } from '../jobs/outcome.js';
import { OutputSession, printFinal, type OutputOptions } from './output/final.js';

export { OutputSession, printFinal, type FinalResult, type FinalState, type OutputOptions } from './output/final.js';

export interface RunOptions {
  json?: boolean;
  quiet?: boolean;
}

/**
 * Runs a command's action with its own OutputSession (pass it to whatever
 * prints: reporter, printFinal, onInterrupt, executeJob).
 */
export async function runAction(opts: RunOptions, fn: (session: OutputSession) => Promise<number | void>): Promise<void> {
  const session = new OutputSession();
  try {
    const code = await fn(session);
    process.exitCode = code ?? ExitCode.OK;
  } catch (err) {
    const e = toBitsError(err);
    printError({ ...opts, session }, e);
    if (e.exitCode === ExitCode.INTERNAL && process.env.BITS_DEBUG) process.stderr.write(redactSecrets(`${(err as Error)?.stack ?? err}\n`));
    process.exitCode = e.exitCode;
  } finally {
    session.stopAllDisplays();
    disposeInterrupts();
  }
}

/**
 * The final line (and JSON object) for an error, naming the job and how to
 * resume it when the job survives. Does nothing if the outcome was already printed.
 */
export function printError(opts: OutputOptions & { session: OutputSession }, e: BitsError): boolean {
  if (opts.session.finalEmitted) return false;
  const job = opts.session.job;
  return printFinal(opts, {
    state: finalStateForError(e, job.jobId !== undefined),
    jobId: job.jobId,
    kind: job.kind,
    bytes: job.bytesDone,
    totalBytes: job.totalBytes,
    source: job.source,
    destination: job.destination,
    error: { ...e.toJSON(), message: formatErrorLine(e) },
  });
}

/** `--json` anywhere before a `--`: a script asked for JSON, even on a command line commander refused. */
export function wantsJson(args: readonly string[]): boolean {
  const end = args.indexOf('--');
  return (end < 0 ? args : args.slice(0, end)).includes('--json');
}

/** A command-line mistake (exit 2): one line on stderr and, under --json, the final object a script reads. */
export function printUsageError(message: string, json: boolean): void {
  printError({ json, session: new OutputSession() }, new UsageError(message));
}

// ---- Ctrl-C ----

export interface Interrupt {
  /** Aborts (reason: an InterruptedError) on the first SIGINT/SIGTERM. */
  readonly signal: AbortSignal;
  /** Stop listening (runAction also does this when the action ends). */
  dispose(): void;
}

export interface InterruptOptions {
  /** A second signal within this window exits at once; default 2000 ms. */
  forceWindowMs?: number;
  stderr?: NodeJS.WritableStream;
  /**
   * Replaces "a second signal within the window exits at once": a command that
   * gives the second Ctrl-C a meaning (cancel the job) handles it here; a third
   * signal still exits at once.
   */
  onSecond?: (signal: NodeJS.Signals) => void;
  /** What the first signal's line tells the user a second one does; default "press Ctrl-C again to quit at once". */
  secondHint?: string;
  /** The command's output session: lines go above its bars, a forced exit stops them and names its job. */
  session?: OutputSession;
}

const FORCE_WINDOW_MS = 2000;
/**
 * Signals this close together are one Ctrl-C delivered twice (the terminal to
 * the process group, or `timeout` to its child and the group), not a person
 * pressing twice: nobody presses twice within 100 ms on purpose.
 */
export const SAME_SIGNAL_MS = 100;
const live = new Set<() => void>();

/**
 * The Ctrl-C contract: the first SIGINT/SIGTERM aborts the returned signal (the
 * command then suspends the job and its last line says `bits resume <id>`); a
 * second one within 2 s exits at once with ExitCode.INTERRUPTED, because the
 * user clearly wants out even if suspending hangs on the network. Later
 * signals after the window re-arm it, with a hint.
 */
export function onInterrupt(handler?: (signal: NodeJS.Signals) => void, opts: InterruptOptions = {}): Interrupt {
  const ac = new AbortController();
  const windowMs = opts.forceWindowMs ?? FORCE_WINDOW_MS;
  const stderr = opts.stderr ?? process.stderr;
  const session = opts.session ?? new OutputSession();
  let last = 0;
  let secondCalled = false;
  /**
   * Signals that arrived together are read by the event loop in the same turn,
   * however long the first one's handling took (aborting runs every abort
   * listener synchronously): until the next turn, a signal is the same Ctrl-C.
   */
  let sameTurn = false;
  /** When the last signal's handling ended: a slow handling must not eat into the 100 ms. */
  let handledAt = 0;

  const onSignal = (sig: NodeJS.Signals) => {
    const now = Date.now();
    if (ac.signal.aborted && (sameTurn || now - Math.max(last, handledAt) < SAME_SIGNAL_MS)) return;
    sameTurn = true;
    setImmediate(() => {
      sameTurn = false;
      handledAt = Date.now();
    });
    if (!ac.signal.aborted) {
      last = now;
      // On a terminal the ^C echo leaves the cursor mid-line.
      const nl = (stderr as { isTTY?: boolean }).isTTY ? '\n' : '';
      session.logLine(`${nl}bits: ${sig === 'SIGINT' ? 'interrupted' : `got ${sig}`}; suspending (${opts.secondHint ?? 'press Ctrl-C again to quit at once'})\n`, stderr);
      ac.abort(new InterruptedError(sig === 'SIGINT' ? 'interrupted' : `interrupted by ${sig}`));
      try {
        handler?.(sig);
      } catch {
        // the abort already happened; a failing handler must not turn Ctrl-C into a crash
      }
      return;
    }
    if (opts.onSecond && !secondCalled && now - last <= windowMs) {
      secondCalled = true;
      last = now;
      try {
        opts.onSecond(sig);
      } catch {
        // as for the first handler: never turn Ctrl-C into a crash
      }
      return;
    }
    if (now - last <= windowMs || secondCalled) {
      session.stopAllDisplays();
      const id = session.job.jobId;
      stderr.write(`bits: interrupted again; exiting now${id ? ` (the job may need: bits resume ${id})` : ''}\n`);
      process.exit(ExitCode.INTERRUPTED);
    }
    last = now;
    session.logLine('bits: still suspending; press Ctrl-C again to quit at once\n', stderr);
  };

  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  const dispose = () => {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    live.delete(dispose);
  };
  live.add(dispose);
  return { signal: ac.signal, dispose };
}

function disposeInterrupts(): void {
  for (const d of [...live]) d();
}
