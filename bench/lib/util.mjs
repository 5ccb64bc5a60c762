// Small helpers of the benchmark: sizes, statistics, hashing, ports, running a
// command under GNU time. Plain Node, no dependencies.
import { spawn } from 'node:child_process';
import { createHash, randomFillSync } from 'node:crypto';
import { createReadStream, createWriteStream, existsSync, promises as fsp, statSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';

export const MiB = 1024 * 1024;

const UNITS = { '': 1, B: 1, K: 1024, M: MiB, G: 1024 * MiB };

/** "100M" -> 104857600 (binary units, as the bits CLI reads them). */
export function parseSize(s) {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([KMG]?)(?:i?B)?\s*$/i.exec(s);
  if (!m) throw new Error(`not a size: ${JSON.stringify(s)} (expected e.g. 100M, 1G)`);
  const n = Math.round(Number(m[1]) * UNITS[m[2].toUpperCase()]);
  if (!Number.isSafeInteger(n) || n < 1) throw new Error(`not a size: ${JSON.stringify(s)}`);
  return n;
}

export function sizeLabel(bytes) {
  if (bytes % (1024 * MiB) === 0) return `${bytes / (1024 * MiB)} GiB`;
  if (bytes % MiB === 0) return `${bytes / MiB} MiB`;
  return `${bytes} B`;
}

export function stats(values) {
  const v = [...values].sort((a, b) => a - b);
  if (v.length === 0) return undefined;
  const mid = Math.floor(v.length / 2);
  const median = v.length % 2 ? v[mid] : (v[mid - 1] + v[mid]) / 2;
  return { median, min: v[0], max: v[v.length - 1], n: v.length };
}

export async function sha256File(file) {
  const h = createHash('sha256');
  for await (const chunk of createReadStream(file, { highWaterMark: 4 * MiB })) h.update(chunk);
  return h.digest('hex');
}

/**
 * A file of random bytes, kept between benchmark runs: `<name>.json` beside it
 * records size, mtime and sha256 so an unchanged file is not regenerated or rehashed.
 */
export async function ensureDataFile(dir, size) {
  await fsp.mkdir(dir, { recursive: true });
  const name = `random-${size}.bin`;
  const file = path.join(dir, name);
  const metaFile = `${file}.json`;
  try {
    const meta = JSON.parse(await fsp.readFile(metaFile, 'utf8'));
    const st = statSync(file);
    if (meta.size === size && st.size === size && meta.mtimeMs === st.mtimeMs && /^[0-9a-f]{64}$/.test(meta.sha256)) {
      return { file, name, size, sha256: meta.sha256, reused: true };
    }
  } catch {
    /* missing or stale: regenerate */
  }
  const h = createHash('sha256');
  const ws = createWriteStream(file, { highWaterMark: 4 * MiB });
  const buf = Buffer.allocUnsafe(4 * MiB);
  let left = size;
  while (left > 0) {
    const n = Math.min(left, buf.length);
    randomFillSync(buf, 0, n);
    const chunk = Buffer.from(buf.subarray(0, n)); // the stream keeps a reference; do not refill it
    h.update(chunk);
    left -= n;
    if (!ws.write(chunk)) await new Promise((r) => ws.once('drain', r));
  }
  await new Promise((resolve, reject) => ws.end((err) => (err ? reject(err) : resolve())));
  const sha256 = h.digest('hex');
  const st = statSync(file);
  await fsp.writeFile(metaFile, JSON.stringify({ size, mtimeMs: st.mtimeMs, sha256 }) + '\n');
  return { file, name, size, sha256, reused: false };
}

export function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

export async function waitForPort(port, isAlive, timeoutMs = 10_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (!isAlive()) return false;
    const ok = await new Promise((resolve) => {
      const s = net.connect(port, '127.0.0.1');
      s.once('connect', () => {
        s.destroy();
        resolve(true);
      });
      s.once('error', () => resolve(false));
    });
    if (ok) return true;
    if (Date.now() > deadline) return false;
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** First executable found on PATH or in the extra (sbin) directories. */
export function findExecutable(name, extraDirs = []) {
  const dirs = [...(process.env.PATH ?? '').split(path.delimiter), ...extraDirs].filter(Boolean);
  for (const d of dirs) {
    const p = path.join(d, name);
    if (existsSync(p)) return p;
  }
  return undefined;
}

/** Runs a command to completion; resolves with exit code and captured output (never rejects on exit status). */
export function runCapture(cmd, args, opts = {}) {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], ...opts });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => {
      if (stdout.length < 1e6) stdout += d;
    });
    child.stderr.on('data', (d) => {
      if (stderr.length < 1e6) stderr += d;
    });
    child.once('error', reject);
    child.once('close', (code, signal) => resolve({ code, signal, stdout, stderr }));
  });
}

/**
 * Runs `argv` once and measures it: wall seconds from our clock (fine-grained), and,
 * when GNU time is available, peak RSS (KiB) and user+sys CPU seconds of the command.
 */
export async function measure(argv, { timeBin, env, cwd, timeFile }) {
  let cmd = argv[0];
  let args = argv.slice(1);
  if (timeBin) {
    args = ['-f', '%e %M %U %S', '-o', timeFile, ...argv];
    cmd = timeBin;
  }
  const t0 = process.hrtime.bigint();
  const r = await runCapture(cmd, args, { env, cwd });
  const wall = Number(process.hrtime.bigint() - t0) / 1e9;
  const out = { wall, code: r.code, signal: r.signal, stderr: r.stderr.trim(), rssKiB: undefined, cpu: undefined };
  if (timeBin) {
    const text = await fsp.readFile(timeFile, 'utf8').catch(() => '');
    // GNU time prepends "Command exited with non-zero status N" on failure; the numbers are the last line.
    const last = text.trim().split('\n').pop() ?? '';
    const m = /^([\d.]+) (\d+) ([\d.]+) ([\d.]+)$/.exec(last.trim());
    if (m) {
      out.rssKiB = Number(m[2]);
      out.cpu = Number(m[3]) + Number(m[4]);
    }
  }
  return out;
}

/** Flushes dirty pages so one tool's write-back does not slow the next tool's run. */
export async function syncDisks() {
  await runCapture('sync', []).catch(() => undefined);
}
