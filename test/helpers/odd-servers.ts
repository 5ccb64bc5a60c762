/**
 * Deliberately imperfect HTTP download servers on node:http, for tests: each
 * option reproduces a real-world misbehaviour (no HEAD, no length, Range
 * ignored, multi-range mishandled, connections cut, content replaced mid-way,
 * transient errors). Loopback only. The range parser here is independent of
 * src/protocol so client and test do not share bugs.
 */
import { createReadStream, statSync } from 'node:fs';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';

export type MultiRangeMode =
  /** Correct multipart/byteranges. */
  | 'multipart'
  /** Answers only the first range, as a plain 206. */
  | 'first-only'
  /** Answers 200 with the whole content. */
  | 'full-200'
  /** multipart/byteranges whose second part names the wrong bytes. */
  | 'wrong-part';

export interface OddServerOptions {
  /** File served at every path. */
  file: string;
  /** Send Last-Modified / ETag (default true). */
  lastModified?: boolean;
  etag?: boolean;
  /** HEAD answers 405. */
  noHead?: boolean;
  /** No Content-Length anywhere (chunked bodies). */
  noLength?: boolean;
  /** Range is ignored: always 200 with the whole content. */
  ignoreRange?: boolean;
  multiRange?: MultiRangeMode;
  /** Honour If-Range (default true): a stale validator gets 200 with the whole content. */
  honorIfRange?: boolean;
  /** After this many body bytes (all responses together), cut the connection, `cutTimes` times (default 1). */
  cutAfterBytes?: number;
  cutTimes?: number;
  /** Only cut responses to requests for this path. */
  cutPath?: string;
  /** After this many body bytes, serve `swapTo` instead (new Last-Modified and ETag) and cut the connection. */
  swapAfterBytes?: number;
  swapTo?: string;
  /** The first `count` GETs answer `status`. */
  failFirst?: { count: number; status: number; retryAfter?: string };
  /** Every request after this many body bytes answers 503 (a mirror going down). */
  failAfterBytes?: number;
  contentDisposition?: string;
  /** 206 answers are chunked (no Content-Length) while HEAD and 200 state the length. */
  chunkedRanges?: boolean;
  /** Close the connection after each response (`Connection: close`, like HTTP/1.0 servers). */
  connectionClose?: boolean;
  /** Bytes per write (default 64 KiB); small values make cuts land mid-stream. */
  chunkSize?: number;
}

export interface LoggedRequest {
  method: string;
  path: string;
  range?: string;
  ifRange?: string;
  status?: number;
}

export interface OddServer {
  url: string;
  requests: LoggedRequest[];
  /** Body bytes sent so far. */
  bytesSent(): number;
  /** Serve another file from now on (new Last-Modified and ETag). */
  setContent(file: string): void;
  close(): Promise<void>;
}

interface Slice {
  start: number;
  end: number; // inclusive
}

function parseRanges(h: string | undefined, size: number): Slice[] | undefined {
  if (!h) return undefined;
  const m = /^bytes=(.+)$/.exec(h.trim());
  if (!m) return undefined;
  const out: Slice[] = [];
  for (const part of m[1]!.split(',')) {
    const p = /^\s*(\d*)-(\d*)\s*$/.exec(part);
    if (!p) return undefined;
    if (p[1] === '') {
      const n = Number(p[2]);
      if (n > 0 && size > 0) out.push({ start: Math.max(0, size - n), end: size - 1 });
    } else {
      const a = Number(p[1]);
      const b = p[2] === '' ? size - 1 : Math.min(Number(p[2]), size - 1);
      if (a < size && a <= b) out.push({ start: a, end: b });
    }
  }
  return out;
}

