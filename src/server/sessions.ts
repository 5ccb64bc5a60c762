/**
 * §3.2.1.3 BITSSessionManager / §3.2.1.4 BITSSessionWrapper: the table of active
 * upload sessions and their on-disk form.
 *
 * Layout mimics IIS so that a reply URL is servable by the download server: for a
 * destination `/vdir/name.bin` a session lives in
 *   <root>/vdir/BITS-Sessions/Requests/{GUID}/requestfile.bin   (the request entity so far)
 *   <root>/vdir/BITS-Sessions/Requests/{GUID}/session.json      (small state record)
 * and an upload-reply response entity in
 *   <root>/vdir/BITS-Sessions/Replies/{GUID}/responsefile.bin
 *
 * Durability rule: the received offset is the request file's size, cut back at load to
 * the record's durableLength when there is one (group commit, config.ts DurabilityConfig:
 * bytes past it were acknowledged but maybe never reached the disk). durableLength only
 * ever names bytes that were fdatasynced before it was written; a record without it
 * (`ack` durability, where every Ack waited for its sync) trusts the file's size.
 *
 * Symlink rule: nothing below the virtual directory is ever followed. Every level from
 * the folder's real path down (BITS-Sessions, Requests, {GUID}) is lstat'ed when it is
 * created and again before every write or delete, and the request file is opened with
 * O_NOFOLLOW; a planted symlink gets SymlinkRefused (logged, answered 403).
 */
import { constants as fsConstants } from 'node:fs';
import { lstat, mkdir, open, readdir, readFile, realpath, rm, rmdir, stat } from 'node:fs/promises';
import { fsyncDirectoryAsync, writeDurableAsync } from '../io/durable.js';
import path from 'node:path';
import { isGuid, normalizeGuid } from '../protocol/guid.js';
import { foreignRootLock, RootInUse } from './root-lock.js';

export const SESSIONS_DIR = 'BITS-Sessions';
export const REQUESTS_DIR = 'Requests';
export const REPLIES_DIR = 'Replies';
export const REQUEST_FILE = 'requestfile.bin';
export const RESPONSE_FILE = 'responsefile.bin';
export const SESSION_FILE = 'session.json';

/** §3.2.1.4 states that outlive a request (INIT, NOTIFY, COMPLETE and CANCEL are transient). */
export type SessionState = 'STATE_RECEIVE_FRAGMENTS' | 'STATE_WAIT_FOR_CLOSE';

export interface ReplyInfo {
  /** The BITS-Reply-URL sent to the client: IIS's relative backslash form, or an app's absolute static URL. */
  url: string;
  /** IsReplyStaticURL */
  isStatic: boolean;
}

/** What session.json holds. */
export interface SessionRecord {
  version: 1;
  /** BITSSessionId, canonical `{UPPER-CASE}` form. */
  id: string;
  /** Decoded URL path of the destination, `/vdir/name.bin` (DestinationURL, path part). */
  urlPath: string;
  /** The absolute destination URL as the client addressed it at CREATE-SESSION (BITS-Original-Request-URL). */
  originalUrl: string;
  protocol: string;
  /** UploadEntitySize: known from the first FRAGMENT's Content-Range. */
  totalLength?: number;
  state: SessionState;
  /** Epoch ms. */
  createdAt: number;
  lastActivity: number;
  /** NotifyCache: the back-end notification completed; a resent final fragment gets the same Ack. */
  notified: boolean;
  /** ShouldcopyToDestination */
  copyToDestination: boolean;
  reply?: ReplyInfo;
  /** Who created it (`user:NAME` or `addr:IP`): the per-client session quota counts these. */
  client?: string;
  /** Folders above BITS-Sessions that CREATE-SESSION made (removed again when the session is dropped unfinished). */
  madeDirs?: number;
  /**
   * Group commit: bytes of the request file known to be on disk. A loaded session is cut
   * back to it; absent, the file's size is trusted (every Ack waited for its sync).
   */
  durableLength?: number;
}

