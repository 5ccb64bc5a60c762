/**
 * §3.2 BITS upload server: CREATE-SESSION, PING, FRAGMENT, CLOSE-SESSION and
 * CANCEL-SESSION over BITS_POST, with the §3.3 back-end notification for
 * upload-reply directories.
 *
 * Choices where the spec leaves room (all documented in the README's server section):
 * - A FRAGMENT without Content-Length gets 411 (the spec's SHOULD; Windows sends 400, §6 note 23). The
 *   bodiless packets are accepted without one: RFC 7230 §3.3.3 gives a request with neither
 *   Content-Length nor Transfer-Encoding a zero-length body, and a published Python client relies on it.
 * - A FRAGMENT that starts before the received offset and extends past it gets 416 with the
 *   received offset (as IIS does); one that ends at or before it gets a 200 Ack with the current
 *   offset (an idempotent resend). Neither touches the file.
 * - A 416 carries no BITS-Error: the §2.2.1.2 table gives it HRESULT 0 (it is a resync, not an error).
 * - CLOSE-SESSION on a session that received no fragment commits a 0-byte entity (clients send
 *   CREATE-SESSION then CLOSE-SESSION for empty files). An empty FRAGMENT that declares a 0-byte
 *   entity (`bytes *\/0`, or the `0-0/0` and `0--1/0` a naive §3.1.5.1.4 client writes) is its
 *   only fragment: acknowledged with offset 0, then committed by CLOSE-SESSION like any other.
 * - Error answers carry the HRESULT as both BITS-Error (MC-BUP) and BITS-Error-Code (the SDK pages).
 * - BITS-Session-Id is echoed, exactly as the request spelled it, on every answer to a request that
 *   carried one (§2.2.1.2: MUST on a 200, the request's value where an error answer has it), though
 *   IIS's FRAGMENT and CLOSE-SESSION Acks in §4 omit it; a PING Ack without one has none, as in §4.
 * - `POST` with `X-Http-Method-Override: BITS_POST` is a BITS_POST (routed in index.ts).
 * - More than limits.maxSessions sessions: CREATE-SESSION gets 500 with E_OUTOFMEMORY.
 * - Per client (the authenticated user, else the client address): more than
 *   limits.maxSessionsPerClient open sessions gets 503 + Retry-After with E_OUTOFMEMORY, more
 *   than limits.sessionsPerMinutePerClient creations in a minute 429 + Retry-After with
 *   E_OUTOFMEMORY (both transient for a client); a session that never received a byte expires
 *   after limits.emptySessionTimeoutSeconds.
 * - A destination more than MAX_SESSION_DEPTH folders deep gets 400 E_INVALIDARG (the restart
 *   loader would not find its session); a symlink in session storage gets 403 E_ACCESSDENIED.
 * - The response entity is deleted at CLOSE-SESSION (§3.2.5.2.7), so a client fetches the reply
 *   before closing, as the §4.2 capture shows.
 * - A request for a session from another URL than the one it was created for is BG_E_SESSION_NOT_FOUND.
 */
import { link, mkdir, realpath, rename, rm, unlink } from 'node:fs/promises';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { finished } from 'node:stream/promises';
import type { Http1Request, Http1Response } from './http1.js';
import { directoryConfigFor, type DirectoryConfig, type ServerConfig } from './config.js';
import { PathRejected, resolveUnderRoot, safeSegments } from './paths.js';
import { BackEndClient } from './notify.js';
import { RequestFiles } from './request-files.js';
import { lockRoot, type RootLock } from './root-lock.js';
import { writevAll } from '../io/write-all.js';
import {
  SESSIONS_DIR,
  MAX_SESSION_DEPTH,
  SymlinkRefused,
  createSessionOnDisk,
  deleteSessionFromDisk,
  withTreeLock,
  prepareReplyDir,
  verifySessionDirs,
  exists,
  fsyncDir,
  holdSession,
  isDirectory,
  loadAllSessions,
  relativeReplyUrl,
  releaseSession,
  requestFile,
  responseFile,
  saveSession,
  type Session,
  type SessionRecord,
} from './sessions.js';
import {
  H,
  PROTOCOL_GUID,
  PacketType,
  errorAnswerHeaders,
  parsePacketType,
  parseSupportedProtocols,
} from '../protocol/headers.js';
import { isGuid, newSessionId, normalizeGuid, sameGuid } from '../protocol/guid.js';
import { ErrorContext, HRESULT } from '../protocol/hresult.js';
import { formatReceivedContentRange, parseContentRange, parseUnsatisfiedContentRange } from '../protocol/content-range.js';

export interface UploadServerOptions {
  root: string;
  config: ServerConfig;
  log: (line: string) => void;
}