export async function startOddServer(opts: OddServerOptions): Promise<OddServer> {
  let file = opts.file;
  let generation = 1;
  // A fixed date in the past, one second later per generation: deterministic and distinct.
  const lastModifiedOf = (g: number) => new Date(Date.UTC(2024, 0, 1, 0, 0, g)).toUTCString();
  let sent = 0;
  let cuts = 0;
  let swapped = false;
  let failed = 0;
  const requests: LoggedRequest[] = [];
  const chunkSize = opts.chunkSize ?? 64 * 1024;

  const server = http.createServer((req, res) => {
    const log: LoggedRequest = { method: req.method ?? '', path: req.url ?? '' };
    if (req.headers.range) log.range = req.headers.range;
    if (req.headers['if-range']) log.ifRange = String(req.headers['if-range']);
    requests.push(log);
    const finish = (status: number, headers: Record<string, string | number> = {}) => {
      log.status = status;
      res.writeHead(status, headers);
      res.end();
    };
    if (req.method !== 'GET' && req.method !== 'HEAD') return finish(405, { allow: 'GET' });
    if (req.method === 'HEAD' && opts.noHead) return finish(405, { allow: 'GET' });
    if (req.method === 'GET' && opts.failFirst && failed < opts.failFirst.count) {
      failed++;
      return finish(opts.failFirst.status, opts.failFirst.retryAfter ? { 'retry-after': opts.failFirst.retryAfter } : {});
    }
    if (opts.failAfterBytes !== undefined && sent >= opts.failAfterBytes) return finish(503);

    const size = statSync(file).size;
    const etag = `"g${generation}-${size}"`;
    const lm = lastModifiedOf(generation);
    const base: Record<string, string | number> = { 'content-type': 'application/octet-stream' };
    if (opts.lastModified !== false) base['last-modified'] = lm;
    if (opts.etag !== false) base['etag'] = etag;
    if (!opts.ignoreRange) base['accept-ranges'] = 'bytes';
    if (opts.contentDisposition) base['content-disposition'] = opts.contentDisposition;
    if (opts.connectionClose) base['connection'] = 'close';

    let slices = opts.ignoreRange ? undefined : parseRanges(req.headers.range, size);
    const ifRange = req.headers['if-range'];
    if (slices && ifRange && opts.honorIfRange !== false && ifRange !== etag && ifRange !== lm) slices = undefined;
    if (slices && slices.length === 0) {
      return finish(416, { ...base, 'content-range': `bytes */${size}` });
    }

    let status = 200;
    let headers: Record<string, string | number> = { ...base };
    let body: (Buffer | Slice)[] = [{ start: 0, end: size - 1 }];
    if (slices && slices.length > 1 && opts.multiRange !== 'multipart' && opts.multiRange !== 'wrong-part') {
      if (opts.multiRange === 'first-only') slices = [slices[0]!];
      else slices = undefined; // 'full-200' and the default: a server without multi-range support
    }
    if (slices && slices.length === 1) {
      const s = slices[0]!;
      status = 206;
      headers['content-range'] = `bytes ${s.start}-${s.end}/${size}`;
      body = [s];
    } else if (slices && slices.length > 1) {
      status = 206;
      const boundary = 'odd-boundary-3d2a9bef';
      headers['content-type'] = `multipart/byteranges; boundary=${boundary}`;
      body = [];
      slices.forEach((s, i) => {
        const named = opts.multiRange === 'wrong-part' && i === 1 ? { start: s.start + 1, end: s.end } : s;
        body.push(Buffer.from(`\r\n--${boundary}\r\nContent-Type: application/octet-stream\r\nContent-Range: bytes ${named.start}-${named.end}/${size}\r\n\r\n`));
        body.push(s);
      });
      body.push(Buffer.from(`\r\n--${boundary}--\r\n`));
    }
    const length = body.reduce((n, b) => n + (Buffer.isBuffer(b) ? b.length : b.end - b.start + 1), 0);
    if (!opts.noLength && !(opts.chunkedRanges && status === 206)) headers['content-length'] = length;
    log.status = status;
    res.writeHead(status, headers);
    if (req.method === 'HEAD' || size === 0) return res.end();
    void sendBody(req, res, body, file).catch(() => res.destroy());
  });

  async function sendBody(req: http.IncomingMessage, res: http.ServerResponse, body: (Buffer | Slice)[], from: string): Promise<void> {
    for (const b of body) {
      const pieces: AsyncIterable<Buffer> | Buffer[] = Buffer.isBuffer(b)
        ? [b]
        : createReadStream(from, { start: b.start, end: b.end, highWaterMark: chunkSize });
      for await (const piece of pieces) {
        for (let off = 0; off < piece.length; off += chunkSize) {
          let chunk = piece.subarray(off, off + chunkSize);
          let cut = false;
          const cutHere = opts.cutAfterBytes !== undefined && cuts < (opts.cutTimes ?? 1) && (!opts.cutPath || req.url === opts.cutPath);
          if (cutHere && sent + chunk.length > opts.cutAfterBytes! * (cuts + 1)) {
            chunk = chunk.subarray(0, Math.max(0, opts.cutAfterBytes! * (cuts + 1) - sent));
            cuts++;
            cut = true;
          }
          if (opts.swapTo && !swapped && opts.swapAfterBytes !== undefined && sent + chunk.length > opts.swapAfterBytes) {
            chunk = chunk.subarray(0, Math.max(0, opts.swapAfterBytes - sent));
            swapped = true;
            file = opts.swapTo;
            generation++;
            cut = true;
          }
          sent += chunk.length;
          if (chunk.length > 0 && !res.write(chunk)) await new Promise((r) => res.once('drain', r));
          if (cut) {
            // Let the bytes reach the socket, then drop the connection mid-body.
            await new Promise((r) => setTimeout(r, 20));
            res.destroy();
            req.socket.destroy();
            return;
          }
          if (res.destroyed) return;
        }
      }
    }
    res.end();
  }

  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    bytesSent: () => sent,
    setContent(f: string) {
      file = f;
      generation++;
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