/** A loaded session: the record plus where it lives and what the disk says. */
export interface Session {
  record: SessionRecord;
  /** `<root>/vdir/BITS-Sessions` */
  sessionsDir: string;
  /** Next expected byte = size of requestfile.bin. */
  received: number;
  /** Serialises requests on one session (a client may use several connections). */
  lock: Promise<void>;
  /** The served root's real path: the virtual directory must stay below it. */
  root: string;
  /** FRAGMENTs waiting for the lock (capped: see upload-server.ts). */
  waiting?: number;
  /** The last session.json write queued (see saveSession). */
  saving?: Promise<void>;
}

/**
 * Deepest destination folder (URL segments below the root) a session may live in. The
 * restart loader walks exactly this deep, so a session the server accepts is never lost.
 */
export const MAX_SESSION_DEPTH = 32;

/** A symlink where session storage must have a real folder or file. */
export class SymlinkRefused extends Error {}

/** The virtual directory: the folder that holds BITS-Sessions. */
function virtualDir(s: Session): string {
  return path.dirname(s.sessionsDir);
}

/**
 * Checks (and with `made`, creates) each level from `base` down to `base/...levels`:
 * every one must be a real directory, never a symlink. Created folders are appended to `made`.
 */
async function walkLevels(base: string, levels: string[], made?: string[]): Promise<void> {
  let p = base;
  for (const level of levels) {
    p = path.join(p, level);
    let st;
    try {
      st = await lstat(p);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT' || !made) throw err;
      try {
        await mkdir(p, 0o755);
        made.push(p);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      }
      st = await lstat(p);
    }
    if (st.isSymbolicLink()) throw new SymlinkRefused(`refusing to follow the symlink ${p} (session storage never follows symlinks)`);
    if (!st.isDirectory()) throw Object.assign(new Error(`${p} is not a folder`), { code: 'ENOTDIR' });
  }
}

/** The virtual directory's real path, which must lie inside the root. */
async function realVirtualDir(s: Session): Promise<string> {
  const real = await realpath(virtualDir(s));
  if (real !== s.root && !real.startsWith(s.root + path.sep)) {
    throw new SymlinkRefused(`refusing ${virtualDir(s)}: it resolves outside the served root (${real})`);
  }
  return real;
}

/** Before every write or delete: BITS-Sessions/<sub>/{GUID} below the virtual directory is made of real folders. */
export async function verifySessionDirs(s: Session, sub: string = REQUESTS_DIR): Promise<void> {
  await walkLevels(await realVirtualDir(s), [SESSIONS_DIR, sub, s.record.id]);
}

/**
 * Serializes the folder changes that several sessions share under one root: making
 * BITS-Sessions/Requests (and the destination folders) for a new session, and removing
 * them where empty when another session ends. Without it, one session's rmdir of the
 * just-made, still-empty Requests folder lands between the next session's mkdir and its
 * open() and that CREATE-SESSION fails with ENOENT (E_FAIL), as concurrent clients or a
 * server restarted on the same root do. Keyed by root, not by server: two servers of
 * one process on one root (a restart) share it.
 */
const treeLocks = new Map<string, Promise<void>>();
export async function withTreeLock<T>(root: string, fn: () => Promise<T>): Promise<T> {
  const prev = treeLocks.get(root) ?? Promise.resolve();
  let release!: () => void;
  const mine = new Promise<void>((r) => (release = r));
  const tail = prev.then(() => mine);
  treeLocks.set(root, tail);
  await prev;
  try {
    return await fn();
  } finally {
    release();
    if (treeLocks.get(root) === tail) treeLocks.delete(root);
  }
}

/** Creates BITS-Sessions/Replies/{GUID} for an upload-reply response, with the same checks. */
export async function prepareReplyDir(s: Session): Promise<void> {
  await withTreeLock(s.root, async () => walkLevels(await realVirtualDir(s), [SESSIONS_DIR, REPLIES_DIR, s.record.id], []));
}

/** Opens the request file for appending fragments, never through a symlink. */
export async function openRequestFile(s: Session) {
  await verifySessionDirs(s);
  return open(requestFile(s), fsConstants.O_RDWR | (fsConstants.O_NOFOLLOW ?? 0));
}

