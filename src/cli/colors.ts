/**
 * Colour decisions for human output on stderr. chalk's own detection ignores
 * NO_COLOR, so the level is decided here: NO_COLOR (any non-empty value)
 * disables, whatever else is set (no-color.org: NO_COLOR wins); then
 * FORCE_COLOR forces (0/false disables); otherwise colour only when the
 * stream is a terminal that is not TERM=dumb.
 */
import { Chalk, supportsColorStderr, type ChalkInstance, type ColorSupportLevel } from 'chalk';

export interface ColorStream {
  isTTY?: boolean;
}

export function colorLevel(stream: ColorStream = process.stderr, env: NodeJS.ProcessEnv = process.env): ColorSupportLevel {
  // no-color.org: a user who set NO_COLOR gets no colour, even when a tool or CI sets FORCE_COLOR.
  if (env.NO_COLOR !== undefined && env.NO_COLOR !== '') return 0;
  const force = env.FORCE_COLOR;
  if (force !== undefined) {
    if (force === '0' || force.toLowerCase() === 'false') return 0;
    if (force === '' || force.toLowerCase() === 'true') return 1;
    const n = Number.parseInt(force, 10);
    return (Number.isFinite(n) ? Math.max(1, Math.min(3, n)) : 1) as ColorSupportLevel;
  }
  if (stream.isTTY !== true || env.TERM === 'dumb') return 0;
  const detected = supportsColorStderr ? supportsColorStderr.level : 1;
  return (detected > 0 ? detected : 1) as ColorSupportLevel;
}

export function colorsFor(stream: ColorStream = process.stderr, env: NodeJS.ProcessEnv = process.env): ChalkInstance {
  return new Chalk({ level: colorLevel(stream, env) });
}

/** `bits: error: <line>` with a red `error` when colour is on. */
export function errorLine(message: string, stream: ColorStream = process.stderr): string {
  const c = colorsFor(stream);
  return `bits: ${c.red.bold('error')}: ${message}\n`;
}

/** `bits: warning: <line>` with a yellow `warning` when colour is on. */
export function warningLine(message: string, stream: ColorStream = process.stderr): string {
  const c = colorsFor(stream);
  return `bits: ${c.yellow('warning')}: ${message}\n`;
}
