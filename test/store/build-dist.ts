/**
 * The multi-process and CLI tests run the BUILT code (dist/), as users do.
 * `npm test` builds first; when a test file is run on its own, build here if
 * dist/ is missing or older than the sources these tests cover. Builds are
 * serialized across vitest workers with the store's own lock.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { acquireLock } from '../../src/store/lock.js';
import { buildDist } from '../helpers/cli.js';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const BIN = path.join(ROOT, 'bin', 'bits');

const WATCHED = ['src/store', 'src/jobs', 'src/cli/commands/list.ts', 'src/cli/commands/status.ts', 'src/cli/commands/clean.ts', 'src/errors.ts'];
const OUTPUTS = ['dist/store/index.js', 'dist/jobs/lifecycle.js', 'dist/cli/commands/list.js', 'dist/cli/commands/status.js', 'dist/cli/commands/clean.js', 'dist/cli/main.js', 'dist/bundle/bits.mjs'];

function newestMtime(p: string): number {
  const st = fs.statSync(p);
  if (!st.isDirectory()) return st.mtimeMs;
  return Math.max(0, ...fs.readdirSync(p).map((n) => newestMtime(path.join(p, n))));
}

function isStale(): boolean {
  const outs = OUTPUTS.map((o) => path.join(ROOT, o));
  if (!outs.every((o) => fs.existsSync(o))) return true;
  const oldestOut = Math.min(...outs.map((o) => fs.statSync(o).mtimeMs));
  return WATCHED.some((w) => newestMtime(path.join(ROOT, w)) > oldestOut);
}

export async function ensureBuilt(): Promise<void> {
  if (!isStale()) return;
  const lock = await acquireLock(path.join(os.tmpdir(), 'bits-test-build.lock'), { timeoutMs: 120_000, staleMs: 120_000 });
  try {
    if (!isStale()) return;
    // Other parts of the tree may have type errors in progress; tsc still emits, which is all we need.
    buildDist();
    const missing = OUTPUTS.filter((o) => !fs.existsSync(path.join(ROOT, o)));
    if (missing.length) throw new Error(`build did not produce ${missing.join(', ')}`);
  } finally {
    lock.release();
  }
}