export function requestDir(s: Session): string {
  return path.join(s.sessionsDir, REQUESTS_DIR, s.record.id);
}
export function requestFile(s: Session): string {
  return path.join(requestDir(s), REQUEST_FILE);
}
export function replyDir(s: Session): string {
  return path.join(s.sessionsDir, REPLIES_DIR, s.record.id);
}
export function responseFile(s: Session): string {
  return path.join(replyDir(s), RESPONSE_FILE);
}
/** IIS's BITS-Reply-URL, relative to the destination's folder (§4.2-18). */
export function relativeReplyUrl(id: string): string {
  return `${SESSIONS_DIR}\\${REPLIES_DIR}\\${id}\\${RESPONSE_FILE}`;
}

/** fsyncs a directory so a rename or create inside it survives a crash (a no-op where unsupported). */
export const fsyncDir = fsyncDirectoryAsync;

/** Writes JSON so a reader sees the old or the new content, never half of one (io/durable.ts). */
export async function writeJsonAtomic(file: string, value: unknown): Promise<void> {
  await writeDurableAsync(file, JSON.stringify(value, null, 2) + '\n', 0o644);
}

/**
 * Writes session.json. Writes of one session run one after another, each serialising the
 * record when its turn comes: a group commit's background write and a state change under
 * the session lock may overlap, and the last rename must carry the newest record.
 */
export function saveSession(s: Session): Promise<void> {
  const write = async (): Promise<void> => {
    await verifySessionDirs(s);
    await writeJsonAtomic(path.join(requestDir(s), SESSION_FILE), s.record);
  };
  const next = (s.saving ?? Promise.resolve()).catch(() => {}).then(write);
  s.saving = next;
  return next;
}

/**
 * Creates the destination's folders (each level checked), the session directory, an empty
 * request file and session.json. On any failure (ENAMETOOLONG deep down, a planted symlink,
 * a full disk) every folder it made is removed again, deepest first.
 */
export async function createSessionOnDisk(s: Session): Promise<void> {
  await withTreeLock(s.root, () => createSessionLocked(s));
}

async function createSessionLocked(s: Session): Promise<void> {
  const made: string[] = [];
  try {
    // The deepest existing ancestor of the virtual directory was confined to the root by
    // resolveUnderRoot; from there down, every level is made (or checked) one at a time.
    const vdir = virtualDir(s);
    let anchor = vdir;
    const below: string[] = [];
    while (anchor !== s.root && !(await lstat(anchor).then(() => true, () => false))) {
      below.unshift(path.basename(anchor));
      anchor = path.dirname(anchor);
    }
    await walkLevels(anchor, below, made);
    s.record.madeDirs = made.length;
    await walkLevels(await realVirtualDir(s), [SESSIONS_DIR, REQUESTS_DIR, s.record.id], made);
    const fh = await open(requestFile(s), 'wx');
    try {
      await fh.sync();
    } finally {
      await fh.close();
    }
    await saveSession(s);
  } catch (err) {
    await rm(requestFile(s), { force: true }).catch(() => {});
    await rm(path.join(requestDir(s), SESSION_FILE), { force: true }).catch(() => {});
    for (const d of made.reverse()) await rmdir(d).catch(() => {});
    throw err;
  }
}

/**
 * Removes the request directory and any reply of a session, then the session folders and
 * (for an unfinished upload) the destination folders CREATE-SESSION made, where empty.
 * Nothing is deleted through a symlink: a planted one is only reported.
 */
export async function deleteSessionFromDisk(s: Session, removeMadeDirs = false): Promise<void> {
  for (const [sub, dir] of [[REQUESTS_DIR, requestDir(s)], [REPLIES_DIR, replyDir(s)]] as const) {
    try {
      await verifySessionDirs(s, sub);
    } catch (err) {
      // Already gone is fine; a symlink (or anything odd) is not deleted through.
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') continue;
      throw err;
    }
    await rm(dir, { recursive: true, force: true });
  }
  const empties = [path.join(s.sessionsDir, REQUESTS_DIR), path.join(s.sessionsDir, REPLIES_DIR), s.sessionsDir];
  let dir = virtualDir(s);
  for (let i = 0; removeMadeDirs && i < (s.record.madeDirs ?? 0) && dir !== s.root; i++, dir = path.dirname(dir)) empties.push(dir);
  await withTreeLock(s.root, async () => {
    for (const d of empties) {
      // rmdir never follows a symlink and only removes an empty folder.
      await rmdir(d).catch(() => {});
    }
  });
}