/** §2.2.6 / §6 note 10: at most this many GUIDs are looked at in BITS-Supported-Protocols. */
const MAX_PROTOCOLS = 100;
/** Closed session ids remembered so a resent CLOSE-SESSION (lost Ack) is answered with an Ack again. */
const CLOSED_MEMORY = 1000;
const CLOSED_MEMORY_MS = 60 * 60 * 1000;

/** An answer decided during processing: thrown and turned into a response by handle(). */
class BitsReply extends Error {
  constructor(readonly response: Http1Response) {
    super(`BITS reply ${response.status}`);
  }
}

function ackHeaders(sessionId?: string): Record<string, string> {
  const h: Record<string, string> = { [H.PacketType]: 'Ack' };
  if (sessionId) h[H.SessionId] = sessionId;
  return h;
}

function ack(extra: Record<string, string> = {}, sessionId?: string): Http1Response {
  return { status: 200, headers: { ...ackHeaders(sessionId), ...extra }, body: '' };
}

/** §2.2.1.2 error answer: the status, the HRESULT as IIS writes it (`0x8020001F`) and the context. */
function bitsError(
  status: number,
  hr: number,
  opts: { sessionId?: string; context?: number; close?: boolean; extra?: Record<string, string> } = {},
): Http1Response {
  return {
    status,
    headers: {
      ...ackHeaders(opts.sessionId),
      ...errorAnswerHeaders(hr, opts.context ?? ErrorContext.Server),
      ...(opts.extra ?? {}),
    },
    body: '',
    ...(opts.close ? { close: true } : {}),
  };
}

function fail(status: number, hr: number, opts: Parameters<typeof bitsError>[2] = {}): never {
  throw new BitsReply(bitsError(status, hr, opts));
}

/** Smallest write while the body is still arriving (see writeBody). */
const MIN_WRITE_BYTES = 64 * 1024;
/** FRAGMENTs that may queue behind one session's lock (their bodies are not read while they wait). */
const MAX_FRAGMENT_WAITERS = 4;

/** Bytes gathered from the request body before one pwritev (see appendBody). */
const WRITE_BATCH = 4 * 1024 * 1024;
/**
 * `ack` durability: a fragment's bytes must be on disk before its Ack, and the client cannot
 * send the next fragment before that Ack: with one flush at the end, the network waited for
 * the disk and the disk for the network. Flushing every EARLY_FLUSH_BYTES while the body is
 * still arriving moves most of the write-back under the transfer; the final flush (which the
 * Ack still waits for) only has the tail left.
 */
const EARLY_FLUSH_BYTES = 2 * 1024 * 1024;

/**
 * Feeds a request body to `write` as the socket delivers it: whatever arrived while the
 * previous write was on disk goes out in ONE pwritev, so under load the writes grow to
 * WRITE_BATCH (instead of one thread-pool round trip per ~64 KiB socket chunk) while the
 * next batch is being received, and an idle disk still gets every chunk at once (a cut
 * connection leaves the unacknowledged tail on disk, to be truncated, as before).
 * Chunks come from 'data' events: an async iterator would read() the stream, which
 * concatenates (copies) everything buffered.
 */
function writeBody(body: Readable, write: (bufs: Buffer[], bytes: number) => Promise<unknown>): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    let batch: Buffer[] = [];
    let bytes = 0;
    let writing = false;
    let ended = false;
    let failed = false;
    let failure: unknown;
    const fail = (err: unknown) => {
      if (failed) return;
      failed = true;
      failure = err;
      body.off('data', onData);
      // Never settle while a write is in flight: the caller truncates the file next.
      if (!writing) reject(failure);
    };
    const pump = () => {
      if (writing || failed) return;
      if (bytes === 0) {
        if (ended) resolve();
        return;
      }
      // A trickle is gathered, not written byte by byte: a body cut before MIN_WRITE_BYTES
      // arrived leaves the file untouched (no truncate and fsync for every dripping client).
      if (!ended && bytes < MIN_WRITE_BYTES) return;
      const bufs = batch;
      const n = bytes;
      batch = [];
      bytes = 0;
      writing = true;
      write(bufs, n).then(
        () => {
          writing = false;
          if (failed) return reject(failure);
          if (body.isPaused() && !body.destroyed) body.resume();
          pump();
        },
        (err: unknown) => {
          writing = false;
          if (!failed) fail(err);
          else reject(failure);
        },
      );
    };
    const onData = (chunk: Buffer) => {
      batch.push(chunk);
      bytes += chunk.length;
      // One batch on disk, one being gathered: beyond that, let the socket wait. Under load
      // the body's mark shrinks (http1.ts shares one buffer budget among all bodies), and the
      // batches with it: 200 uploads with 1 MiB batches held ~300 MiB while the disk was busy.
      if (writing && bytes >= Math.min(WRITE_BATCH, body.readableHighWaterMark)) body.pause();
      pump();
    };
    body.on('data', onData);
    // finished() also settles for a body that ended or failed before we got here.
    finished(body).then(() => {
      ended = true;
      pump();
    }, fail);
  });
}

