/**
 * The download data path's own HTTP/1.1 GET (issue 13), and the HEAD that
 * probes the source first (so a plain download never loads undici at all,
 * ~40 ms of start-up: undici-parts.ts): range bodies go from
 * the socket's 'data' buffers to the consumer in batches, with no HTTP parser
 * copying every byte, no body stream and no PassThrough between. On this
 * 2-core VM a 1 GiB body from nginx took ~1.3–1.7 s this way against
 * ~1.7–2.5 s through undici's lowest-level dispatch and ~2.6–3.0 s through
 * undici's body stream (bench/README "Profiles").
 *
 * It is deliberately small: one request at a time per keep-alive connection,
 * bodies framed by Content-Length only. HttpTransport (http.ts) decides when
 * it is used — a direct connection with nothing connection-bound (no proxy, no
 * server credentials, no client certificate, no --limit-rate) — and sends the
 * request through undici instead when this reader declines the answer
 * (`BulkDeclined`: a 401, a chunked or close-delimited body).
 */
import net, { type Socket } from 'node:net';
import type { ConnectionOptions } from 'node:tls';
import { TimeoutError } from '../errors.js';
import { noteBufferChurn } from '../memory.js';
import { BatchQueue } from './read-ahead.js';
import { nodeTls } from './tls.js';
import { waitInLine } from './queue-wait.js';

/** Largest response head accepted (undici's default maxHeaderSize is 16 KiB; IIS allows 16 KiB too). */
const MAX_HEAD_BYTES = 64 * 1024;
/** A refusal's body up to this size is read to keep the connection; a larger one closes it. */
const DRAIN_BYTES = 64 * 1024;
/** How long an idle keep-alive connection is kept (undici's keepAliveTimeout here is 60 s too). */
const IDLE_MS = 60_000;

/** The answer cannot be read here; the caller sends the request the general way. */
export class BulkDeclined extends Error {
  constructor(
    readonly reason: string,
    /** The origin should not be tried here again (a 401: credentials are needed from now on). */
    readonly sticky: boolean,
  ) {
    super(reason);
  }
}

export interface BulkOptions {
  connectTimeoutMs: number;
  /** Response headers, and any gap in the body, within this (the response timeout). */
  responseTimeoutMs: number;
  tls: ConnectionOptions;
}

export interface BulkResponse {
  status: number;
  /** Lower-cased names; repeated headers joined with ", " (as HttpTransport does). */
  headers: Record<string, string>;
  /** Content-Length of the body. */
  length: number;
  /** The connection (https: whether the server asked for a client certificate, for refusal hints). */
  socket: Socket;
  /** Stops the body with `reason` (the request's signal fired); the connection is closed. */
  abort(reason: unknown): void;
  /**
   * The body's batches; ends after `length` bytes, throws if the connection
   * ends before. A batch's buffers are valid until the next batch is asked for
   * (they are read buffers, reused after).
   */
  batches(): AsyncGenerator<Buffer[]>;
  /** Drops the body: a small one is read so the connection is kept, a large one closes it. */
  discard(): Promise<void>;
}

/** Socket reads land in these (net sockets): see ReadBlocks. */
interface Block {
  buf: Buffer;
  /** Where the next read goes. */
  off: number;
  /** Chunks of it handed to the body queue and not yet given back. */
  refs: number;
}

/** A read smaller than this does not start in a block's tail; a fresh block is taken. */
const MIN_READ = 16 * 1024;
const BLOCK_BYTES = 256 * 1024;
/** Blocks per connection: the body queue's pause point (2 MiB) plus the batch the consumer holds, with room. */
const MAX_BLOCKS = 20;

/**
 * The buffers a plain-http connection reads into (net's `onread`), reused
 * once the consumer gave their chunks back, instead of a fresh ~64 KiB buffer
 * per read: those are external memory, and V8 answers their churn with a full
 * mark-compact every few dozen MiB — 57 of them and ~1 s of GC in a 1 GiB
 * download with 4 segments (--trace-gc). A chunk is given back when the
 * consumer asks for the batch after the one that held it (bodyBatches'
 * contract); FileSink never keeps a caller's buffer past write(). With every
 * block in use, a read gets a fresh buffer of its own (not pooled).
 */
