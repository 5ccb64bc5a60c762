/**
 * The one HTTP layer both clients use, over undici. HTTP/1.1 keep-alive with a
 * pool per origin: one connection for an upload (a BITS session may be tied to
 * its TCP connection, and NTLM always is), N for segmented downloads.
 *
 * Timers follow MC-BUP §3.1.2 / §3.6.2: the request timer covers sending the
 * request (headers and body), the response timer covers waiting for the
 * response headers and each gap in the response body. Expiry raises
 * TimeoutError (ERROR_TIMEOUT); connection failures raise TransportError with
 * the WinINet HRESULT Windows would report.
 */
import { Readable } from 'node:stream';
import { Pool, errors as undiciErrors, type Dispatcher } from 'undici';
import { TimeoutError, TlsError, TransportError } from '../errors.js';
import { HRESULT } from '../protocol/hresult.js';
import { VERSION } from '../version.js';

export const USER_AGENT = `bits/${VERSION} (+MC-BUP; Node.js)`;

export interface TransportOptions {
  /** §3.1.2.1 upload request timeout: 2 minutes by default. */
  requestTimeoutMs?: number;
  /** §3.1.2.2 upload response timeout: 5 minutes by default. */
  responseTimeoutMs?: number;
  connectTimeoutMs?: number;
  /** Connections per origin (1 for uploads). */
  connections?: number;
  /** Extra headers sent with every request (`--header`). */
  headers?: Record<string, string>;
  userAgent?: string;
}

export type RequestBody = Buffer | Uint8Array | string | Readable | AsyncIterable<Uint8Array>;

export interface HttpRequest {
  method: string;
  url: URL;
  headers?: Record<string, string>;
  body?: RequestBody;
  signal?: AbortSignal;
}

export interface HttpResponse {
  status: number;
  /** Lower-cased header names; repeated headers joined with ", ". */
  headers: Record<string, string>;
  /** Must be consumed or discarded (`discard()`), or the connection is not reused. */
  body: Readable;
  discard(): Promise<void>;
  text(maxBytes?: number): Promise<string>;
}

export class HttpTransport {
  readonly options: Required<Omit<TransportOptions, 'headers'>> & { headers: Record<string, string> };
  private readonly pools = new Map<string, Pool>();
  private closed = false;

  constructor(options: TransportOptions = {}) {
    this.options = {
      requestTimeoutMs: options.requestTimeoutMs ?? 2 * 60_000,
      responseTimeoutMs: options.responseTimeoutMs ?? 5 * 60_000,
      connectTimeoutMs: options.connectTimeoutMs ?? 30_000,
      connections: options.connections ?? 1,
      headers: options.headers ?? {},
      userAgent: options.userAgent ?? USER_AGENT,
    };
  }

  /** The dispatcher for an origin; exposed so callers can reuse it (e.g. fetch). */
  dispatcherFor(url: URL): Dispatcher {
    const origin = url.origin;
    let pool = this.pools.get(origin);
    if (!pool) {
      pool = new Pool(origin, {
        connections: this.options.connections,
        pipelining: 1,
        connect: { timeout: this.options.connectTimeoutMs },
        headersTimeout: this.options.responseTimeoutMs,
        bodyTimeout: this.options.responseTimeoutMs,
        keepAliveTimeout: 60_000,
      });
      this.pools.set(origin, pool);
    }
    return pool;
  }

