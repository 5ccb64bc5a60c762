/**
 * bin/bits runs the bundle (dist/bundle/bits.mjs, scripts/bundle.mjs), not the tsc output the
 * other tests import: this holds the bundle to being current, to being what bin/bits loads, and
 * to moving bytes through `bits serve`, download and upload alike, as a user runs them.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { BUNDLE, ensureBuilt, ROOT, runBits, startBits, type RunningBits } from '../helpers/cli.js';

let tmp: string;
let serve: RunningBits | undefined;
let url: string;

beforeAll(async () => {
  ensureBuilt();
  tmp = mkdtempSync(path.join(os.tmpdir(), 'bits-bundle-'));
  mkdirSync(path.join(tmp, 'root', 'in'), { recursive: true });
  serve = startBits(['serve', '--root', path.join(tmp, 'root'), '--port', '0', '--host', '127.0.0.1'], { env: { BITS_HOME: path.join(tmp, 'home-serve') }, timeoutMs: 120_000 });
  await serve.waitFor(/listening on (http:\/\/127\.0\.0\.1:\d+)\//);
  url = /listening on (http:\/\/127\.0\.0\.1:\d+)\//.exec(serve.stderr)![1]!;
});

afterAll(async () => {
  serve?.child.kill('SIGTERM');
  await serve?.done.catch(() => undefined);
  rmSync(tmp, { recursive: true, force: true });
});

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

describe('the bundle bin/bits runs', () => {
  it('is what a build of the current sources gives (not stale)', () => {
    const fresh = path.join(tmp, 'fresh-bundle');
    const r = spawnSync(process.execPath, [path.join(ROOT, 'scripts', 'bundle.mjs'), fresh], { encoding: 'utf8', timeout: 120_000 });
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    const built = path.dirname(BUNDLE);
    const names = readdirSync(fresh).sort();
    expect(names).toContain('bits.mjs');
    expect(readdirSync(built).sort()).toEqual(names);
    for (const n of names) expect(readFileSync(path.join(built, n)).equals(readFileSync(path.join(fresh, n))), `dist/bundle/${n} differs from a fresh build: run npm run build`).toBe(true);
  });

  it('is what bin/bits loads, and a download and an upload through it keep the bytes', async () => {
    // Every require() — node's built-ins, for the bundled code — says who asked: the bundle's
    // chunks, never dist/cli (tsc's output) nor a file of node_modules (undici is bundled).
    const preload = path.join(tmp, 'who-requires.cjs');
    const log = path.join(tmp, 'requires.log');
    writeFileSync(
      preload,
      `const M = require('node:module'); const fs = require('node:fs'); const seen = new Set(); const load = M._load;\n` +
        `M._load = function (req, parent, ...rest) { seen.add((parent && parent.filename) + ' ' + req); return load.call(this, req, parent, ...rest); };\n` +
        `process.on('exit', () => fs.appendFileSync(${JSON.stringify(log)}, [...seen].join('\\n') + '\\n'));\n`,
    );
    const data = randomBytes(1024 * 1024 + 17);
    const src = path.join(tmp, 'src.bin');
    writeFileSync(src, data);
    const env = { BITS_HOME: path.join(tmp, 'home'), NODE_OPTIONS: `--require ${preload}` };
    const up = await runBits(['upload', '--quiet', src, `${url}/in/up.bin`], { env, cwd: tmp });
    expect(up.stderr).toBe('');
    expect(up.code).toBe(0);
    expect(sha(readFileSync(path.join(tmp, 'root', 'in', 'up.bin')))).toBe(sha(data));
    const out = path.join(tmp, 'down.bin');
    const down = await runBits(['download', '--quiet', `${url}/in/up.bin`, '-o', out], { env, cwd: tmp });
    expect(down.stderr).toBe('');
    expect(down.code).toBe(0);
    expect(sha(readFileSync(out))).toBe(sha(data));

    const lines = readFileSync(log, 'utf8').split('\n').filter((l) => l && !l.startsWith(preload));
    const fromBundle = lines.filter((l) => l.startsWith(path.dirname(BUNDLE) + path.sep));
    expect(fromBundle.length).toBeGreaterThan(0);
    expect(lines.filter((l) => l.includes(`${path.sep}dist${path.sep}cli${path.sep}`) || l.includes(`${path.sep}node_modules${path.sep}`))).toEqual([]);
  });

  it('a plain-http download loads neither undici nor TLS; an upload (undici) does', async () => {
    // Issue 13's start-up: the download's HEAD and GETs go through the bulk reader, so
    // undici (and the http2, http and tls built-ins it pulls in, ~40 ms) is never loaded.
    // undici is bundled, so its trace is the built-ins: http2 is required by nothing else.
    const preload = path.join(tmp, 'builtins.cjs');
    writeFileSync(
      preload,
      `process.on('exit', () => require('node:fs').appendFileSync(process.env.BUILTINS_LOG, process.argv[2] + ' ' + process.moduleLoadList.filter((m) => m.startsWith('NativeModule ')).map((m) => m.slice(13)).join(' ') + '\\n'));\n`,
    );
    const data = randomBytes(256 * 1024 + 3);
    const src = path.join(tmp, 'plain.bin');
    writeFileSync(src, data);
    const logFile = path.join(tmp, 'builtins.log');
    const env = { BITS_HOME: path.join(tmp, 'home-plain'), NODE_OPTIONS: `--require ${preload}`, BUILTINS_LOG: logFile };
    const up = await runBits(['upload', '--quiet', src, `${url}/in/plain.bin`], { env, cwd: tmp });
    expect(up.code, up.stderr).toBe(0);
    const out = path.join(tmp, 'plain-down.bin');
    const down = await runBits(['download', '--quiet', `${url}/in/plain.bin`, '-o', out], { env, cwd: tmp });
    expect(down.code, down.stderr).toBe(0);
    expect(sha(readFileSync(out))).toBe(sha(data));
    const loaded = new Map(readFileSync(logFile, 'utf8').trim().split('\n').map((l) => [l.split(' ')[0], new Set(l.split(' ').slice(1))] as const));
    expect(loaded.get('upload')?.has('http2')).toBe(true);
    const dl = loaded.get('download')!;
    expect(dl.has('net')).toBe(true);
    expect(['http2', 'http', '_http_client', 'tls'].filter((m) => dl.has(m))).toEqual([]);
  });

  it('answers --version and --help', async () => {
    const pkg = JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { version: string };
    expect((await runBits(['--version'])).stdout).toBe(`${pkg.version}\n`);
    const help = await runBits(['--help']);
    expect(help.code).toBe(0);
    expect(help.stdout).toContain('serve [options]');
  });
});
