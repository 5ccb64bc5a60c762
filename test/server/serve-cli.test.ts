/**
 * `bits serve` as users run it: the built binary (bin/bits -> dist/, built by
 * `npm test` before vitest runs) spawned on 127.0.0.1 with --port 0, real
 * requests, real signals. Also the value parsers of src/cli/parse.ts.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { request } from 'undici';
import { parseDurationSeconds, parseInteger, parseSize, parseSizeOrUndefined } from '../../src/cli/parse.js';
import { serveOptionsFrom } from '../../src/cli/commands/serve.js';
import { UsageError } from '../../src/errors.js';
import { schemaProblem } from '../helpers/cli.js';

const PROJECT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const BIN = path.join(PROJECT, 'bin', 'bits');
const DATA = randomBytes(200_000);
let tmp: string;

interface Running {
  child: ChildProcess;
  url: string;
  stdout: () => string;
  stderr: () => string;
  exited: Promise<number | null>;
}

function run(args: string[], env: Record<string, string> = {}): { child: ChildProcess; out: { stdout: string; stderr: string }; exited: Promise<number | null> } {
  const child = spawn(process.execPath, [BIN, ...args], { cwd: PROJECT, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  const out = { stdout: '', stderr: '' };
  child.stdout!.on('data', (d: Buffer) => (out.stdout += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (out.stderr += d.toString()));
  const exited = new Promise<number | null>((resolve, reject) =>
    child.on('close', (code) => {
      const bad = schemaProblem(args, out.stdout);
      if (bad) reject(bad);
      else resolve(code);
    }),
  );
  // Bounded: a hung child must fail the test, not the suite.
  const killer = setTimeout(() => child.kill('SIGKILL'), 20_000);
  void exited.then(() => clearTimeout(killer));
  return { child, out, exited };
}

/** Starts `bits serve --json …` and waits for its listening line. */
async function startServe(extra: string[], env: Record<string, string> = {}): Promise<Running> {
  const { child, out, exited } = run(['serve', '--port', '0', '--root', tmp, '--json', ...extra], env);
  const deadline = Date.now() + 15_000;
  while (!out.stdout.includes('\n')) {
    if (Date.now() > deadline || child.exitCode !== null) throw new Error(`serve did not start: ${out.stderr}`);
    await new Promise((r) => setTimeout(r, 20));
  }
  const first = JSON.parse(out.stdout.split('\n')[0]!) as { type: string; url: string; root: string };
  expect(first.type).toBe('listening');
  return { child, url: first.url, stdout: () => out.stdout, stderr: () => out.stderr, exited };
}

beforeAll(async () => {
  if (!existsSync(path.join(PROJECT, 'dist', 'cli', 'commands', 'serve.js'))) {
    throw new Error('dist/ is not built: run `npx tsc -p .` (npm test does it first)');
  }
  tmp = await mkdtemp(path.join(os.tmpdir(), 'bits-serve-cli-'));
  await writeFile(path.join(tmp, 'file.bin'), DATA);
});

afterAll(async () => {
  if (tmp) await rm(tmp, { recursive: true, force: true });
});

