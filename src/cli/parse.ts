/**
 * Parsers for command-line values shared by commands. They throw UsageError
 * with a one-line message naming the option, so every command reports bad
 * values the same way (exit 2).
 */
import { UsageError } from '../errors.js';
import { parseSizeText } from '../units.js';

/**
 * A byte count as people type it: `1048576`, `10M`, `2G`, `512KiB`, `1.5G`.
 * Multiples are binary (1K = 1KB = 1KiB = 1024), as Windows and IIS count them,
 * so `10MB` never silently means something different from `10M`. Undefined
 * for anything else (negative, empty, unknown unit, not a whole byte count
 * without a unit, beyond 2^53).
 */
export function parseSizeOrUndefined(value: string): number | undefined {
  return parseSizeText(value);
}

/** parseSizeOrUndefined, throwing UsageError(`--name: …`) for bad input. */
export function parseSize(value: string, name = 'size'): number {
  const n = parseSizeOrUndefined(value);
  if (n === undefined) {
    throw new UsageError(`${name}: invalid size ${JSON.stringify(value)} (use bytes or a binary multiple like 512K, 10M, 2G, 1T)`);
  }
  return n;
}

/** A whole number within [min, max]. */
export function parseInteger(value: string | number, name: string, min: number, max: number): number {
  const s = String(value).trim();
  const n = /^[+-]?\d+$/.test(s) ? Number(s) : NaN;
  if (!Number.isSafeInteger(n) || n < min || n > max) {
    throw new UsageError(`${name}: expected a whole number from ${min} to ${max}, got ${JSON.stringify(String(value))}`);
  }
  return n;
}

const DURATION_UNITS: Record<string, number> = { '': 1, s: 1, m: 60, h: 3600, d: 86400 };

/**
 * A duration in whole seconds: `3600`, `90s`, `30m`, `12h`, `14d`.
 * With `allowZero` false (the default) zero is refused.
 */
export function parseDurationSeconds(value: string | number, name: string, opts: { allowZero?: boolean } = {}): number {
  const m = /^\s*(\d+)\s*([smhd]?)\s*$/i.exec(String(value));
  const n = m ? Number(m[1]) * DURATION_UNITS[m[2]!.toLowerCase()]! : NaN;
  if (!Number.isSafeInteger(n) || (n === 0 && !opts.allowZero)) {
    throw new UsageError(
      `${name}: expected a ${opts.allowZero ? '' : 'positive '}number of seconds (or with s/m/h/d, e.g. 90s, 30m, 14d), got ${JSON.stringify(String(value))}`,
    );
  }
  return n;
}
