/**
 * A small HTTP/1.1 server over net/tls sockets.
 *
 * Why not node:http? Its parser (llhttp) accepts only a fixed list of methods and
 * answers `BITS_POST` (MC-BUP §2.2.1) with 400 before any handler runs. So the
 * BITS server parses requests itself: request line, headers (with the §2.2.1
 * 4 KB value limit), a Content-Length body streamed to the handler, keep-alive
 * and sequential pipelining, idle/header timeouts, and responses that always
 * carry Content-Length (a client must never hang on an error reply).
 *
 * INTERFACE CONTRACT (other modules code against these types):
 */
import type { Readable } from 'node:stream';
import type { Socket } from 'node:net';

export interface Http1Request {
  /** As sent, e.g. `BITS_POST`, `GET`. Methods are case-sensitive (RFC 7230 §3.1.1). */
  method: string;
  /** The raw request-target, e.g. `/upload/a%20b.txt?x=1`. */
  target: string;
  /** Path part of the target, still percent-encoded. */
  rawPath: string;
  /** Query string without `?`, or ''. */
  query: string;
  httpVersion: '1.0' | '1.1';
  /** Lower-cased names; repeated headers joined with ", ". */
  headers: Record<string, string>;
  /** Names as sent, in order (for replay tests and diagnostics). */
  rawHeaders: Array<[string, string]>;
  /** Content-Length, or undefined when absent (chunked request bodies are refused with 411). */
  contentLength: number | undefined;
  /**
   * Exactly contentLength bytes. The handler must consume it or call
   * `discardBody()`; if the client disconnects mid-body the stream errors.
   */
  body: Readable;
  discardBody(): Promise<void>;
  socket: Socket;
  remoteAddress: string;
  /** Whether the request came over TLS. */
  secure: boolean;
  /** The authenticated user, set by the server's auth check (per-client session quotas). */
  user?: string;
}

export interface Http1Response {
  status: number;
  /** Header names as they should appear on the wire. Content-Length is set by the server when body is a Buffer/string. */
  headers?: Record<string, string | number>;
  /**
   * Buffer/string: sent with Content-Length. Readable/AsyncIterable: the handler
   * must set Content-Length itself (every response here has a known length).
   * Omitted for HEAD automatically (headers are kept).
   */
  body?: Buffer | string | Readable | AsyncIterable<Buffer>;
  /** Close the connection after this response. */
  close?: boolean;
}

export type Http1Handler = (req: Http1Request) => Promise<Http1Response>;

export interface Http1ServerOptions {
  host: string;
  port: number;
  /** PEM strings: serve HTTPS when given. */
  tls?: { cert: string | Buffer; key: string | Buffer; ca?: string | Buffer };
  /** Largest request head (request line + headers), default 64 KiB. */
  maxHeadBytes?: number;
  /** Largest single header value, default 4096 (§2.2.1, §6 note 2). Larger → 400 with E_INVALIDARG. */
  maxHeaderValueBytes?: number;
  /** Close a connection idle this long between requests, default 60 s. */
  keepAliveTimeoutMs?: number;
  /** Time allowed to receive a request head, default 30 s. */
  headersTimeoutMs?: number;
  /** Abort a request body that stalls this long, default 120 s. */
  bodyIdleTimeoutMs?: number;
  /** Most connections open at once, default 2048; beyond it a request gets 503 with Retry-After. */
  maxConnections?: number;
  /**
   * Minimum transfer rate (bytes/s) of a request body the handler is reading and of a
   * response the client should be reading, measured over windows of rateGraceMs after a
   * first grace period of the same length (mod_reqtimeout's `body=…,MinRate=…`). Default 500.
   */
  minRateBytesPerSec?: number;
  /** Grace period and measuring window of minRateBytesPerSec, default 10 s. */
  rateGraceMs?: number;
  /** Time a TLS client gets to complete its handshake, default 10 s. */
  tlsHandshakeTimeoutMs?: number;
}

export interface Http1Server {
  readonly host: string;
  readonly port: number;
  close(): Promise<void>;
}

// ---------------------------------------------------------------------------
// Implementation

import net from 'node:net';
import tls from 'node:tls';
import { Readable as ReadableStream } from 'node:stream';
import { STATUS_CODES } from 'node:http';
import { VERSION } from '../version.js';
import { noteBufferChurn } from '../memory.js';
import { BITS_POST, H, errorAnswerHeaders, isBitsPost } from '../protocol/headers.js';
import { ErrorContext, HRESULT } from '../protocol/hresult.js';

export const HTTP1_DEFAULTS = {
  maxHeadBytes: 64 * 1024,
  maxHeaderValueBytes: 4096,
  keepAliveTimeoutMs: 30_000,
  headersTimeoutMs: 20_000,
  bodyIdleTimeoutMs: 120_000,
  maxConnections: 2048,
  minRateBytesPerSec: 500,
  rateGraceMs: 10_000,
  tlsHandshakeTimeoutMs: 10_000,
};
const DEFAULTS = HTTP1_DEFAULTS;

