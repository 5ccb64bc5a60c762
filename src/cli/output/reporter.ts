/**
 * Presentation of transfer events: each event updates the pure progress model
 * (progress-model.ts), and the renderings for the audience draw from it:
 * - a person at a terminal (stderr is a TTY): bars (render-tty.ts);
 * - a CI log (stderr is not a TTY): status lines (render-lines.ts), retries
 *   and warnings as they happen;
 * - a script (--json): one JSON object per line on stdout (render-json.ts).
 * --quiet silences the first two, except errors. What was shown lives in the
 * command's OutputSession, passed in: nothing here is global.
 */
import type { Writable } from 'node:stream';
import type { TransferEvent, TransferKind, TransferListener, TransferPhase } from '../../client/events.js';
import { formatErrorLine, toBitsError } from '../../errors.js';
import { finalStateForError } from '../../jobs/outcome.js';
import { colorsFor, warningLine, type ColorStream } from '../colors.js';
import { formatBytes, formatDuration } from '../format.js';
import { OutputSession, printFinal } from './final.js';
import { applyEvent, bytesThisRun, initialProgress, phaseText, type ProgressState } from './progress-model.js';
import { JsonRenderer } from './render-json.js';
import { StatusLines, startLine } from './render-lines.js';
import { Bars } from './render-tty.js';
import type { CombinedProgress } from './combined.js';

export interface ReporterOptions {
  /** One JSON object per line on stdout. */
  json?: boolean;
  /** No progress or status output on stderr (errors still print). */
  quiet?: boolean;
  /** Where JSON goes; default process.stdout. */
  stdout?: Writable;
  /** Where humans look; default process.stderr. Its isTTY picks bars vs status lines. */
  stderr?: Writable & ColorStream & { columns?: number };
  /** Override the TTY decision (default: stderr.isTTY and TERM is not dumb). */
  tty?: boolean;
  /** Non-TTY status line period; default env BITS_STATUS_INTERVAL_MS or 5000. */
  statusIntervalMs?: number;
  /** Minimum gap between JSON progress objects; default 1000. */
  jsonProgressIntervalMs?: number;
  /** Known before the 'start' event (e.g. from the job store). */
  jobId?: string;
  kind?: TransferKind;
  /** The command's output session; default a new one. */
  session?: OutputSession;
  /** Several files in one command: this job feeds the one combined line instead of drawing its own. */
  combined?: CombinedProgress;
}

export interface Reporter {
  listener: TransferListener;
  /** The model the renderings draw (read-only for callers). */
  readonly state: Readonly<ProgressState>;
  /** Stop timers and bars and flush the last JSON progress; call before printing the final line or exiting. Idempotent. */
  finish(): void;
  /** The transfer ended with `err`: prints the outcome line, its state from the one outcome rule (src/jobs/outcome.ts). */
  fail(err: unknown): void;
}

/** Phases worth a line of their own in a CI log; the others show up in the next status line. */
const LOGGED_PHASES = new Set<TransferPhase>(['waiting-host-fallback', 'verifying', 'cancelling']);

/** How long a phase before the 'start' event (connecting, creating session) waits before bars are drawn. */
const BARS_DELAY_MS = 1000;

export function statusIntervalFromEnv(): number {
  const v = Number(process.env.BITS_STATUS_INTERVAL_MS);
  return Number.isFinite(v) && v > 0 ? v : 5000;
}

