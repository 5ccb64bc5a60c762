/**
 * The built executable, as scripts run it: stdout/stderr are pipes (not a TTY).
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { ROOT, ensureBuilt, runBits, startBits } from '../helpers/cli.js';

let home: string;

beforeAll(() => {
  ensureBuilt();
  home = mkdtempSync(path.join(os.tmpdir(), 'bits-cli-'));
});

afterAll(() => {
  rmSync(home, { recursive: true, force: true });
});

const ESC = /\u001b/;

/** Exactly one line on stderr, nothing on stdout, exit 2. */
function expectUsageError(r: { code: number | null; stdout: string; stderr: string }, re: RegExp) {
  expect(r.code).toBe(2);
  expect(r.stdout).toBe('');
  expect(r.stderr.endsWith('\n')).toBe(true);
  expect(r.stderr.trimEnd().split('\n')).toHaveLength(1);
  expect(r.stderr).toMatch(re);
}

describe('top level', () => {
  test('--help: description, commands, exit codes, --json, examples; exit 0', async () => {
    const r = await runBits(['--help']);
    expect(r.code).toBe(0);
    expect(r.stderr).toBe('');
    const h = r.stdout;
    expect(h).toMatch(/^Usage: bits \[options\] \[command\]/);
    expect(h).toContain('BITS');
    for (const c of ['upload', 'download', 'resume', 'list', 'status', 'cancel', 'clean', 'serve', 'config']) expect(h).toMatch(new RegExp(`^  ${c}\\b`, 'm'));
    expect(h).toMatch(/Exit codes: 0 done, 2 bad command line/);
    expect(h).toContain('--json');
    expect(h).toMatch(/Examples:\n  bits upload /);
    expect(h).not.toContain('__demo-progress');
    expect(h).not.toMatch(ESC);
  });

  test('--version and -V print package.json version', async () => {
    const pkg = JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { version: string };
    for (const flag of ['--version', '-V']) {
      const r = await runBits([flag]);
      expect(r.code).toBe(0);
      expect(r.stdout).toBe(`${pkg.version}\n`);
      expect(r.stderr).toBe('');
    }
  });

  test('no command: help on stderr, exit 2', async () => {
    const r = await runBits([]);
    expect(r.code).toBe(2);
    expect(r.stdout).toBe('');
    expect(r.stderr).toMatch(/^Usage: bits/);
  });
});

describe('usage errors: one line, exit 2', () => {
  test('unknown option', async () => {
    const r = await runBits(['config', 'list', '--bogus']);
    expectUsageError(r, /^bits: error: unknown option '--bogus' \(see 'bits config list --help'\)\n$/);
  });

  test('unknown option with a suggestion', async () => {
    const r = await runBits(['config', 'list', '--jsn']);
    expectUsageError(r, /^bits: error: unknown option '--jsn'; did you mean '--json'\? \(see 'bits config list --help'\)\n$/);
  });

  test('unknown command', async () => {
    const r = await runBits(['frobnicate']);
    expectUsageError(r, /^bits: error: unknown command 'frobnicate' \(see 'bits --help'\)\n$/);
    const r2 = await runBits(['confg']);
    expectUsageError(r2, /^bits: error: unknown command 'confg'; did you mean 'config'\? \(see 'bits --help'\)\n$/);
  });

  test('missing argument', async () => {
    const r = await runBits(['config', 'get']);
    expectUsageError(r, /^bits: error: missing required argument 'key' \(see 'bits config get --help'\)\n$/);
  });

  test('too many arguments', async () => {
    const r = await runBits(['config', 'get', 'proxy', 'extra']);
    expectUsageError(r, /^bits: error: too many arguments for 'get'/);
  });

  test('bad option value', async () => {
    const r = await runBits(['__demo-progress', '--steps', 'many']);
    expectUsageError(r, /^bits: error: invalid value 'many' for option '--steps <n>': expected a whole number from 1 to 10000 \(see 'bits __demo-progress --help'\)\n$/);
  });
});

