/**
 * The range download server of MC-BUP §3.5: GET and HEAD of files under the
 * served root, with RFC 7233 byte ranges (single range → 206, several →
 * 206 multipart/byteranges in request order, §3.5.5.1), If-Range, and
 * conditional GET (304). BITS download clients (§3.6) rely on Content-Length
 * and Last-Modified being stable across requests, so both come from one fstat
 * of the descriptor the body is read from.
 *
 * Policy choices (RFC 7233 leaves them to the server):
 * - A syntactically invalid Range, or one with more than MAX_RANGES ranges, is
 *   ignored: 200 with the whole file.
 * - Overlapping and adjacent ranges that follow each other in the request are
 *   coalesced into one (RFC 7233 §4.1 allows it; the order §3.5.5.1 requires is
 *   kept, since only neighbours merge). When what is left still adds up to more
 *   than the file (or its multipart answer would), the Range is ignored and the
 *   whole file is sent with 200, as nginx does: 100 × `0-` must never declare 100
 *   copies (RFC 7233 §6.1).
 * - Range on a 0-byte file is ignored (200, empty): no byte range can describe
 *   an empty representation, and a 416 would make resuming clients fail.
 * - HEAD honours Range like GET: §3.5.5.2 requires HEAD to be identical to the
 *   matching GET minus the body (IIS, Apache and nginx behave the same).
 * - A request for several ranges of which only one is satisfiable still gets a
 *   multipart body (allowed by RFC 7233 §4.1): a §3.6.5.2.4.2 client that asked
 *   for several ranges validates the answer as multipart.
 */
import { constants as fsConstants } from 'node:fs';
import { open, realpath, stat, type FileHandle } from 'node:fs/promises';
import type { BigIntStats } from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import type { Http1Request, Http1Response } from './http1.js';
import { PathRejected, resolveUnderRoot, safeSegments } from './paths.js';
import {
  formatResponseContentRange,
  parseRangeHeader,
  rangeLength,
  resolveRanges,
  type ByteRange,
} from '../protocol/content-range.js';

export interface DownloadServerOptions {
  root: string;
  log: (line: string) => void;
}

/** Most ranges honoured in one request; beyond it the Range header is ignored (200). */
export const MAX_RANGES = 100;

const CONTENT_TYPE = 'application/octet-stream';

/** What one fstat says about the file being served; every validator derives from it. */
interface FileInfo {
  size: number;
  mtimeMs: number;
  etag: string;
  lastModified: string;
}

/**
 * Session state and in-progress fragments live under `BITS-Sessions/Requests`;
 * only the upload-reply replies under `BITS-Sessions/Replies` are meant for
 * clients (§3.2.5.1.3, the reply URL of §4.2). Compared case-insensitively
 * because the upload URLs come from Windows clients, whose paths are.
 */
export function isPrivatePath(segments: readonly string[]): boolean {
  for (let i = 0; i < segments.length; i++) {
    if (segments[i]!.toLowerCase() === 'bits-sessions') {
      const next = segments[i + 1];
      if (next === undefined || next.toLowerCase() !== 'replies') return true;
    }
  }
  return false;
}

/** A strong validator: changes whenever size, mtime (ns) or the inode do. */
export function makeEtag(size: bigint, mtimeNs: bigint, ino: bigint): string {
  return `"${size.toString(16)}-${mtimeNs.toString(16)}-${ino.toString(16)}"`;
}

/** Entity tags of an If-None-Match / If-Match list (`*` kept as is). */
function parseEtagList(value: string): string[] {
  return value.match(/\*|(?:W\/)?"[^"]*"/g) ?? [];
}

function parseHttpDate(value: string): number | undefined {
  const t = Date.parse(value);
  return Number.isNaN(t) ? undefined : t;
}

/** HTTP dates have whole seconds: compare at that resolution. */
function seconds(ms: number): number {
  return Math.floor(ms / 1000);
}

/**
 * RFC 7233 §3.2: Range applies only when If-Range matches the current
 * representation, by strong entity-tag comparison or exact Last-Modified date.
 */
export function ifRangeMatches(value: string, info: Pick<FileInfo, 'etag' | 'mtimeMs'>): boolean {
  const v = value.trim();
  if (v.startsWith('W/')) return false; // weak tags never match strongly
  if (v.startsWith('"')) return v === info.etag;
  const t = parseHttpDate(v);
  return t !== undefined && seconds(t) === seconds(info.mtimeMs);
}