/** RFC 7230 token characters: methods and header names. */
const TOKEN_RE = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
const CRLFCRLF = Buffer.from('\r\n\r\n');
/** Unread bytes of an unwanted body we still swallow after the response before giving up (lingering close). */
const LINGER_MS = 2000;
/** Request body bytes buffered ahead of the handler before the socket is paused (with few bodies in flight). */
const BODY_HIGH_WATER_MARK = 4 * 1024 * 1024;
/**
 * What all bodies in flight together may buffer ahead of their handlers: a new body's mark
 * is this divided among the bodies being received (at least BODY_MIN_WATER_MARK), so 200
 * concurrent uploads do not hold 200 MiB. The handler sizes its own batches by the mark.
 */
const BODY_BUFFER_BUDGET = 16 * 1024 * 1024;
const BODY_MIN_WATER_MARK = 64 * 1024;
let bodiesInFlight = 0;
/** How long close() lets in-flight requests finish before it cuts their sockets. */
const CLOSE_GRACE_MS = 1000;
/** Over the connection limit: how long we wait for the head we answer with 503, and the Retry-After we send. */
const BUSY_HEAD_MS = 5000;
const BUSY_RETRY_AFTER_S = 5;
/**
 * Connections beyond maxConnections that still get their 503 (each costs a descriptor for
 * at most BUSY_HEAD_MS); beyond these, new connections are closed at once, so descriptors
 * never run out under the established ones.
 */
const BUSY_ANSWER_SLOTS = 256;

/** An HTTP-level error found while reading a request: answered by this layer, then the connection closes. */
class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
    /** Whether to add the §3.2.5.2.3 BITS-Error E_INVALIDARG headers (the request was a BITS_POST). */
    readonly bits: boolean,
  ) {
    super(message);
  }
}

type Resolved = Required<Omit<Http1ServerOptions, 'tls'>>;

function errorResponse(status: number, bits: boolean): Http1Response {
  const headers: Record<string, string> = {};
  if (bits) {
    // §3.2.5.2.3: malformed messages and a missing Content-Length both carry E_INVALIDARG, context 0x5.
    headers[H.PacketType] = 'Ack';
    Object.assign(headers, errorAnswerHeaders(HRESULT.E_INVALIDARG, ErrorContext.Server));
  }
  return { status, headers, body: '', close: true };
}

interface ParsedHead {
  method: string;
  target: string;
  httpVersion: '1.0' | '1.1';
  rawHeaders: Array<[string, string]>;
  headers: Record<string, string>;
}

/** Parses a request head (without the final CRLFCRLF). Throws HttpError. */
function parseHead(head: string, o: Resolved): ParsedHead {
  const lines = head.split('\r\n');
  const requestLine = lines[0] ?? '';
  const m = /^(\S+) (\S+) HTTP\/(\d)\.(\d)$/.exec(requestLine);
  const looksBits = requestLine.startsWith(BITS_POST + ' ');
  if (!m) throw new HttpError(400, 'malformed request line', looksBits);
  const method = m[1]!;
  const bits = method === BITS_POST;
  if (!TOKEN_RE.test(method)) throw new HttpError(400, 'invalid method', false);
  if (m[3] !== '1' || (m[4] !== '0' && m[4] !== '1')) throw new HttpError(505, 'HTTP version not supported', false);
  const httpVersion = m[4] === '0' ? '1.0' : '1.1';
  const target = m[2]!;
  if (!target.startsWith('/') && target !== '*' && !/^https?:\/\//i.test(target)) {
    throw new HttpError(400, 'invalid request target', bits);
  }
  const rawHeaders: Array<[string, string]> = [];
  const headers: Record<string, string> = {};
  for (let i = 1; i < lines.length; i++) {
    const line = lines[i]!;
    // obs-fold (RFC 7230 §3.2.4) and bare LFs are refused: both are request-smuggling vectors.
    if (line.startsWith(' ') || line.startsWith('\t') || line.includes('\n') || line.includes('\r')) {
      throw new HttpError(400, 'malformed header line', bits);
    }
    const colon = line.indexOf(':');
    if (colon <= 0) throw new HttpError(400, 'malformed header line', bits);
    const name = line.slice(0, colon);
    if (!TOKEN_RE.test(name)) throw new HttpError(400, 'invalid header name', bits);
    const value = line.slice(colon + 1).trim();
    // RFC 7230 §3.2.6: NUL is no field content; passed on it would truncate names in C code downstream.
    if (value.includes('\0')) throw new HttpError(400, `NUL in header ${name}`, bits);
    // §2.2.1 / §6 note 2: a header value over 4 KB is E_INVALIDARG.
    if (Buffer.byteLength(value, 'latin1') > o.maxHeaderValueBytes) {
      throw new HttpError(400, `header ${name} longer than ${o.maxHeaderValueBytes} bytes`, bits);
    }
    rawHeaders.push([name, value]);
    const key = name.toLowerCase();
    headers[key] = key in headers ? `${headers[key]}, ${value}` : value;
  }
  // RFC 7230 §5.4: an HTTP/1.1 request without Host, or with more than one, gets 400.
  const hosts = rawHeaders.filter(([n]) => n.toLowerCase() === 'host').length;
  if (hosts > 1 || (hosts === 0 && httpVersion === '1.1')) throw new HttpError(400, hosts > 1 ? 'duplicate Host' : 'missing Host', bits);
  return { method, target, httpVersion, rawHeaders, headers };
}

