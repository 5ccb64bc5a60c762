/**
 * In a pseudo-terminal stderr is a TTY: the reporter must draw progress bars
 * (and colour, unless NO_COLOR), where in a pipe it must not (cli.test.ts).
 */
import { beforeAll, describe, expect, test } from 'vitest';
import { ensureBuilt, ptyRunner, runBits, runBitsInPty, stripAnsi } from '../helpers/cli.js';

const runner = ptyRunner();
if (!runner) console.warn('pty tests skipped: neither util-linux `script` nor python3 can provide a pseudo-terminal here');

const DEMO = ['__demo-progress', '--steps', '12', '--step-ms', '40', '--segments', '3'];

describe.skipIf(!runner)(`in a pseudo-terminal (${runner})`, () => {
  beforeAll(() => ensureBuilt());

  test('progress bars: escape sequences, bar characters, percent, a bar per segment, the final line', async () => {
    const r = await runBitsInPty(DEMO);
    expect(r.code).toBe(0);
    expect(r.output).toMatch(/\u001b\[/); // cursor movement / line clearing
    const plain = stripAnsi(r.output);
    expect(plain).toMatch(/upload\s+█+░*\s+\d{1,3}%\s+\d+(\.\d)? MiB \/ 10\.0 MiB/);
    expect(plain).toContain('100%  10.0 MiB / 10.0 MiB');
    for (const seg of ['#1', '#2', '#3']) expect(plain).toMatch(new RegExp(`${seg}\\s+█+░*\\s+\\d{1,3}%`));
    expect(plain).toMatch(/bits: uploaded 10\.0 MiB in \S+ \(.+\/s\) -> http:\/\/127\.0\.0\.1\/demo\/demo\.bin\r?\n$/);
    // Colour is on by default on a terminal.
    expect(r.output).toMatch(/\u001b\[36m█/);
  });

  test('the same command in a pipe draws no bar', async () => {
    const r = await runBits(DEMO);
    expect(r.code).toBe(0);
    expect(r.stderr).not.toMatch(/\u001b/);
    expect(r.stderr).not.toContain('█');
  });

  test('NO_COLOR: still bars, but no colour', async () => {
    const r = await runBitsInPty(DEMO, { env: { NO_COLOR: '1' } });
    expect(r.code).toBe(0);
    expect(stripAnsi(r.output)).toContain('█');
    expect(r.output).not.toMatch(/\u001b\[3\dm/); // no foreground colour SGR
  });

  test('errors print with a red "error" on a terminal, as one line', async () => {
    const r = await runBitsInPty(['config', 'get', 'nokey']);
    expect(r.code).toBe(2);
    expect(r.output).toMatch(/^bits: \u001b\[31m\u001b\[1merror\u001b\[22m\u001b\[39m: unknown config key 'nokey'/);
    expect(r.output.trimEnd().split('\n')).toHaveLength(1);
  });

  test('--quiet on a terminal: nothing', async () => {
    const r = await runBitsInPty([...DEMO, '--quiet']);
    expect(r.code).toBe(0);
    expect(r.output).toBe('');
  });
});
