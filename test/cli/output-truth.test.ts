/**
 * What bits tells people agrees with what it does and with the README, on
 * the built bits: the start line on a terminal, no empty bar after a 404,
 * sizes for people, URL credentials refused before a job exists, one wording
 * for URL errors, help defaults that say where they come from, the config
 * help's own example, and NO_COLOR over FORCE_COLOR.
 */
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startServer, type RunningServer } from '../../src/server/index.js';
import { ensureBuilt, ptyRunner, runBits, runBitsInPty, startBits, stripAnsi } from '../helpers/cli.js';
import { makeRandomFile } from '../helpers/files.js';

const MiB = 1024 * 1024;
const work = mkdtempSync(path.join(tmpdir(), 'bits-output-truth-'));
let server: RunningServer;
let source: string;
const pty = ptyRunner();

function homeEnv(name: string): { BITS_HOME: string } {
  return { BITS_HOME: path.join(work, name) };
}

beforeAll(async () => {
  ensureBuilt();
  mkdirSync(path.join(work, 'root', 'up'), { recursive: true });
  source = await makeRandomFile(path.join(work, 'root', 'big.bin'), 6 * MiB, 21);
  writeFileSync(path.join(work, 'root', 'small.bin'), Buffer.alloc(300_000, 1));
  server = await startServer({ root: path.join(work, 'root') });
});

afterAll(async () => {
  await server.close();
  rmSync(work, { recursive: true, force: true });
});