function parseContentLength(h: ParsedHead): number | undefined {
  const raw = h.rawHeaders.filter(([n]) => n.toLowerCase() === 'content-length').map(([, v]) => v);
  if (raw.length === 0) return undefined;
  // Repeated identical values are tolerated (RFC 7230 §3.3.2); differing ones are not.
  const values = new Set(raw.flatMap((v) => v.split(',').map((s) => s.trim())));
  if (values.size !== 1) throw new HttpError(400, 'conflicting Content-Length', isBitsPost(h.method, h.headers));
  const v = [...values][0]!;
  if (!/^\d{1,16}$/.test(v) || !Number.isSafeInteger(Number(v))) {
    throw new HttpError(400, 'invalid Content-Length', isBitsPost(h.method, h.headers));
  }
  return Number(v);
}

function connectionTokens(h: ParsedHead): Set<string> {
  return new Set((h.headers['connection'] ?? '').split(',').map((s) => s.trim().toLowerCase()).filter(Boolean));
}

function reasonPhrase(status: number): string {
  return STATUS_CODES[status] ?? 'Unknown';
}

function assertHeaderSafe(name: string, value: string): void {
  if (!TOKEN_RE.test(name)) throw new Error(`invalid response header name ${JSON.stringify(name)}`);
  if (/[\r\n\0]/.test(value)) throw new Error(`response header ${name} contains a control character`);
}

/**
 * Buffers socket bytes between requests and hands them out as request heads or
 * as body bytes. All socket reading goes through here so that pipelined bytes
 * are never lost and never parsed before the previous response is written.
 */
class SocketReader {
  private pending: Buffer = Buffer.alloc(0);
  private wake: (() => void) | undefined;
  /** Set while a request body is being received: bytes go straight to it. */
  private sink: ((chunk: Buffer) => void) | undefined;
  ended = false;
  closed = false;

  constructor(
    readonly socket: net.Socket,
    private readonly maxPending: number,
  ) {
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('end', () => {
      this.ended = true;
      this.notify();
    });
    socket.on('close', () => {
      this.closed = true;
      this.ended = true;
      this.notify();
    });
  }

  private notify(): void {
    const w = this.wake;
    this.wake = undefined;
    w?.();
  }

  private onData(chunk: Buffer): void {
    // Each chunk is a fresh socket buffer: see src/memory.ts.
    noteBufferChurn(chunk.length);
    if (this.sink) {
      this.sink(chunk);
      return;
    }
    this.pending = this.pending.length === 0 ? chunk : Buffer.concat([this.pending, chunk]);
    // Bound memory while a request is being handled and the client pipelines ahead.
    if (this.pending.length > this.maxPending) this.socket.pause();
    this.notify();
  }

  hasPending(): boolean {
    return this.pending.length > 0;
  }

  /** Takes up to n already-buffered bytes. */
  take(n: number): Buffer {
    const out = this.pending.subarray(0, n);
    this.pending = this.pending.subarray(out.length);
    return out;
  }

  /** Gives bytes back (a body sink received more than its body). */
  unshift(b: Buffer): void {
    if (b.length === 0) return;
    this.pending = this.pending.length === 0 ? b : Buffer.concat([b, this.pending]);
  }

  setSink(sink: ((chunk: Buffer) => void) | undefined): void {
    this.sink = sink;
  }

  /** Waits for more bytes, the end of the stream, or the timeout. Returns false on timeout. */
  waitForData(timeoutMs: number): Promise<boolean> {
    if (this.ended) return Promise.resolve(true);
    this.socket.resume();
    return new Promise((resolve) => {
      const t = setTimeout(() => {
        this.wake = undefined;
        resolve(false);
      }, timeoutMs);
      this.wake = () => {
        clearTimeout(t);
        resolve(true);
      };
    });
  }