describe('bits config', () => {
  const env = () => ({ BITS_HOME: home });

  test('set / get / list / unset round trip in BITS_HOME', async () => {
    expect((await runBits(['config', 'path'], { env: env() })).stdout).toBe(`${path.join(home, 'config.json')}\n`);

    let r = await runBits(['config', 'set', 'fragment-size', '16MiB'], { env: env() });
    expect(r).toMatchObject({ code: 0, stdout: '', stderr: '' });
    r = await runBits(['config', 'set', 'serve.port', '8080'], { env: env() });
    expect(r.code).toBe(0);
    expect(JSON.parse(readFileSync(path.join(home, 'config.json'), 'utf8'))).toEqual({ 'fragment-size': '16MiB', serve: { port: 8080 } });

    r = await runBits(['config', 'get', 'fragment-size'], { env: env() });
    expect(r).toMatchObject({ code: 0, stdout: '16MiB\n', stderr: '' });
    r = await runBits(['config', 'get', 'serve.port', '--json'], { env: env() });
    expect(JSON.parse(r.stdout)).toEqual({ key: 'serve.port', value: 8080, source: 'config' });

    r = await runBits(['config', 'list'], { env: env() });
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^fragment-size\s+16MiB$/m);
    expect(r.stdout).toMatch(/^request-timeout\s+120\s+\(default\)$/m);
    expect(r.stdout).toMatch(/^proxy\s+-\s+\(not set\)$/m);

    r = await runBits(['config', 'list', '--json'], { env: env() });
    const list = JSON.parse(r.stdout) as { path: string; keys: Array<{ key: string; value: unknown; source: string }> };
    expect(r.stdout.trimEnd().split('\n')).toHaveLength(1);
    expect(list.path).toBe(path.join(home, 'config.json'));
    expect(list.keys.find((k) => k.key === 'fragment-size')).toMatchObject({ value: '16MiB', source: 'config' });
    expect(list.keys.find((k) => k.key === 'proxy')).toMatchObject({ value: null, source: 'unset' });
    expect(list.keys.find((k) => k.key === 'request-timeout')).toMatchObject({ value: 120, source: 'default' });

    r = await runBits(['config', 'unset', 'fragment-size'], { env: env() });
    expect(r.code).toBe(0);
    // An unset key prints its built-in default, as `config list` shows it (not `-`).
    expect((await runBits(['config', 'get', 'fragment-size'], { env: env() })).stdout).toBe('8MiB\n');
    expect((await runBits(['config', 'list'], { env: env() })).stdout).toMatch(/^fragment-size\s+8MiB\s+\(default\)$/m);
    expect((await runBits(['config', 'list'], { env: env() })).stdout).toMatch(/^no-progress-timeout\s+300\s+\(default\)$/m);
    expect(JSON.parse(readFileSync(path.join(home, 'config.json'), 'utf8'))).toEqual({ serve: { port: 8080 } });
  });

  test('bad key or value: exit 2, one line, file untouched', async () => {
    const file = path.join(home, 'config.json');
    await runBits(['config', 'set', 'limit-rate', '5M'], { env: env() });
    const before = readFileSync(file, 'utf8');
    expectUsageError(await runBits(['config', 'set', 'limit-rate', 'fast'], { env: env() }), /^bits: error: invalid value for limit-rate: "fast" \(expected /);
    expectUsageError(await runBits(['config', 'set', 'serve.port', '70000'], { env: env() }), /^bits: error: invalid value for serve\.port/);
    expectUsageError(await runBits(['config', 'set', 'colour', 'red'], { env: env() }), /^bits: error: unknown config key 'colour'/);
    expectUsageError(await runBits(['config', 'get', 'colour'], { env: env() }), /^bits: error: unknown config key 'colour'/);
    expect(readFileSync(file, 'utf8')).toBe(before);
  });

  test('a hand-broken config file: one line naming it, exit 3', async () => {
    const broken = mkdtempSync(path.join(os.tmpdir(), 'bits-cli-broken-'));
    try {
      writeFileSync(path.join(broken, 'config.json'), '{ "fragment-size": ');
      const r = await runBits(['config', 'list'], { env: { BITS_HOME: broken } });
      expect(r.code).toBe(3);
      expect(r.stderr.trimEnd().split('\n')).toHaveLength(1);
      expect(r.stderr).toContain(path.join(broken, 'config.json'));
      // A value that is valid JSON but not a valid setting is caught when read.
      writeFileSync(path.join(broken, 'config.json'), '{ "fragment-size": "huge" }');
      const r2 = await runBits(['config', 'list'], { env: { BITS_HOME: broken } });
      expect(r2.code).toBe(0); // list shows what is stored, so the user can see and fix it
      expect(r2.stdout).toMatch(/^fragment-size\s+huge$/m);
    } finally {
      rmSync(broken, { recursive: true, force: true });
    }
  });

  test('--version does not create the config store', async () => {
    const fresh = path.join(home, 'fresh');
    const r = await runBits(['--version'], { env: { BITS_HOME: fresh } });
    expect(r.code).toBe(0);
    expect(existsSync(fresh)).toBe(false);
  });
});