  async request(req: HttpRequest): Promise<HttpResponse> {
    if (this.closed) throw new TransportError('transport is closed');
    const headers: Record<string, string> = {
      'user-agent': this.options.userAgent,
      ...lowerKeys(this.options.headers),
      ...lowerKeys(req.headers ?? {}),
    };
    const dispatcher = this.dispatcherFor(req.url);
    // §3.1.2.1: the request timer runs until the request is sent; we approximate
    // "sent" by "response headers received minus the response timer", i.e. the
    // abort fires if sending plus waiting exceeds both timers together.
    const ac = new AbortController();
    const onAbort = () => ac.abort(req.signal?.reason);
    req.signal?.addEventListener('abort', onAbort, { once: true });
    const timer = setTimeout(
      () => ac.abort(new TimeoutError(`no response within ${Math.round((this.options.requestTimeoutMs + this.options.responseTimeoutMs) / 1000)} s`, 'request')),
      this.options.requestTimeoutMs + this.options.responseTimeoutMs,
    );
    try {
      const res = await dispatcher.request({
        origin: req.url.origin,
        path: req.url.pathname + req.url.search,
        method: req.method as Dispatcher.HttpMethod,
        headers,
        body: req.body as Dispatcher.DispatchOptions['body'],
        signal: ac.signal,
      });
      const h: Record<string, string> = {};
      for (const [k, v] of Object.entries(res.headers)) {
        if (v === undefined) continue;
        h[k.toLowerCase()] = Array.isArray(v) ? v.join(', ') : String(v);
      }
      const body = res.body as unknown as Readable;
      return {
        status: res.statusCode,
        headers: h,
        body,
        discard: async () => {
          try {
            await res.body.dump({ limit: 64 * 1024 });
          } catch {
            /* the connection is dropped instead of reused: harmless */
          }
        },
        text: async (maxBytes = 1024 * 1024) => {
          const chunks: Buffer[] = [];
          let n = 0;
          for await (const c of body) {
            n += (c as Buffer).length;
            if (n > maxBytes) {
              body.destroy();
              break;
            }
            chunks.push(c as Buffer);
          }
          return Buffer.concat(chunks).toString('utf8');
        },
      };
    } catch (err) {
      throw mapTransportError(err, req.url, ac.signal.reason);
    } finally {
      clearTimeout(timer);
      req.signal?.removeEventListener('abort', onAbort);
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    await Promise.all([...this.pools.values()].map((p) => p.close().catch(() => p.destroy())));
    this.pools.clear();
  }

  async destroy(): Promise<void> {
    this.closed = true;
    await Promise.all([...this.pools.values()].map((p) => p.destroy()));
    this.pools.clear();
  }
}

function lowerKeys(h: Record<string, string>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(h)) out[k.toLowerCase()] = v;
  return out;
}

/** Maps undici/Node errors to typed errors carrying the HRESULT Windows would show. */
export function mapTransportError(err: unknown, url: URL, abortReason?: unknown): Error {
  if (abortReason instanceof TimeoutError) return abortReason;
  if (err instanceof TimeoutError || err instanceof TransportError || err instanceof TlsError) return err;
  const e = err as { code?: string; message?: string; name?: string; cause?: { code?: string; message?: string } };
  const code = e?.code ?? e?.cause?.code;
  const where = url.host;
  if (err instanceof undiciErrors.HeadersTimeoutError) return new TimeoutError(`no response headers from ${where} within the response timeout`, 'response', { cause: err });
  if (err instanceof undiciErrors.BodyTimeoutError) return new TimeoutError(`response body from ${where} stalled past the response timeout`, 'response', { cause: err });
  if (err instanceof undiciErrors.ConnectTimeoutError) return new TimeoutError(`could not connect to ${where}: connect timeout`, 'connect', { cause: err });
  if (e?.name === 'AbortError' && abortReason !== undefined) return abortReason instanceof Error ? abortReason : new TransportError(String(abortReason));
  switch (code) {
    case 'ECONNREFUSED':
      return new TransportError(`could not connect to ${where}: connection refused`, { cause: err, hresult: HRESULT.ERROR_INTERNET_CANNOT_CONNECT });
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
      return new TransportError(`could not resolve host ${url.hostname}`, { cause: err, hresult: HRESULT.ERROR_INTERNET_NAME_NOT_RESOLVED });
    case 'ECONNRESET':
    case 'EPIPE':
    case 'UND_ERR_SOCKET':
    case 'UND_ERR_CLOSED':
      return new TransportError(`connection to ${where} was reset`, { cause: err, hresult: HRESULT.ERROR_INTERNET_CONNECTION_RESET });
    case 'ETIMEDOUT':
      return new TimeoutError(`connection to ${where} timed out`, 'connect', { cause: err });
    case 'EHOSTUNREACH':
    case 'ENETUNREACH':
      return new TransportError(`host ${where} is unreachable`, { cause: err, hresult: HRESULT.ERROR_INTERNET_CANNOT_CONNECT });
  }
  if (typeof code === 'string' && /CERT|SSL|TLS|SELF_SIGNED|UNABLE_TO_VERIFY|ERR_TLS/.test(code)) {
    return new TlsError(`TLS error talking to ${where}: ${e.message ?? code}`, { cause: err });
  }
  return new TransportError(`transfer to ${where} failed: ${e?.message ?? String(err)}`, { cause: err });
}