/**
 * An empty FRAGMENT's Content-Range for a 0-byte entity. RFC 7233 can only write it as
 * `bytes *\/0`; clients that apply §3.1.5.1.4's "START to START+LENGTH-1" literally write
 * `0--1/0`, and `0-0/0` is another guess clients make.
 */
function declaresEmptyEntity(contentRange: string | undefined): boolean {
  if (contentRange === undefined) return false;
  return parseUnsatisfiedContentRange(contentRange) === 0 || /^\s*bytes\s+0\s*-\s*(?:0|-1)\s*\/\s*0\s*$/i.test(contentRange);
}

function isDiskFullError(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  return code === 'ENOSPC' || code === 'EDQUOT';
}

export class UploadServer {
  private readonly sessions = new Map<string, Session>();
  private readonly closed = new Map<string, { urlPath: string; at: number }>();
  /** CREATE-SESSION times per client within the last minute (limits.sessionsPerMinutePerClient). */
  private readonly creations = new Map<string, number[]>();
  private readonly backEnd = new BackEndClient();
  private readonly files: RequestFiles;
  private sweeper: NodeJS.Timeout | undefined;
  private realRoot = '';
  private rootLock: RootLock | undefined;

  constructor(readonly options: UploadServerOptions) {
    this.files = new RequestFiles(options.config.durability, options.log);
  }

  /** Load persisted sessions, start the session-timeout sweeper. */
  async start(): Promise<void> {
    this.realRoot = await realpath(this.options.root);
    // Before any session file is touched: another process serving this folder (or one
    // around or inside it) makes this start fail with RootInUse (root-lock.ts).
    this.rootLock = await lockRoot(this.realRoot, this.options.log);
    try {
      for (const s of await loadAllSessions(this.realRoot, this.options.log, undefined, this)) this.adopt(s);
    } catch (err) {
      this.rootLock.release();
      this.rootLock = undefined;
      throw err;
    }
    await this.sweep();
    const interval = this.sweepIntervalMs();
    this.sweeper = setInterval(() => {
      this.sweep().catch((err) => this.options.log(`sessions: sweep failed: ${(err as Error).message}`));
    }, interval);
    this.sweeper.unref();
  }

  async close(): Promise<void> {
    if (this.sweeper) clearInterval(this.sweeper);
    this.sweeper = undefined;
    // Let requests that are mid-write finish before the process may exit; then everything
    // acknowledged goes to disk (a graceful stop loses nothing, whatever the durability).
    await Promise.all([...this.sessions.values()].map((s) => s.lock.catch(() => {})));
    await this.files.closeAll(this.sessions.values());
    // Stopped: a server started on this root from now on takes these sessions over.
    for (const s of this.sessions.values()) releaseSession(s, this);
    this.rootLock?.release();
    this.rootLock = undefined;
    await this.backEnd.close();
  }

  /** Into the table, and held against other servers of this process on the same folder (sessions.ts holdSession). */
  private adopt(s: Session): void {
    this.sessions.set(s.record.id, s);
    holdSession(s, this);
  }

  /** Out of the table (closed, cancelled, expired, or its files gone). */
  private drop(s: Session): void {
    if (this.sessions.get(s.record.id) === s) this.sessions.delete(s.record.id);
    releaseSession(s, this);
  }

  /** Number of sessions in the table (for tests and status output). */
  get sessionCount(): number {
    return this.sessions.size;
  }

  private sweepIntervalMs(): number {
    const c = this.options.config;
    const timeouts = [c.defaults, ...Object.values(c.directories), { sessionTimeoutSeconds: c.limits.emptySessionTimeoutSeconds }]
      .map((d) => d.sessionTimeoutSeconds)
      .filter((t): t is number => typeof t === 'number' && t > 0);
    const shortest = Math.min(...timeouts, 3600);
    return Math.min(60_000, Math.max(1000, (shortest * 1000) / 2));
  }

  private isExpired(s: Session, now = Date.now()): boolean {
    const cfg = directoryConfigFor(this.options.config, s.record.urlPath);
    // A session that never received a byte costs a client nothing to open: it goes much sooner.
    const empty = s.received === 0 && s.record.state === 'STATE_RECEIVE_FRAGMENTS';
    const seconds = empty ? Math.min(cfg.sessionTimeoutSeconds, this.options.config.limits.emptySessionTimeoutSeconds) : cfg.sessionTimeoutSeconds;
    return now - s.record.lastActivity > seconds * 1000;
  }

