/**
 * The password prompt of a real `bits upload --user alice` in a pseudo-terminal
 * against a real `bits serve --basic-auth`: it is on the screen, before any
 * progress bar, while it waits; typing the password uploads the file; SIGTERM
 * (what `timeout` sends) or Ctrl-C while it waits ends the process with exit
 * 10, and nothing was sent.
 */
import { spawn, spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { BIN, childEnv, ensureBuilt, startBits, stripAnsi } from '../helpers/cli.js';
import { startServe, type Served } from '../helpers/serve.js';

const haveScript = spawnSync('script', ['--version']).status === 0;
let root: string;
let work: string;
let serve: Served;
const data = randomBytes(3 * 1024 * 1024 + 5);
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

beforeAll(async () => {
  ensureBuilt();
  root = mkdtempSync(path.join(tmpdir(), 'bits-prompt-root-'));
  work = mkdtempSync(path.join(tmpdir(), 'bits-prompt-work-'));
  writeFileSync(path.join(work, 'file.bin'), data);
  serve = await startServe(root, ['--basic-auth', 'alice:s3cret-pw']);
});
afterAll(async () => {
  await serve?.stop();
  for (const d of [root, work]) if (d) rmSync(d, { recursive: true, force: true });
});

interface PtyRun {
  /** What the terminal showed so far. */
  screen(): string;
  /** The pid of bits itself (the shell execs it). */
  pid(): number;
  type(keys: string): void;
  waitFor(re: RegExp, timeoutMs?: number): Promise<void>;
  exited: Promise<number | null>;
}

function uploadInPty(name: string): PtyRun {
  return bitsInPty(`upload ${path.join(work, 'file.bin')} ${serve.url}uploads/${name} --user alice`);
}

function bitsInPty(args: string): PtyRun {
  const cmd = `echo BITSPID=$$; exec ${process.execPath} ${BIN} ${args}`;
  const child = spawn('script', ['-qfec', cmd, '/dev/null'], { cwd: work, env: childEnv({ TERM: 'xterm-256color', COLUMNS: '100', BITS_PASSWORD: undefined, BITS_USER: undefined }), stdio: ['pipe', 'pipe', 'pipe'] });
  let out = '';
  const waiters = new Set<() => void>();
  const onData = (d: Buffer) => {
    out += d.toString();
    for (const w of [...waiters]) w();
  };
  child.stdout.on('data', onData);
  child.stderr.on('data', onData);
  const kill = setTimeout(() => child.kill('SIGKILL'), 40_000);
  const exited = new Promise<number | null>((resolve) =>
    child.on('close', (code) => {
      clearTimeout(kill);
      resolve(code);
    }),
  );
  return {
    screen: () => out,
    pid: () => Number(/BITSPID=(\d+)/.exec(out)![1]),
    type: (keys) => child.stdin.write(keys),
    waitFor(re, timeoutMs = 15_000) {
      return new Promise((resolve, reject) => {
        const t = setTimeout(() => reject(new Error(`timed out waiting for ${re}; screen: ${JSON.stringify(out)}`)), timeoutMs);
        const check = () => {
          if (!re.test(out)) return;
          clearTimeout(t);
          waiters.delete(check);
          resolve();
        };
        waiters.add(check);
        check();
      });
    },
    exited,
  };
}

describe.skipIf(!haveScript)('password prompt in a pseudo-terminal', () => {
  test('visible before any progress; the typed password uploads the file and is never shown', async () => {
    const run = uploadInPty('typed.bin');
    await run.waitFor(/Password for alice: /);
    // Still waiting, and still the last thing on the screen: no bar drawn over it.
    await new Promise((r) => setTimeout(r, 500));
    expect(stripAnsi(run.screen())).toMatch(/Password for alice: $/);
    expect(run.screen()).not.toContain('█');
    run.type('s3cret-pw\r');
    expect(await run.exited).toBe(0);
    expect(stripAnsi(run.screen())).toMatch(/bits: uploaded 3\.0 MiB/);
    expect(run.screen()).not.toContain('s3cret-pw');
    expect(sha(readFileSync(path.join(root, 'uploads', 'typed.bin')))).toBe(sha(data));
  });

  test('SIGTERM while the prompt waits ends bits: exit 10, nothing uploaded', async () => {
    const run = uploadInPty('term.bin');
    await run.waitFor(/Password for alice: /);
    const t0 = Date.now();
    process.kill(run.pid(), 'SIGTERM');
    expect(await run.exited).toBe(10);
    expect(Date.now() - t0).toBeLessThan(15_000);
    expect(stripAnsi(run.screen()), JSON.stringify(run.screen())).toMatch(/bits: password prompt interrupted by SIGTERM/);
    expect(existsSync(path.join(root, 'uploads', 'term.bin'))).toBe(false);
  });

  test('bits resume asks before any progress too; SIGTERM at its prompt leaves the job suspended, exit 10', async () => {
    const first = startBits(['upload', path.join(work, 'file.bin'), `${serve.url}uploads/resumed.bin`, '--user', 'alice:s3cret-pw', '--limit-rate', '1M'], { cwd: work });
    await first.waitFor(/job (\w+)/);
    first.child.kill('SIGINT');
    const r = await first.done;
    expect(r.code, r.stderr).toBe(10);
    const id = /job (\w+)/.exec(r.stderr)![1]!;
    const run = bitsInPty(`resume ${id}`);
    await run.waitFor(/Password for alice: /);
    expect(run.screen()).not.toContain('█');
    process.kill(run.pid(), 'SIGTERM');
    expect(await run.exited).toBe(10);
    expect(stripAnsi(run.screen())).toMatch(new RegExp(`job ${id} suspended at .*continue with: bits resume ${id}`));
  });

  test('Ctrl-C at the prompt: exit 10', async () => {
    const run = uploadInPty('ctrlc.bin');
    await run.waitFor(/Password for alice: /);
    run.type('abc\x03');
    expect(await run.exited).toBe(10);
    expect(stripAnsi(run.screen())).toMatch(/bits: password prompt interrupted/);
    expect(run.screen()).not.toContain('abc');
  });
});