/** RFC 7232 §6 evaluation for GET/HEAD: true when the answer is 304 Not Modified. */
export function notModified(headers: Record<string, string>, info: Pick<FileInfo, 'etag' | 'mtimeMs'>): boolean {
  const inm = headers['if-none-match'];
  if (inm !== undefined) {
    // Weak comparison (§2.3.2): the opaque parts must be equal.
    const opaque = (t: string) => (t.startsWith('W/') ? t.slice(2) : t);
    return parseEtagList(inm).some((t) => t === '*' || opaque(t) === info.etag);
  }
  const ims = headers['if-modified-since'];
  if (ims !== undefined) {
    const t = parseHttpDate(ims);
    return t !== undefined && seconds(info.mtimeMs) <= seconds(t);
  }
  return false;
}

/** RFC 7232 §3.1/§3.4 If-Match / If-Unmodified-Since: true when the answer is 412. */
export function preconditionFailed(headers: Record<string, string>, info: Pick<FileInfo, 'etag' | 'mtimeMs'>): boolean {
  const im = headers['if-match'];
  if (im !== undefined) {
    return !parseEtagList(im).some((t) => t === '*' || t === info.etag);
  }
  const ius = headers['if-unmodified-since'];
  if (ius !== undefined) {
    const t = parseHttpDate(ius);
    return t !== undefined && seconds(info.mtimeMs) > seconds(t);
  }
  return false;
}

/** The precomputed layout of a multipart/byteranges body (RFC 7233 Appendix A). */
export interface MultipartPlan {
  boundary: string;
  /** Delimiter + part headers before each range's bytes. */
  heads: Buffer[];
  /** Close-delimiter after the last part. */
  tail: Buffer;
  /** Exact body length: heads + ranges + tail. */
  length: number;
}

export function planMultipart(ranges: readonly ByteRange[], total: number, boundary: string, contentType = CONTENT_TYPE): MultipartPlan {
  const heads = ranges.map((r, i) =>
    Buffer.from(
      `${i === 0 ? '' : '\r\n'}--${boundary}\r\nContent-Type: ${contentType}\r\nContent-Range: ${formatResponseContentRange(r, total)}\r\n\r\n`,
      'latin1',
    ),
  );
  const tail = Buffer.from(`\r\n--${boundary}--\r\n`, 'latin1');
  let length = tail.length;
  for (let i = 0; i < ranges.length; i++) length += heads[i]!.length + rangeLength(ranges[i]!);
  return { boundary, heads, tail, length };
}

/** Bytes read per file read: large enough for few syscalls, small enough to stream. */
const CHUNK = 64 * 1024;

/**
 * Streams the given pieces (buffers and file ranges) from one descriptor and
 * closes it at the end, on error, or when the consumer stops early. A file that
 * shrank while being served makes the stream fail rather than end short, so the
 * HTTP layer drops the connection instead of sending fewer bytes than
 * Content-Length promised (a client would hang or, worse, accept it).
 *
 * Positional reads on the FileHandle instead of fs.createReadStream: a
 * ReadStream closes its descriptor whenever it is destroyed (autoClose only
 * governs the end), so several ranges cannot share one, and FileHandle.close()
 * waits for a read in flight where a raw fd could be closed and reused under it.
 */
function bodyFrom(fh: FileHandle, pieces: Array<Buffer | ByteRange>, socket: Http1Request['socket']): Readable {
  async function* generate(): AsyncGenerator<Buffer> {
    for (const p of pieces) {
      if (Buffer.isBuffer(p)) {
        yield p;
        continue;
      }
      for (let pos = p.first; pos <= p.last; ) {
        // A fresh buffer per read: the HTTP layer may still hold the previous one.
        const want = Math.min(CHUNK, p.last - pos + 1);
        const { bytesRead, buffer } = await fh.read(Buffer.allocUnsafe(want), 0, want, pos);
        if (bytesRead === 0) {
          throw new Error(`file shrank while being served: bytes ${p.first}-${p.last} ended at ${pos}`);
        }
        pos += bytesRead;
        yield bytesRead === want ? buffer : buffer.subarray(0, bytesRead);
      }
    }
  }
  const body = Readable.from(generate(), { objectMode: false });
  // 'close' follows end, error and destroy alike (even before the first read),
  // where a generator's finally would not run if it never started.
  // FileHandle.close() waits for a read still in flight.
  // A client gone before the response is written leaves the body unconsumed:
  // release the descriptor with the connection rather than at garbage collection.
  const onSocketClose = (): void => {
    body.destroy();
  };
  socket.once('close', onSocketClose);
  body.once('close', () => {
    socket.off('close', onSocketClose);
    fh.close().catch(() => {});
  });
  if (socket.destroyed) body.destroy();
  return body;
}

