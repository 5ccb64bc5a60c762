/**
 * The last thing a command prints: one human line on stderr and one JSON object
 * on stdout (with --json). It is printed once per run, whoever gets there first
 * (the reporter on a 'complete' or 'error' event, the command through
 * printFinal, or runAction when an error escapes), so scripts can rely on the
 * last JSON line being the outcome, carrying job id, state, bytes and error.
 */
import type { Writable } from 'node:stream';
import type { TransferKind } from '../../client/events.js';
import type { ErrorJson } from '../../errors.js';
import { errorLine, type ColorStream } from '../colors.js';
import { formatBytes, formatDuration, formatRate } from '../format.js';
import { redactSecrets } from '../../transport/credentials.js';

/** Every string inside, with registered passwords and URL userinfo scrubbed: an error can quote what a server or a URL carried. */
function redactDeep<T>(v: T): T {
  if (typeof v === 'string') return redactSecrets(v) as T;
  if (Array.isArray(v)) return v.map(redactDeep) as T;
  if (v && typeof v === 'object') return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, redactDeep(x)])) as T;
  return v;
}

export type { FinalState } from '../../jobs/outcome.js';
/** The outcome a stored job's state is printed as. */
export { finalStateFor } from '../../jobs/outcome.js';
import type { FinalState } from '../../jobs/outcome.js';

export interface OutputOptions {
  /** One JSON object per line on stdout. */
  json?: boolean;
  /** Nothing on stderr except errors. */
  quiet?: boolean;
  /** Defaults to process.stdout. */
  stdout?: Writable;
  /** Defaults to process.stderr; its isTTY decides bars and colour. */
  stderr?: Writable & ColorStream;
  /** The command's output session (runAction makes it); without one, this call stands alone. */
  session?: OutputSession;
}

export interface FinalResult {
  state: FinalState;
  jobId?: string;
  kind?: TransferKind;
  /** Bytes transferred so far (the total when complete). */
  bytes?: number;
  totalBytes?: number;
  source?: string;
  destination?: string;
  replyFile?: string;
  sha256?: string;
  elapsedMs?: number;
  /** Bytes this run moved (a resume starts beyond 0): what the rate is computed from. */
  runBytes?: number;
  /** The error, for every state but 'complete'. */
  error?: ErrorJson;
  /** Replaces the generated human line (without the `bits: ` prefix). */
  message?: string;
}

/** The fields of a final result that a stored job supplies. */
export function jobResultFields(job: { id: string; kind: TransferKind; bytesDone: number; totalBytes?: number; source: string; destination: string }): Pick<FinalResult, 'jobId' | 'kind' | 'bytes' | 'totalBytes' | 'source' | 'destination'> {
  return { jobId: job.id, kind: job.kind, bytes: job.bytesDone, totalBytes: job.totalBytes, source: job.source, destination: job.destination };
}

/** What the running transfer has told us; runAction uses it to name the job in its last line. */
export interface JobSnapshot {
  jobId?: string;
  kind?: TransferKind;
  bytesDone?: number;
  totalBytes?: number;
  source?: string;
  destination?: string;
  startedAt?: number;
}

/**
 * What one command has shown so far: the job the running transfer named (so
 * an error escaping to runAction can name it), whether the outcome line is
 * out, and the live displays to stop before anything else is printed.
 * runAction makes one per command and passes it down; nothing is global.
 */
export class OutputSession {
  job: JobSnapshot = {};
  finalEmitted = false;
  /** Stops for live bars and timers, so an error path or a forced exit leaves a clean terminal. */
  private readonly stoppers = new Set<() => void>();
  /** While bars are drawn, lines must go above them (a direct write would be overdrawn). */
  liveLogger: ((line: string) => void) | undefined;

  /** A new transfer starts (bits resume --all runs several): forget the previous one's job and outcome. */
  beginTransfer(): void {
    this.job = {};
    this.finalEmitted = false;
  }

  updateJob(patch: JobSnapshot): void {
    Object.assign(this.job, patch);
  }

  /** Writes a full line (with its newline) to stderr, above any live progress bars. */
  logLine(line: string, stderr: NodeJS.WritableStream = process.stderr): void {
    if (this.liveLogger) this.liveLogger(line.replace(/^\n+/, '')); // the bars redraw from the line start anyway
    else stderr.write(line);
  }

  registerStopper(stop: () => void): () => void {
    this.stoppers.add(stop);
    return () => this.stoppers.delete(stop);
  }

