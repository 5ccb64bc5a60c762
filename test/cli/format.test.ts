import { describe, expect, test } from 'vitest';
import { formatBytes, formatDuration, formatPercent, formatRate, parseRate, parseSize } from '../../src/cli/format.js';
import { colorLevel } from '../../src/cli/colors.js';

describe('formatBytes', () => {
  test.each([
    [0, '0 B'],
    [512, '512 B'],
    [1023, '1023 B'],
    [1024, '1.0 KiB'],
    [48 * 1024, '48.0 KiB'],
    [1536, '1.5 KiB'],
    [100 * 1024 ** 2, '100 MiB'],
    [45.2 * 1024 ** 2, '45.2 MiB'],
    [1.2 * 1024 ** 3, '1.2 GiB'],
    [1024 ** 2 - 1, '1.0 MiB'], // 1023.999 KiB rounds up to the next unit, not "1024 KiB"
    [5 * 1024 ** 4, '5.0 TiB'],
  ])('%d -> %s', (n, s) => {
    expect(formatBytes(n)).toBe(s);
  });
});

test('formatRate uses the same binary units per second', () => {
  expect(formatRate(48.3 * 1024 ** 2)).toBe('48.3 MiB/s');
  expect(formatRate(0)).toBe('0 B/s');
});

describe('formatDuration', () => {
  test.each([
    [0, '0s'],
    [0.2, '<1s'],
    [3, '3s'],
    [59.4, '59s'],
    [125, '2m 05s'],
    [3599, '59m 59s'],
    [3720, '1h 02m'],
    [86400 + 4 * 3600, '1d 04h'],
    [-1, '?'],
    [Infinity, '?'],
  ])('%d s -> %s', (n, s) => {
    expect(formatDuration(n)).toBe(s);
  });
});

test('formatPercent never shows 100% before the end', () => {
  expect(formatPercent(999, 1000)).toBe('99%');
  expect(formatPercent(1000, 1000)).toBe('100%');
  expect(formatPercent(450, 1000)).toBe('45%');
  expect(formatPercent(5, undefined)).toBeUndefined();
  expect(formatPercent(0, 0)).toBeUndefined();
});

describe('parseSize / parseRate', () => {
  test.each([
    ['1048576', 1048576],
    ['512k', 512 * 1024],
    ['16M', 16 * 1024 ** 2],
    ['16MiB', 16 * 1024 ** 2],
    ['16MB', 16 * 1024 ** 2], // binary, like src/cli/parse.ts
    ['1.5G', 1.5 * 1024 ** 3],
    [' 2 g ', 2 * 1024 ** 3],
  ])('%s -> %d', (t, n) => {
    expect(parseSize(t)).toBe(n);
  });
  test.each(['', 'abc', '-1', '1.5', '10X', '10MiBs', '1e3'])('%j is refused', (t) => {
    expect(parseSize(t)).toBeUndefined();
  });
  test('rates accept /s and 0', () => {
    expect(parseRate('500KiB/s')).toBe(500 * 1024);
    expect(parseRate('10M')).toBe(10 * 1024 ** 2);
    expect(parseRate('0')).toBe(0);
    expect(parseRate('fast')).toBeUndefined();
  });
});

describe('colorLevel', () => {
  const tty = { isTTY: true };
  const pipe = { isTTY: false };
  test('no colour in a pipe, colour on a terminal', () => {
    expect(colorLevel(pipe, {})).toBe(0);
    expect(colorLevel(tty, { TERM: 'xterm' })).toBeGreaterThan(0);
  });
  test('NO_COLOR with any non-empty value disables', () => {
    expect(colorLevel(tty, { NO_COLOR: '1', TERM: 'xterm' })).toBe(0);
    expect(colorLevel(tty, { NO_COLOR: '0', TERM: 'xterm' })).toBe(0);
  });
  test('FORCE_COLOR forces colour even in a pipe; 0 and false disable', () => {
    expect(colorLevel(pipe, { FORCE_COLOR: '1' })).toBe(1);
    expect(colorLevel(pipe, { FORCE_COLOR: '3' })).toBe(3);
    expect(colorLevel(tty, { FORCE_COLOR: '0', TERM: 'xterm' })).toBe(0);
    expect(colorLevel(tty, { FORCE_COLOR: 'false', TERM: 'xterm' })).toBe(0);
  });
  test('NO_COLOR wins over FORCE_COLOR (no-color.org)', () => {
    expect(colorLevel(pipe, { NO_COLOR: '1', FORCE_COLOR: '3' })).toBe(0);
    expect(colorLevel(tty, { NO_COLOR: '1', FORCE_COLOR: '1', TERM: 'xterm' })).toBe(0);
    // An empty NO_COLOR is not set: FORCE_COLOR still applies.
    expect(colorLevel(pipe, { NO_COLOR: '', FORCE_COLOR: '2' })).toBe(2);
  });
  test('TERM=dumb terminals get no colour', () => {
    expect(colorLevel(tty, { TERM: 'dumb' })).toBe(0);
  });
});