  /** §3.2.6.1: removes sessions idle longer than their directory's timeout. */
  async sweep(): Promise<void> {
    const now = Date.now();
    for (const s of [...this.sessions.values()]) {
      if (this.isExpired(s, now)) await this.withLock(s, () => this.expire(s));
    }
    for (const [id, c] of this.closed) if (now - c.at > CLOSED_MEMORY_MS) this.closed.delete(id);
    for (const [client, times] of this.creations) if (times.every((t) => now - t > 60_000)) this.creations.delete(client);
  }

  private async expire(s: Session): Promise<void> {
    if (this.sessions.get(s.record.id) !== s || !this.isExpired(s)) return;
    this.drop(s);
    this.options.log(`session ${s.record.id} expired (${s.record.urlPath})`);
    await this.files.end(s);
    await deleteSessionFromDisk(s, true).catch((err) => this.options.log(`session ${s.record.id}: ${(err as Error).message}`));
  }

  private async withLock<T>(s: Session, fn: () => Promise<T>): Promise<T> {
    const prev = s.lock;
    let release!: () => void;
    s.lock = new Promise<void>((r) => (release = r));
    await prev.catch(() => {});
    try {
      return await fn();
    } finally {
      release();
    }
  }

  async handle(req: Http1Request): Promise<Http1Response> {
    let res: Http1Response;
    try {
      res = await this.dispatch(req);
    } catch (err) {
      if (err instanceof BitsReply) res = err.response;
      else if (isDiskFullError(err)) res = bitsError(500, HRESULT.ERROR_DISK_FULL);
      else if (err instanceof SymlinkRefused) {
        this.options.log(`upload: ${req.rawPath}: ${err.message}`);
        res = bitsError(403, HRESULT.E_ACCESSDENIED);
      }
      else {
        this.options.log(`upload: ${req.rawPath}: ${(err as Error).stack ?? String(err)}`);
        res = bitsError(500, HRESULT.E_FAIL);
      }
    }
    const sid = req.headers['bits-session-id']?.trim();
    if (res.headers && sid && isGuid(sid) && parsePacketType(req.headers['bits-packet-type']) !== PacketType.CreateSession) {
      // §2.2.1.2: MUST on a 200, MAY on an error answer, and then the request's value: as the client spelled it.
      res.headers[H.SessionId] = sid;
    }
    this.options.log(
      `${req.method} ${req.rawPath} ${req.headers['bits-packet-type'] ?? '-'} -> ${res.status}` +
        (res.headers?.[H.Error] ? ` ${String(res.headers[H.Error])}` : ''),
    );
    if (!res.close && res.status !== 200) {
      // Errors are answered without reading a body we do not want; keep the connection in sync.
      await req.discardBody();
    }
    return res;
  }

  private async dispatch(req: Http1Request): Promise<Http1Response> {
    const type = parsePacketType(req.headers['bits-packet-type']);
    if (type === undefined || type === PacketType.Ack) fail(400, HRESULT.E_INVALIDARG);
    // §3.2.5.2.3 wants Content-Length on every request, but without it (and without Transfer-Encoding,
    // which http1 refuses) the body is empty (RFC 7230 §3.3.3): only a FRAGMENT's length is its content.
    if (req.contentLength === undefined && type === PacketType.Fragment) fail(411, HRESULT.E_INVALIDARG);

    let segs: string[];
    try {
      segs = safeSegments(req.rawPath);
    } catch {
      fail(400, HRESULT.E_INVALIDARG);
    }
    const urlPath = '/' + segs.join('/');
    const dirConfig = directoryConfigFor(this.options.config, urlPath);
    // §6 note 22: a directory without BITS uploads answers 501 / E_ACCESSDENIED.
    if (!dirConfig.uploadsEnabled) fail(501, HRESULT.E_ACCESSDENIED);

    if (type !== PacketType.Fragment && (req.contentLength ?? 0) > 0) {
      // §2.2.2.3 and siblings: only FRAGMENT carries a body.
      fail(400, HRESULT.E_INVALIDARG, { close: (req.contentLength ?? 0) > 64 * 1024 });
    }

    switch (type) {
      case PacketType.Ping:
        // §3.2.5.2.5: no session needed (§4.1-06 carries none).
        return ack();
      case PacketType.CreateSession:
        return this.createSession(req, segs, urlPath, dirConfig);
      default:
        break;
    }

    const rawId = req.headers['bits-session-id'];
    if (!rawId || !isGuid(rawId)) fail(400, HRESULT.E_INVALIDARG);
    const id = normalizeGuid(rawId);
    const session = this.sessions.get(id);
    if (!session || session.record.urlPath !== urlPath) {
      if (type === PacketType.CloseSession || type === PacketType.CancelSession) {
        const c = this.closed.get(id);
        if (c && c.urlPath === urlPath) return ack({}, rawId.trim());
      }
      fail(500, HRESULT.BG_E_SESSION_NOT_FOUND, { sessionId: rawId.trim() });
    }
    if (this.isExpired(session)) {
      await this.withLock(session, () => this.expire(session));
      fail(500, HRESULT.BG_E_SESSION_NOT_FOUND, { sessionId: rawId.trim() });
    }

    switch (type) {
      case PacketType.Fragment:
        return this.fragment(req, session, dirConfig);
      case PacketType.CloseSession:
        return this.withLock(session, () => this.closeSession(req, session, dirConfig));
      case PacketType.CancelSession:
        return this.withLock(session, () => this.cancelSession(session));
      default:
        fail(400, HRESULT.E_INVALIDARG);
    }
  }

