/**
 * The request files of sessions being uploaded: kept open across a session's FRAGMENTs
 * (one open per session instead of an open, fdatasync and close per fragment), and the
 * group commit of config.ts DurabilityConfig.
 *
 * Group commit: an Ack only waits for the fragment's writes. Every syncEveryBytes or
 * syncEverySeconds the file is fdatasynced in the background, and only then does the
 * session record take the new durableLength (sessions.ts: a reloaded session is cut back to
 * it). The final fragment's Ack, the notification and the copy to the destination wait for
 * a sync under the session lock (UploadServer calls sync()), and so does a graceful stop.
 */
import type { FileHandle } from 'node:fs/promises';
import type { DurabilityConfig } from './config.js';
import { openRequestFile, saveSession, type Session } from './sessions.js';

/** Request files kept open between fragments. More in use at once are closed when their fragment ends. */
export const MAX_OPEN_REQUEST_FILES = 128;
/** A request file unused this long is closed (its bytes sit in the page cache either way). */
const IDLE_CLOSE_MS = 5_000;

interface Entry {
  fh?: FileHandle;
  opening?: Promise<FileHandle>;
  /** Writers and syncs using fh: it is closed only when there are none. */
  users: number;
  lastUse: number;
  /** The group commit in flight: one per session at a time. */
  flushing?: Promise<void>;
  /** Starts the group commit syncEverySeconds after the first unsynced Ack. */
  timer?: NodeJS.Timeout;
  /**
   * A background fdatasync failed. What it covered may never reach the disk, and a later
   * fdatasync may not say so again (Linux reports a write-back error once), so the bytes
   * after durableLength are dropped before the session takes another one (see prepare).
   */
  failed?: unknown;
}

function sessionGone(): Error {
  return Object.assign(new Error('the request file was deleted'), { code: 'ENOENT' });
}

export class RequestFiles {
  private readonly entries = new Map<Session, Entry>();
  /** Sessions closed or dropped: nothing may arm a commit for them again. */
  private readonly ended = new WeakSet<Session>();
  private openCount = 0;
  private readonly sweeper: NodeJS.Timeout;

  constructor(
    private readonly durability: DurabilityConfig,
    private readonly log: (line: string) => void,
  ) {
    this.sweeper = setInterval(() => this.closeIdle(Date.now() - IDLE_CLOSE_MS), IDLE_CLOSE_MS / 2);
    this.sweeper.unref();
  }

  get groupCommit(): boolean {
    return this.durability.mode === 'group';
  }

  /** Open request files now (for tests and status output). */
  get openFiles(): number {
    return this.openCount;
  }

  private entry(s: Session): Entry {
    let e = this.entries.get(s);
    if (!e) {
      e = { users: 0, lastUse: Date.now() };
      this.entries.set(s, e);
    }
    return e;
  }

  /**
   * Under the session lock, before a fragment is written: the record must say how to
   * reload the file before a byte that is not yet durable is written to it.
   */
  async prepare(s: Session): Promise<void> {
    const e = this.entries.get(s);
    if (e?.failed !== undefined) await this.rollback(s, e);
    const rec = s.record;
    if (this.groupCommit) {
      if (rec.durableLength === undefined) {
        // Loaded from an `ack` run (or an older version): the loader synced the file, so all of it is durable.
        rec.durableLength = s.received;
        await saveSession(s);
      }
    } else if (rec.durableLength !== undefined) {
      // Begun under group commit: the loader cut and synced the file, so all of it is durable, and from
      // here on every Ack is: a stale durableLength would make the next start drop acknowledged bytes.
      delete rec.durableLength;
      await saveSession(s);
    }
  }

  /** The session's request file, opened (never through a symlink) on first use and kept open. */
  async acquire(s: Session): Promise<FileHandle> {
    const e = this.entry(s);
    e.users++;
    e.lastUse = Date.now();
    try {
      if (!e.fh) {
        e.opening ??= openRequestFile(s).then(
          (fh) => {
            e.fh = fh;
            e.opening = undefined;
            this.openCount++;
            return fh;
          },
          (err: unknown) => {
            e.opening = undefined;
            throw err;
          },
        );
        return await e.opening;
      }
      // A file kept open outlives its name: a deleted request entity means a deleted session.
      if ((await e.fh.stat()).nlink === 0) throw sessionGone();
      return e.fh;
    } catch (err) {
      this.release(s);
      throw err;
    }
  }

  release(s: Session): void {
    const e = this.entries.get(s);
    if (!e) return;
    e.users = Math.max(0, e.users - 1);
    e.lastUse = Date.now();
    if (this.openCount > MAX_OPEN_REQUEST_FILES) this.closeIdle(Number.POSITIVE_INFINITY, this.openCount - MAX_OPEN_REQUEST_FILES);
  }

