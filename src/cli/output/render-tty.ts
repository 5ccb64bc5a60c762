/**
 * The terminal rendering of a progress model: a cli-progress bar with bytes,
 * percent, rate, ETA and phase, and one bar per segment from the progress
 * events' `segments[]` (up to MAX_SEGMENT_BARS).
 */
import type { Writable } from 'node:stream';
import cliProgress from 'cli-progress';
import type { ChalkInstance as Colors } from 'chalk';
import { formatBytes, formatDuration, formatPercent, formatRate } from '../format.js';
import { currentRate, eta, phaseText, type ProgressState, type SegmentState } from './progress-model.js';

export const MAX_SEGMENT_BARS = 16;

function barString(c: Colors, fraction: number | undefined, width: number): string {
  if (fraction === undefined) return c.dim('░'.repeat(width));
  const full = Math.max(0, Math.min(width, Math.round(fraction * width)));
  return c.cyan('█'.repeat(full)) + c.dim('░'.repeat(width - full));
}

/**
 * The same width for every bar and every redraw (a bar that shrinks when the
 * phase text grows looks like progress going backwards); the text after it
 * is cut at the terminal edge instead.
 */
export function barWidth(columns: number | undefined): number {
  const cols = typeof columns === 'number' && columns > 20 ? columns : 80;
  return Math.max(10, Math.min(40, cols - 60));
}

/** `label` and `note` replace the kind and the phase text (the several-files line names its file there). */
export function mainLine(s: ProgressState, now: number, c: Colors, width: number, label = s.kind ?? 'transfer', note = phaseText(s, now)): string {
  const r = currentRate(s, now);
  const pct = formatPercent(s.done, s.total) ?? '';
  const sizes = s.total !== undefined ? `${formatBytes(s.done)} / ${formatBytes(s.total)}` : formatBytes(s.done);
  const e = eta(s, r);
  const right = [pct.padStart(4), sizes, formatRate(r), e !== undefined ? `ETA ${formatDuration(e)}` : ''].filter(Boolean).join('  ');
  return `${c.bold(label.padEnd(8))} ${barString(c, fraction(s), width)} ${right}${note ? '  ' + c.yellow(note) : ''}`;
}

/** How full the bar is: the bytes when the total is known, else the model's estimate. */
function fraction(s: ProgressState): number | undefined {
  return s.total ? s.done / s.total : s.fraction;
}

export function segmentLine(g: SegmentState, c: Colors, width: number): string {
  // Segments are 0-based in events, counted from 1 for people.
  const label = `  #${g.index + 1}`.padEnd(8);
  const pct = formatPercent(g.done, g.total) ?? '';
  const sizes = g.total !== undefined ? `${formatBytes(g.done)} / ${formatBytes(g.total)}` : formatBytes(g.done);
  return `${label} ${barString(c, g.total ? g.done / g.total : undefined, width)} ${pct.padStart(4)}  ${sizes}`;
}

export class Bars {
  private multibar: cliProgress.MultiBar | undefined;
  private readonly segmentBars = new Set<number>();

  constructor(
    private readonly stderr: Writable & { columns?: number },
    private readonly state: ProgressState,
    private readonly c: Colors,
    /** The main line; default the transfer's own (mainLine). */
    private readonly line: (now: number, width: number) => string = (now, width) => mainLine(state, now, c, width),
  ) {}

  get live(): boolean {
    return this.multibar !== undefined;
  }

  start(): void {
    if (this.multibar) return;
    this.multibar = new cliProgress.MultiBar({
      stream: this.stderr,
      hideCursor: false, // a killed process must not leave the user's cursor hidden
      clearOnComplete: false,
      stopOnComplete: false,
      linewrap: false,
      fps: 8,
      format: () => '',
    });
    this.multibar.create(1, 0, {}, { format: () => this.line(Date.now(), barWidth(this.stderr.columns)) });
  }

  /** A bar for every segment the model knows and has none yet. */
  syncSegments(): void {
    const mb = this.multibar;
    if (!mb || this.state.segments.length > MAX_SEGMENT_BARS) return;
    for (const g of this.state.segments) {
      if (this.segmentBars.has(g.index)) continue;
      this.segmentBars.add(g.index);
      mb.create(1, 0, {}, { format: () => segmentLine(g, this.c, barWidth(this.stderr.columns)) });
    }
  }

  /** A line above the bars. */
  log(line: string): void {
    this.multibar?.log(line);
  }

  stop(): void {
    const mb = this.multibar;
    if (!mb) return;
    this.multibar = undefined;
    // One more update flushes lines queued by log(); stop() then draws the final state.
    mb.update();
    mb.stop();
  }
}