export function createReporter(opts: ReporterOptions = {}): Reporter {
  const session = opts.session ?? new OutputSession();
  session.beginTransfer();
  const stdout = opts.stdout ?? process.stdout;
  const stderr = opts.stderr ?? process.stderr;
  const human = !opts.quiet;
  const tty = opts.tty ?? (stderr.isTTY === true && process.env.TERM !== 'dumb');
  const state = initialProgress({ kind: opts.kind, jobId: opts.jobId }, Date.now());
  const json = opts.json ? new JsonRenderer(stdout, state, opts.jsonProgressIntervalMs ?? 1000) : undefined;
  const combined = human ? opts.combined : undefined;
  const bars = tty && human && !combined ? new Bars(stderr, state, colorsFor(stderr)) : undefined;
  const status = !tty && human && !combined ? new StatusLines(stderr, state, opts.statusIntervalMs ?? statusIntervalFromEnv()) : undefined;
  const out = { json: opts.json, quiet: opts.quiet, stdout, stderr, session };
  let finished = false;
  let begun = false;

  session.updateJob({ jobId: state.jobId, kind: state.kind });

  /** A human line: above the bars on a terminal, as is in a log, nowhere with --quiet. */
  function say(line: string): void {
    if (!human) return;
    if (combined) combined.log(line);
    else if (bars?.live) bars.log(line);
    else stderr.write(line);
  }

  /** A phase before the transfer starts shows the bars only if it lasts: a quick 404 must not leave an empty 0 % bar. */
  let beginTimer: NodeJS.Timeout | undefined;
  function beginSoon(): void {
    if (begun || finished || beginTimer) return;
    if (!bars) return begin();
    beginTimer = setTimeout(begin, BARS_DELAY_MS);
    beginTimer.unref();
  }

  function begin(): void {
    if (beginTimer) clearTimeout(beginTimer);
    beginTimer = undefined;
    if (begun || finished) return;
    begun = true;
    if (bars) {
      bars.start();
      session.liveLogger = (line) => bars.log(line);
    }
    status?.start();
    if (combined) {
      combined.start();
      // The outcome lines of this job go above the combined bar, which outlives it.
      session.liveLogger = (line) => combined.log(line);
    }
  }

  const unregister = session.registerStopper(() => finish());

  function finish(): void {
    if (finished) return;
    finished = true;
    if (beginTimer) clearTimeout(beginTimer);
    unregister();
    status?.stop();
    combined?.pause();
    json?.finish();
    if (bars?.live) {
      session.liveLogger = undefined;
      bars.stop();
    }
  }

  const listener: TransferListener = (e: TransferEvent) => {
    if (finished && e.type !== 'complete') return;
    const now = Date.now();
    applyEvent(state, e, now);
    combined?.feed(state, now);
    switch (e.type) {
      case 'start': {
        session.updateJob({ jobId: state.jobId, kind: state.kind, source: state.source, destination: state.destination, totalBytes: state.total, bytesDone: state.done, startedAt: now });
        json?.write('start', { kind: state.kind, source: state.source, destination: state.destination, totalBytes: state.total, resumedAt: e.resumedAt });
        // The job id and destination, on a terminal as in a log: the line to find the job by later.
        say(startLine(state, e.resumedAt));
        begin();
        break;
      }
      case 'phase':
        json?.write('phase', { phase: e.phase, detail: e.detail });
        if (status && LOGGED_PHASES.has(e.phase)) stderr.write(`bits: ${phaseText(state, now)}\n`);
        if (state.kind !== undefined && state.source !== undefined) begin();
        else beginSoon();
        break;
      case 'progress':
        session.updateJob({ bytesDone: state.done, totalBytes: state.total });
        begin();
        bars?.syncSegments();
        json?.progress();
        break;
      case 'retry':
        json?.write('retry', { attempt: e.attempt, delayMs: e.delayMs, reason: e.reason });
        say(`bits: retrying in ${formatDuration(Math.ceil(e.delayMs / 1000))} (attempt ${e.attempt}): ${e.reason}\n`);
        break;
      case 'resync':
        session.updateJob({ bytesDone: state.done });
        json?.write('resync', { from: e.from, to: e.to });
        say(`bits: resynced with the server: continuing at ${formatBytes(e.to)} (was ${formatBytes(e.from)})\n`);
        break;
      case 'info':
        json?.write('info', { message: e.message });
        say(`bits: ${e.message}\n`);
        break;
      case 'warning':
        // --quiet promises errors only; --json still carries warnings.
        json?.write('warning', { message: e.message });
        say(warningLine(e.message, stderr));
        break;
      case 'complete':
        session.updateJob({ bytesDone: state.done, totalBytes: state.total });
        finish();
        printFinal(out, {
          state: 'complete',
          jobId: state.jobId,
          kind: state.kind,
          bytes: e.bytes,
          totalBytes: state.total,
          source: state.source,
          destination: e.destination,
          replyFile: e.replyFile,
          sha256: e.sha256,
          elapsedMs: now - state.startedAt,
          runBytes: bytesThisRun(state),
        });
        break;
      case 'error':
        // The outcome line is printed once the error reaches the command (runAction, the foreground),
        // whose state comes from the one outcome rule.
        finish();
        break;
    }
  };

  return {
    listener,
    state,
    finish,
    fail(err: unknown) {
      finish();
      const e = toBitsError(err);
      printFinal(out, {
        state: finalStateForError(e, state.jobId !== undefined),
        jobId: state.jobId,
        kind: state.kind,
        bytes: state.done,
        totalBytes: state.total,
        source: state.source,
        destination: state.destination,
        error: { ...e.toJSON(), message: formatErrorLine(e) },
      });
    },
  };
}