describe.skipIf(!pty)('on a terminal', () => {
  it('the start line names the job and the destination', async () => {
    const r = await runBitsInPty(['download', `${server.url}/small.bin`, '-o', path.join(work, 'pty-small.bin')], { env: homeEnv('pty1') });
    expect(r.code).toBe(0);
    expect(stripAnsi(r.output)).toMatch(/bits: download http:\/\/127\.0\.0\.1:\d+\/small\.bin -> \S+pty-small\.bin \(293 KiB\) job [0-9a-z]{6}/);
  });

  it('a 404 leaves no empty 0 % bar behind: the error line only', async () => {
    const r = await runBitsInPty(['download', `${server.url}/missing.bin`, '-o', path.join(work, 'pty-missing.bin')], { env: homeEnv('pty2') });
    expect(r.code).toBe(5);
    const plain = stripAnsi(r.output);
    expect(plain).not.toContain('░');
    expect(plain).not.toMatch(/0%/);
    expect(plain.trim().split('\n')).toHaveLength(1);
    expect(plain).toMatch(/^bits: error: .*404/);
  });

  it('NO_COLOR wins over FORCE_COLOR', async () => {
    const r = await runBitsInPty(['config', 'get', 'nokey'], { env: { NO_COLOR: '1', FORCE_COLOR: '3' } });
    expect(r.code).toBe(2);
    expect(r.output).not.toMatch(/\u001b\[3\dm/);
    const forced = await runBits(['config', 'get', 'nokey'], { env: { FORCE_COLOR: '1' } });
    expect(forced.stderr).toMatch(/\u001b\[31m/);
    const both = await runBits(['config', 'get', 'nokey'], { env: { FORCE_COLOR: '1', NO_COLOR: '1' } });
    expect(both.stderr).not.toMatch(/\u001b/);
  });
});

describe('human lines', () => {
  it('a resumed download: sizes for people in every line, and the rate counts this run only', async () => {
    const env = homeEnv('resume');
    const out = path.join(work, 'resumed.bin');
    const run = startBits(['download', `${server.url}/big.bin`, '-o', out, '--limit-rate', '2M'], { env, timeoutMs: 30_000 });
    await run.waitFor(/job [0-9a-z]{6}/);
    await new Promise((r) => setTimeout(r, 1200));
    run.child.kill('SIGINT');
    const first = await run.done;
    expect(first.code, first.stderr).toBe(10);
    const id = /job ([0-9a-z]{6})/.exec(first.stderr)![1]!;
    const r = await runBits(['resume', id, '--limit-rate', '0'], { env });
    expect(r.code, r.stderr).toBe(0);
    // No byte counts written out for people ("resuming at 34471936 of 209715200 bytes").
    expect(r.stderr.replace(/(https?:\/\/|\/)\S+/g, '')).not.toMatch(/\d{5,}/);
    expect(r.stderr).toMatch(/resuming at \d+(\.\d)? (KiB|MiB) of 6\.0 MiB/);
    expect(r.stderr).toMatch(/downloaded 6\.0 MiB in \S+ \(\d+(\.\d)? (KiB|MiB) this run, /);
  });
});

describe('docs and config agree', () => {
  it.each([
    [['download', 'http://alice:pw@127.0.0.1:1/x.bin', '-o', 'x.bin']],
    [['upload', 'SOURCE', 'http://alice:pw@127.0.0.1:1/up/x.bin']],
  ])('user:pass@ in a URL is refused (exit 2) before a job is created: %j', async (args) => {
    const env = homeEnv('userinfo');
    const r = await runBits(args.map((a) => (a === 'SOURCE' ? source : a)), { env, cwd: work });
    expect(r.code).toBe(2);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(/must not carry a user name or password \(http:\/\/127\.0\.0\.1:1\/.*\): give them with --user NAME/);
    expect(r.stderr).not.toContain('pw@');
    expect(existsSync(path.join(env.BITS_HOME, 'jobs.json'))).toBe(false);
  });

  it('URL errors are worded one way, for upload, download and --mirror', async () => {
    const env = homeEnv('urls');
    const lines = [
      (await runBits(['upload', source, 'ftp://127.0.0.1/x'], { env })).stderr,
      (await runBits(['download', 'nope', '-o', path.join(work, 'n.bin')], { env })).stderr,
      (await runBits(['download', `${server.url}/small.bin`, '--mirror', 'ftp://x/y', '-o', path.join(work, 'n.bin')], { env })).stderr,
    ];
    expect(lines[0]).toBe('bits: error: URL must be an http:// or https:// URL with a host, got "ftp://127.0.0.1/x"\n');
    expect(lines[1]).toBe('bits: error: URL must be an http:// or https:// URL with a host, got "nope"\n');
    expect(lines[2]).toBe('bits: error: --mirror must be an http:// or https:// URL with a host, got "ftp://x/y"\n');
  });

  it('--request-timeout: the help names the config as the default, and the config applies', async () => {
    const env = homeEnv('timeouts');
    const help = (await runBits(['upload', '--help'], { env })).stdout.replace(/\s+/g, ' ');
    expect(help).toContain('(default: config request-timeout, else 120)');
    expect(help).not.toMatch(/default: "/);
    expect((await runBits(['config', 'set', 'request-timeout', '45'], { env })).code).toBe(0);
    const up = await runBits(['upload', path.join(work, 'root', 'small.bin'), `${server.url}/up/t.bin`, '--json'], { env });
    expect(up.code, up.stderr).toBe(0);
    const id = JSON.parse(up.stdout.trim().split('\n').pop()!).jobId as string;
    const job = JSON.parse((await runBits(['status', id, '--json'], { env })).stdout) as { transport: Record<string, unknown> };
    expect(job.transport).toMatchObject({ requestTimeoutMs: 45_000, connectTimeoutMs: 30_000 });
  });

  it("the config help's own example works and uploads after it print no warning; config list shows the default", async () => {
    const env = homeEnv('example');
    const help = (await runBits(['config', '--help'], { env })).stdout;
    const example = /bits config set fragment-size (\S+)/.exec(help)![1]!;
    const list = (await runBits(['config', 'list'], { env })).stdout;
    expect(list).toMatch(/^fragment-size\s+8MiB\s+\(default\)$/m);
    expect(list).not.toMatch(/^fragment-size\s+-/m);
    expect((await runBits(['config', 'set', 'fragment-size', example], { env })).code).toBe(0);
    const up = await runBits(['upload', path.join(work, 'root', 'small.bin'), `${server.url}/up/e.bin`], { env });
    expect(up.code, up.stderr).toBe(0);
    expect(up.stderr).not.toMatch(/warning/);
    // Above what Windows sends, the warning the README promises (IIS may answer 413).
    expect((await runBits(['config', 'set', 'fragment-size', '16MiB'], { env })).code).toBe(0);
    const big = await runBits(['upload', path.join(work, 'root', 'small.bin'), `${server.url}/up/e2.bin`], { env });
    expect(big.code, big.stderr).toBe(0);
    expect(big.stderr).toMatch(/warning: --fragment-size above 13M is larger than Windows sends/);
  });
});