/**
 * The request folders of the sessions each live UploadServer of this process holds, and
 * which server holds them. A starting server loads every session under its root and cuts
 * each request file back to its durable length (loadOne): right for a file nobody writes
 * since a crash, data loss for one another server is receiving: that server goes on
 * writing at its own received offset, and the bytes it acknowledged after its last group
 * commit become a hole of zeros in a file that then completes and is published. So a
 * session another server of this process holds is not loaded (tests start a second server
 * on a live root; so does an embedder serving one folder on two addresses). Two
 * processes on one root never get this far: the second refuses to start (root-lock.ts).
 */
const heldSessions = new Map<string, object>();

/** `owner` (an UploadServer) holds s: no other server of this process loads it. */
export function holdSession(s: Session, owner: object): void {
  heldSessions.set(requestDir(s), owner);
}

/** `owner` no longer holds s (closed, cancelled, expired, or the server stopped). */
export function releaseSession(s: Session, owner: object): void {
  const dir = requestDir(s);
  if (heldSessions.get(dir) === owner) heldSessions.delete(dir);
}

function isRecord(v: unknown): v is SessionRecord {
  if (typeof v !== 'object' || v === null) return false;
  const r = v as Record<string, unknown>;
  return (
    r['version'] === 1 &&
    typeof r['id'] === 'string' &&
    isGuid(r['id']) &&
    typeof r['urlPath'] === 'string' &&
    typeof r['originalUrl'] === 'string' &&
    typeof r['protocol'] === 'string' &&
    (r['totalLength'] === undefined || (typeof r['totalLength'] === 'number' && Number.isSafeInteger(r['totalLength']))) &&
    (r['durableLength'] === undefined || (typeof r['durableLength'] === 'number' && Number.isSafeInteger(r['durableLength']) && r['durableLength'] >= 0)) &&
    (r['state'] === 'STATE_RECEIVE_FRAGMENTS' || r['state'] === 'STATE_WAIT_FOR_CLOSE') &&
    typeof r['createdAt'] === 'number' &&
    typeof r['lastActivity'] === 'number' &&
    typeof r['notified'] === 'boolean' &&
    typeof r['copyToDestination'] === 'boolean'
  );
}

/** Loads one session directory; undefined (and logs) when it is unusable. */
async function loadOne(root: string, sessionsDir: string, idDir: string, log: (l: string) => void): Promise<Session | undefined> {
  const dir = path.join(sessionsDir, REQUESTS_DIR, idDir);
  let record: SessionRecord;
  try {
    if ((await lstat(dir)).isSymbolicLink()) throw new SymlinkRefused('a symlink, not a session folder');
    const parsed: unknown = JSON.parse(await readFile(path.join(dir, SESSION_FILE), 'utf8'));
    if (!isRecord(parsed) || normalizeGuid(parsed.id) !== idDir) throw new Error('invalid session record');
    record = parsed;
  } catch (err) {
    log(`sessions: ignoring ${dir}: ${(err as Error).message}`);
    return undefined;
  }
  let size: number;
  let mtime: number;
  try {
    const fh = await open(path.join(dir, REQUEST_FILE), fsConstants.O_RDWR | (fsConstants.O_NOFOLLOW ?? 0));
    try {
      const st = await fh.stat();
      size = st.size;
      mtime = st.mtimeMs;
      if (record.durableLength !== undefined && size > record.durableLength) {
        // Acknowledged after the last group commit: maybe never on disk (a power cut loses the
        // page cache, and with it any of these pages). The client resyncs and resends them.
        log(`sessions: ${record.id}: cutting the request file back from ${size} to its durable ${record.durableLength} bytes`);
        await fh.truncate(record.durableLength);
        size = record.durableLength;
      }
      // Make the size we trust durable: whatever is in the file now is what we acknowledge from here on.
      await fh.sync();
    } finally {
      await fh.close();
    }
  } catch (err) {
    log(`sessions: ignoring ${dir}: request file unusable (${(err as Error).message})`);
    return undefined;
  }
  if (record.totalLength !== undefined && size > record.totalLength) {
    log(`sessions: ignoring ${dir}: request file larger than the entity`);
    return undefined;
  }
  // Fragments do not rewrite session.json; the file's mtime is their activity record.
  record.lastActivity = Math.max(record.lastActivity, mtime);
  const session: Session = { record, sessionsDir, received: size, lock: Promise.resolve(), root };
  if (record.durableLength !== undefined && record.durableLength > size) {
    // Less is on disk than the record says (the file was cut): bytes written past the new end
    // later must not be taken for durable ones after the next restart.
    record.durableLength = size;
    try {
      await saveSession(session);
    } catch (err) {
      log(`sessions: ignoring ${dir}: cannot record the durable length (${(err as Error).message})`);
      return undefined;
    }
  }
  return session;
}

