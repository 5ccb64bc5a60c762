/**
 * Runs the BUILT executable (`node bin/bits …`) as a child process, the way
 * users and scripts do: real argv, real environment, real exit code. Also in a
 * pseudo-terminal (util-linux `script`, or python3's pty module), where stderr
 * is a TTY and progress bars appear.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { checkJsonLines } from './json-schema.js';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const BIN = path.join(ROOT, 'bin', 'bits');

export interface RunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

export interface RunOptions {
  /** Added to (or, with undefined values, removed from) the base environment. */
  env?: Record<string, string | undefined>;
  cwd?: string;
  /** Written to stdin, which is then closed. */
  input?: string;
  /** Kill (SIGKILL) after this long; default 30 s. */
  timeoutMs?: number;
}

/** What bin/bits runs (scripts/bundle.mjs); dist/cli/main.js and the rest of dist/ are tsc's. */
export const BUNDLE = path.join(ROOT, 'dist', 'bundle', 'bits.mjs');

/**
 * `npm run build` without npm: tsc (type errors elsewhere in the tree do not stop it from
 * emitting), then the bundle bin/bits loads, which is built from the sources, not from dist/.
 */
export function buildDist(): void {
  spawnSync(process.execPath, [path.join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', ROOT], { cwd: ROOT, stdio: 'ignore', timeout: 120_000 });
  spawnSync(process.execPath, [path.join(ROOT, 'scripts', 'bundle.mjs')], { cwd: ROOT, stdio: 'ignore', timeout: 120_000 });
}

/** Builds dist/ if it is missing. */
export function ensureBuilt(): void {
  if (existsSync(path.join(ROOT, 'dist', 'cli', 'main.js')) && existsSync(BUNDLE)) return;
  buildDist();
  if (!existsSync(path.join(ROOT, 'dist', 'cli', 'main.js'))) throw new Error('build failed: dist/cli/main.js missing');
  if (!existsSync(BUNDLE)) throw new Error('build failed: dist/bundle/bits.mjs missing');
}

/**
 * The environment a child sees: the test process's, minus anything that changes
 * how bits presents itself (colour, CI status interval), plus opts.env.
 */
export function childEnv(extra: Record<string, string | undefined> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env };
  for (const k of ['FORCE_COLOR', 'NO_COLOR', 'BITS_STATUS_INTERVAL_MS', 'BITS_DEBUG', 'NODE_OPTIONS']) delete env[k];
  for (const [k, v] of Object.entries(extra)) {
    if (v === undefined) delete env[k];
    else env[k] = v;
  }
  return env;
}

export interface RunningBits {
  child: ChildProcess;
  /** Everything so far. */
  readonly stdout: string;
  readonly stderr: string;
  /** Resolves when stderr (or stdout) matches; rejects after timeoutMs. */
  waitFor(re: RegExp, stream?: 'stderr' | 'stdout', timeoutMs?: number): Promise<void>;
  done: Promise<RunResult>;
}

/** With --json stdout is JSON lines, unless it carries the downloaded bytes (`-o -`). */
export function printsJsonEvents(args: readonly string[]): boolean {
  const end = args.indexOf('--');
  const a = end < 0 ? args : args.slice(0, end);
  if (!a.includes('--json')) return false;
  return !a.some((x, i) => ((x === '-o' || x === '--output') && a[i + 1] === '-') || x === '-o-' || x === '--output=-');
}

/**
 * Every --json run of the suite is held to the documented schema (README
 * "Scripts and CI"): the error to fail the run with, or undefined. Test files
 * that spawn bits themselves call this too.
 */
export function schemaProblem(args: readonly string[], stdout: string): Error | undefined {
  const problems = printsJsonEvents(args) ? checkJsonLines(stdout) : [];
  return problems.length ? new Error(`bits ${args.join(' ')}: stdout lines not matching schema/events.schema.json:\n${problems.join('\n')}`) : undefined;
}

/** Starts `node bin/bits ...args` and returns at once (for tests that signal or watch it). */
export function startBits(args: string[], opts: RunOptions = {}): RunningBits {
  const child = spawn(process.execPath, [BIN, ...args], {
    cwd: opts.cwd ?? ROOT,
    env: childEnv(opts.env),
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  const waiters = new Set<() => void>();
  child.stdout!.setEncoding('utf8').on('data', (d: string) => {
    stdout += d;
    for (const w of [...waiters]) w();
  });
  child.stderr!.setEncoding('utf8').on('data', (d: string) => {
    stderr += d;
    for (const w of [...waiters]) w();
  });
  if (opts.input !== undefined) child.stdin!.end(opts.input);
  else child.stdin!.end();
  const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 30_000);
  const done = new Promise<RunResult>((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      for (const w of [...waiters]) w();
      const bad = schemaProblem(args, stdout);
      if (bad) reject(bad);
      else resolve({ code, signal, stdout, stderr });
    });
  });
  return {
    child,
    get stdout() {
      return stdout;
    },
    get stderr() {
      return stderr;
    },
    waitFor(re, stream = 'stderr', timeoutMs = 10_000) {
      return new Promise<void>((resolve, reject) => {
        const check = () => {
          if (re.test(stream === 'stderr' ? stderr : stdout)) {
            cleanup();
            resolve();
          } else if (child.exitCode !== null || child.signalCode !== null) {
            cleanup();
            reject(new Error(`bits exited before ${re} appeared; stderr: ${stderr}`));
          }
        };
        const t = setTimeout(() => {
          cleanup();
          reject(new Error(`timed out waiting for ${re}; stderr so far: ${stderr}`));
        }, timeoutMs);
        const cleanup = () => {
          clearTimeout(t);
          waiters.delete(check);
        };
        waiters.add(check);
        check();
      });
    },
    done,
  };
}