describe('colour', () => {
  const failing = ['config', 'get', 'nokey'];

  test('no escape sequences when stderr is not a TTY', async () => {
    const r = await runBits(failing);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/^bits: error: unknown config key 'nokey'/);
    expect(r.stderr).not.toMatch(ESC);
  });

  test('NO_COLOR: no escape sequences', async () => {
    const r = await runBits(failing, { env: { NO_COLOR: '1' } });
    expect(r.stderr).not.toMatch(ESC);
  });

  test('FORCE_COLOR=1: a red "error" even in a pipe', async () => {
    const r = await runBits(failing, { env: { FORCE_COLOR: '1' } });
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/^bits: \u001b\[31m\u001b\[1merror\u001b\[22m\u001b\[39m: unknown config key 'nokey'/);
  });
});

describe('a transfer in a pipe (__demo-progress)', () => {
  test('status lines, no escape sequences, final line; stdout empty', async () => {
    const r = await runBits(['__demo-progress', '--steps', '10', '--step-ms', '40', '--retry'], { env: { BITS_STATUS_INTERVAL_MS: '100' } });
    expect(r.code).toBe(0);
    expect(r.stdout).toBe('');
    expect(r.stderr).not.toMatch(ESC);
    expect(r.stderr).toMatch(/^bits: upload 10\.0 MiB \/ 10\.0 MiB \(100%\)|^bits: upload \d+(\.\d)? MiB \/ 10\.0 MiB \(\d+%\) /m);
    expect(r.stderr).toContain('bits: retrying in 1s (attempt 1): connection reset (synthetic)\n');
    expect(r.stderr).toContain('bits: warning: synthetic warning\n');
    expect(r.stderr).toMatch(/bits: uploaded 10\.0 MiB in \S+ \(.+\/s\) -> http:\/\/127\.0\.0\.1\/demo\/demo\.bin\n$/);
  });

  test('--json: objects on stdout, final object with job id, state, bytes, error', async () => {
    const r = await runBits(['__demo-progress', '--json', '--steps', '5', '--step-ms', '10']);
    expect(r.code).toBe(0);
    const objs = r.stdout.trimEnd().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(objs[0]).toMatchObject({ type: 'start', jobId: 'demo-0001', totalBytes: 10485760 });
    expect(objs.at(-1)).toMatchObject({ type: 'complete', jobId: 'demo-0001', state: 'complete', bytes: 10485760, error: null });
    expect(r.stderr).toMatch(/bits: uploaded 10\.0 MiB/); // human output still on stderr
  });

  test('--quiet: nothing at all', async () => {
    const r = await runBits(['__demo-progress', '--quiet', '--steps', '5', '--step-ms', '30'], { env: { BITS_STATUS_INTERVAL_MS: '20' } });
    expect(r).toMatchObject({ code: 0, stdout: '', stderr: '' });
  });

  test('a network failure: exit 4, one error line naming the resume command, JSON error object', async () => {
    const r = await runBits(['__demo-progress', '--fail', '--json', '--quiet', '--steps', '4', '--step-ms', '1']);
    expect(r.code).toBe(4);
    expect(r.stderr).toBe(
      'bits: error: connection reset by peer (synthetic); job demo-0001 is suspended at 5.0 MiB / 10.0 MiB, continue with: bits resume demo-0001\n',
    );
    const last = JSON.parse(r.stdout.trimEnd().split('\n').at(-1)!) as Record<string, unknown>;
    expect(last).toMatchObject({ type: 'error', jobId: 'demo-0001', state: 'suspended', bytes: 5242880 });
    expect(last.error).toMatchObject({ code: 'TransportError', exitCode: 4, resumable: true, hresult: '0x80072EFF' });
  });
});

describe('Ctrl-C', () => {
  test('first SIGINT suspends: exit 10 and `bits resume <id>`', async () => {
    const p = startBits(['__demo-progress', '--wait', '--json', '--steps', '4', '--step-ms', '1']);
    await p.waitFor(/"type":"progress"/, 'stdout');
    p.child.kill('SIGINT');
    const r = await p.done;
    expect(r.code).toBe(10);
    expect(r.stderr).toContain('bits: interrupted; suspending (press Ctrl-C again to quit at once)\n');
    // Where it stops depends on when the signal lands; what it must say does not.
    expect(r.stderr).toMatch(/bits: interrupted: job demo-0001 suspended at \d+(\.\d)? (B|KiB|MiB) \/ 10\.0 MiB; continue with: bits resume demo-0001\n$/);
    const last = JSON.parse(r.stdout.trimEnd().split('\n').at(-1)!) as Record<string, unknown>;
    expect(last).toMatchObject({ type: 'error', state: 'suspended', jobId: 'demo-0001', error: { code: 'InterruptedError', exitCode: 10 } });
  });

  test('SIGTERM does the same', async () => {
    const p = startBits(['__demo-progress', '--wait', '--steps', '4', '--step-ms', '1']);
    await p.waitFor(/^bits: upload demo\.bin/m);
    p.child.kill('SIGTERM');
    const r = await p.done;
    expect(r.code).toBe(10);
    expect(r.stderr).toContain('bits resume demo-0001');
  });

  test('a second Ctrl-C within 2 s exits at once with 10', async () => {
    // The suspend takes 20 s here (as over a dead network); the second signal must not wait for it.
    const p = startBits(['__demo-progress', '--wait', '--suspend-ms', '20000', '--steps', '4', '--step-ms', '1']);
    await p.waitFor(/^bits: upload demo\.bin/m);
    const t0 = Date.now();
    p.child.kill('SIGINT');
    await p.waitFor(/suspending/);
    // Two signals within 100 ms are one Ctrl-C delivered twice; a person's second press comes later.
    await new Promise((r) => setTimeout(r, 150));
    p.child.kill('SIGINT');
    const r = await p.done;
    expect(r.code).toBe(10);
    expect(Date.now() - t0).toBeLessThan(10_000);
    expect(r.stderr).toMatch(/bits: interrupted again; exiting now \(the job may need: bits resume demo-0001\)\n$/);
  });
});