  /** Absolute destination file, refused when it escapes the root, is a folder or lies in BITS-Sessions. */
  private async destinationFile(req: Http1Request, segs: string[]): Promise<string> {
    if (segs.length === 0 || req.rawPath.endsWith('/')) fail(400, HRESULT.E_INVALIDARG);
    if (segs.some((s) => s.toLowerCase() === SESSIONS_DIR.toLowerCase())) fail(403, HRESULT.E_ACCESSDENIED);
    let file: string;
    try {
      file = await resolveUnderRoot(this.realRoot, req.rawPath);
    } catch (err) {
      if (err instanceof PathRejected) fail(400, HRESULT.E_INVALIDARG);
      throw err;
    }
    // §2.2.1.2: "The destination URL maps to a directory instead" is E_INVALIDARG.
    if (await isDirectory(file)) fail(400, HRESULT.E_INVALIDARG);
    return file;
  }

  private async createSession(
    req: Http1Request,
    segs: string[],
    urlPath: string,
    cfg: DirectoryConfig,
  ): Promise<Http1Response> {
    const offered = parseSupportedProtocols(req.headers['bits-supported-protocols'] ?? '').slice(0, MAX_PROTOCOLS);
    const protocol = offered.find((g) => isGuid(g) && sameGuid(g, PROTOCOL_GUID));
    if (!protocol) fail(400, HRESULT.E_INVALIDARG);
    const dest = await this.destinationFile(req, segs);
    if (!cfg.allowOverwrites && (await exists(dest))) fail(403, HRESULT.E_ACCESSDENIED);
    if (cfg.notificationType !== 'none' && !cfg.notificationUrl) {
      this.options.log(`upload: ${urlPath}: notification configured without a notificationUrl`);
      fail(500, HRESULT.E_FAIL);
    }
    // The restart loader walks MAX_SESSION_DEPTH folders deep: a deeper session would be lost.
    if (segs.length - 1 > MAX_SESSION_DEPTH) fail(400, HRESULT.E_INVALIDARG);
    const limits = this.options.config.limits;
    if (this.sessions.size >= limits.maxSessions) {
      // §3.2.7: the table is full.
      fail(500, HRESULT.E_OUTOFMEMORY);
    }
    const client = req.user !== undefined ? `user:${req.user}` : `addr:${req.remoteAddress}`;
    this.checkClientQuota(client);
    const id = newSessionId();
    const now = Date.now();
    const host = req.headers['host'] ?? `${req.socket.localAddress ?? 'localhost'}:${req.socket.localPort ?? ''}`;
    const record: SessionRecord = {
      version: 1,
      id,
      urlPath,
      originalUrl: `${req.secure ? 'https' : 'http'}://${host}${req.rawPath}`,
      protocol: PROTOCOL_GUID,
      state: 'STATE_RECEIVE_FRAGMENTS',
      createdAt: now,
      lastActivity: now,
      notified: false,
      copyToDestination: true,
      client,
      // Group commit: nothing is durable yet, and a reload must know it (sessions.ts).
      ...(this.files.groupCommit ? { durableLength: 0 } : {}),
    };
    const session: Session = {
      record,
      sessionsDir: path.join(path.dirname(dest), SESSIONS_DIR),
      received: 0,
      lock: Promise.resolve(),
      root: this.realRoot,
    };
    // It removes whatever it made when it fails (ENAMETOOLONG deep down leaves no folders).
    // Held before its folder exists: a server starting on this root meanwhile must not load it.
    holdSession(session, this);
    try {
      await createSessionOnDisk(session);
    } catch (err) {
      releaseSession(session, this);
      if ((err as NodeJS.ErrnoException).code === 'ENAMETOOLONG') fail(400, HRESULT.E_INVALIDARG);
      throw err;
    }
    this.adopt(session);
    const headers: Record<string, string> = {
      [H.Protocol]: PROTOCOL_GUID,
      // §2.2.3.1 / §6 note 7: identity only.
      'Accept-Encoding': 'identity',
    };
    if (cfg.hostId) headers[H.HostId] = cfg.hostId;
    if (cfg.hostIdFallbackTimeout) headers[H.HostIdFallbackTimeout] = String(cfg.hostIdFallbackTimeout);
    return ack(headers, id);
  }