  /**
   * The next request head (without CRLFCRLF), or undefined when the peer closed
   * or stayed idle. Throws HttpError for an oversized or timed-out head.
   */
  async readHead(o: Resolved, firstRequest: boolean): Promise<string | undefined> {
    let deadline: number | undefined;
    let searchFrom = 0;
    for (;;) {
      // RFC 7230 §3.5: ignore empty lines before a request line.
      while (this.pending.length >= 2 && this.pending[0] === 0x0d && this.pending[1] === 0x0a) {
        this.pending = this.pending.subarray(2);
        searchFrom = 0;
      }
      if (this.pending.length > 0) {
        deadline ??= Date.now() + o.headersTimeoutMs;
        const idx = this.pending.indexOf(CRLFCRLF, Math.max(0, searchFrom - 3));
        if (idx >= 0) {
          if (idx + 4 > o.maxHeadBytes) throw new HttpError(400, 'request head too large', this.startsWithBits());
          const head = this.pending.subarray(0, idx).toString('latin1');
          this.pending = this.pending.subarray(idx + 4);
          return head;
        }
        searchFrom = this.pending.length;
        if (this.pending.length > o.maxHeadBytes) throw new HttpError(400, 'request head too large', this.startsWithBits());
      }
      if (this.ended) {
        if (this.pending.length > 0) throw new HttpError(400, 'connection closed inside a request head', false);
        return undefined;
      }
      const wait =
        deadline !== undefined
          ? deadline - Date.now()
          : firstRequest
            ? o.headersTimeoutMs
            : o.keepAliveTimeoutMs;
      if (wait <= 0 || !(await this.waitForData(wait))) {
        if (this.pending.length > 0) throw new HttpError(408, 'request head timeout', false);
        return undefined;
      }
    }
  }

  private startsWithBits(): boolean {
    return this.pending.subarray(0, BITS_POST.length + 1).toString('latin1') === BITS_POST + ' ';
  }
}

/**
 * One transfer watched for its minimum rate. `active` is true only while the peer is the
 * one we wait for (a body the handler is reading, a response write waiting for drain), so
 * time spent on our disk or behind a session lock never counts against a client.
 */
interface RateWatch {
  bytes: number;
  active: boolean;
  activeMs: number;
  mark: number;
  readonly onSlow: () => void;
}

/**
 * mod_reqtimeout's MinRate for bodies and responses, with one timer per server (not one per
 * connection): after a grace period, every window of `windowMs` active time must move at
 * least minRate × window bytes, or the transfer is cut. A body dribbling a byte every few
 * seconds fails its first window; an honest slow link (kilobytes per second) never does.
 */
class RateGuard {
  private readonly watches = new Set<RateWatch>();
  private timer: NodeJS.Timeout | undefined;
  private last = 0;
  private readonly needed: number;

  constructor(
    readonly minRate: number,
    private readonly windowMs: number,
  ) {
    this.needed = (minRate * windowMs) / 1000;
  }

  watch(onSlow: () => void): RateWatch {
    const w: RateWatch = { bytes: 0, active: false, activeMs: 0, mark: 0, onSlow };
    this.watches.add(w);
    if (!this.timer) {
      this.last = Date.now();
      this.timer = setInterval(() => this.tick(), Math.max(50, Math.min(1000, Math.floor(this.windowMs / 4))));
      this.timer.unref();
    }
    return w;
  }

  unwatch(w: RateWatch | undefined): void {
    if (!w) return;
    this.watches.delete(w);
    if (this.watches.size === 0 && this.timer) {
      clearInterval(this.timer);
      this.timer = undefined;
    }
  }

  private tick(): void {
    const now = Date.now();
    const elapsed = now - this.last;
    this.last = now;
    for (const w of this.watches) {
      if (!w.active) continue;
      w.activeMs += elapsed;
      if (w.activeMs < this.windowMs) continue;
      if (w.bytes - w.mark < this.needed) {
        this.watches.delete(w);
        w.onSlow();
      } else {
        w.activeMs = 0;
        w.mark = w.bytes;
      }
    }
  }
}

/** The request body: exactly `length` bytes from the socket, with backpressure. */
class BodyReceiver {
  readonly stream: ReadableStream;
  remaining: number;
  failed: Error | undefined;
  private idleTimer: NodeJS.Timeout | undefined;
  private pausedForBackpressure = false;
  private continueSent = false;
  /** Set once the handler first reads: until then nothing is taken from the socket (see below). */
  private rate: RateWatch | undefined;
  /** Counted in bodiesInFlight (from construction: marks are fixed when the stream is made). */
  private counted = false;
  private readonly done: Promise<void>;
  private settle!: () => void;

