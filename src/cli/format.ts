/**
 * Human formatting and parsing of sizes, rates and durations. Humans get binary
 * units (`1.2 GiB`, `48.3 MiB/s`, `2m 05s`); JSON output never uses these and
 * carries exact integers instead.
 */

export { formatBytes } from '../units.js';
import { formatBytes } from '../units.js';

/** Bytes per second in the same binary units: `48.3 MiB/s`. */
export function formatRate(bytesPerSecond: number): string {
  return `${formatBytes(bytesPerSecond)}/s`;
}

/** `<1s`, `3s`, `2m 05s`, `1h 02m`, `3d 04h`. Rounded to whole seconds; negative or non-finite -> `?`. */
export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return '?';
  if (seconds > 0 && seconds < 0.5) return '<1s';
  let s = Math.round(seconds);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${pad2(s % 60)}s`;
  // Round to minutes above an hour so "1h 59m 59s" does not print as "1h 59m" then jump.
  s = Math.round(s / 60) * 60;
  if (s < 86400) return `${Math.floor(s / 3600)}h ${pad2(Math.floor((s % 3600) / 60))}m`;
  const h = Math.round(s / 3600);
  return `${Math.floor(h / 24)}d ${pad2(h % 24)}h`;
}

/** A percentage for display: `45%`, never `100%` before the end. */
export function formatPercent(done: number, total: number | undefined): string | undefined {
  if (total === undefined || !(total > 0)) return undefined;
  const p = Math.floor((done / total) * 100);
  return `${Math.max(0, Math.min(done >= total ? 100 : 99, p))}%`;
}

function pad2(n: number): string {
  return n < 10 ? `0${n}` : `${n}`;
}

/** Sizes and rates as people type them: see src/units.ts (one rule for the whole program). */
export { parseSizeText as parseSize, parseRateText as parseRate } from '../units.js';