/**
 * Finds every `BITS-Sessions/Requests/{GUID}` under root and loads it, but for those
 * another server than `owner` holds (holdSession). Symlinks are not followed (they could
 * lead outside the root or loop).
 */
export async function loadAllSessions(root: string, log: (l: string) => void, maxDepth = MAX_SESSION_DEPTH, owner?: object): Promise<Session[]> {
  const out: Session[] = [];
  const walk = async (dir: string, depth: number): Promise<void> => {
    if (depth > maxDepth) return;
    let entries;
    try {
      entries = await readdir(dir, { withFileTypes: true });
    } catch {
      return;
    }
    // A folder below the root that another process serves: its sessions are that server's.
    // Checked before anything in it is touched; the start fails (root-lock.ts, nested roots).
    if (dir !== root && entries.some((e) => e.name === SESSIONS_DIR && e.isDirectory())) {
      const other = foreignRootLock(dir);
      if (other) throw new RootInUse(root, other.lockPath, other.holder, 'around');
    }
    for (const e of entries) {
      if (!e.isDirectory()) continue;
      const full = path.join(dir, e.name);
      if (e.name === SESSIONS_DIR) {
        let ids: string[] = [];
        try {
          const requests = path.join(full, REQUESTS_DIR);
          if ((await lstat(requests)).isSymbolicLink()) log(`sessions: ignoring ${requests}: a symlink, not a folder`);
          else ids = await readdir(requests);
        } catch {
          /* no Requests folder */
        }
        for (const id of ids) {
          if (!isGuid(id) || normalizeGuid(id) !== id) continue;
          const dir = path.join(full, REQUESTS_DIR, id);
          const holder = heldSessions.get(dir);
          if (holder !== undefined && holder !== owner) {
            log(`sessions: ${id}: in use by another server of this process on the same folder; not loaded (it would cut bytes that server acknowledged)`);
            continue;
          }
          // Held from before its file is touched: two servers starting at once do not both take it.
          if (owner) heldSessions.set(dir, owner);
          const s = await loadOne(root, full, id, log);
          if (s) out.push(s);
          else if (owner && heldSessions.get(dir) === owner) heldSessions.delete(dir);
        }
        continue;
      }
      await walk(full, depth + 1);
    }
  };
  try {
    await walk(root, 0);
  } catch (err) {
    // Not starting after all (RootInUse): what it took is nobody's.
    if (owner) for (const s of out) releaseSession(s, owner);
    throw err;
  }
  return out;
}

/** True when `p` exists and is a directory. */
export async function isDirectory(p: string): Promise<boolean> {
  try {
    return (await stat(p)).isDirectory();
  } catch {
    return false;
  }
}

export async function exists(p: string): Promise<boolean> {
  try {
    await stat(p);
    return true;
  } catch {
    return false;
  }
}