  constructor(
    private readonly reader: SocketReader,
    length: number,
    private readonly idleMs: number,
    private readonly expectContinue: boolean,
    private readonly guard: RateGuard,
  ) {
    this.remaining = length;
    this.done = new Promise((r) => (this.settle = r));
    if (length > 0) {
      bodiesInFlight++;
      this.counted = true;
    }
    this.stream = new ReadableStream({
      // Up to 1 MiB may wait for the handler: the socket keeps flowing while a handler writes
      // the previous batch to disk (64 KiB paused the socket on every disk write). Under
      // load the budget is shared (BODY_BUFFER_BUDGET).
      highWaterMark: Math.max(BODY_MIN_WATER_MARK, Math.min(BODY_HIGH_WATER_MARK, Math.floor(BODY_BUFFER_BUDGET / (bodiesInFlight + 1)))),
      read: () => this.onRead(),
      destroy: (err, cb) => {
        // A handler that destroys an unfinished body leaves the connection out of sync: it must close.
        if (this.remaining > 0 && !this.failed) {
          this.failed = err ?? new Error('request body destroyed by the handler');
          this.settle();
        }
        this.stop();
        cb(err);
      },
    });
    // A body nobody listens to must not crash the process when it errors; consumers still see the error.
    this.stream.on('error', () => {});
    if (length === 0) {
      this.stream.push(null);
      this.settle();
      return;
    }
    // Bytes that arrived together with the head.
    if (reader.hasPending()) this.feed(reader.take(this.remaining));
    if (this.remaining > 0) {
      reader.setSink((chunk) => this.feed(chunk));
      reader.socket.on('close', this.onClose);
      reader.socket.on('end', this.onClose);
      // Nothing is read until the handler first reads: a fragment queued behind its session's
      // lock must not buffer its body (400 queued fragments once held ~1 MiB each).
      if (!reader.ended) reader.socket.pause();
      else this.onClose();
    }
  }

  private readonly onClose = (): void => {
    if (this.remaining > 0) this.fail(new Error('client closed the connection before the request body was complete'));
  };

  private onRead(): void {
    if (this.remaining <= 0 || this.failed) return;
    if (this.expectContinue && !this.continueSent) {
      this.continueSent = true;
      if (!this.reader.socket.destroyed) this.reader.socket.write('HTTP/1.1 100 Continue\r\n\r\n');
    }
    if (!this.rate) {
      this.rate = this.guard.watch(() =>
        this.fail(new Error(`request body slower than ${this.guard.minRate} bytes/s`)),
      );
      this.rate.active = true;
      this.reader.socket.resume();
      this.armIdle();
    }
    if (this.pausedForBackpressure) {
      this.pausedForBackpressure = false;
      this.rate.active = true;
      this.reader.socket.resume();
      this.armIdle();
    }
  }

  /** True when the client was asked to wait (Expect: 100-continue) and was never told to send. */
  get bodyNeverRequested(): boolean {
    return this.expectContinue && !this.continueSent && this.remaining > 0;
  }

  private feed(chunk: Buffer): void {
    if (this.remaining <= 0) {
      this.reader.unshift(chunk);
      return;
    }
    const part = chunk.length > this.remaining ? chunk.subarray(0, this.remaining) : chunk;
    const rest = chunk.subarray(part.length);
    this.remaining -= part.length;
    if (this.rate) this.rate.bytes += part.length;
    const more = this.stream.destroyed ? true : this.stream.push(part);
    if (this.remaining === 0) {
      this.reader.unshift(rest);
      this.stop();
      if (!this.stream.destroyed) this.stream.push(null);
      this.settle();
      // The next request must not be read until the response is written.
      this.reader.socket.pause();
      return;
    }
    if (!more) {
      this.pausedForBackpressure = true;
      if (this.rate) this.rate.active = false;
      this.reader.socket.pause();
      this.clearIdle();
    } else this.armIdle();
  }

  private armIdle(): void {
    this.clearIdle();
    this.idleTimer = setTimeout(() => this.fail(new Error(`request body stalled for ${this.idleMs} ms`)), this.idleMs);
  }

  private clearIdle(): void {
    if (this.idleTimer) clearTimeout(this.idleTimer);
    this.idleTimer = undefined;
  }

  private stop(): void {
    this.clearIdle();
    if (this.counted) bodiesInFlight--;
    this.counted = false;
    this.guard.unwatch(this.rate);
    this.reader.setSink(undefined);
    this.reader.socket.off('close', this.onClose);
    this.reader.socket.off('end', this.onClose);
  }

  fail(err: Error): void {
    if (this.failed || this.remaining === 0) return;
    this.failed = err;
    this.stop();
    this.stream.destroy(err);
    this.settle();
  }

  /** Reads and drops the rest of the body. Resolves when it is complete or has failed. */
  discard(): Promise<void> {
    if (this.remaining > 0 && !this.failed) {
      this.stream.on('data', () => {});
      this.stream.resume();
    }
    return this.done;
  }

  get complete(): boolean {
    return this.remaining === 0 && !this.failed;
  }
}

