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
}

export interface Http1Server {
  readonly host: string;
  readonly port: number;
  close(): Promise<void>;
}

export declare function startHttp1Server(options: Http1ServerOptions, handler: Http1Handler): Promise<Http1Server>;
