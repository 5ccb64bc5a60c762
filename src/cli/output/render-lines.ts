/**
 * The CI-log rendering of a progress model (stderr is not a terminal): no
 * escape sequences, a start line, then one status line every few seconds.
 */
import { formatBytes, formatDuration, formatPercent, formatRate } from '../format.js';
import { currentRate, eta, phaseText, tick, type ProgressState } from './progress-model.js';

/** `bits: upload 33.3 MiB / 100 MiB (33%) 10.0 MiB/s ETA 7s, retrying in 3s (attempt 1)` */
export function statusLine(s: ProgressState, now: number, label = s.kind ?? 'transfer', note = phaseText(s, now)): string {
  const r = currentRate(s, now);
  let line = `bits: ${label} ${formatBytes(s.done)}`;
  if (s.total !== undefined) line += ` / ${formatBytes(s.total)} (${formatPercent(s.done, s.total)})`;
  line += ` ${formatRate(r)}`;
  const e = eta(s, r);
  if (e !== undefined) line += ` ETA ${formatDuration(e)}`;
  if (note) line += `, ${note}`;
  return line + '\n';
}

/** `bits: upload big.bin -> http://… (100 MiB, resuming at 33.3 MiB) job k3x9qa` */
export function startLine(s: ProgressState, resumedAt: number | undefined): string {
  const size = s.total !== undefined ? formatBytes(s.total) : 'size unknown';
  const resumed = resumedAt ? `, resuming at ${formatBytes(resumedAt)}` : '';
  return `bits: ${s.kind} ${s.source} -> ${s.destination} (${size}${resumed})${s.jobId ? ` job ${s.jobId}` : ''}\n`;
}

export class StatusLines {
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly stderr: NodeJS.WritableStream,
    private readonly state: ProgressState,
    private readonly intervalMs: number,
    /** The line; default the transfer's own (statusLine). */
    private readonly line: (now: number) => string = (now) => statusLine(state, now),
  ) {}

  start(): void {
    if (this.timer) return;
    this.timer = setInterval(() => {
      const now = Date.now();
      tick(this.state, now);
      this.stderr.write(this.line(now));
    }, this.intervalMs);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }
}