  /** Closes unused files last used before `before`, least recently used first, at most `max` of them. */
  private closeIdle(before: number, max = Number.POSITIVE_INFINITY): void {
    const idle = [...this.entries].filter(([, e]) => e.fh && e.users === 0 && !e.flushing && e.lastUse < before);
    idle.sort((a, b) => a[1].lastUse - b[1].lastUse);
    for (const [s, e] of idle.slice(0, max)) {
      const fh = e.fh!;
      e.fh = undefined;
      this.openCount--;
      fh.close().catch((err: unknown) => this.log(`session ${s.record.id}: closing the request file: ${(err as Error).message}`));
      if (!e.timer && e.failed === undefined) this.entries.delete(s);
    }
  }

  /** After an acknowledged fragment: starts the group commit when it is due, or arms its timer. */
  written(s: Session): void {
    if (!this.groupCommit || this.ended.has(s)) return;
    const e = this.entry(s);
    const pending = s.received - (s.record.durableLength ?? 0);
    if (pending <= 0 || e.flushing) return; // a running commit calls back here when it ends
    if (pending >= this.durability.syncEveryBytes) {
      this.background(s);
    } else if (!e.timer) {
      e.timer = setTimeout(() => {
        e.timer = undefined;
        this.background(s);
      }, this.durability.syncEverySeconds * 1000);
      e.timer.unref();
    }
  }

  private background(s: Session): void {
    this.flush(s, true).then(
      () => this.written(s),
      (err: unknown) => this.log(`session ${s.record.id}: group commit failed: ${(err as Error).message}`),
    );
  }

  /**
   * Makes everything acknowledged so far durable, and (with `save`) records it in session.json.
   * Runs beside the session's next writes: fdatasync covers what was written before it began.
   */
  private async flush(s: Session, save: boolean): Promise<void> {
    if (!this.groupCommit) return;
    const e = this.entry(s);
    while (e.flushing) await e.flushing.catch(() => {});
    if (e.timer) clearTimeout(e.timer);
    e.timer = undefined;
    // Only acknowledged bytes: a fragment still arriving may yet be cut off and rewritten.
    const target = s.received;
    if (target <= (s.record.durableLength ?? 0)) return;
    const run = (async () => {
      const fh = await this.acquire(s);
      try {
        await fh.datasync();
      } catch (err) {
        e.failed ??= err;
        throw err;
      } finally {
        this.release(s);
      }
      // Data first, then the record that points at it: a crash in between only keeps the older length.
      if ((s.record.durableLength ?? 0) < target) s.record.durableLength = target;
      if (save) await saveSession(s);
    })();
    e.flushing = run;
    try {
      await run;
    } finally {
      e.flushing = undefined;
    }
  }

  /**
   * Under the session lock: everything acknowledged is on disk before the Ack that completes
   * the entity (and before the notification or the copy that follows). The caller saves the record.
   */
  async sync(s: Session): Promise<void> {
    if (!this.groupCommit) return;
    const e = this.entries.get(s);
    if (e?.failed !== undefined) {
      const failure = e.failed;
      await this.rollback(s, e);
      throw failure;
    }
    await this.flush(s, false);
  }

  /** A failed sync: back to the last durable length, which the client resyncs to (416). */
  private async rollback(s: Session, e: Entry): Promise<void> {
    while (e.flushing) await e.flushing.catch(() => {});
    const durable = s.record.durableLength ?? 0;
    this.log(`session ${s.record.id}: a sync failed (${(e.failed as Error)?.message}); dropping the bytes after ${durable}`);
    const fh = await this.acquire(s);
    try {
      await fh.truncate(durable);
      await fh.datasync();
    } finally {
      this.release(s);
    }
    s.received = durable;
    e.failed = undefined;
  }

  /** The session is being closed or dropped: no more commits, and the file is closed. */
  async end(s: Session): Promise<void> {
    this.ended.add(s);
    const e = this.entries.get(s);
    if (!e) return;
    if (e.timer) clearTimeout(e.timer);
    e.timer = undefined;
    while (e.flushing) await e.flushing.catch(() => {});
    // A record write still queued must not land in a folder being deleted.
    await s.saving?.catch(() => {});
    this.entries.delete(s);
    const fh = e.fh ?? (await e.opening?.catch(() => undefined));
    e.fh = undefined;
    if (fh) {
      this.openCount--;
      await fh.close().catch(() => {});
    }
  }

  /** Graceful stop: every acknowledged byte of `sessions` becomes durable, then every file is closed. */
  async closeAll(sessions: Iterable<Session>): Promise<void> {
    clearInterval(this.sweeper);
    for (const s of sessions) {
      await this.flush(s, true).catch((err: unknown) => this.log(`session ${s.record.id}: final sync failed: ${(err as Error).message}`));
    }
    for (const s of [...this.entries.keys()]) await this.end(s);
  }
}