/** Writes a chunk; a wait for 'drain' is time the client owes us bytes read (rate.active). */
async function writeAll(socket: net.Socket, chunk: Buffer, rate?: RateWatch): Promise<void> {
  if (socket.destroyed) throw new Error('socket closed');
  if (!socket.write(chunk)) {
    if (rate) rate.active = true;
    await new Promise<void>((resolve, reject) => {
      const onDrain = (): void => {
        socket.off('close', onClose);
        resolve();
      };
      const onClose = (): void => {
        socket.off('drain', onDrain);
        reject(new Error('socket closed'));
      };
      socket.once('drain', onDrain);
      socket.once('close', onClose);
    }).finally(() => {
      if (rate) rate.active = false;
    });
  }
  if (rate) rate.bytes += chunk.length;
}

function isReadableLike(b: unknown): b is ReadableStream | AsyncIterable<Buffer> {
  return typeof b === 'object' && b !== null && !Buffer.isBuffer(b) && Symbol.asyncIterator in b;
}

function destroyBody(body: Http1Response['body']): void {
  if (body instanceof ReadableStream) body.destroy();
}

/**
 * Writes one response. Returns whether the connection must close afterwards
 * (also when a streamed body did not match its Content-Length: framing is lost).
 */
async function writeResponse(
  socket: net.Socket,
  res: Http1Response,
  isHead: boolean,
  httpVersion: '1.0' | '1.1',
  close: boolean,
  guard?: RateGuard,
): Promise<boolean> {
  const status = Number.isInteger(res.status) && res.status >= 200 && res.status <= 999 ? res.status : 500;
  const headers: Array<[string, string]> = [
    ['Date', new Date().toUTCString()],
    ['Server', `bits/${VERSION}`],
  ];
  let declaredLength: number | undefined;
  for (const [name, v] of Object.entries(res.headers ?? {})) {
    const lower = name.toLowerCase();
    if (lower === 'date' || lower === 'server' || lower === 'connection' || lower === 'transfer-encoding') continue;
    const value = String(v);
    assertHeaderSafe(name, value);
    if (lower === 'content-length') {
      declaredLength = Number(value);
      if (!Number.isSafeInteger(declaredLength) || declaredLength < 0) throw new Error(`invalid Content-Length ${value}`);
      continue;
    }
    headers.push([name, value]);
  }
  let bodyBuf: Buffer | undefined;
  let stream: ReadableStream | AsyncIterable<Buffer> | undefined;
  const noBodyStatus = status === 204 || status === 304;
  if (res.body === undefined) bodyBuf = Buffer.alloc(0);
  else if (typeof res.body === 'string') bodyBuf = Buffer.from(res.body, 'utf8');
  else if (Buffer.isBuffer(res.body)) bodyBuf = res.body;
  else if (isReadableLike(res.body)) stream = res.body;
  else throw new Error('unsupported response body');

  let length: number | undefined;
  if (bodyBuf) {
    // A HEAD answer may declare the length of the GET representation without carrying it.
    length = isHead && declaredLength !== undefined ? declaredLength : bodyBuf.length;
  } else length = declaredLength;
  // A stream without a declared length can only be framed by closing the connection.
  if (length === undefined && !isHead) close = true;
  if (length !== undefined && !(noBodyStatus && declaredLength === undefined)) headers.push(['Content-Length', String(length)]);
  if (close) headers.push(['Connection', 'close']);
  else if (httpVersion === '1.0') headers.push(['Connection', 'keep-alive']);

  let head = `HTTP/1.1 ${status} ${reasonPhrase(status)}\r\n`;
  for (const [n, v] of headers) head += `${n}: ${v}\r\n`;
  head += '\r\n';

  if (isHead || noBodyStatus) {
    destroyBody(res.body);
    await writeAll(socket, Buffer.from(head, 'latin1'));
    return close;
  }
  if (bodyBuf) {
    await writeAll(socket, Buffer.concat([Buffer.from(head, 'latin1'), bodyBuf]));
    return close;
  }
  // A reader that stops reading is cut like a dribbling body: the file descriptor and socket go.
  const rate = guard?.watch(() => socket.destroy());
  let sent = 0;
  try {
    await writeAll(socket, Buffer.from(head, 'latin1'), rate);
    for await (const chunk of stream as AsyncIterable<Buffer | string>) {
      const b = typeof chunk === 'string' ? Buffer.from(chunk) : chunk;
      if (length !== undefined && sent + b.length > length) throw new Error('response body longer than its Content-Length');
      sent += b.length;
      await writeAll(socket, b, rate);
    }
  } catch (err) {
    destroyBody(res.body);
    // Headers are out: the only honest signal left is an aborted connection.
    socket.destroy();
    throw err;
  } finally {
    guard?.unwatch(rate);
  }
  if (length !== undefined && sent !== length) {
    socket.destroy();
    throw new Error(`response body ${sent} bytes, Content-Length ${length}`);
  }
  return close;
}

class Connection {
  private readonly reader: SocketReader;
  /** Set while a request is between head and response. */
  busy = false;
  private closing = false;
  readonly finished: Promise<void>;