  /** Stops every live progress display (idempotent). */
  stopAllDisplays(): void {
    for (const stop of [...this.stoppers]) {
      try {
        stop();
      } catch {
        // a display that cannot stop must not hide the real outcome
      }
    }
    this.stoppers.clear();
  }
}

export function isoNow(): string {
  return new Date().toISOString();
}

export function writeJson(stdout: Writable, obj: Record<string, unknown>): void {
  stdout.write(JSON.stringify(obj) + '\n');
}

/** The human line for a result, without the `bits: ` prefix and newline. */
export function finalHumanLine(r: FinalResult): string {
  if (r.message) return r.message;
  const id = r.jobId;
  const resume = id ? `continue with: bits resume ${id}` : '';
  const msg = r.error?.message.replace(/\s*\n\s*/g, ' ');
  const at = r.bytes !== undefined ? ` at ${formatBytes(r.bytes)}${r.totalBytes !== undefined ? ` / ${formatBytes(r.totalBytes)}` : ''}` : '';
  switch (r.state) {
    case 'complete': {
      const verb = r.kind === 'upload' ? 'uploaded' : r.kind === 'download' ? 'downloaded' : 'done:';
      let s = `${verb} ${formatBytes(r.bytes ?? 0)}`;
      const moved = r.runBytes ?? r.bytes;
      if (r.elapsedMs !== undefined && r.elapsedMs > 0) {
        s += ` in ${formatDuration(r.elapsedMs / 1000)}`;
        // After a resume the time and rate are this run's: say which bytes they are about.
        const part = moved !== undefined && r.bytes !== undefined && moved < r.bytes ? `${formatBytes(moved)} this run, ` : '';
        if (moved) s += ` (${part}${formatRate((moved * 1000) / r.elapsedMs)})`;
      }
      if (r.destination) s += ` -> ${r.destination}`;
      if (r.replyFile) s += `; reply saved to ${r.replyFile}`;
      return s;
    }
    case 'suspended':
      if (r.error?.code === 'InterruptedError') return `interrupted: ${id ? `job ${id} suspended${at}; ${resume}` : 'stopped'}`;
      return `${msg ?? 'suspended'}${id ? `; job ${id} is suspended${at}, ${resume}` : ''}`;
    case 'cancelled':
      return msg ?? (id ? `job ${id} cancelled` : 'cancelled');
    case 'error':
      return msg ?? 'failed';
  }
}

/**
 * Prints the outcome: one human line on stderr (success lines are silenced by
 * --quiet, failures never are) and, with --json, one object on stdout. Returns
 * false and prints nothing when the outcome was already printed.
 */
export function printFinal(opts: OutputOptions, outcome: FinalResult): boolean {
  const session = opts.session ?? new OutputSession();
  if (session.finalEmitted) return false;
  // Every outcome passes here (reporter, commands, runAction): the one place to scrub secrets.
  const r = redactDeep(outcome);
  session.finalEmitted = true;
  session.stopAllDisplays();
  const stdout = opts.stdout ?? process.stdout;
  const stderr = opts.stderr ?? process.stderr;
  const job = session.job;
  const jobId = r.jobId ?? job.jobId;
  const full: FinalResult = { ...r, jobId, kind: r.kind ?? job.kind, bytes: r.bytes ?? job.bytesDone, totalBytes: r.totalBytes ?? job.totalBytes };
  if (opts.json) {
    const type = r.error ? 'error' : r.state === 'complete' ? 'complete' : 'result';
    writeJson(stdout, {
      type,
      time: isoNow(),
      jobId: jobId ?? null,
      state: r.state,
      kind: full.kind,
      bytes: full.bytes ?? 0,
      totalBytes: full.totalBytes,
      source: r.source,
      destination: r.destination,
      replyFile: r.replyFile,
      sha256: r.sha256,
      elapsedMs: r.elapsedMs,
      error: r.error ?? null,
    });
  }
  const line = finalHumanLine(full);
  // Ctrl-C and a cancel asked for are what the user wanted: plain lines, not errors.
  // Above a display that outlives this job (the several-files line), else straight out.
  if (r.error && r.state !== 'cancelled' && r.error.code !== 'InterruptedError') session.logLine(errorLine(line, stderr), stderr);
  else if (r.state !== 'complete' || !opts.quiet) session.logLine(`bits: ${line}\n`, stderr);
  return true;
}
