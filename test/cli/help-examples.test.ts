/**
 * Every example line in every command's --help runs, exit 0: the help is the
 * first thing a new user copies from. The examples are read from the built
 * `bits … --help` (not from the sources), hosts are pointed at a real `bits
 * serve` on loopback, and job ids at a fresh suspended job; `bits serve`
 * examples are started, seen listening, and stopped with SIGTERM (exit 0).
 * Each example gets its own folder and job store, so they cannot help each other.
 */
import { spawn, spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { copyFileSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, expect, test } from 'vitest';
import { BIN, childEnv, ensureBuilt, startBits } from '../helpers/cli.js';
import { startServe, type Served } from '../helpers/serve.js';
import { makeTestPki, type TestPki } from '../helpers/tls.js';

interface Example {
  command: string;
  line: string;
}

let root: string;
let work: string;
let fixtures: string;
let serve: Served;
let app: http.Server;
let appPort: number;
let pki: TestPki;
const iso = randomBytes(3 * 1024 * 1024 + 17);
const isoSha = createHash('sha256').update(iso).digest('hex');

function help(args: string[]): string {
  const r = spawnSync(process.execPath, [BIN, ...args, '--help'], { encoding: 'utf8', env: childEnv(), timeout: 30_000 });
  expect(r.status, `${args.join(' ')} --help: ${r.stderr}`).toBe(0);
  return r.stdout;
}

/** Command paths listed under "Commands:" (help itself excluded), recursively. */
function commandPaths(prefix: string[] = []): string[][] {
  const text = help(prefix);
  const block = /\nCommands:\n([\s\S]*?)(\n\S|\n\n|$)/.exec(text)?.[1] ?? '';
  const names = [...block.matchAll(/^ {2}([a-z][\w-]*)\b/gm)].map((m) => m[1]!).filter((n) => n !== 'help');
  return [prefix, ...names.flatMap((n) => commandPaths([...prefix, n]))];
}

/** The lines under "Examples:", continuations joined, `$ ` prompts, `# comments` and trailing `(notes)` dropped. */
function examplesOf(text: string): string[] {
  const i = text.indexOf('\nExamples:\n');
  if (i < 0) return [];
  const out: string[] = [];
  let pending = '';
  for (const raw of text.slice(i + '\nExamples:\n'.length).split('\n')) {
    if (!/^\s/.test(raw) && raw.trim() !== '') break; // the paragraph after the examples
    let l = raw.trim();
    if (pending) l = `${pending} ${l}`;
    if (l.endsWith('\\')) {
      pending = l.slice(0, -1).trim();
      continue;
    }
    pending = '';
    l = l.replace(/^\$\s+/, '').replace(/\s{2,}\(.*\)$/, '');
    if (/^([A-Z_]+=\S+\s+)*bits\s/.test(l)) out.push(l);
  }
  return out;
}

beforeAll(async () => {
  ensureBuilt();
  root = mkdtempSync(path.join(tmpdir(), 'bits-hx-root-'));
  work = mkdtempSync(path.join(tmpdir(), 'bits-hx-work-'));
  fixtures = path.join(work, 'fixtures');
  mkdirSync(fixtures);
  for (const d of ['files', 'uploads', 'app']) mkdirSync(path.join(root, d));
  writeFileSync(path.join(root, 'big.iso'), iso);
  writeFileSync(path.join(root, 'files', 'big.iso'), iso);
  writeFileSync(path.join(fixtures, 'big.iso'), iso);
  writeFileSync(path.join(fixtures, 'backup.tar'), randomBytes(256 * 1024));
  writeFileSync(path.join(fixtures, 'request.xml'), '<request>hello</request>\n');
  pki = makeTestPki();
  writeFileSync(path.join(fixtures, 'cert.pem'), pki.server.cert);
  writeFileSync(path.join(fixtures, 'key.pem'), pki.server.key);
  copyFileSync(pki.caFile, path.join(fixtures, 'ca.pem'));
  // The back-end application of the upload-reply example (§3.4): it answers each notification with a reply.
  app = http.createServer((req, res) => {
    req.resume();
    req.on('end', () => res.writeHead(200, { 'Content-Type': 'application/xml' }).end('<reply>ok</reply>\n'));
  });
  await new Promise<void>((r) => app.listen(0, '127.0.0.1', r));
  appPort = (app.address() as AddressInfo).port;
  const config = path.join(work, 'serve.json');
  writeFileSync(config, JSON.stringify({ directories: { '/app': { notificationType: 'by-value', notificationUrl: `http://127.0.0.1:${appPort}/notify` } } }));
  serve = await startServe(root, ['--config', config]);
});

afterAll(async () => {
  await serve?.stop();
  await new Promise<void>((r) => (app ? app.close(() => r()) : r()));
  pki?.cleanup();
  for (const d of [root, work]) if (d) rmSync(d, { recursive: true, force: true });
});

/** A download job suspended by Ctrl-C halfway, in `home`: what `bits resume ID` and friends act on. */
async function suspendedJob(home: string, cwd: string): Promise<string> {
  const run = startBits(['download', `${serve.url}big.iso`, '-o', 'partial.iso', '--limit-rate', '2M'], { cwd, env: { BITS_HOME: home } });
  await run.waitFor(/job (\w+)/);
  run.child.kill('SIGINT');
  const r = await run.done;
  expect(r.code, r.stderr).toBe(10);
  return /job (\w+)/.exec(r.stderr)![1]!;
}

/** The example as it runs here: loopback hosts, the real sha256, a real job id, local files. */
async function localise(line: string, home: string, cwd: string): Promise<string> {
  let l = line
    .replace(/https?:\/\/(server\.example|example\.com|server|mirror\d)(?=\/)/g, serve.url.replace(/\/$/, ''))
    .replace(/<hex>/g, isoSha)
    .replace(/http:\/\/127\.0\.0\.1:9000\//g, `http://127.0.0.1:${appPort}/`)
    .replace(/--host 0\.0\.0\.0/g, '--host 127.0.0.1') // loopback only, here
    .replace(/\/srv\/files/g, './srv/files');
  if (/<job-id>|\bk3x9qa\b|\bk3x\b|resume --all/.test(l)) {
    const id = await suspendedJob(home, cwd);
    l = l.replace(/<job-id>|\bk3x9qa\b/g, id).replace(/\bk3x\b/g, id.slice(0, 3));
  }
  if (/\bbits serve\b/.test(l) && !/--port/.test(l)) l += ' --port 0';
  return l;
}

test('every --help example runs, exit 0', async () => {
  const examples: Example[] = [];
  for (const p of commandPaths()) for (const line of examplesOf(help(p))) examples.push({ command: ['bits', ...p].join(' '), line });
  // The help has examples in several commands; a parser that found none would pass vacuously.
  expect(examples.length).toBeGreaterThanOrEqual(20);
  expect(new Set(examples.map((e) => e.command)).size).toBeGreaterThanOrEqual(8);

  const failures: string[] = [];
  const runOne = async (ex: Example, n: number) => {
    const cwd = path.join(work, `ex${n}`);
    const home = path.join(work, `home${n}`);
    mkdirSync(cwd);
    mkdirSync(home);
    // The files the examples name as inputs (big.iso only for an upload: a download example creates it).
    for (const f of ['backup.tar', 'request.xml', 'cert.pem', 'key.pem', 'ca.pem', ...(/\bbits upload\b/.test(ex.line) ? ['big.iso'] : [])]) {
      copyFileSync(path.join(fixtures, f), path.join(cwd, f));
    }
    for (const d of ['share', 'incoming', 'srv/files']) mkdirSync(path.join(cwd, d), { recursive: true });
    const line = await localise(ex.line, home, cwd);
    const r = await runExample(line, cwd, home);
    if (r.code !== 0) failures.push(`${ex.command}: ${ex.line}\n    ran: ${line}\n    exit ${r.code}: ${r.output.trim().split('\n').slice(-3).join(' | ')}`);
  };
  // Isolated from each other (own folder, own job store): two at a time (the suite runs beside it on two cores).
  const queue = examples.map((ex, i) => () => runOne(ex, i));
  await Promise.all([1, 2].map(async () => {
    for (let next = queue.shift(); next; next = queue.shift()) await next();
  }));
  expect(failures, failures.join('\n')).toEqual([]);
}, 120_000);

/**
 * Runs one example line in bash with `bits` the built executable; a `bits
 * serve` example is stopped with SIGTERM once it listens (it must then exit 0).
 */
function runExample(line: string, cwd: string, home: string): Promise<{ code: number | null; output: string }> {
  const isServe = /\bbits serve\b/.test(line);
  const bits = `${JSON.stringify(process.execPath)} ${JSON.stringify(BIN)}`;
  // exec: the signal reaches bits itself, not the shell.
  const script = `set -o pipefail; ${line.replace(/\bbits\b(?=\s)/g, (m, at: number) => (isServe && at === line.indexOf('bits ') ? `exec ${bits}` : bits))}`;
  return new Promise((resolve) => {
    const child = spawn('bash', ['-c', script], {
      cwd,
      env: childEnv({ BITS_HOME: home, BITS_PASSWORD: 'example-password', BITS_SERVE_PASSWORD: undefined }),
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let output = '';
    let stopping = false;
    const onData = (d: Buffer) => {
      output += d.toString();
      if (isServe && !stopping && /listening/.test(output)) {
        stopping = true;
        child.kill('SIGTERM');
      }
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', onData);
    const timer = setTimeout(() => child.kill('SIGKILL'), 20_000);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, output });
    });
  });
}
