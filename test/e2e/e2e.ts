/**
 * End-to-end plumbing: the BUILT `bits` as child processes (client and `bits serve`),
 * each run with its own BITS_HOME, no proxy variables from the environment, loopback only.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { BIN, ROOT, childEnv, runBits, type RunResult } from '../helpers/cli.js';
import { makeTempDir } from '../helpers/files.js';

export { sha256File, makeRandomFile, sha256 } from '../helpers/files.js';
export { ensureBuilt } from '../helpers/cli.js';

/** Proxy variables of the machine must not reroute loopback transfers. */
const NO_PROXY_ENV: Record<string, string | undefined> = {
  HTTP_PROXY: undefined,
  HTTPS_PROXY: undefined,
  ALL_PROXY: undefined,
  NO_PROXY: undefined,
  http_proxy: undefined,
  https_proxy: undefined,
  all_proxy: undefined,
  no_proxy: undefined,
  BITS_USER: undefined,
  BITS_PASSWORD: undefined,
  BITS_SERVE_USER: undefined,
  BITS_SERVE_PASSWORD: undefined,
};

export interface Sandbox {
  dir: string;
  home: string;
  /** `node bin/bits …` with BITS_HOME = this sandbox. */
  bits(args: string[], env?: Record<string, string | undefined>, timeoutMs?: number): Promise<RunResult>;
  file(name: string): string;
  cleanup(): Promise<void>;
}

export async function sandbox(prefix = 'bits-e2e-'): Promise<Sandbox> {
  const { dir, cleanup } = await makeTempDir(prefix);
  const home = path.join(dir, 'home');
  mkdirSync(home);
  return {
    dir,
    home,
    file: (name) => path.join(dir, name),
    bits: (args, env = {}, timeoutMs = 40_000) => runBits(args, { env: { ...NO_PROXY_ENV, BITS_HOME: home, ...env }, cwd: dir, timeoutMs }),
    cleanup,
  };
}

export interface Served {
  url: string;
  port: number;
  root: string;
  /** What `bits serve` printed on stderr so far (its request log). */
  readonly log: string;
  readonly stdout: string;
  stop(): Promise<void>;
}

/** `bits serve --root ROOT --port 0 --json …` as a child; resolves once it listens. */
export async function serve(root: string, args: string[] = [], env: Record<string, string | undefined> = {}): Promise<Served> {
  mkdirSync(root, { recursive: true });
  const child: ChildProcess = spawn(process.execPath, [BIN, 'serve', '--root', root, '--port', '0', '--json', ...args], {
    cwd: ROOT,
    env: childEnv({ ...NO_PROXY_ENV, ...env }),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  const exited = new Promise<void>((r) => child.on('close', () => r()));
  const listening = await new Promise<{ url: string }>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`bits serve did not start; stderr: ${stderr}`)), 15_000);
    child.stdout!.setEncoding('utf8').on('data', (d: string) => {
      stdout += d;
      const line = stdout.split('\n').find((l) => l.includes('"listening"'));
      if (line) {
        clearTimeout(t);
        resolve(JSON.parse(line) as { url: string });
      }
    });
    child.on('close', () => {
      clearTimeout(t);
      reject(new Error(`bits serve exited; stderr: ${stderr}`));
    });
  });
  return {
    url: listening.url,
    port: Number(new URL(listening.url).port),
    root,
    get log() {
      return stderr;
    },
    get stdout() {
      return stdout;
    },
    stop: async () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(t);
    },
  };
}

export interface JsonEvent {
  type: string;
  time: string;
  phase?: string;
  state?: string;
  bytes?: number;
  bytesDone?: number;
  message?: string;
  error?: { code: string; exitCode: number; message: string } | null;
  [k: string]: unknown;
}

/** Every stdout line must be one JSON object (the --json contract). */
export function jsonEvents(stdout: string): JsonEvent[] {
  return stdout
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((l) => JSON.parse(l) as JsonEvent);
}

/** The human lines bits wrote on stderr. */
export function lines(stderr: string): string[] {
  return stderr.split('\n').filter((l) => l.trim() !== '');
}

/** Fails with the child's output, so a broken run explains itself. */
export function expectOk(r: RunResult, what: string): void {
  if (r.code !== 0) throw new Error(`${what}: exit ${r.code}\nstderr: ${r.stderr}\nstdout: ${r.stdout.slice(-2000)}`);
}