interface Refusal {
  status: number;
  reason: string;
}

export class DownloadServer {
  constructor(readonly options: DownloadServerOptions) {}

  async handle(req: Http1Request): Promise<Http1Response> {
    await req.discardBody();
    const { res, reason } = await this.respond(req);
    const bytes = req.method === 'HEAD' ? 0 : Number(res.headers?.['Content-Length'] ?? 0);
    // Refusals say why in the log only: a 403/404 body must not help a prober.
    this.options.log(`${req.method} ${req.rawPath} ${res.status} ${bytes}${reason ? ` (${reason})` : ''}`);
    return res;
  }

  private async respond(req: Http1Request): Promise<{ res: Http1Response; reason?: string }> {
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      return { res: { status: 405, headers: { Allow: 'GET, HEAD' }, body: '' } };
    }
    const opened = await this.openFile(req.rawPath);
    if ('status' in opened) return { res: { status: opened.status, body: '' }, reason: opened.reason };
    const { fh, info } = opened;
    let handedOff = false;
    try {
      const res = this.build(req, fh, info);
      handedOff = res.body instanceof Readable;
      return { res };
    } finally {
      if (!handedOff) await fh.close().catch(() => {});
    }
  }

  /**
   * Resolves the URL path and opens the file once; size and validators come
   * from fstat of that descriptor, so a concurrent rename or rewrite cannot make
   * the headers describe one file and the body another.
   */
  private async openFile(rawPath: string): Promise<{ fh: FileHandle; info: FileInfo } | Refusal> {
    let file: string;
    try {
      if (isPrivatePath(safeSegments(rawPath))) return { status: 403, reason: 'private BITS session state' };
      file = await resolveUnderRoot(this.options.root, rawPath);
    } catch (err) {
      if (err instanceof PathRejected) return { status: 403, reason: err.message };
      return errnoRefusal(err);
    }
    try {
      // stat before open: opening a FIFO or device could block a libuv thread.
      const st = await stat(file);
      if (!st.isFile()) return { status: 404, reason: 'not a regular file' };
    } catch (err) {
      return errnoRefusal(err);
    }
    let fh: FileHandle;
    try {
      fh = await open(file, fsConstants.O_RDONLY | (fsConstants.O_NONBLOCK ?? 0));
    } catch (err) {
      return errnoRefusal(err);
    }
    try {
      const st = await fh.stat({ bigint: true });
      if (!st.isFile()) {
        await fh.close();
        return { status: 404, reason: 'not a regular file' };
      }
      const refusal = await this.confirmOpened(file, st);
      if (refusal) {
        await fh.close();
        return refusal;
      }
      const mtimeMs = Number(st.mtimeNs / 1_000_000n);
      const info: FileInfo = {
        size: Number(st.size),
        mtimeMs,
        etag: makeEtag(st.size, st.mtimeNs, st.ino),
        lastModified: new Date(mtimeMs).toUTCString(),
      };
      return { fh, info };
    } catch (err) {
      await fh.close().catch(() => {});
      return errnoRefusal(err);
    }
  }

  /**
   * Checks, after opening, that the descriptor is the file the confined path
   * names now: closes the window in which a path component could be swapped for
   * a symlink between resolveUnderRoot and open. The real path is checked for
   * session privacy too, so a symlink inside the root to BITS-Sessions/Requests
   * (or a Windows short name for it) is refused like the direct path.
   */
  private async confirmOpened(file: string, opened: BigIntStats): Promise<Refusal | undefined> {
    const [real, realRoot] = await Promise.all([realpath(file), realpath(this.options.root)]);
    const rel = path.relative(realRoot, real);
    if (rel === '' || rel === '..' || rel.startsWith('..' + path.sep) || path.isAbsolute(rel)) return { status: 403, reason: 'path escapes the root' };
    if (isPrivatePath(rel.split(path.sep))) return { status: 403, reason: 'private BITS session state' };
    const now = await stat(real, { bigint: true });
    if (now.ino !== opened.ino || now.dev !== opened.dev) return { status: 404, reason: 'file replaced while opening' };
    return undefined;
  }

  private build(req: Http1Request, fh: FileHandle, info: FileInfo): Http1Response {
    const validators = { ETag: info.etag, 'Last-Modified': info.lastModified };
    const head = req.method === 'HEAD';

    if (preconditionFailed(req.headers, info)) return { status: 412, headers: { ...validators }, body: '' };
    if (notModified(req.headers, info)) return { status: 304, headers: { ...validators, 'Accept-Ranges': 'bytes' } };

    const base = { ...validators, 'Accept-Ranges': 'bytes' };
    let ranges: ByteRange[] | undefined;
    let multipart = false;
    const rangeHeader = req.headers['range'];
    const ifRange = req.headers['if-range'];
    if (rangeHeader !== undefined && info.size > 0 && (ifRange === undefined || ifRangeMatches(ifRange, info))) {
      const specs = parseRangeHeader(rangeHeader, MAX_RANGES);
      if (specs) {
        ranges = coalesceNeighbours(resolveRanges(specs, info.size));
        if (ranges.length === 0) {
          return {
            status: 416,
            headers: { ...base, 'Content-Range': `bytes */${info.size}`, 'Content-Type': CONTENT_TYPE },
            body: '',
          };
        }
        if (ranges.reduce((sum, r) => sum + rangeLength(r), 0) > info.size) ranges = undefined;
        // Asked for several: multipart even when one part is left (see the policy above).
        multipart = specs.length > 1;
      }
    }

    const whole = (): Http1Response => {
      const headers = { ...base, 'Content-Type': CONTENT_TYPE, 'Content-Length': info.size };
      if (head || info.size === 0) return head ? { status: 200, headers } : { status: 200, headers, body: Buffer.alloc(0) };
      return { status: 200, headers, body: bodyFrom(fh, [{ first: 0, last: info.size - 1 }], req.socket) };
    };
    if (ranges === undefined) return whole();

    if (!multipart) {
      const r = ranges[0]!;
      const headers = {
        ...base,
        'Content-Type': CONTENT_TYPE,
        'Content-Range': formatResponseContentRange(r, info.size),
        'Content-Length': rangeLength(r),
      };
      return head ? { status: 206, headers } : { status: 206, headers, body: bodyFrom(fh, [r], req.socket) };
    }

    const plan = planMultipart(ranges, info.size, randomBytes(16).toString('hex'));
    // Parts that with their headers weigh more than the file itself: the file is the cheaper answer.
    if (plan.length > info.size) return whole();
    const headers = {
      ...base,
      'Content-Type': `multipart/byteranges; boundary=${plan.boundary}`,
      'Content-Length': plan.length,
    };
    if (head) return { status: 206, headers };
    const pieces: Array<Buffer | ByteRange> = [];
    ranges.forEach((r, i) => pieces.push(plan.heads[i]!, r));
    pieces.push(plan.tail);
    return { status: 206, headers, body: bodyFrom(fh, pieces, req.socket) };
  }
}

/** Merges each range into the one before it when they overlap or touch; the order is kept. */
export function coalesceNeighbours(ranges: readonly ByteRange[]): ByteRange[] {
  const out: ByteRange[] = [];
  for (const r of ranges) {
    const prev = out[out.length - 1];
    if (prev && r.first <= prev.last + 1 && r.last >= prev.first - 1) {
      out[out.length - 1] = { first: Math.min(prev.first, r.first), last: Math.max(prev.last, r.last) };
    } else out.push({ ...r });
  }
  return out;
}

function errnoRefusal(err: unknown): Refusal {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  switch (code) {
    case 'ENOENT':
    case 'ENOTDIR':
    case 'ENAMETOOLONG':
    case 'ELOOP':
      return { status: 404, reason: code };
    case 'EACCES':
    case 'EPERM':
      return { status: 403, reason: code };
    default:
      throw err;
  }
}