class ReadBlocks {
  private cur: Block | undefined;
  private readonly free: Block[] = [];
  private count = 0;
  /** The block of the buffer the next read goes into (undefined: a fresh buffer). */
  private given: Block | undefined;

  next(): Buffer {
    let b = this.cur;
    if (!b || b.buf.length - b.off < MIN_READ) {
      if (b) this.retire(b);
      b = this.free.pop();
      if (!b && this.count < MAX_BLOCKS) {
        this.count++;
        b = { buf: Buffer.allocUnsafeSlow(BLOCK_BYTES), off: 0, refs: 0 };
      }
      this.cur = b;
    }
    this.given = b;
    return b ? b.buf.subarray(b.off) : Buffer.allocUnsafe(64 * 1024);
  }

  /** The `n` bytes the last read put in the buffer `next()` gave, and their block. */
  took(n: number, buf: Buffer): { chunk: Buffer; block: Block | undefined } {
    const b = this.given;
    const chunk = buf.subarray(0, n);
    if (b) b.off += n;
    return { chunk, block: b };
  }

  release(b: Block): void {
    if (--b.refs === 0 && b !== this.cur) this.retire(b);
  }

  private retire(b: Block): void {
    if (b.refs > 0) return;
    b.off = 0;
    this.free.push(b);
  }
}

interface Conn {
  socket: Socket;
  /** Requests answered on it so far. */
  used: number;
  idleTimer?: NodeJS.Timeout;
  /** Plain http: the buffers its reads land in. */
  blocks?: ReadBlocks;
  /** Where data goes now (the current exchange), or undefined while idle; `block` holds it (a view) or not (its own buffer). */
  onData?: (c: Buffer, block: Block | undefined) => void;
  onGone?: (err: Error | undefined) => void;
  gone: boolean;
}

/** Connections of one origin, at most `size`, leased to one exchange at a time. */
export class BulkPool {
  private readonly idle: Conn[] = [];
  private readonly all = new Set<Conn>();
  private readonly waiters: Array<(v: void) => void> = [];
  private closed = false;

  constructor(
    private readonly url: URL,
    private readonly size: number,
    private readonly opts: BulkOptions,
  ) {}

  /**
   * One GET or HEAD. Resolves at the response head; a reused connection that
   * dies before any byte of the answer (the server closed it while idle) is
   * replaced once, as a browser does for an idempotent request.
   */
  async get(target: string, headers: Record<string, string>, signal?: AbortSignal, method: 'GET' | 'HEAD' = 'GET'): Promise<BulkResponse> {
    for (let attempt = 0; ; attempt++) {
      const conn = await this.lease(signal);
      try {
        return await this.exchange(conn, method, target, headers, signal);
      } catch (err) {
        this.drop(conn);
        if (err instanceof StaleConnection && attempt === 0) continue;
        throw err instanceof StaleConnection ? err.cause : err;
      }
    }
  }

  private async lease(signal?: AbortSignal): Promise<Conn> {
    for (;;) {
      signal?.throwIfAborted();
      if (this.closed) throw Object.assign(new Error('transport is closed'), { code: 'UND_ERR_CLOSED' });
      const c = this.idle.pop();
      if (c) {
        clearTimeout(c.idleTimer);
        if (c.gone) continue;
        c.socket.ref();
        return c;
      }
      if (this.all.size < this.size) return this.connect(signal);
      await waitInLine(this.waiters, signal);
    }
  }