  constructor(
    readonly socket: net.Socket,
    private readonly o: Resolved,
    private readonly handler: Http1Handler,
    private readonly secure: boolean,
    private readonly guard: RateGuard,
    /** Over the connection limit: the first request gets 503 with Retry-After, then the connection closes. */
    private readonly overLimit = false,
  ) {
    socket.on('error', () => {
      /* reported through 'close'; a reset peer is routine */
    });
    socket.setNoDelay(true);
    this.reader = new SocketReader(socket, o.maxHeadBytes);
    this.finished = this.run().catch(() => {
      socket.destroy();
    });
  }

  /** Server shutdown: close now if idle, else after the current response. */
  shutdown(): void {
    this.closing = true;
    if (!this.busy) this.socket.destroy();
  }

  private async run(): Promise<void> {
    if (this.overLimit) return this.refuseBusy();
    let first = true;
    while (!this.socket.destroyed && !this.closing) {
      let headText: string | undefined;
      try {
        headText = await this.reader.readHead(this.o, first);
      } catch (err) {
        if (err instanceof HttpError) await this.sendAndClose(errorResponse(err.status, err.bits), '1.1', false);
        else this.socket.destroy();
        return;
      }
      first = false;
      if (headText === undefined) {
        this.endSocket();
        return;
      }
      this.busy = true;
      const keepGoing = await this.serveOne(headText);
      this.busy = false;
      if (!keepGoing) return;
    }
    if (!this.socket.destroyed) this.endSocket();
  }

  /** Answers the first request head with 503 (or just closes when none comes soon). */
  private async refuseBusy(): Promise<void> {
    let headText: string | undefined;
    try {
      headText = await this.reader.readHead({ ...this.o, headersTimeoutMs: Math.min(this.o.headersTimeoutMs, BUSY_HEAD_MS) }, true);
    } catch {
      headText = undefined;
    }
    if (headText === undefined) {
      this.socket.destroy();
      return;
    }
    await this.sendAndClose(
      { status: 503, headers: { 'Retry-After': String(BUSY_RETRY_AFTER_S) }, body: '', close: true },
      '1.1',
      headText.startsWith('HEAD '),
    );
  }

  private endSocket(): void {
    if (!this.socket.destroyed) this.socket.end();
    setTimeout(() => this.socket.destroy(), LINGER_MS).unref();
  }

  private async sendAndClose(res: Http1Response, v: '1.0' | '1.1', isHead: boolean): Promise<void> {
    try {
      await writeResponse(this.socket, res, isHead, v, true);
    } catch {
      /* the peer is gone */
    }
    this.lingerClose();
  }

  /** Ends our side but keeps swallowing client bytes for a moment, so the peer reads our answer instead of a reset. */
  private lingerClose(): void {
    this.reader.setSink(() => {});
    this.socket.resume();
    this.endSocket();
  }

  /** Handles one request; returns whether the connection stays open for the next one. */
  private async serveOne(headText: string): Promise<boolean> {
    let parsed: ParsedHead;
    let contentLength: number | undefined;
    try {
      parsed = parseHead(headText, this.o);
      contentLength = parseContentLength(parsed);
      if (parsed.headers['transfer-encoding'] !== undefined) {
        // We cannot frame a chunked body we refuse to decode, so answer and close.
        if (contentLength !== undefined) throw new HttpError(400, 'both Transfer-Encoding and Content-Length', isBitsPost(parsed.method, parsed.headers));
        throw new HttpError(411, 'Content-Length required', isBitsPost(parsed.method, parsed.headers));
      }
    } catch (err) {
      if (!(err instanceof HttpError)) throw err;
      await this.sendAndClose(errorResponse(err.status, err.bits), '1.1', false);
      return false;
    }
    const tokens = connectionTokens(parsed);
    let close =
      this.closing ||
      tokens.has('close') ||
      (parsed.httpVersion === '1.0' && !tokens.has('keep-alive'));
    const expectContinue =
      parsed.httpVersion === '1.1' && (parsed.headers['expect'] ?? '').toLowerCase() === '100-continue';
    const body = new BodyReceiver(this.reader, contentLength ?? 0, this.o.bodyIdleTimeoutMs, expectContinue, this.guard);
    const target = parsed.target;
    const q = target.indexOf('?');
    const rawPath = q >= 0 ? target.slice(0, q) : target;
    const req: Http1Request = {
      method: parsed.method,
      target,
      rawPath,
      query: q >= 0 ? target.slice(q + 1) : '',
      httpVersion: parsed.httpVersion,
      headers: parsed.headers,
      rawHeaders: parsed.rawHeaders,
      contentLength,
      body: body.stream,
      discardBody: () => body.discard(),
      socket: this.socket,
      remoteAddress: this.socket.remoteAddress ?? '',
      secure: this.secure,
    };
    let res: Http1Response;
    try {
      res = await this.handler(req);
    } catch {
      res = { status: 500, body: '', close: true };
    }
    if (res.close) close = true;
    // An unread body that the client was never asked to send (100-continue), or that failed, cannot be resynced.
    if (body.failed || body.bodyNeverRequested) close = true;
    // A response body may hold a file descriptor: release it on every path that does not send it.
    if (this.socket.destroyed) {
      destroyBody(res.body);
      return false;
    }
    try {
      close = await writeResponse(this.socket, res, parsed.method === 'HEAD', parsed.httpVersion, close, this.guard);
    } catch {
      destroyBody(res.body);
      // A handler response we cannot serialise (bad header) still gets an answer if nothing was written yet.
      if (!this.socket.destroyed && this.socket.bytesWritten === 0) {
        await this.sendAndClose({ status: 500, body: '' }, parsed.httpVersion, false);
      } else this.socket.destroy();
      return false;
    }
    if (close) {
      body.fail(new Error('connection closing'));
      this.lingerClose();
      return false;
    }
    if (!body.complete) {
      // Keep-alive: the rest of the body must be read before the next request head.
      await body.discard();
      if (!body.complete) {
        this.socket.destroy();
        return false;
      }
    }
    return true;
  }
}

