/**
 * Presentation of transfer events, three audiences:
 * - a person at a terminal (stderr is a TTY): cli-progress bars with bytes,
 *   percent, rate, ETA and the current phase, one extra bar per segment;
 * - a CI log (stderr is not a TTY): no escape sequences, one status line every
 *   few seconds, and retries/warnings as they happen;
 * - a script (--json): one JSON object per line on stdout, progress at most once
 *   a second plus a final one, exact integers.
 * --quiet silences the first two, except errors.
 */
import type { Writable } from 'node:stream';
import cliProgress from 'cli-progress';
import type { TransferEvent, TransferKind, TransferListener, TransferPhase } from '../../client/events.js';
import { colorsFor, warningLine, type ColorStream } from '../colors.js';
import { formatBytes, formatDuration, formatPercent, formatRate } from '../format.js';
import { formatErrorLine, toBitsError } from '../../errors.js';
import { finalStateForError } from '../../jobs/outcome.js';
import {
  isoNow,
  printFinal,
  registerStopper,
  resetSession,
  setLiveLogger,
  updateJob,
  writeJson,
} from './final.js';

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
}

export interface Reporter {
  listener: TransferListener;
  /** Stop timers and bars and flush the last JSON progress; call before printing the final line or exiting. Idempotent. */
  finish(): void;
  /** The transfer ended with `err`: prints the outcome line, its state from the one outcome rule (src/jobs/outcome.ts). */
  fail(err: unknown): void;
}

const PHASE_TEXT: Record<TransferPhase, string> = {
  connecting: 'connecting',
  'creating-session': 'creating session',
  pinging: 'pinging server',
  transferring: '',
  resyncing: 'resyncing',
  retrying: 'retrying',
  'waiting-host-fallback': 'waiting for host-id fallback',
  closing: 'closing session',
  'getting-reply': 'getting reply',
  verifying: 'verifying',
  suspended: 'suspended',
  cancelling: 'cancelling',
};

/** Phases worth a line of their own in a CI log; the others show up in the next status line. */
const LOGGED_PHASES = new Set<TransferPhase>(['resyncing', 'waiting-host-fallback', 'verifying', 'cancelling']);

const RATE_WINDOW_MS = 5000;
const MAX_SEGMENT_BARS = 16;

interface Segment {
  done: number;
  total?: number;
  bar?: cliProgress.SingleBar;
}

function statusIntervalFromEnv(): number {
  const v = Number(process.env.BITS_STATUS_INTERVAL_MS);
  return Number.isFinite(v) && v > 0 ? v : 5000;
}