/** Runs `node bin/bits ...args` to completion (stdin, stdout and stderr are pipes: not a TTY). */
export function runBits(args: string[], opts: RunOptions = {}): Promise<RunResult> {
  return startBits(args, opts).done;
}

export interface PtyResult {
  code: number | null;
  /** stdout and stderr as the terminal showed them (CRLF line ends, escape sequences). */
  output: string;
}

function shellQuote(s: string): string {
  return /^[A-Za-z0-9_./=:,+-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`;
}

let ptyTool: 'script' | 'python' | null | undefined;

/** Which pseudo-terminal runner works here; null when none (tests then skip with a message). */
export function ptyRunner(): 'script' | 'python' | null {
  if (ptyTool !== undefined) return ptyTool;
  const probe = (cmd: string, args: string[]) => {
    const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: 10_000, stdio: ['ignore', 'pipe', 'pipe'] });
    return r.status === 0 && r.stdout.includes('tty-yes');
  };
  const test = `node -e "process.stdout.write(process.stderr.isTTY ? 'tty-yes' : 'tty-no')"`;
  if (probe('script', ['-qfec', test, '/dev/null'])) ptyTool = 'script';
  else if (probe('python3', ['-c', PY_PTY, 'sh', '-c', test])) ptyTool = 'python';
  else ptyTool = null;
  return ptyTool;
}

// Runs argv[1:] in a pty, copies its output to stdout, exits with its exit code.
const PY_PTY = `
import os, pty, sys
pid, fd = pty.fork()
if pid == 0:
    os.execvp(sys.argv[1], sys.argv[1:])
out = b''
while True:
    try:
        data = os.read(fd, 65536)
    except OSError:
        break
    if not data:
        break
    os.write(1, data)
_, status = os.waitpid(pid, 0)
sys.exit(os.waitstatus_to_exitcode(status) if hasattr(os, 'waitstatus_to_exitcode') else status >> 8)
`;

/** Runs `node bin/bits ...args` with stdin/stdout/stderr on a pseudo-terminal. */
export function runBitsInPty(args: string[], opts: RunOptions = {}): Promise<PtyResult> {
  const tool = ptyRunner();
  if (!tool) throw new Error('no pseudo-terminal runner (util-linux script or python3) available');
  const command = [process.execPath, BIN, ...args].map(shellQuote).join(' ');
  const [cmd, argv] = tool === 'script' ? ['script', ['-qfec', command, '/dev/null']] : ['python3', ['-c', PY_PTY, 'sh', '-c', command]];
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, argv as string[], {
      cwd: opts.cwd ?? ROOT,
      env: childEnv({ TERM: 'xterm-256color', COLUMNS: '100', ...opts.env }),
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let output = '';
    child.stdout!.setEncoding('utf8').on('data', (d: string) => (output += d));
    child.stderr!.setEncoding('utf8').on('data', (d: string) => (output += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 30_000);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, output });
    });
  });
}

/** Any ANSI/VT escape sequence (CSI, OSC, or a bare ESC). */
export const ESCAPE_RE = /\u001b/;

/** Strips CSI sequences, for reading what a terminal shows. */
export function stripAnsi(s: string): string {
  // eslint-disable-next-line no-control-regex
  return s.replace(/\u001b\[[0-9;?]*[ -/]*[@-~]/g, '').replace(/\u001b\][^\u0007]*\u0007/g, '');
}
