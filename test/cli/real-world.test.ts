/**
 * `bits download` where users put its output: a second argument, a folder,
 * `-d`, a pipe whose reader leaves early, a terminal. Against a real `bits
 * serve` on loopback, with the built executable, the sha256 of what arrived.
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { spawn } from 'node:child_process';
import { BIN, childEnv, ensureBuilt, ptyRunner, runBits, runBitsInPty, startBits, stripAnsi } from '../helpers/cli.js';
import { startServe, type Served } from '../helpers/serve.js';

let root: string;
let work: string;
let serve: Served;
const big = randomBytes(8 * 1024 * 1024 + 123);
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

beforeAll(async () => {
  ensureBuilt();
  root = mkdtempSync(path.join(tmpdir(), 'bits-rw-root-'));
  work = mkdtempSync(path.join(tmpdir(), 'bits-rw-work-'));
  writeFileSync(path.join(root, 'big.bin'), big);
  writeFileSync(path.join(root, 'hello.txt'), 'hello from bits serve\n');
  serve = await startServe(root);
});
afterAll(async () => {
  await serve?.stop();
  for (const d of [root, work]) if (d) rmSync(d, { recursive: true, force: true });
});

function freshDir(name: string): string {
  const d = path.join(work, name);
  mkdirSync(d, { recursive: true });
  return d;
}

describe('where the output goes', () => {
  test('a second argument is the output file, as the help shows', async () => {
    const cwd = freshDir('positional');
    const r = await runBits(['download', `${serve.url}big.bin`, './x.bin'], { cwd });
    expect(r.code, r.stderr).toBe(0);
    expect(sha(readFileSync(path.join(cwd, 'x.bin')))).toBe(sha(big));
  });

  test('both -o and a second argument: exit 2, one line', async () => {
    const cwd = freshDir('twice');
    const r = await runBits(['download', `${serve.url}big.bin`, 'a.bin', '-o', 'b.bin'], { cwd });
    expect(r.code).toBe(2);
    expect(r.stderr.trimEnd().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(/given twice/);
    expect(existsSync(path.join(cwd, 'a.bin')) || existsSync(path.join(cwd, 'b.bin'))).toBe(false);
  });

  test('-o naming an existing folder writes FOLDER/<name>; -o NEW/ creates the folder', async () => {
    const cwd = freshDir('folder');
    mkdirSync(path.join(cwd, 'existing'));
    const a = await runBits(['download', `${serve.url}big.bin`, '-o', 'existing'], { cwd });
    expect(a.code, a.stderr).toBe(0);
    expect(sha(readFileSync(path.join(cwd, 'existing', 'big.bin')))).toBe(sha(big));
    const b = await runBits(['download', `${serve.url}hello.txt`, '-o', 'made/'], { cwd });
    expect(b.code, b.stderr).toBe(0);
    expect(readFileSync(path.join(cwd, 'made', 'hello.txt'), 'utf8')).toBe('hello from bits serve\n');
    // The name inside the folder is still protected: a second run refuses without --force.
    const again = await runBits(['download', `${serve.url}hello.txt`, '-o', 'made'], { cwd });
    expect(again.code).toBe(3);
    expect(again.stderr).toContain(`${path.join(cwd, 'made', 'hello.txt')} already exists`);
  });

  test('-d DIR (created) holds the server name, or a relative -o', async () => {
    const cwd = freshDir('outdir');
    const a = await runBits(['download', '-d', 'dl/nested', `${serve.url}big.bin`], { cwd });
    expect(a.code, a.stderr).toBe(0);
    expect(sha(readFileSync(path.join(cwd, 'dl', 'nested', 'big.bin')))).toBe(sha(big));
    const b = await runBits(['download', '--output-dir', 'dl', '-o', 'renamed.txt', `${serve.url}hello.txt`], { cwd });
    expect(b.code, b.stderr).toBe(0);
    expect(readFileSync(path.join(cwd, 'dl', 'renamed.txt'), 'utf8')).toBe('hello from bits serve\n');
    const c = await runBits(['download', '-d', 'dl', '-o', '-', `${serve.url}hello.txt`], { cwd });
    expect(c.code).toBe(2);
    // A command-line mistake leaves no folder behind.
    const d = await runBits(['download', '-d', 'never', '--range', 'bogus', `${serve.url}hello.txt`], { cwd });
    expect(d.code).toBe(2);
    expect(existsSync(path.join(cwd, 'never'))).toBe(false);
  });
});

describe('-o -', () => {
  test('a reader that leaves early (| head -c 10): exit 3 and no "downloaded" line', async () => {
    const run = startBits(['download', `${serve.url}big.bin`, '-o', '-'], { cwd: freshDir('pipe') });
    // Read 10 bytes, then close our end of the pipe, as head -c 10 does.
    await run.waitFor(/[\s\S]{10}/, 'stdout');
    run.child.stdout!.destroy();
    const r = await run.done;
    expect(r.code).toBe(3);
    expect(r.stderr).toMatch(/bits: error: stdout was closed by its reader before the download ended/);
    expect(r.stderr).not.toMatch(/downloaded/);
  });

  test('a reader that takes everything: exit 0, the same bytes', async () => {
    const child = spawn(process.execPath, [BIN, 'download', `${serve.url}big.bin`, '-o', '-'], { cwd: freshDir('pipe-all'), env: childEnv(), stdio: ['ignore', 'pipe', 'pipe'] });
    const chunks: Buffer[] = [];
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => chunks.push(d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
    expect(code, stderr).toBe(0);
    expect(sha(Buffer.concat(chunks))).toBe(sha(big));
    expect(stderr).toMatch(/downloaded/);
  });

  describe.skipIf(!ptyRunner())('stdout a terminal', () => {
    test('refused with exit 2 and a hint; nothing written', async () => {
      const r = await runBitsInPty(['download', `${serve.url}big.bin`, '-o', '-'], { cwd: freshDir('tty') });
      expect(r.code).toBe(2);
      const plain = stripAnsi(r.output);
      expect(plain).toMatch(/would write binary data to the terminal; redirect stdout .* --output-tty/);
      expect(plain.trimEnd().split('\n')).toHaveLength(1);
    });

    test('--output-tty writes it anyway', async () => {
      const r = await runBitsInPty(['download', `${serve.url}hello.txt`, '-o', '-', '--output-tty'], { cwd: freshDir('tty-forced') });
      expect(r.code).toBe(0);
      expect(stripAnsi(r.output)).toContain('hello from bits serve');
    });
  });
});