describe('bits serve (built binary)', () => {
  it('listens, serves a file, logs the request, and exits 0 on SIGTERM', async () => {
    const s = await startServe([]);
    expect(s.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    expect(JSON.parse(s.stdout().split('\n')[0]!)).toEqual({ type: 'listening', url: s.url, root: tmp });
    expect(s.stderr()).toContain(`bits serve: listening on ${s.url}/ (root ${tmp})\n`);

    const full = await request(`${s.url}/file.bin`);
    expect(full.statusCode).toBe(200);
    const body = Buffer.from(await full.body.arrayBuffer());
    expect(createHash('sha256').update(body).digest('hex')).toBe(createHash('sha256').update(DATA).digest('hex'));

    const part = await request(`${s.url}/file.bin`, { headers: { range: 'bytes=1000-1999' } });
    expect(part.statusCode).toBe(206);
    expect(Buffer.from(await part.body.arrayBuffer()).equals(DATA.subarray(1000, 2000))).toBe(true);

    s.child.kill('SIGTERM');
    expect(await s.exited).toBe(0);
    expect(s.stderr()).toContain(`GET /file.bin 200 ${DATA.length}`);
    expect(s.stderr()).toContain('GET /file.bin 206 1000');
    expect(s.stdout()).toContain('{"type":"closed","signal":"SIGTERM"}');
  });

  it('exits 0 on SIGINT; --quiet logs no requests', async () => {
    const s = await startServe(['--quiet']);
    const r = await request(`${s.url}/file.bin`);
    await r.body.dump();
    s.child.kill('SIGINT');
    expect(await s.exited).toBe(0);
    expect(s.stderr()).not.toContain('GET /file.bin');
  });

  it('--basic-auth and BITS_SERVE_USER/BITS_SERVE_PASSWORD require credentials', async () => {
    for (const [args, env] of [
      [['--basic-auth', 'alice:s3:cret'], {}],
      [[], { BITS_SERVE_USER: 'alice', BITS_SERVE_PASSWORD: 's3:cret' }],
    ] as Array<[string[], Record<string, string>]>) {
      const s = await startServe(args, env);
      const denied = await request(`${s.url}/file.bin`);
      await denied.body.dump();
      expect(denied.statusCode).toBe(401);
      expect(String(denied.headers['www-authenticate'])).toMatch(/^Basic /);
      const ok = await request(`${s.url}/file.bin`, {
        headers: { authorization: `Basic ${Buffer.from('alice:s3:cret').toString('base64')}` },
      });
      await ok.body.dump();
      expect(ok.statusCode).toBe(200);
      s.child.kill('SIGTERM');
      expect(await s.exited).toBe(0);
    }
  });

  it('bad flags -> exit 2 and one line on stderr', async () => {
    const cases: Array<[string[], RegExp]> = [
      [['--port', '70000'], /--port/],
      [['--port', 'http'], /--port/],
      [['--root', '/definitely/not/here'], /--root/],
      [['--max-upload-size', '10Q'], /--max-upload-size/],
      [['--max-fragment-size', '-1'], /--max-fragment-size/],
      [['--notification-type', 'by-value'], /--notification-url/],
      [['--notification-type', 'sometimes'], /notification-type/],
      [['--notification-type', 'by-reference', '--notification-url', 'ftp://x/'], /--notification-url/],
      [['--session-timeout', 'soon'], /--session-timeout/],
      [['--max-sessions', '0'], /--max-sessions/],
      [['--tls-cert', 'cert.pem'], /--tls-key/],
      [['--basic-auth', 'nobody'], /--basic-auth/],
      [['--no-such-flag'], /unknown option/],
      [['--config', '/definitely/not/here.json'], /--config: .*here\.json/],
      [['--durability', 'never'], /--durability/],
      [['--sync-every', '0'], /--sync-every/],
      [['--sync-interval', 'soon'], /--sync-interval/],
    ];
    // In parallel: each is a process start-up.
    const results = await Promise.all(
      cases.map(async ([args, pattern]) => {
        const { out, exited } = run(['serve', '--port', '0', '--root', os.tmpdir(), ...args]);
        return { args, pattern, code: await exited, ...out };
      }),
    );
    for (const r of results) {
      const what = JSON.stringify(r.args);
      expect(r.code, what).toBe(2);
      expect(r.stderr, what).toMatch(r.pattern);
      expect(r.stderr.trimEnd().split('\n'), what).toHaveLength(1);
      expect(r.stdout, what).toBe('');
    }
  });

  it('a usage error with --json is also a JSON object on stdout', async () => {
    const { out, exited } = run(['serve', '--json', '--port', '99999']);
    expect(await exited).toBe(2);
    const j = JSON.parse(out.stdout) as { type: string; error: { code: string; exitCode: number } };
    expect(j).toMatchObject({ type: 'error', error: { code: 'UsageError', exitCode: 2 } });
  });

  it('a port already in use -> exit 2 with one clear line', async () => {
    const blocker = net.createServer();
    await new Promise<void>((r) => blocker.listen(0, '127.0.0.1', r));
    const port = (blocker.address() as net.AddressInfo).port;
    try {
      const { out, exited } = run(['serve', '--port', String(port), '--root', tmp]);
      expect(await exited).toBe(2);
      expect(out.stderr).toMatch(/address already in use/);
      expect(out.stderr.trimEnd().split('\n')).toHaveLength(1);
    } finally {
      blocker.close();
    }
  });

  it('--help shows defaults and examples, exit 0', async () => {
    const { out, exited } = run(['serve', '--help']);
    expect(await exited).toBe(0);
    const text = out.stdout.replace(/\s+/g, ' ');
    expect(text).toContain('(default: "127.0.0.1")');
    expect(text).toContain('(default: "8080")');
    expect(text).toContain('(default: 1209600 = 14 days)');
    expect(out.stdout).toContain('Examples:');
    expect(out.stdout).toContain('--no-uploads');
  });
});

describe('serveOptionsFrom (flags -> ServeOptions)', () => {
  const base = {
    root: '.',
    host: '127.0.0.1',
    port: '8080',
    uploads: true,
    maxUploadSize: 'unlimited',
    overwrite: true,
    notificationType: 'none' as const,
    sessionTimeout: '1209600',
    maxFragmentSize: '64M',
    maxSessions: '10000',
  };

  it('defaults', async () => {
    const o = await serveOptionsFrom({ ...base, root: tmp }, () => false);
    expect(o).toMatchObject({ root: tmp, host: '127.0.0.1', port: 8080 });
    expect(o.defaults).toEqual({ maxUploadSize: Infinity, sessionTimeoutSeconds: 14 * 86400 });
    expect(o.limits).toEqual({ maxFragmentBytes: 64 * 1024 * 1024, maxSessions: 10_000 });
    expect(o.basicAuth).toBeUndefined();
    expect(o.tls).toBeUndefined();
  });

  it('every flag maps to its §3.2.1.1 setting', async () => {
    const flags = {
      ...base,
      root: tmp,
      port: '0',
      uploads: false,
      overwrite: false,
      maxUploadSize: '2G',
      hostId: 'bits.example.test',
      hostIdFallbackTimeout: '5m',
      notificationType: 'by-value' as const,
      notificationUrl: 'http://127.0.0.1:9/notify',
      sessionTimeout: '2d',
      maxFragmentSize: '1MiB',
      maxSessions: '7',
      basicAuth: 'u:p:w',
    };
    const o = await serveOptionsFrom(flags, () => true);
    expect(o.port).toBe(0);
    expect(o.defaults).toEqual({
      uploadsEnabled: false,
      allowOverwrites: false,
      maxUploadSize: 2 * 1024 ** 3,
      hostId: 'bits.example.test',
      hostIdFallbackTimeout: 300,
      notificationType: 'by-value',
      notificationUrl: 'http://127.0.0.1:9/notify',
      sessionTimeoutSeconds: 2 * 86400,
    });
    expect(o.limits).toEqual({ maxFragmentBytes: 1024 * 1024, maxSessions: 7 });
    expect(o.basicAuth).toEqual({ user: 'u', password: 'p:w' });
    // Durability: the flags, else the file's "durability" section, else config.ts's default (group commit).
    expect(o.durability).toEqual({});
    const d = await serveOptionsFrom({ ...flags, durability: 'ack', syncEvery: '16M', syncInterval: '5' }, () => true);
    expect(d.durability).toEqual({ mode: 'ack', syncEveryBytes: 16 * 1024 ** 2, syncEverySeconds: 5 });
  });

  it('--config supplies directory settings and limits; flags given override it', async () => {
    const file = path.join(tmp, 'serve.json');
    await writeFile(
      file,
      JSON.stringify({
        defaults: { maxUploadSize: '1M', allowOverwrites: false, sessionTimeoutSeconds: 60 },
        directories: { '/drop': { uploadsEnabled: true, maxUploadSize: '5G' } },
        limits: { maxSessions: 5, maxFragmentBytes: '8M' },
        durability: { mode: 'ack', syncEverySeconds: 2 },
      }),
    );
    const flags = { ...base, root: tmp, config: file, maxSessions: '9', uploads: false, syncInterval: '3' };
    const given = (k: string) => k === 'maxSessions' || k === 'uploads';
    const o = await serveOptionsFrom(flags, given);
    expect(o.defaults).toEqual({ maxUploadSize: 1024 ** 2, allowOverwrites: false, sessionTimeoutSeconds: 60, uploadsEnabled: false });
    expect(o.directories).toEqual({ '/drop': { uploadsEnabled: true, maxUploadSize: 5 * 1024 ** 3 } });
    expect(o.limits).toEqual({ maxSessions: 9, maxFragmentBytes: 8 * 1024 ** 2 });
    expect(o.durability).toEqual({ mode: 'ack', syncEverySeconds: 3 });
  });

  it('a bad --config is a UsageError naming the file', async () => {
    const file = path.join(tmp, 'bad.json');
    await writeFile(file, JSON.stringify({ defaults: { maxUploadSize: 'lots' } }));
    await expect(serveOptionsFrom({ ...base, root: tmp, config: file }, () => false)).rejects.toThrow(UsageError);
    await expect(serveOptionsFrom({ ...base, root: tmp, config: file }, () => false)).rejects.toThrow(/^--config: .*bad\.json/);
    await expect(serveOptionsFrom({ ...base, root: tmp, config: path.join(tmp, 'none.json') }, () => false)).rejects.toThrow(UsageError);
  });

  it('refuses a missing root with a UsageError', async () => {
    await expect(serveOptionsFrom({ ...base, root: path.join(tmp, 'nope') }, () => false)).rejects.toThrow(UsageError);
  });
});

describe('parse.ts', () => {
  it.each([
    ['0', 0],
    ['1048576', 1048576],
    ['10M', 10 * 1024 ** 2],
    ['10m', 10 * 1024 ** 2],
    ['2G', 2 * 1024 ** 3],
    ['1T', 1024 ** 4],
    ['512K', 512 * 1024],
    ['512KiB', 512 * 1024],
    ['10MiB', 10 * 1024 ** 2],
    ['10MB', 10 * 1024 ** 2],
    ['1.5G', 1.5 * 1024 ** 3],
    [' 7 b ', 7],
  ])('parseSize(%j) = %d', (s, n) => {
    expect(parseSize(s)).toBe(n);
  });

  it.each(['', 'M', '-1', '1.5', '10Q', '10 M B', '0x10', '1e3', 'ten', '99999999999T'])('parseSize(%j) is refused', (s) => {
    expect(parseSizeOrUndefined(s)).toBeUndefined();
    expect(() => parseSize(s, '--size')).toThrow(UsageError);
    expect(() => parseSize(s, '--size')).toThrow(/^--size: invalid size/);
  });

  it('parseInteger and parseDurationSeconds', () => {
    expect(parseInteger('0', '--port', 0, 65535)).toBe(0);
    expect(parseInteger('65535', '--port', 0, 65535)).toBe(65535);
    for (const bad of ['65536', '-1', '1.5', '', '80abc']) expect(() => parseInteger(bad, '--port', 0, 65535)).toThrow(UsageError);
    expect(parseDurationSeconds('90', '--t')).toBe(90);
    expect(parseDurationSeconds('90s', '--t')).toBe(90);
    expect(parseDurationSeconds('30m', '--t')).toBe(1800);
    expect(parseDurationSeconds('12h', '--t')).toBe(43200);
    expect(parseDurationSeconds('14d', '--t')).toBe(1209600);
    expect(parseDurationSeconds('0', '--t', { allowZero: true })).toBe(0);
    for (const bad of ['0', '-5', '1.5h', '5w', 'x']) expect(() => parseDurationSeconds(bad, '--t')).toThrow(UsageError);
  });
});
