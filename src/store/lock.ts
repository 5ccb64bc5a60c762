/**
 * A cross-process exclusive lock: a file created with O_EXCL ('wx') holding
 * {pid, host, token, acquiredAt}. Node has no portable flock(), and O_EXCL
 * create is atomic on every local file system (and on Windows).
 *
 * A lock is stale when its holder is gone: same host and the pid is dead, or
 * older than `staleMs` (pid reuse, a hung holder, another host), or unreadable
 * and older than GARBLED_STALE_MS (the holder was killed between creating the
 * file and writing it). Holds last milliseconds — the store never awaits
 * while holding the lock — so these bounds are generous.
 *
 * Stealing is itself racy when two waiters judge the same lock stale at once,
 * so a waiter first renames the stale file to a unique name (only one rename
 * can win) and checks it took the very file it judged (same inode and bytes).
 * If it took a fresh lock instead it puts it back with link(), which fails
 * rather than overwrite. The holder additionally re-checks its token just
 * before committing (`stillHeld`), so the one remaining double-fault window
 * ends in a retry, not a lost update.
 */
import fs from 'node:fs';
import os from 'node:os';
import crypto from 'node:crypto';
import { isProcessAlive, sleep } from './process.js';

export interface LockOptions {
  /** Give up waiting after this long (default 15 s). */
  timeoutMs?: number;
  /** A lock older than this is stale whatever its pid (default 10 s). */
  staleMs?: number;
}

export interface LockInfo {
  pid: number;
  host: string;
  token: string;
  acquiredAt: number;
}

export interface LockHandle {
  readonly token: string;
  /** Whether the lock file is still ours (nobody judged us stale). */
  stillHeld(): boolean;
  release(): void;
}

/** Thrown when the lock could not be acquired in time; the store turns it into a StoreError. */
export class LockTimeoutError extends Error {
  constructor(readonly lockPath: string, readonly holder: LockInfo | undefined, readonly waitedMs: number) {
    super(`lock ${lockPath} is held`);
  }
}

const GARBLED_STALE_MS = 2_000;
const HOST = os.hostname();
/**
 * When this process started. A lock naming our own pid but taken before then was left
 * by an earlier process that had our pid: in a container every restart is pid 1 again,
 * so "pid alive" alone would keep it forever. (Not a set of our tokens: worker threads
 * of this process hold locks too, each with its own copy of this module.)
 */
const PROCESS_START = Date.now() - process.uptime() * 1000;

function isThisProcess(info: LockInfo): boolean {
  return info.host === HOST && info.pid === process.pid && info.acquiredAt >= PROCESS_START;
}

function parseLock(raw: string): LockInfo | undefined {
  try {
    const v = JSON.parse(raw) as Partial<LockInfo>;
    if (typeof v.pid === 'number' && typeof v.host === 'string' && typeof v.token === 'string' && typeof v.acquiredAt === 'number') {
      return v as LockInfo;
    }
  } catch {
    // garbled: handled by the caller
  }
  return undefined;
}

