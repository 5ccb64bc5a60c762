/**
 * Sizes and rates as people type them, one rule for the whole program (flags,
 * `bits config`, the server's config file): a byte count or a binary multiple
 * `K M G T P`, with an optional `B`/`iB` — 1K = 1KB = 1KiB = 1024, as Windows
 * and curl's --limit-rate count, so `10MB` never means something other than
 * `10M`. A fraction of a byte is refused (`1.5` alone), `1.5K` is 1536. Pure.
 */
const SIZE_RE = /^\s*(\d+(?:\.\d+)?|\.\d+)\s*([a-z]*)\s*$/i;

function unitMultiplier(unit: string): number | undefined {
  const u = unit.toLowerCase();
  if (u === '' || u === 'b') return 1;
  const letter = 'kmgtp'.indexOf(u[0]!);
  if (letter < 0) return undefined;
  const rest = u.slice(1);
  return rest === '' || rest === 'b' || rest === 'ib' ? 1024 ** (letter + 1) : undefined;
}

/** Bytes, or undefined when the text is not a size. */
export function parseSizeText(text: string): number | undefined {
  const m = SIZE_RE.exec(text);
  if (!m) return undefined;
  const mult = unitMultiplier(m[2]!);
  if (mult === undefined) return undefined;
  if (mult === 1 && m[1]!.includes('.')) return undefined;
  const v = Math.round(Number(m[1]) * mult);
  return Number.isSafeInteger(v) ? v : undefined;
}

/** Bytes per second: a size with an optional `/s` (`10M`, `500KiB/s`); `0` means unlimited. */
export function parseRateText(text: string): number | undefined {
  return parseSizeText(text.replace(/\s*\/\s*s(?:ec)?\s*$/i, ''));
}

/**
 * Sizes as people read them, for every human line at any layer (a client's info message
 * as well as a progress bar): binary units, the same words the size flags accept.
 */
const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB', 'EiB'] as const;

/** `512 B`, `48.0 KiB`, `1.2 GiB`, `100 MiB`: one decimal below 100, none above, so the width stays short. */
export function formatBytes(bytes: number): string {
  if (!Number.isFinite(bytes)) return '? B';
  const sign = bytes < 0 ? '-' : '';
  let v = Math.abs(bytes);
  if (v < 1024) return `${sign}${Math.round(v)} B`;
  let u = 0;
  while (v >= 1024 && u < UNITS.length - 1) {
    v /= 1024;
    u++;
  }
  let text = v < 99.95 ? v.toFixed(1) : Math.round(v).toString();
  // Rounding can reach the next unit (1023.97 KiB -> "1024 KiB"): say "1.0 MiB" instead.
  if (Number(text) >= 1024 && u < UNITS.length - 1) {
    u++;
    text = (v / 1024).toFixed(1);
  }
  return `${sign}${text} ${UNITS[u]}`;
}
