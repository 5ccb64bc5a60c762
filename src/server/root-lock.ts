/**
 * One upload server process per served folder.
 *
 * A starting UploadServer loads every session under its root and, under group commit,
 * cuts each request file back to its durable length (sessions.ts loadOne): right after
 * a crash, data loss for a session another live server is still receiving (that server
 * goes on writing at its own offset; the bytes it acknowledged since its last sync
 * become a hole of zeros in a file that completes and is published). Servers of one
 * process keep out of each other's sessions (sessions.ts holdSession); across processes
 * the root is locked:
 *
 *   <root>/BITS-Sessions/serve.lock
 *
 * the store's O_EXCL lock (src/store/lock.ts) held for the server's life, as the agent
 * holds agent.lock: stale only when its pid is dead, so a SIGKILLed server's lock is
 * taken over by the next server. BITS-Sessions is never served (download-server.ts
 * isPrivatePath: only BITS-Sessions/Replies is) and no upload may name it (upload-server.ts),
 * so a client can neither read nor overwrite the lock. Servers of the same process share
 * one lock per root (counted), so tests and embedders may still run several.
 *
 * Nested roots: a server refuses a root below a folder another process serves (checked
 * here, every ancestor's BITS-Sessions/serve.lock) and a root above one (found by the
 * session loader's walk, before it touches anything in that folder): either would load,
 * and cut, the other's sessions.
 */
import fs from 'node:fs';
import path from 'node:path';
import { lifetimeLockHolder, tryLifetimeLock, type LockHandle, type LockInfo } from '../store/lock.js';
import { SESSIONS_DIR } from './sessions.js';

export const ROOT_LOCK_NAME = 'serve.lock';

/** Another process serves this folder, a folder around it, or one inside it. */
export class RootInUse extends Error {
  readonly code = 'ERR_BITS_ROOT_IN_USE';
  constructor(
    readonly root: string,
    readonly lockPath: string,
    readonly holder: LockInfo | undefined,
    readonly where: 'same' | 'inside' | 'around',
  ) {
    const who = holder ? `pid ${holder.pid}${holder.host ? ` on ${holder.host}` : ''}` : 'another process';
    const what =
      where === 'same'
        ? `${root} is already served by another bits serve (${who})`
        : where === 'inside'
          ? `${root} is inside ${path.dirname(path.dirname(lockPath))}, which another bits serve serves (${who})`
          : `${root} contains ${path.dirname(path.dirname(lockPath))}, which another bits serve serves (${who})`;
    super(`${what}: one server per folder (it would cut the other's uploads in progress); stop it first, or if none runs remove ${lockPath}`);
  }
}

export function rootLockPath(dir: string): string {
  return path.join(dir, SESSIONS_DIR, ROOT_LOCK_NAME);
}

/** The live lock of another process in `dir` (a folder that may be someone's root), if any. */
export function foreignRootLock(dir: string): { holder: LockInfo | undefined; lockPath: string } | undefined {
  const lockPath = rootLockPath(dir);
  const held = lifetimeLockHolder(lockPath);
  return held && !held.ours ? { holder: held.holder, lockPath } : undefined;
}

interface Held {
  taking: Promise<LockHandle | undefined>;
  /** Once taken (undefined for a folder served unlocked). */
  handle?: LockHandle;
  users: number;
}
/** Per real root: this process's lock and how many of its servers use it. */
const held = new Map<string, Held>();

export interface RootLock {
  release(): void;
}

/**
 * Takes the root's lock (or shares this process's), or throws RootInUse. A root whose
 * BITS-Sessions cannot be created (a read-only folder) is served unlocked, with a log line.
 */
export async function lockRoot(realRoot: string, log: (line: string) => void): Promise<RootLock> {
  let h = held.get(realRoot);
  if (!h) {
    const entry: Held = { taking: takeRootLock(realRoot, log), users: 0 };
    entry.taking.then((handle) => (entry.handle = handle), () => {});
    held.set(realRoot, entry);
    h = entry;
  }
  const entry = h;
  entry.users++;
  try {
    await entry.taking;
  } catch (err) {
    if (--entry.users === 0 && held.get(realRoot) === entry) held.delete(realRoot);
    throw err;
  }
  let released = false;
  return {
    release() {
      if (released) return;
      released = true;
      if (--entry.users > 0) return;
      if (held.get(realRoot) === entry) held.delete(realRoot);
      if (!entry.handle) return;
      entry.handle.release();
      // rmdir only removes an empty folder: sessions or replies keep it.
      try {
        fs.rmdirSync(path.join(realRoot, SESSIONS_DIR));
      } catch {
        /* not empty, or gone */
      }
    },
  };
}

async function takeRootLock(realRoot: string, log: (line: string) => void): Promise<LockHandle | undefined> {
  for (let dir = path.dirname(realRoot); ; dir = path.dirname(dir)) {
    const other = foreignRootLock(dir);
    if (other) throw new RootInUse(realRoot, other.lockPath, other.holder, 'inside');
    if (path.dirname(dir) === dir) break;
  }
  const sessions = path.join(realRoot, SESSIONS_DIR);
  const lockPath = rootLockPath(realRoot);
  // A server that just stopped may remove an empty BITS-Sessions between our mkdir and our create: bounded retry.
  for (let attempt = 0; ; attempt++) {
    try {
      fs.mkdirSync(sessions, { mode: 0o755 });
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'EACCES' || code === 'EPERM' || code === 'EROFS') {
        log(`serve: cannot create ${lockPath} (${code}): serving without the one-server-per-folder lock`);
        return undefined;
      }
      if (code !== 'EEXIST') throw err;
    }
    // Never through a symlink: the lock would land wherever it points (sessions.ts refuses those as well).
    if (fs.lstatSync(sessions, { throwIfNoEntry: false })?.isSymbolicLink()) {
      throw Object.assign(new Error(`refusing to follow the symlink ${sessions} (session storage never follows symlinks)`), { code: 'ELOOP' });
    }
    let handle: LockHandle | undefined;
    try {
      handle = await tryLifetimeLock(lockPath);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' && attempt < 5) continue;
      if (code === 'EACCES' || code === 'EPERM' || code === 'EROFS') {
        log(`serve: cannot create ${lockPath} (${code}): serving without the one-server-per-folder lock`);
        return undefined;
      }
      throw err;
    }
    if (!handle) throw new RootInUse(realRoot, lockPath, lifetimeLockHolder(lockPath)?.holder, 'same');
    return handle;
  }
}

/** Releases every root lock this process holds (at exit: a second SIGINT exits mid-close). */
process.once('exit', () => {
  for (const h of held.values()) h.handle?.release();
});
