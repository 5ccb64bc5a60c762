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
 * Durability rule: the received offset is never persisted as a number; it is the
 * request file's size, which only grows by fsynced, acknowledged fragments.
 */
import { mkdir, open, readdir, readFile, rm, stat } from 'node:fs/promises';
import { fsyncDirectoryAsync, writeDurableAsync } from '../io/durable.js';
import path from 'node:path';
import { isGuid, normalizeGuid } from '../protocol/guid.js';

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

export async function saveSession(s: Session): Promise<void> {
  await writeJsonAtomic(path.join(requestDir(s), SESSION_FILE), s.record);
}

/** Creates the directory, an empty request file and session.json for a new session. */
export async function createSessionOnDisk(s: Session): Promise<void> {
  const dir = requestDir(s);
  await mkdir(dir, { recursive: true });
  const fh = await open(path.join(dir, REQUEST_FILE), 'wx');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
  await saveSession(s);
}

/** Removes the request directory and any reply of a session. */
export async function deleteSessionFromDisk(s: Session): Promise<void> {
  await rm(requestDir(s), { recursive: true, force: true });
  await rm(replyDir(s), { recursive: true, force: true });
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
    (r['state'] === 'STATE_RECEIVE_FRAGMENTS' || r['state'] === 'STATE_WAIT_FOR_CLOSE') &&
    typeof r['createdAt'] === 'number' &&
    typeof r['lastActivity'] === 'number' &&
    typeof r['notified'] === 'boolean' &&
    typeof r['copyToDestination'] === 'boolean'
  );
}

/** Loads one session directory; undefined (and logs) when it is unusable. */
async function loadOne(sessionsDir: string, idDir: string, log: (l: string) => void): Promise<Session | undefined> {
  const dir = path.join(sessionsDir, REQUESTS_DIR, idDir);
  let record: SessionRecord;
  try {
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
    // Make the size we trust durable: whatever is in the file now is what we acknowledge from here on.
    const fh = await open(path.join(dir, REQUEST_FILE), 'r+');
    try {
      await fh.sync();
      const st = await fh.stat();
      size = st.size;
      mtime = st.mtimeMs;
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
  return { record, sessionsDir, received: size, lock: Promise.resolve() };
}

/**
 * Finds every `BITS-Sessions/Requests/{GUID}` under root and loads it. Symlinks
 * are not followed (they could lead outside the root or loop).
 */
export async function loadAllSessions(root: string, log: (l: string) => void, maxDepth = 32): Promise<Session[]> {
  const out: Session[] = [];
  const walk = async (dir: string, depth: number): Promise<void> => {
    if (depth > maxDepth) return;
    let entries;
    try {
      entries = await readdir(dir, { withFileTypes: true });
    } catch {
      return;
    }
    for (const e of entries) {
      if (!e.isDirectory()) continue;
      const full = path.join(dir, e.name);
      if (e.name === SESSIONS_DIR) {
        let ids: string[] = [];
        try {
          ids = await readdir(path.join(full, REQUESTS_DIR));
        } catch {
          /* no Requests folder */
        }
        for (const id of ids) {
          if (!isGuid(id) || normalizeGuid(id) !== id) continue;
          const s = await loadOne(full, id, log);
          if (s) out.push(s);
        }
        continue;
      }
      await walk(full, depth + 1);
    }
  };
  await walk(root, 0);
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