export async function startHttp1Server(options: Http1ServerOptions, handler: Http1Handler): Promise<Http1Server> {
  const o: Resolved = {
    host: options.host,
    port: options.port,
    maxHeadBytes: options.maxHeadBytes ?? DEFAULTS.maxHeadBytes,
    maxHeaderValueBytes: options.maxHeaderValueBytes ?? DEFAULTS.maxHeaderValueBytes,
    keepAliveTimeoutMs: options.keepAliveTimeoutMs ?? DEFAULTS.keepAliveTimeoutMs,
    headersTimeoutMs: options.headersTimeoutMs ?? DEFAULTS.headersTimeoutMs,
    bodyIdleTimeoutMs: options.bodyIdleTimeoutMs ?? DEFAULTS.bodyIdleTimeoutMs,
    maxConnections: options.maxConnections ?? DEFAULTS.maxConnections,
    minRateBytesPerSec: options.minRateBytesPerSec ?? DEFAULTS.minRateBytesPerSec,
    rateGraceMs: options.rateGraceMs ?? DEFAULTS.rateGraceMs,
    tlsHandshakeTimeoutMs: options.tlsHandshakeTimeoutMs ?? DEFAULTS.tlsHandshakeTimeoutMs,
  };
  const guard = new RateGuard(o.minRateBytesPerSec, o.rateGraceMs);
  const connections = new Set<Connection>();
  /** TCP connections open now (TLS ones from before their handshake). */
  let open = 0;
  /** Counts a new TCP connection; false (and closed) when even the 503 slots are taken. */
  const admit = (raw: net.Socket): boolean => {
    if (open >= o.maxConnections + BUSY_ANSWER_SLOTS) {
      raw.on('error', () => {});
      raw.destroy();
      return false;
    }
    open++;
    raw.once('close', () => open--);
    return true;
  };
  const onSocket = (socket: net.Socket, secure: boolean): void => {
    const c = new Connection(socket, o, handler, secure, guard, open > o.maxConnections);
    connections.add(c);
    socket.on('close', () => connections.delete(c));
  };
  let server: net.Server;
  if (options.tls) {
    const ts = tls.createServer({
      cert: options.tls.cert,
      key: options.tls.key,
      ...(options.tls.ca ? { ca: options.tls.ca } : {}),
      allowHalfOpen: true,
      // A TCP connection that never completes its handshake holds a descriptor; cut it.
      handshakeTimeout: o.tlsHandshakeTimeoutMs,
    });
    ts.on('connection', (raw: net.Socket) => admit(raw));
    ts.on('secureConnection', (s) => onSocket(s, true));
    // A failed or timed-out handshake concerns only that client; with a listener here Node
    // leaves the socket open, so it is closed explicitly (else it holds its descriptor forever).
    ts.on('tlsClientError', (_err, s) => s.destroy());
    server = ts;
  } else {
    server = net.createServer({ allowHalfOpen: true }, (s) => {
      if (admit(s)) onSocket(s, false);
    });
  }
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(o.port, o.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const addr = server.address() as net.AddressInfo;
  let closed: Promise<void> | undefined;
  return {
    host: addr.address,
    port: addr.port,
    close() {
      closed ??= (async () => {
        const listening = new Promise<void>((r) => server.close(() => r()));
        for (const c of connections) c.shutdown();
        const all = Promise.all([...connections].map((c) => c.finished));
        const grace = new Promise<void>((r) => setTimeout(r, CLOSE_GRACE_MS).unref());
        await Promise.race([all, grace]);
        for (const c of connections) c.socket.destroy();
        await Promise.race([all, new Promise<void>((r) => setTimeout(r, CLOSE_GRACE_MS).unref())]);
        await listening;
      })();
      return closed;
    },
  };
}