export function createReporter(opts: ReporterOptions = {}): Reporter {
  resetSession();
  const stdout = opts.stdout ?? process.stdout;
  const stderr = opts.stderr ?? process.stderr;
  const human = !opts.quiet;
  const tty = opts.tty ?? (stderr.isTTY === true && process.env.TERM !== 'dumb');
  const statusIntervalMs = opts.statusIntervalMs ?? statusIntervalFromEnv();
  const jsonGapMs = opts.jsonProgressIntervalMs ?? 1000;
  const c = colorsFor(stderr);

  let kind: TransferKind | undefined = opts.kind;
  let jobId: string | undefined = opts.jobId;
  let source: string | undefined;
  let destination: string | undefined;
  let total: number | undefined;
  let done = 0;
  let started = false;
  let startedAt = Date.now();
  let phase: TransferPhase | undefined;
  let phaseDetail: string | undefined;
  let retryUntil: number | undefined;
  let retryAttempt: number | undefined;
  let finished = false;
  const segments = new Map<number, Segment>();
  // Samples of (time, bytes) over the last few seconds: the rate people care about is the current one.
  let samples: Array<{ t: number; b: number }> = [];

  updateJob({ jobId, kind });

  // ---- rate, ETA, phase ----
  function sample(now: number): void {
    const last = samples[samples.length - 1];
    if (last && done < last.b) samples = []; // resync moved us back: old samples would lie
    samples.push({ t: now, b: done });
    while (samples.length > 2 && now - samples[0]!.t > RATE_WINDOW_MS) samples.shift();
  }

  function rate(now = Date.now()): number {
    if (samples.length < 2) return 0;
    const first = samples[0]!;
    const last = samples[samples.length - 1]!;
    // A stall shows as a falling rate rather than the last good value.
    const dt = Math.max(now, last.t) - first.t;
    return dt >= 200 ? ((last.b - first.b) * 1000) / dt : 0;
  }

  function eta(r: number): number | undefined {
    if (total === undefined || r <= 0 || done >= total) return undefined;
    return (total - done) / r;
  }

  function phaseText(now = Date.now()): string {
    if (retryUntil !== undefined) {
      const left = Math.max(0, Math.ceil((retryUntil - now) / 1000));
      return `retrying in ${left}s${retryAttempt !== undefined ? ` (attempt ${retryAttempt})` : ''}`;
    }
    if (!phase) return '';
    const t = PHASE_TEXT[phase];
    return phaseDetail ? (t ? `${t}: ${phaseDetail}` : phaseDetail) : t;
  }

  // ---- JSON ----
  let lastJsonProgressAt = 0;
  let jsonProgressPending = false;
  let lastJsonBytes: number | undefined;
  let jsonTimer: NodeJS.Timeout | undefined;

  function json(type: string, fields: Record<string, unknown>): void {
    if (!opts.json) return;
    writeJson(stdout, { type, time: isoNow(), ...(jobId !== undefined ? { jobId } : {}), ...fields });
  }

  function emitJsonProgress(): void {
    jsonProgressPending = false;
    if (jsonTimer) clearTimeout(jsonTimer);
    jsonTimer = undefined;
    lastJsonProgressAt = Date.now();
    lastJsonBytes = done;
    const r = Math.round(rate());
    const fields: Record<string, unknown> = { bytesDone: done, totalBytes: total, bytesPerSecond: r };
    if (segments.size > 0) {
      fields.segments = [...segments.entries()].map(([index, s]) => ({ index, bytesDone: s.done, totalBytes: s.total }));
    }
    json('progress', fields);
  }

  function jsonProgress(): void {
    if (!opts.json) return;
    const now = Date.now();
    if (now - lastJsonProgressAt >= jsonGapMs) {
      emitJsonProgress();
      return;
    }
    jsonProgressPending = true;
    // Trailing emit, so a pause after a burst still reports where we are.
    jsonTimer ??= setTimeout(() => {
      jsonTimer = undefined;
      if (jsonProgressPending && !finished) emitJsonProgress();
    }, lastJsonProgressAt + jsonGapMs - now).unref();
  }

  /** The final progress object: only if the last one sent is not already the final count. */
  function flushJsonProgress(): void {
    if (!opts.json) return;
    if (jsonProgressPending || (lastJsonBytes ?? 0) !== done) emitJsonProgress();
    if (jsonTimer) clearTimeout(jsonTimer);
    jsonTimer = undefined;
  }

  // ---- terminal bars ----
  let multibar: cliProgress.MultiBar | undefined;

  function barString(fraction: number | undefined, width: number): string {
    if (fraction === undefined) return c.dim('░'.repeat(width));
    const full = Math.max(0, Math.min(width, Math.round(fraction * width)));
    return c.cyan('█'.repeat(full)) + c.dim('░'.repeat(width - full));
  }

  function columns(): number {
    const n = stderr.columns;
    return typeof n === 'number' && n > 20 ? n : 80;
  }

  /**
   * The same width for every bar and every redraw (a bar that shrinks when the
   * phase text grows looks like progress going backwards); the text after it
   * is cut at the terminal edge instead.
   */
  function barWidth(): number {
    return Math.max(10, Math.min(40, columns() - 60));
  }

  function mainLine(): string {
    const now = Date.now();
    const r = rate(now);
    const pct = formatPercent(done, total) ?? '';
    const sizes = total !== undefined ? `${formatBytes(done)} / ${formatBytes(total)}` : formatBytes(done);
    const e = eta(r);
    const right = [pct.padStart(4), sizes, formatRate(r), e !== undefined ? `ETA ${formatDuration(e)}` : ''].filter(Boolean).join('  ');
    const ph = phaseText(now);
    const label = (kind ?? 'transfer').padEnd(8);
    const width = barWidth();
    return `${c.bold(label)} ${barString(total ? done / total : undefined, width)} ${right}${ph ? '  ' + c.yellow(ph) : ''}`;
  }

  function segmentLine(index: number): string {
    const s = segments.get(index);
    if (!s) return '';
    // Segments are 0-based in events, counted from 1 for people.
    const label = `  #${index + 1}`.padEnd(8);
    const pct = formatPercent(s.done, s.total) ?? '';
    const sizes = s.total !== undefined ? `${formatBytes(s.done)} / ${formatBytes(s.total)}` : formatBytes(s.done);
    const right = `${pct.padStart(4)}  ${sizes}`;
    const width = barWidth();
    return `${label} ${barString(s.total ? s.done / s.total : undefined, width)} ${right}`;
  }

  function ensureBars(): void {
    if (!tty || !human || multibar || finished) return;
    multibar = new cliProgress.MultiBar({
      stream: stderr,
      hideCursor: false, // a killed process must not leave the user's cursor hidden
      clearOnComplete: false,
      stopOnComplete: false,
      linewrap: false,
      fps: 8,
      format: () => '',
    });
    multibar.create(1, 0, {}, { format: () => mainLine() });
    setLiveLogger((line) => multibar?.log(line));
  }

  function ensureSegmentBar(index: number, s: Segment): void {
    if (!multibar || s.bar || segments.size > MAX_SEGMENT_BARS) return;
    s.bar = multibar.create(1, 0, {}, { format: () => segmentLine(index) });
  }

  /** Put a line above the bars (or just write it when there are none). */
  function log(line: string): void {
    if (!human) return;
    if (multibar) multibar.log(line);
    else stderr.write(line);
  }

  function stopBars(): void {
    if (!multibar) return;
    const mb = multibar;
    multibar = undefined;
    setLiveLogger(undefined);
    // One more update flushes lines queued by log(); stop() then draws the final state.
    mb.update();
    mb.stop();
  }

  // ---- CI status lines ----
  let statusTimer: NodeJS.Timeout | undefined;

  function statusLine(): string {
    const r = rate();
    let s = `bits: ${kind ?? 'transfer'} ${formatBytes(done)}`;
    if (total !== undefined) s += ` / ${formatBytes(total)} (${formatPercent(done, total)})`;
    s += ` ${formatRate(r)}`;
    const e = eta(r);
    if (e !== undefined) s += ` ETA ${formatDuration(e)}`;
    const ph = phaseText();
    if (ph) s += `, ${ph}`;
    return s + '\n';
  }

  function startStatus(): void {
    if (tty || !human || statusTimer || finished) return;
    statusTimer = setInterval(() => {
      if (!finished) {
        sample(Date.now());
        stderr.write(statusLine());
      }
    }, statusIntervalMs);
    statusTimer.unref();
  }

  // ---- lifecycle ----
  const unregister = registerStopper(() => finish());

  function finish(): void {
    if (finished) return;
    finished = true;
    unregister();
    if (statusTimer) clearInterval(statusTimer);
    statusTimer = undefined;
    flushJsonProgress();
    stopBars();
  }

  function begin(): void {
    if (started) return;
    started = true;
    ensureBars();
    startStatus();
  }

  const listener: TransferListener = (e: TransferEvent) => {
    if (finished && e.type !== 'complete' && e.type !== 'error') return;
    const now = Date.now();
    switch (e.type) {
      case 'start': {
        kind = e.kind;
        if (e.jobId !== undefined) jobId = e.jobId;
        source = e.source;
        destination = e.destination;
        total = e.totalBytes;
        done = e.resumedAt ?? 0;
        startedAt = now;
        samples = [{ t: now, b: done }];
        updateJob({ jobId, kind, source, destination, totalBytes: total, bytesDone: done, startedAt });
        json('start', { kind, source, destination, totalBytes: total, resumedAt: e.resumedAt });
        if (human && !tty) {
          const size = total !== undefined ? formatBytes(total) : 'size unknown';
          const resumed = e.resumedAt ? `, resuming at ${formatBytes(e.resumedAt)}` : '';
          stderr.write(`bits: ${kind} ${source} -> ${destination} (${size}${resumed})${jobId ? ` job ${jobId}` : ''}\n`);
        }
        begin();
        break;
      }
      case 'phase': {
        phase = e.phase;
        phaseDetail = e.detail;
        if (e.phase !== 'retrying') retryUntil = undefined;
        json('phase', { phase: e.phase, detail: e.detail });
        if (human && !tty && LOGGED_PHASES.has(e.phase)) stderr.write(`bits: ${phaseText(now)}\n`);
        begin();
        break;
      }
      case 'progress': {
        if (e.totalBytes !== undefined) total = e.totalBytes;
        done = e.bytesDone;
        for (const seg of e.segments ?? []) {
          let s = segments.get(seg.index);
          if (!s) segments.set(seg.index, (s = { done: 0 }));
          s.done = seg.bytesDone;
          s.total = seg.totalBytes;
          begin();
          ensureSegmentBar(seg.index, s);
        }
        // Bytes moving again after the countdown means the retry is over.
        if (retryUntil !== undefined && now >= retryUntil) {
          retryUntil = undefined;
          if (phase === 'retrying') phase = 'transferring';
        }
        sample(now);
        updateJob({ bytesDone: done, totalBytes: total });
        jsonProgress();
        begin();
        break;
      }
      case 'retry': {
        retryUntil = now + e.delayMs;
        retryAttempt = e.attempt;
        phase = 'retrying';
        phaseDetail = undefined;
        json('retry', { attempt: e.attempt, delayMs: e.delayMs, reason: e.reason });
        const line = `bits: retrying in ${formatDuration(Math.ceil(e.delayMs / 1000))} (attempt ${e.attempt}): ${e.reason}\n`;
        if (tty) log(line);
        else if (human) stderr.write(line);
        break;
      }
      case 'resync': {
        done = e.to;
        sample(now);
        updateJob({ bytesDone: done });
        json('resync', { from: e.from, to: e.to });
        const line = `bits: resynced with the server: continuing at ${formatBytes(e.to)} (was ${formatBytes(e.from)})\n`;
        if (tty) log(line);
        else if (human) stderr.write(line);
        break;
      }
      case 'info': {
        json('info', { message: e.message });
        if (tty) log(`bits: ${e.message}\n`);
        else if (human) stderr.write(`bits: ${e.message}\n`);
        break;
      }
      case 'warning': {
        json('warning', { message: e.message });
        // Warnings print even with --quiet? No: --quiet promises errors only; --json still carries them.
        if (tty) log(warningLine(e.message, stderr));
        else if (human) stderr.write(warningLine(e.message, stderr));
        break;
      }
      case 'complete': {
        done = e.bytes;
        if (total === undefined) total = e.bytes;
        sample(now);
        updateJob({ bytesDone: done, totalBytes: total });
        finish();
        printFinal(
          { json: opts.json, quiet: opts.quiet, stdout, stderr },
          {
            state: 'complete',
            jobId,
            kind,
            bytes: e.bytes,
            totalBytes: total,
            source,
            destination: e.destination,
            replyFile: e.replyFile,
            sha256: e.sha256,
            elapsedMs: now - startedAt,
          },
        );
        break;
      }
      case 'error': {
        // The outcome line is printed once the error reaches the command (runAction / foreground),
        // whose state comes from the one outcome rule (src/jobs/outcome.ts).
        finish();
        break;
      }
    }
  };

  return {
    listener,
    finish,
    fail(err: unknown) {
      finish();
      const e = toBitsError(err);
      printFinal(
        { json: opts.json, quiet: opts.quiet, stdout, stderr },
        { state: finalStateForError(e, jobId !== undefined), jobId, kind, bytes: done, totalBytes: total, source, destination, error: { ...e.toJSON(), message: formatErrorLine(e) } },
      );
    },
  };
}