  private connect(signal?: AbortSignal): Promise<Conn> {
    const u = this.url;
    const port = Number(u.port) || (u.protocol === 'https:' ? 443 : 80);
    const host = u.hostname.startsWith('[') ? u.hostname.slice(1, -1) : u.hostname;
    const conn: Conn = { socket: undefined as unknown as Socket, used: 0, gone: false };
    this.all.add(conn);
    return new Promise<Conn>((resolve, reject) => {
      const secure = u.protocol === 'https:';
      let socket: Socket;
      if (secure) {
        // TLS sockets have no onread: their reads arrive as 'data' in buffers of their own.
        socket = nodeTls().connect({ ...this.opts.tls, host, port, servername: net.isIP(host) ? undefined : host, ALPNProtocols: ['http/1.1'] });
        socket.on('data', (c: Buffer) => {
          noteBufferChurn(c.length);
          deliver(c, undefined);
        });
      } else {
        const blocks = new ReadBlocks();
        conn.blocks = blocks;
        socket = net.connect({
          host,
          port,
          onread: {
            buffer: () => blocks.next(),
            callback: (n: number, buf: Uint8Array) => {
              const { chunk, block } = blocks.took(n, buf as Buffer);
              if (!block) noteBufferChurn(n);
              deliver(chunk, block);
              // Pausing is the body queue's (socket.pause()), not this return value's.
              return true;
            },
          },
        });
      }
      conn.socket = socket;
      socket.setNoDelay(true);
      let settled = false;
      const timer = setTimeout(() => fail(new TimeoutError(`could not connect to ${u.host}: connect timeout`, 'connect')), this.opts.connectTimeoutMs);
      const onAbort = () => fail(signal!.reason);
      signal?.addEventListener('abort', onAbort, { once: true });
      const fail = (e: unknown) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        this.drop(conn);
        reject(e);
      };
      socket.once(secure ? 'secureConnect' : 'connect', () => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        resolve(conn);
      });
      const deliver = (c: Buffer, block: Block | undefined) => {
        if (conn.onData) conn.onData(c, block);
        // Bytes nobody asked for: the connection cannot be trusted for the next answer.
        else this.drop(conn);
      };
      const gone = (err?: Error) => {
        if (conn.gone) return;
        conn.gone = true;
        if (!settled) fail(err ?? Object.assign(new Error('other side closed'), { code: 'ECONNRESET' }));
        conn.onGone?.(err);
        this.forget(conn);
      };
      socket.on('error', gone);
      socket.on('end', () => gone());
      socket.on('close', () => gone());
    });
  }

  private exchange(conn: Conn, method: 'GET' | 'HEAD', target: string, headers: Record<string, string>, signal?: AbortSignal): Promise<BulkResponse> {
    const reused = conn.used > 0;
    conn.used++;
    const u = this.url;
    let head = `${method} ${target} HTTP/1.1\r\nhost: ${u.host}\r\n`;
    for (const [k, v] of Object.entries(headers)) {
      if (k === 'host' || /[\r\n]/.test(k + v)) continue;
      head += `${k}: ${v}\r\n`;
    }
    head += '\r\n';
    const socket = conn.socket;
    return new Promise<BulkResponse>((resolve, reject) => {
      let got: Buffer = Buffer.alloc(0);
      let answered = false;
      const timeout = () =>
        finish(new TimeoutError(`no response from ${u.host} within ${Math.round(this.opts.responseTimeoutMs / 1000)} s (response timeout)`, 'response'));
      const timer = setTimeout(timeout, this.opts.responseTimeoutMs);
      const onAbort = () => finish(signal!.reason);
      signal?.addEventListener('abort', onAbort, { once: true });
      let settled = false;
      const finish = (err: unknown) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        conn.onData = undefined;
        conn.onGone = undefined;
        reject(reused && !answered && !(err instanceof TimeoutError) && !signal?.aborted ? new StaleConnection(err) : err);
      };
      conn.onGone = (err) => finish(err ?? Object.assign(new Error('other side closed'), { code: 'ECONNRESET' }));
      conn.onData = (c: Buffer) => {
        answered = true;
        // A copy: the read buffer is reused, and the head may span several reads.
        got = Buffer.concat([got, c]);
        for (;;) {
          // Not HTTP at all (a TLS server, SSH, garbage): said at once, as undici does, not after the response timeout.
          if (got.length >= 5 && got.toString('latin1', 0, 5) !== 'HTTP/') {
            finish(Object.assign(new Error(`not an HTTP/1.x response: ${JSON.stringify(got.toString('latin1', 0, 40))}`), { code: 'HPE_INVALID_CONSTANT' }));
            return;
          }
          const end = got.indexOf('\r\n\r\n');
          const bare = got.indexOf('\n\n');
          if (bare >= 0 && (end < 0 || bare < end)) {
            // Lines ended by LF alone: refused at once, as undici's llhttp refuses them (not a wait for a CRLF that never comes).
            finish(Object.assign(new Error('Response does not match the HTTP/1.1 protocol (Missing expected CR after response line)'), { code: 'HPE_CR_EXPECTED' }));
            return;
          }
          if (end < 0) {
            if (got.length > MAX_HEAD_BYTES) finish(Object.assign(new Error(`response head from ${u.host} is larger than ${MAX_HEAD_BYTES} bytes`), { code: 'HPE_HEADER_OVERFLOW' }));
            return;
          }
          let parsed: { status: number; headers: Record<string, string>; version: string };
          try {
            parsed = parseHead(got.subarray(0, end).toString('latin1'));
          } catch (e) {
            finish(e);
            return;
          }
          const rest = got.subarray(end + 4);
          // 1xx (100 Continue, 103 Early Hints) precede the answer; 101 is not asked for.
          if (parsed.status >= 100 && parsed.status < 200 && parsed.status !== 101) {
            got = rest;
            continue;
          }
          settled = true;
          clearTimeout(timer);
          signal?.removeEventListener('abort', onAbort);
          conn.onData = undefined;
          conn.onGone = undefined;
          try {
            resolve(this.body(conn, parsed, rest, method === 'HEAD'));
          } catch (e) {
            this.drop(conn);
            reject(e);
          }
          return;
        }
      };
      socket.write(head);
    });
  }

  /**
   * The answer's body reader; declines what Content-Length does not frame. An
   * answer to HEAD has no body whatever its framing headers say (RFC 7230
   * §3.3.3 rule 1): they describe the GET.
   */
  private body(conn: Conn, head: { status: number; headers: Record<string, string>; version: string }, first: Buffer, toHead: boolean): BulkResponse {
    const h = head.headers;
    if (head.status === 401 || head.status === 407) throw new BulkDeclined(`HTTP ${head.status}`, true);
    if (!toHead && h['transfer-encoding'] !== undefined) throw new BulkDeclined(`Transfer-Encoding: ${h['transfer-encoding']}`, head.status >= 200 && head.status < 300);
    const cl = h['content-length'];
    const noBody = toHead || head.status === 204 || head.status === 304;
    if (!noBody && (cl === undefined || !/^\d+$/.test(cl.trim()))) throw new BulkDeclined(cl === undefined ? 'no Content-Length' : `Content-Length ${JSON.stringify(cl)}`, head.status >= 200 && head.status < 300);
    const length = noBody ? 0 : Number(cl!.trim());
    const keep = head.version === '1.1' ? !/\bclose\b/i.test(h['connection'] ?? '') : /\bkeep-alive\b/i.test(h['connection'] ?? '');
    const socket = conn.socket;
    const url = this.url;
    const responseTimeoutMs = this.opts.responseTimeoutMs;
    let left = length;
    let done = false;
    let reading = false;
    const q = new BatchQueue(
      () => {
        paused = true;
        socket.pause();
        // A paused body is ours, not the server's: no stall timer while it is paused.
        socket.setTimeout(0);
      },
      () => {
        paused = false;
        if (done) return;
        socket.setTimeout(responseTimeoutMs);
        socket.resume();
      },
    );
    let paused = false;
    const complete = () => {
      done = true;
      socket.setTimeout(0);
      socket.removeListener('timeout', onStall);
      conn.onData = undefined;
      conn.onGone = undefined;
      q.end();
      if (paused) socket.resume();
      if (keep && !conn.gone) this.release(conn);
      else this.drop(conn);
    };
    /** The read block of each chunk in the queue, in order (undefined: a buffer of its own). */
    const owners: Array<Block | undefined> = [];
    /** The blocks of the batch the consumer holds: given back when it asks for the next. */
    let held: Array<Block | undefined> = [];
    const giveBack = () => {
      for (const b of held) if (b) conn.blocks!.release(b);
      held = [];
    };
    const enqueue = (c: Buffer, block: Block | undefined) => {
      if (c.length === 0) return;
      if (block) block.refs++;
      owners.push(block);
      q.push(c);
    };
    const take = (c: Buffer, block: Block | undefined) => {
      if (c.length > left) {
        // More than the answer holds: the rest is nothing we asked for.
        enqueue(c.subarray(0, left), block);
        left = 0;
        complete();
        this.drop(conn);
        return;
      }
      left -= c.length;
      enqueue(c, block);
      if (left === 0) complete();
    };
    /** The next batch; the previous one's blocks go back first. */
    const nextBatch = async (): Promise<Buffer[] | undefined> => {
      giveBack();
      const b = await q.next();
      if (b) held = owners.splice(0, b.length);
      return b;
    };
    const onStall = () => {
      if (done) return;
      done = true;
      q.fail(new TimeoutError(`response body from ${url.host} stalled past the response timeout`, 'response'));
      this.drop(conn);
    };
    conn.onGone = (err) => {
      if (done) return;
      done = true;
      q.fail(err ?? Object.assign(new Error(`other side closed after ${length - left} of ${length} body bytes`), { code: 'ECONNRESET' }));
    };
    conn.onData = take;
    socket.on('timeout', onStall);
    socket.setTimeout(responseTimeoutMs);
    if (first.length > 0) take(first, undefined);
    else if (left === 0) complete();
    const pool = this;
    return {
      status: head.status,
      headers: h,
      length,
      socket,
      async *batches() {
        reading = true;
        try {
          for (;;) {
            const b = await nextBatch();
            if (!b) return;
            yield b;
          }
        } finally {
          giveBack();
          // Stopped early (the rows were complete, an error, an abort): the rest of the body is not read.
          if (!done) {
            done = true;
            pool.drop(conn);
          }
        }
      },
      abort(reason: unknown) {
        if (done) return;
        done = true;
        q.fail(reason);
        pool.drop(conn);
      },
      async discard() {
        if (done && q.finished) return;
        if (reading || length > DRAIN_BYTES) {
          done = true;
          pool.drop(conn);
          return;
        }
        try {
          while (await nextBatch());
        } catch {
          /* a refusal's body that did not arrive: nothing to keep */
        }
      },
    };
  }

  private release(conn: Conn): void {
    if (this.closed || conn.gone) return this.drop(conn);
    conn.socket.unref();
    conn.idleTimer = setTimeout(() => this.drop(conn), IDLE_MS);
    conn.idleTimer.unref();
    this.idle.push(conn);
    this.waiters.shift()?.();
  }

  private drop(conn: Conn): void {
    conn.socket?.destroy();
    this.forget(conn);
  }

  private forget(conn: Conn): void {
    clearTimeout(conn.idleTimer);
    const i = this.idle.indexOf(conn);
    if (i >= 0) this.idle.splice(i, 1);
    if (this.all.delete(conn)) this.waiters.shift()?.();
  }

  close(): void {
    this.closed = true;
    for (const c of [...this.all]) this.drop(c);
    for (const w of this.waiters.splice(0)) w();
  }
}

