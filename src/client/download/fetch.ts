/**
 * The range requests of STATE_DOWNLOAD: one GET per FragmentRequest the core
 * (src/protocol/downloader.ts) chose, its answer judged there, its body
 * streamed into the rows it fills. Every request and body read carries the
 * attempt's signal, which the no-progress deadline aborts.
 */
import { bodyBatches, type HttpResponse, type Transport } from '../../transport/http.js';
import { AuthError, ProtocolError, ServerError, TransportError } from '../../errors.js';
import { parseRetryAfter } from '../../protocol/failure.js';
import type { DownloadTable, FragmentRequest, SourceState } from '../../protocol/downloader.js';
import { ByterangesParser, MultipartError } from '../../protocol/multipart.js';
import { readAhead, sliceBatch, type Sink } from './sinks.js';

/** The content changed (§3.6.5.2.4.2: back to STATE_INIT), as one source says. */
export class ContentChanged extends Error {
  constructor(
    readonly reason: string,
    readonly source: SourceState,
  ) {
    super(reason);
  }
}

/** The ServerError (or AuthError) of an answer; failure.ts decides whether it is retried. */
export function statusError(res: HttpResponse, request: string, url: URL): ServerError {
  const info = {
    httpStatus: res.status,
    request,
    url: url.href,
    ...(res.headers['retry-after'] !== undefined ? { retryAfterMs: parseRetryAfter(res.headers['retry-after'], Date.now()) } : {}),
  };
  // The transport's reading of a refusal (a server that wants a client certificate answers a bare 400).
  const message = res.hint ? `${ServerError.describe(info)}; ${res.hint}` : undefined;
  // 401/407 reaching the driver are credentials the transport could not make work.
  return res.status === 401 || res.status === 407 ? new AuthError(info, message) : new ServerError(info, message);
}

export interface FetchContext {
  readonly transport: Transport;
  readonly table: DownloadTable;
  readonly sink: Sink;
  /** The current attempt's request signal (user, other workers, the no-progress deadline). */
  readonly signal: AbortSignal;
  readonly dataLength: number | undefined;
  /** Called with the bytes each write added (checkpoints, progress); throws a failed checkpoint's error. */
  wrote(bytes: number): void;
  /** Passes on the core's warnings. */
  flushWarnings(): void;
}

/** One GET for FRAGMENT_RANGES; returns the bytes it added to DATA_BUFFER. */
export async function fetchFragment(ctx: FetchContext, req: FragmentRequest): Promise<number> {
  const url = new URL(req.source.url);
  const res = await ctx.transport.request({ method: 'GET', url, headers: req.headers, signal: ctx.signal, bulk: true });
  const answer = ctx.table.judge(req, res.status, res.headers, ctx.dataLength);
  ctx.flushWarnings();
  switch (answer.kind) {
    case 'failure':
      await res.discard();
      throw statusError(res, 'GET', url);
    case 'changed':
      await res.discard();
      throw new ContentChanged(answer.reason, req.source);
    case 'error':
      await res.discard();
      throw new ProtocolError(`${url.host}: ${answer.message}`, { httpStatus: res.status });
    case 'none':
      await res.discard();
      return 0;
    case 'body':
      try {
        return await consume(ctx, res, answer.rows, answer.offset, answer.length);
      } finally {
        ctx.table.releaseAdopted(answer.adopted);
      }
    case 'multipart':
      return consumeMultipart(ctx, res, answer.rows, new ByterangesParser({ boundary: answer.boundary, expected: answer.expected, ...(answer.total !== undefined ? { total: answer.total } : {}) }), req.source);
  }
}

/** Writes URL bytes [offset, offset+length) — the chunks of `batch` — into every row they extend; returns the bytes added. */
async function place(ctx: FetchContext, rows: readonly number[], offset: number, batch: readonly Buffer[], length: number): Promise<number> {
  let added = 0;
  for (const p of ctx.table.placements(rows, offset, length)) {
    if (!(await ctx.sink.write(sliceBatch(batch, p.from, p.length), p.at))) continue;
    ctx.table.advance(p);
    added += p.length;
  }
  if (added > 0) ctx.wrote(added);
  return added;
}

/** Streams a body holding URL bytes from `offset` into the rows. */
async function consume(ctx: FetchContext, res: HttpResponse, rows: number[], offset: number, expected: number | undefined): Promise<number> {
  let pos = offset;
  let added = 0;
  let received = 0;
  try {
    for await (const batch of bodyBatches(res)) {
      let n = 0;
      for (const c of batch) n += c.length;
      received += n;
      added += await place(ctx, rows, pos, batch, n);
      pos += n;
      if (ctx.table.rowsComplete(rows)) break;
    }
  } finally {
    res.body.destroy();
  }
  if (!ctx.table.rowsComplete(rows) && expected !== undefined && received < expected) {
    throw new TransportError(`response ended after ${received} of ${expected} bytes`);
  }
  return added;
}

async function consumeMultipart(ctx: FetchContext, res: HttpResponse, rows: number[], parser: ByterangesParser, src: SourceState): Promise<number> {
  let added = 0;
  try {
    for await (const chunk of readAhead(res.body)) {
      for (const ev of parser.feed(chunk)) {
        if (ev.type === 'data') added += await place(ctx, rows, ev.offset, [ev.data], ev.data.length);
      }
      if (parser.done) break;
    }
    parser.finish();
  } catch (err) {
    if (!(err instanceof MultipartError)) throw err;
    // §3.6.5.2.4.2: a multi-range answer failing validation -> SINGLE_RANGE_ONLY.
    // Bytes of parts that passed validation were correct and are kept.
    ctx.table.setSingleRangeOnly(src, err.message);
    ctx.flushWarnings();
  } finally {
    res.body.destroy();
  }
  return added;
}

/**
 * URL bytes [offset, offset+length) as the source sends them now (issue
 * 12.7's overlap check): a 206 for the range, or the range cut from a 200.
 */
export async function readRange(transport: Transport, src: SourceState, offset: number, length: number, signal: AbortSignal): Promise<Buffer> {
  const url = new URL(src.url);
  const res = await transport.request({ method: 'GET', url, headers: { range: `bytes=${offset}-${offset + length - 1}` }, signal });
  if (res.status !== 200 && res.status !== 206) {
    await res.discard();
    throw statusError(res, 'GET', url);
  }
  let start = 0;
  if (res.status === 206) {
    const m = /^\s*bytes\s+(\d+)-/i.exec(res.headers['content-range'] ?? '');
    if (!m || Number(m[1]) !== offset) {
      await res.discard();
      throw new ProtocolError(`${url.host}: Content-Range ${JSON.stringify(res.headers['content-range'] ?? null)} does not start at ${offset}`, { httpStatus: 206 });
    }
  } else start = offset;
  const parts: Buffer[] = [];
  let skipped = 0;
  let got = 0;
  try {
    for await (const chunk of readAhead(res.body)) {
      let c = chunk;
      if (skipped < start) {
        const skip = Math.min(start - skipped, c.length);
        skipped += skip;
        c = c.subarray(skip);
      }
      if (c.length === 0) continue;
      const take = c.subarray(0, length - got);
      parts.push(take);
      got += take.length;
      if (got >= length) break;
    }
  } finally {
    res.body.destroy();
  }
  return Buffer.concat(parts);
}
