/**
 * §3.1.5.1.8 STATE_GET_REPLY: the higher layer downloads the reply. One GET
 * per try; whether a failure is worth another try is the one failure table's
 * call (src/protocol/failure.ts), the wait is the driver's RetryBudget.
 */
import { createWriteStream } from 'node:fs';
import { pipeline } from 'node:stream/promises';
import { Transform, type Writable } from 'node:stream';
import { AuthError, BitsError, LocalFileError, ProtocolError } from '../../errors.js';
import { classifyHttpFailure, parseRetryAfter } from '../../protocol/failure.js';
import type { UploaderOutcome } from '../../protocol/uploader.js';
import type { Transport } from '../../transport/http.js';
import type { TransferEvent } from '../events.js';

export interface ReplyOptions {
  /** Where the reply goes; `-` = stdout; undefined = not saved (a warning says where it is). */
  replyFile?: string;
  /** The no-progress deadline's signal (it includes the user's). */
  signal: AbortSignal;
  now: () => number;
  /** The upload's URL: an https upload's reply is never fetched over http. */
  destination?: string;
}

export async function getReply(
  transport: Transport,
  url: string,
  opts: ReplyOptions,
  emit: (e: TransferEvent) => void,
  setBytes: (n: number) => void,
): Promise<UploaderOutcome> {
  if (opts.replyFile === undefined) {
    emit({ type: 'warning', message: `the server sent a reply (${url}); pass --reply-file PATH to save it` });
    return { type: 'reply-downloaded' };
  }
  if (opts.destination !== undefined && new URL(opts.destination).protocol === 'https:' && new URL(url).protocol === 'http:') {
    // The reply is the server application's answer to what was uploaded over TLS.
    throw new ProtocolError(`the server's BITS-Reply-URL ${url} is http for an https upload: refusing to fetch the reply without TLS`);
  }
  try {
    const res = await transport.request({ method: 'GET', url: new URL(url), headers: { Accept: '*/*', 'Accept-Encoding': 'identity' }, signal: opts.signal });
    if (res.status !== 200) {
      await res.discard();
      return {
        type: 'reply-failed',
        message: `GET ${url}: HTTP ${res.status}`,
        retryable: classifyHttpFailure(res.status) === 'retry',
        httpStatus: res.status,
        retryAfterMs: parseRetryAfter(res.headers['retry-after'], opts.now()),
      };
    }
    let n = 0;
    const count = new Transform({
      transform(chunk: Buffer, _e, cb) {
        n += chunk.length;
        cb(null, chunk);
      },
    });
    if (opts.replyFile === '-') {
      await pipeline(res.body, count, process.stdout as unknown as Writable, { end: false });
    } else {
      await pipeline(res.body, count, createWriteStream(opts.replyFile));
    }
    setBytes(n);
    return { type: 'reply-downloaded' };
  } catch (e) {
    if (opts.signal.aborted) throw e;
    // The transport's own account of a 401 (e.g. credentials not sent to the reply's other origin) is the one to show.
    if (e instanceof AuthError) throw e;
    // The status goes along: without it a refusal would read as a network fault and be retried.
    if (e instanceof BitsError) return { type: 'reply-failed', message: e.message, retryable: e.disposition === 'retry', ...(e.httpStatus !== undefined ? { httpStatus: e.httpStatus } : {}) };
    const code = (e as NodeJS.ErrnoException).code;
    if (code && /^E[A-Z]+$/.test(code) && (e as NodeJS.ErrnoException).path) {
      throw new LocalFileError(`${opts.replyFile}: cannot write the reply: ${(e as Error).message}`, opts.replyFile, { cause: e });
    }
    return { type: 'reply-failed', message: (e as Error).message, retryable: true };
  }
}