  /**
   * One client must not take every session: at most maxSessionsPerClient open ones (503), and
   * at most sessionsPerMinutePerClient new ones a minute (429). Both carry Retry-After, which
   * a BITS client honours as a transient answer; other clients are unaffected.
   */
  private checkClientQuota(client: string): void {
    const limits = this.options.config.limits;
    const now = Date.now();
    const recent = (this.creations.get(client) ?? []).filter((t) => now - t < 60_000);
    if (recent.length >= limits.sessionsPerMinutePerClient) {
      this.creations.set(client, recent);
      this.options.log(`upload: ${client} created ${recent.length} sessions in the last minute (limit ${limits.sessionsPerMinutePerClient})`);
      const wait = Math.max(1, Math.ceil((recent[0]! + 60_000 - now) / 1000));
      fail(429, HRESULT.E_OUTOFMEMORY, { extra: { 'Retry-After': String(wait) } });
    }
    let open = 0;
    for (const s of this.sessions.values()) if (s.record.client === client) open++;
    if (open >= limits.maxSessionsPerClient) {
      this.options.log(`upload: ${client} holds ${open} sessions (limit ${limits.maxSessionsPerClient})`);
      fail(503, HRESULT.E_OUTOFMEMORY, { extra: { 'Retry-After': '60' } });
    }
    recent.push(now);
    this.creations.set(client, recent);
  }

  private fragmentAck(s: Session, extra: Record<string, string> = {}): Http1Response {
    const headers: Record<string, string> = {
      [H.ReceivedContentRange]: formatReceivedContentRange(s.received),
      ...extra,
    };
    return ack(headers, s.record.id);
  }

  private async fragment(req: Http1Request, s: Session, cfg: DirectoryConfig): Promise<Http1Response> {
    const length = req.contentLength!;
    if (length === 0 && declaresEmptyEntity(req.headers['content-range'])) return this.emptyEntityFragment(s, cfg);
    const range = parseContentRange(req.headers['content-range']);
    // §3.2.5.2.6 / RFC 2616 §14.16: the range must be complete, and match the body.
    if (!range || range.total === undefined) fail(400, HRESULT.E_INVALIDARG);
    const total = range.total;
    if (length === 0) fail(400, HRESULT.E_INVALIDARG);
    if (range.last - range.first + 1 !== length) fail(400, HRESULT.E_INVALIDARG, { close: length > 64 * 1024 });
    if (length > this.options.config.limits.maxFragmentBytes) {
      // Not read: the client resends smaller fragments (§6 note 10); the connection cannot be reused.
      throw new BitsReply({ status: 413, headers: ackHeaders(s.record.id), body: '', close: true });
    }
    if (total > cfg.maxUploadSize) fail(500, HRESULT.BG_E_TOO_LARGE);
    if (req.headers['content-encoding'] && req.headers['content-encoding'].toLowerCase() !== 'identity') {
      // §6 note 12: identity only.
      fail(400, HRESULT.E_INVALIDARG);
    }

    // A session is sent serially; a resend after a lost connection may wait for the old one.
    // More waiters than that is abuse: each would hold its connection for a rate window in turn.
    if ((s.waiting ?? 0) >= MAX_FRAGMENT_WAITERS) {
      fail(503, HRESULT.E_OUTOFMEMORY, { sessionId: s.record.id, close: true, extra: { 'Retry-After': '5' } });
    }
    s.waiting = (s.waiting ?? 0) + 1;
    let waiting = true;
    const unwait = (): void => {
      if (waiting) s.waiting = (s.waiting ?? 1) - 1;
      waiting = false;
    };
    return this.withLock(s, async () => {
      unwait();
      if (this.sessions.get(s.record.id) !== s) fail(500, HRESULT.BG_E_SESSION_NOT_FOUND);
      // Before the offset is looked at: a failed background sync moves it back.
      await this.files.prepare(s);
      const rec = s.record;
      // A different entity length than an earlier fragment's is E_INVALIDARG (§2.2.1.2 table).
      if (rec.totalLength !== undefined && rec.totalLength !== total) fail(400, HRESULT.E_INVALIDARG);

      if (range.last < s.received) {
        // Everything in this fragment is held already: an idempotent resend.
        await req.discardBody();
        rec.lastActivity = Date.now();
        if (rec.totalLength !== undefined && s.received === rec.totalLength && range.last === total - 1) {
          // The final fragment again: NotifyCache answers as before, or retries a failed notification.
          return this.complete(s, cfg);
        }
        return this.fragmentAck(s);
      }
      if (range.first !== s.received) {
        // Ahead of us, or overlapping our tail: resync the client without touching the file.
        throw new BitsReply({
          status: 416,
          headers: { ...ackHeaders(rec.id), [H.ReceivedContentRange]: formatReceivedContentRange(s.received) },
          body: '',
          close: length > 256 * 1024,
        });
      }
      if (rec.totalLength === undefined) {
        rec.totalLength = total;
        await saveSession(s);
      }
      await this.appendBody(req, s, length);
      rec.lastActivity = Date.now();
      if (s.received === total) return this.complete(s, cfg);
      this.files.written(s);
      return this.fragmentAck(s);
    }).finally(unwait);
  }