/** A reused connection failed before any byte of the answer: the server had closed it while idle. */
class StaleConnection extends Error {
  constructor(override readonly cause: unknown) {
    super('stale keep-alive connection');
  }
}

/** Status line and header fields of an HTTP/1.x response head (RFC 7230 §3). */
export function parseHead(text: string): { status: number; headers: Record<string, string>; version: string } {
  const lines = text.split('\r\n');
  const m = /^HTTP\/(1\.[01]) (\d{3})(?: .*)?$/.exec(lines[0] ?? '');
  if (!m) throw Object.assign(new Error(`not an HTTP/1.x response: ${JSON.stringify((lines[0] ?? '').slice(0, 80))}`), { code: 'HPE_INVALID_CONSTANT' });
  const headers: Record<string, string> = {};
  for (let i = 1; i < lines.length; i++) {
    const line = lines[i]!;
    const colon = line.indexOf(':');
    // obs-fold and lines without a name are refused, as undici's llhttp does.
    if (colon <= 0 || line[0] === ' ' || line[0] === '\t') throw Object.assign(new Error(`malformed response header line ${JSON.stringify(line.slice(0, 80))}`), { code: 'HPE_INVALID_HEADER_TOKEN' });
    const name = line.slice(0, colon).toLowerCase();
    if (!/^[!#$%&'*+.^_`|~0-9a-z-]+$/.test(name)) throw Object.assign(new Error(`malformed response header name ${JSON.stringify(name.slice(0, 80))}`), { code: 'HPE_INVALID_HEADER_TOKEN' });
    const value = line.slice(colon + 1).trim();
    if (name === 'content-length' && headers[name] !== undefined && headers[name] !== value) {
      throw Object.assign(new Error('response has conflicting Content-Length headers'), { code: 'HPE_UNEXPECTED_CONTENT_LENGTH' });
    }
    headers[name] = headers[name] !== undefined && name !== 'content-length' ? `${headers[name]}, ${value}` : value;
  }
  return { status: Number(m[2]), headers, version: m[1]! };
}
