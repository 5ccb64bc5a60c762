/**
 * Several files in one command (src/cli/multi.ts): ONE progress line for all
 * of them, on a terminal (a bar) as in a CI log (a status line every few
 * seconds). Each job's reporter feeds its own model here after every event;
 * this keeps the sum: files done, bytes of all files, the current rate, the
 * ETA, and the current file's name with its phase (a retry countdown shows).
 * Each job's start and outcome lines go above the bar, so the scrollback
 * keeps one line per file and the bar stays at the bottom.
 */
import type { Writable } from 'node:stream';
import path from 'node:path';
import type { TransferKind } from '../../client/events.js';
import { colorsFor, type ColorStream } from '../colors.js';
import { initialProgress, phaseText, tick, type ProgressState } from './progress-model.js';
import { StatusLines, statusLine } from './render-lines.js';
import { Bars, mainLine } from './render-tty.js';

interface FileRow {
  name: string;
  total?: number;
  done: number;
  /** Ended without completing: what it did not move leaves the total. */
  failed: boolean;
  completed: boolean;
}

/**
 * The name a person knows a file by: the local file on either side; a
 * download whose name the server decides goes
 * by the URL's last path segment until then.
 */
function fileName(j: { kind: TransferKind; source: string; destination: string }): string {
  if (j.kind === 'upload') return path.basename(j.source);
  // A job names its folder (ending in the separator) until the server's name is known (src/jobs/runner.ts).
  if (j.destination !== '' && !j.destination.endsWith(path.sep)) return path.basename(j.destination);
  try {
    const last = new URL(j.source).pathname.split('/').filter(Boolean).pop();
    if (last) return decodeURIComponent(last);
  } catch {
    // not a URL: fall through to the destination
  }
  return path.basename(j.destination) || j.destination;
}

export interface CombinedOptions {
  stderr?: Writable & ColorStream & { columns?: number };
  tty?: boolean;
  statusIntervalMs: number;
}

export class CombinedProgress {
  /** The sum of the files, drawn by the ordinary bar and status-line renderings. */
  readonly state: ProgressState;
  private readonly files: FileRow[];
  private current = 0;
  private currentState: ProgressState | undefined;
  private readonly bars: Bars | undefined;
  private readonly status: StatusLines | undefined;
  private readonly stderr: Writable;

  constructor(jobs: ReadonlyArray<{ kind: TransferKind; source: string; destination: string; totalBytes?: number }>, o: CombinedOptions) {
    const now = Date.now();
    this.stderr = o.stderr ?? process.stderr;
    const stderr = o.stderr ?? process.stderr;
    const tty = o.tty ?? (stderr.isTTY === true && process.env.TERM !== 'dumb');
    this.state = initialProgress({ kind: jobs[0]?.kind }, now);
    this.state.started = true;
    this.state.samples = [{ t: now, b: 0 }];
    this.files = jobs.map((j) => ({ name: fileName(j), total: j.totalBytes, done: 0, failed: false, completed: false }));
    this.sum();
    if (tty) this.bars = new Bars(stderr, this.state, colorsFor(stderr), (t, width) => mainLine(this.state, t, colorsFor(stderr), width, this.label(), this.note(t)));
    else this.status = new StatusLines(stderr, this.state, o.statusIntervalMs, (t) => statusLine(this.state, t, `${this.label()} files`, this.note(t)));
  }

  /** `2/5`: the file being moved, of all of them. */
  private label(): string {
    return `${Math.min(this.current + 1, this.files.length)}/${this.files.length}`;
  }

  /** The current file, and what it is doing when it is not moving bytes. */
  note(now: number): string {
    const f = this.files[this.current];
    if (!f) return '';
    const ph = this.currentState ? phaseText(this.currentState, now) : '';
    return ph ? `${f.name}: ${ph}` : f.name;
  }

  private sum(): void {
    let done = 0;
    let total: number | undefined = 0;
    let ended = 0;
    for (const f of this.files) {
      done += f.done;
      if (f.failed) total = total === undefined ? undefined : total + f.done;
      else total = total === undefined || f.total === undefined ? undefined : total + f.total;
      if (f.failed || f.completed) ended++;
    }
    this.state.done = done;
    this.state.total = total;
    // Downloads learn their sizes one by one: until all are known the bar counts files.
    const cur = this.files[this.current];
    const part = cur && !cur.completed && !cur.failed && cur.total ? cur.done / cur.total : 0;
    this.state.fraction = total === undefined ? (ended + part) / this.files.length : undefined;
  }

  /** The bar (or the status lines) from now on; idempotent. */
  start(): void {
    this.bars?.start();
    this.status?.start();
  }

  /**
   * No job is moving bytes (one ended; a Ctrl-C waits out its cancel window):
   * a log gets no status lines until the next one starts. The bar stays, for
   * the lines above it.
   */
  pause(): void {
    this.status?.stop();
  }

  /** Job `i` of the list is the one running now. */
  beginJob(i: number): void {
    this.current = i;
    this.currentState = undefined;
    this.sum();
  }

  /** The running job's model after an event. */
  feed(s: ProgressState, now = Date.now()): void {
    const f = this.files[this.current];
    if (!f) return;
    this.currentState = s;
    // A download into -d DIR learns its file name from the server at its start.
    if (s.kind !== undefined && s.source !== undefined && s.destination !== undefined) f.name = fileName({ kind: s.kind, source: s.source, destination: s.destination });
    f.done = s.done;
    if (s.total !== undefined) f.total = s.total;
    if (s.completed) f.completed = true;
    this.sum();
    tick(this.state, now);
  }

  /** The running job ended; `completed` false: it failed or was stopped. */
  endJob(completed: boolean): void {
    const f = this.files[this.current];
    if (!f) return;
    if (completed) {
      f.completed = true;
      if (f.total !== undefined) f.done = f.total; // a client that sent no last progress event still moved it all
    } else f.failed = true;
    this.currentState = undefined;
    this.sum();
    tick(this.state, Date.now());
  }

  /** A full line (with its newline) above the bar, or as is in a log. */
  log(line: string): void {
    if (this.bars?.live) this.bars.log(line.replace(/^\n+/, ''));
    else this.stderr.write(line);
  }

  /** Draws the last state and leaves it on the screen. */
  stop(): void {
    this.status?.stop();
    this.bars?.stop();
  }
}