  /** The one FRAGMENT of a 0-byte entity: nothing to write, the entity is complete. */
  private emptyEntityFragment(s: Session, cfg: DirectoryConfig): Promise<Http1Response> {
    return this.withLock(s, async () => {
      if (this.sessions.get(s.record.id) !== s) fail(500, HRESULT.BG_E_SESSION_NOT_FOUND);
      const rec = s.record;
      if (rec.totalLength !== undefined && rec.totalLength !== 0) fail(400, HRESULT.E_INVALIDARG);
      if (rec.totalLength === undefined) {
        rec.totalLength = 0;
        await saveSession(s);
      }
      rec.lastActivity = Date.now();
      return this.complete(s, cfg);
    });
  }

  /**
   * Appends the body at the received offset; on any failure the file is cut back to what was
   * acknowledged. With `ack` durability the bytes are on disk when it returns; with group
   * commit they are written, and RequestFiles makes them durable later.
   */
  private async appendBody(req: Http1Request, s: Session, length: number): Promise<void> {
    const start = s.received;
    const syncEachAck = !this.files.groupCommit;
    let fh;
    try {
      fh = await this.files.acquire(s);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
        // The request entity was deleted under us: the session is gone (§3.2.5.2.7 treats it likewise).
        this.drop(s);
        await this.files.end(s);
        await deleteSessionFromDisk(s).catch(() => {});
        fail(500, HRESULT.BG_E_SESSION_NOT_FOUND);
      }
      throw err;
    }
    let pos = start;
    // Write-back started while the body is still arriving (see EARLY_FLUSH_BYTES).
    let early: Promise<void> | undefined;
    let unflushed = 0;
    /** Whether any write began (a failed pwritev may still have written part of its batch). */
    let touched = false;
    try {
      await writeBody(req.body, async (bufs, bytes) => {
        touched = true;
        await writevAll(fh, bufs, pos, bytes);
        pos += bytes;
        unflushed += bytes;
        if (syncEachAck && unflushed >= EARLY_FLUSH_BYTES && !early) {
          unflushed = 0;
          early = fh.datasync().finally(() => (early = undefined));
          early.catch(() => {}); // its error, if any, comes back from the final flush
        }
      });
      if (pos - start !== length) throw new Error(`fragment body ended after ${pos - start} of ${length} bytes`);
      if (syncEachAck) {
        await early;
        // An Ack means the bytes are on disk: this flush is what the Ack waits for. fdatasync covers
        // the data and the file size (all a resume needs: the size is the received offset), not the mtime.
        await fh.datasync();
      }
      s.received = pos;
    } catch (err) {
      await early?.catch(() => {});
      if (touched) {
        await fh.truncate(start).catch(() => {});
        // Group commit needs no sync: a reload cuts the file back to durableLength <= start anyway.
        if (syncEachAck) await fh.sync().catch(() => {});
      }
      if (isDiskFullError(err)) fail(500, HRESULT.ERROR_DISK_FULL, { close: true });
      // The client went away or stalled mid-body: nobody reads this answer, the connection closes.
      throw new BitsReply(bitsError(400, HRESULT.E_INVALIDARG, { sessionId: s.record.id, close: true }));
    } finally {
      this.files.release(s);
    }
  }

  /**
   * The whole entity is here: §3.2.5.1.3 STATE_NOTIFY (if configured), then the Ack of the
   * final fragment, with BITS-Reply-URL for upload-reply. Runs under the session lock.
   */
  private async complete(s: Session, cfg: DirectoryConfig): Promise<Http1Response> {
    const rec = s.record;
    if (rec.state === 'STATE_WAIT_FOR_CLOSE') {
      return this.fragmentAck(s, rec.reply ? { [H.ReplyUrl]: rec.reply.url } : {});
    }
    const failure = await this.runNotification(s, cfg);
    if (failure) return failure;
    return this.fragmentAck(s, rec.reply ? { [H.ReplyUrl]: rec.reply.url } : {});
  }

  /** Notifies the server application; returns the error Ack on failure (session stays in RECEIVE_FRAGMENTS). */
  private async runNotification(s: Session, cfg: DirectoryConfig): Promise<Http1Response | undefined> {
    const rec = s.record;
    // The entity is complete: it is on disk before anyone is told so (the Ack, the back end, the copy).
    // The record written below carries the durable length.
    await this.files.sync(s);
    if (cfg.notificationType === 'none' || !cfg.notificationUrl) {
      // §3.3.5.2.1: no server application; the destination is populated at CLOSE-SESSION.
      rec.copyToDestination = true;
      rec.state = 'STATE_WAIT_FOR_CLOSE';
      rec.notified = true;
      await saveSession(s);
      return undefined;
    }
    await prepareReplyDir(s);
    const result = await this.backEnd.notify({
      type: cfg.notificationType,
      notificationUrl: cfg.notificationUrl,
      originalRequestUrl: rec.originalUrl,
      requestFile: requestFile(s),
      requestLength: s.received,
      responseFile: responseFile(s),
      timeoutMs: (cfg.notificationTimeoutSeconds ?? 300) * 1000,
    });
    if (!result.ok) {
      this.options.log(`session ${rec.id}: notification failed: ${result.message}`);
      // §3.2.5.1.3: the Ack carries the error; a resend of the last fragment retries.
      await rm(path.dirname(responseFile(s)), { recursive: true, force: true });
      return bitsError(result.status, result.bitsError, {
        sessionId: rec.id,
        context: result.context,
        extra: { [H.ReceivedContentRange]: formatReceivedContentRange(s.received) },
      });
    }
    rec.copyToDestination = result.copyToDestination;
    rec.reply = result.staticReplyUrl
      ? { url: result.staticReplyUrl, isStatic: true }
      : { url: relativeReplyUrl(rec.id), isStatic: false };
    if (result.staticReplyUrl) {
      // IsReplyStaticURL: ResponseEntityPath is NULL.
      await rm(path.dirname(responseFile(s)), { recursive: true, force: true });
    }
    rec.notified = true;
    rec.state = 'STATE_WAIT_FOR_CLOSE';
    await saveSession(s);
    return undefined;
  }

  private async closeSession(req: Http1Request, s: Session, cfg: DirectoryConfig): Promise<Http1Response> {
    if (this.sessions.get(s.record.id) !== s) fail(500, HRESULT.BG_E_SESSION_NOT_FOUND);
    const rec = s.record;
    const src = requestFile(s);
    if (!(await exists(src))) {
      // §3.2.5.2.7: the request entity was deleted.
      this.drop(s);
      await this.files.end(s);
      await deleteSessionFromDisk(s).catch(() => {});
      throw new BitsReply({ status: 404, headers: ackHeaders(rec.id), body: '' });
    }
    if (rec.state !== 'STATE_WAIT_FOR_CLOSE') {
      if (rec.totalLength !== undefined && s.received < rec.totalLength) {
        // Closing an incomplete upload would publish a truncated file.
        fail(400, HRESULT.E_INVALIDARG, { sessionId: rec.id });
      }
      // No fragment at all: a 0-byte entity, which still goes through notification.
      rec.totalLength ??= 0;
      const failure = await this.runNotification(s, cfg);
      if (failure) return failure;
    }
    // Synced when the entity completed (runNotification); nothing writes to it any more.
    await this.files.end(s);
    if (rec.copyToDestination) {
      await verifySessionDirs(s);
      let dest: string;
      try {
        dest = await resolveUnderRoot(this.realRoot, req.rawPath);
      } catch {
        fail(400, HRESULT.E_INVALIDARG, { sessionId: rec.id });
      }
      if (await isDirectory(dest)) fail(400, HRESULT.E_INVALIDARG, { sessionId: rec.id });
      // Under the tree lock: another session's end must not rmdir the folder between mkdir and rename.
      await withTreeLock(s.root, async () => {
        await mkdir(path.dirname(dest), { recursive: true });
        if (cfg.allowOverwrites) {
          await rename(src, dest);
        } else {
          // link() fails if the destination exists, atomically: no window for a second writer.
          try {
            await link(src, dest);
          } catch (err) {
            if ((err as NodeJS.ErrnoException).code === 'EEXIST') fail(403, HRESULT.E_ACCESSDENIED, { sessionId: rec.id });
            throw err;
          }
          await unlink(src);
        }
      });
      await fsyncDir(path.dirname(dest));
    }
    this.drop(s);
    this.rememberClosed(rec.id, rec.urlPath);
    // §3.2.5.2.7: the request entity, the response entity and the state data go.
    await deleteSessionFromDisk(s).catch(() => {});
    return ack({}, rec.id);
  }

  private async cancelSession(s: Session): Promise<Http1Response> {
    if (this.sessions.get(s.record.id) === s) {
      this.drop(s);
      this.rememberClosed(s.record.id, s.record.urlPath);
      await this.files.end(s);
      await deleteSessionFromDisk(s, true);
    }
    return ack({}, s.record.id);
  }

  private rememberClosed(id: string, urlPath: string): void {
    this.closed.set(id, { urlPath, at: Date.now() });
    if (this.closed.size > CLOSED_MEMORY) {
      const oldest = this.closed.keys().next().value;
      if (oldest !== undefined) this.closed.delete(oldest);
    }
  }
}