function readLock(lockPath: string): { raw: string; ino: number; mtimeMs: number } | undefined {
  try {
    const fd = fs.openSync(lockPath, 'r');
    try {
      const st = fs.fstatSync(fd);
      return { raw: fs.readFileSync(fd, 'utf8'), ino: st.ino, mtimeMs: st.mtimeMs };
    } finally {
      fs.closeSync(fd);
    }
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
}

export function isLockStale(info: LockInfo | undefined, mtimeMs: number, now: number, staleMs: number): boolean {
  if (!info) return now - mtimeMs > GARBLED_STALE_MS;
  if (info.host === HOST && !isProcessAlive(info.pid)) return true;
  if (info.host === HOST && info.pid === process.pid && info.acquiredAt < PROCESS_START) return true;
  return now - Math.min(info.acquiredAt, mtimeMs) > staleMs;
}

/** Moves a stale lock out of the way, making sure it is the one we judged. */
function steal(lockPath: string, seen: { raw: string; ino: number }): void {
  const aside = `${lockPath}.stale-${process.pid}-${crypto.randomBytes(4).toString('hex')}`;
  try {
    fs.renameSync(lockPath, aside);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return; // another waiter took it first
    throw err;
  }
  let taken: ReturnType<typeof readLock>;
  try {
    taken = readLock(aside);
  } catch {
    taken = undefined;
  }
  const same = taken !== undefined && taken.raw === seen.raw && (seen.ino === 0 || taken.ino === seen.ino);
  if (!same) {
    // We took a lock someone acquired after our look: give it back unless yet another process holds the name now.
    try {
      fs.linkSync(aside, lockPath);
    } catch {
      // EEXIST: the rightful holder notices at stillHeld() and retries.
    }
  }
  fs.rmSync(aside, { force: true });
}

export async function acquireLock(lockPath: string, opts: LockOptions = {}): Promise<LockHandle> {
  const timeoutMs = opts.timeoutMs ?? 15_000;
  const staleMs = opts.staleMs ?? 10_000;
  const start = Date.now();
  let delay = 1;
  let holder: LockInfo | undefined;
  for (;;) {
    const token = crypto.randomBytes(8).toString('hex');
    const info: LockInfo = { pid: process.pid, host: HOST, token, acquiredAt: Date.now() };
    let fd: number | undefined;
    try {
      fd = fs.openSync(lockPath, 'wx', 0o600);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
    if (fd !== undefined) {
      try {
        fs.writeSync(fd, JSON.stringify(info));
      } catch (err) {
        fs.closeSync(fd);
        fs.rmSync(lockPath, { force: true });
        throw err;
      }
      fs.closeSync(fd);
      return makeHandle(lockPath, token);
    }
    const seen = readLock(lockPath);
    if (!seen) continue; // released between our open and our read: try again at once
    holder = parseLock(seen.raw);
    const now = Date.now();
    if (isLockStale(holder, seen.mtimeMs, now, staleMs)) {
      steal(lockPath, seen);
      continue;
    }
    if (now - start >= timeoutMs) throw new LockTimeoutError(lockPath, holder, now - start);
    // Exponential backoff with jitter so waiters do not move in lock-step.
    await sleep(delay + Math.random() * delay);
    delay = Math.min(delay * 2, 8);
  }
}

function makeHandle(lockPath: string, token: string): LockHandle {
  let released = false;
  const stillHeld = (): boolean => {
    try {
      const cur = readLock(lockPath);
      return cur !== undefined && parseLock(cur.raw)?.token === token;
    } catch {
      return false;
    }
  };
  return {
    token,
    stillHeld,
    release() {
      if (released) return;
      released = true;
      if (stillHeld()) fs.rmSync(lockPath, { force: true });
    },
  };
}

/**
 * A lock held for a holder's whole life (the agent's, a served folder's): one attempt,
 * no waiting; never stale by age, only when its pid is dead (or, on this host, is our
 * own pid without being ours). Undefined when a live holder has it.
 */
export async function tryLifetimeLock(lockPath: string): Promise<LockHandle | undefined> {
  try {
    return await acquireLock(lockPath, { timeoutMs: 0, staleMs: Number.MAX_SAFE_INTEGER });
  } catch (err) {
    if (err instanceof LockTimeoutError) return undefined;
    throw err;
  }
}

/**
 * Who holds the lifetime lock at lockPath, when it is held and not stale: `ours` when
 * this process (any of its threads) holds it. A garbled lock younger than GARBLED_STALE_MS is held by
 * someone unknown (holder undefined).
 */
export function lifetimeLockHolder(lockPath: string): { holder: LockInfo | undefined; ours: boolean } | undefined {
  let seen: ReturnType<typeof readLock>;
  try {
    seen = readLock(lockPath);
  } catch {
    return undefined;
  }
  if (!seen) return undefined;
  const holder = parseLock(seen.raw);
  if (isLockStale(holder, seen.mtimeMs, Date.now(), Number.MAX_SAFE_INTEGER)) return undefined;
  return { holder, ours: holder !== undefined && isThisProcess(holder) };
}
