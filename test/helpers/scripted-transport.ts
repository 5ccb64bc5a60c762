/**
 * A scripted HTTP stack for driver tests, as tus-js-client's tests use: the
 * upload and download drivers take a `Transport` (src/transport/http.ts), and
 * this one answers each request from a script instead of a socket, recording
 * what was sent. It complements the real-server tests: an exchange-by-exchange
 * script pins what the driver sends next after each answer (a 416, a lost
 * session, a Retry-After) without depending on a server's timing.
 *
 * Time is real (the drivers sleep with real timers); keep retry policies short
 * in scripts. Every hang and stall ends when the request's signal aborts, so a
 * driver's deadline is what ends it — never the test runner's timeout.
 */
import { Readable } from 'node:stream';
import { InterruptedError, TransportError } from '../../src/errors.js';
import type { HttpRequest, HttpResponse, RequestBody, Transport } from '../../src/transport/http.js';

export interface RecordedRequest {
  method: string;
  url: string;
  /** Lower-cased names. */
  headers: Record<string, string>;
  body: Buffer;
}

export type ScriptedAnswer =
  | {
      status: number;
      headers?: Record<string, string>;
      body?: Buffer | string;
      /** Send this many body bytes, then stall until the request is aborted. */
      stallAfter?: number;
    }
  /** The transport fails with this error (e.g. new TransportError('connection reset')). */
  | { error: Error }
  /** Never answers: waits for the request's signal. */
  | { hang: true };

/** Either a fixed list of answers (one per request, in order) or a function of the request. */
export type Script = ScriptedAnswer[] | ((req: RecordedRequest, index: number) => ScriptedAnswer);

function abortError(signal: AbortSignal | undefined): Error {
  const r = signal?.reason;
  return r instanceof Error ? r : new InterruptedError();
}

async function readBody(body: RequestBody | (() => RequestBody) | undefined): Promise<Buffer> {
  const b = typeof body === 'function' ? body() : body;
  if (b === undefined) return Buffer.alloc(0);
  if (typeof b === 'string') return Buffer.from(b);
  if (b instanceof Uint8Array) return Buffer.from(b);
  const parts: Buffer[] = [];
  for await (const c of b as AsyncIterable<Uint8Array>) parts.push(Buffer.from(c));
  return Buffer.concat(parts);
}

function untilAborted(signal: AbortSignal | undefined): Promise<never> {
  return new Promise((_, reject) => {
    if (!signal) return; // a hang without a signal is a driver bug the test's own timeout reports
    if (signal.aborted) return reject(abortError(signal));
    signal.addEventListener('abort', () => reject(abortError(signal)), { once: true });
  });
}

export class ScriptedTransport implements Transport {
  readonly requests: RecordedRequest[] = [];
  closed = false;
  /** Requests answered after the script ran out (a list script): each is answered 599 and counted here. */
  overruns = 0;

  constructor(
    private readonly script: Script,
    /** Stops a runaway driver: more requests than this fail the transfer loudly. */
    private readonly maxRequests = 10_000,
  ) {}

  async request(req: HttpRequest): Promise<HttpResponse> {
    if (req.signal?.aborted) throw abortError(req.signal);
    const rec: RecordedRequest = {
      method: req.method,
      url: req.url.href,
      headers: Object.fromEntries(Object.entries(req.headers ?? {}).map(([k, v]) => [k.toLowerCase(), v])),
      body: await readBody(req.body),
    };
    const index = this.requests.length;
    this.requests.push(rec);
    if (index >= this.maxRequests) throw new Error(`scripted transport: more than ${this.maxRequests} requests (a loop?)`);
    let answer: ScriptedAnswer;
    if (typeof this.script === 'function') answer = this.script(rec, index);
    else if (index < this.script.length) answer = this.script[index]!;
    else {
      this.overruns++;
      answer = { status: 599, headers: {}, body: 'script exhausted' };
    }
    if ('error' in answer) throw answer.error;
    if ('hang' in answer) return untilAborted(req.signal);
    const data = typeof answer.body === 'string' ? Buffer.from(answer.body) : (answer.body ?? Buffer.alloc(0));
    const headers: Record<string, string> = {};
    for (const [k, v] of Object.entries(answer.headers ?? {})) headers[k.toLowerCase()] = v;
    if (headers['content-length'] === undefined && answer.stallAfter === undefined) headers['content-length'] = String(data.length);
    const stallAfter = answer.stallAfter;
    const signal = req.signal;
    const body =
      stallAfter === undefined
        ? Readable.from(data.length ? [data] : [])
        : Readable.from(
            (async function* () {
              if (stallAfter > 0) yield data.subarray(0, stallAfter);
              await untilAborted(signal);
            })(),
          );
    return {
      status: answer.status,
      headers,
      body,
      async discard() {
        body.destroy();
      },
      async text(maxBytes = 64 * 1024) {
        const parts: Buffer[] = [];
        let n = 0;
        for await (const c of body) {
          parts.push(c as Buffer);
          n += (c as Buffer).length;
          if (n >= maxBytes) break;
        }
        return Buffer.concat(parts).subarray(0, maxBytes).toString('utf8');
      },
    };
  }

  async close(): Promise<void> {
    this.closed = true;
  }
}

/** A transport error as the real transport raises it for a reset connection. */
export function connectionReset(): Error {
  return new TransportError('connection to 127.0.0.1 was reset');
}
