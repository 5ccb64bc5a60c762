/**
 * A server that states no length (no Content-Length, `bytes 0-0/*`): the
 * content is one GET streamed from byte 0, and a failed try starts again from
 * zero, since without a length no range can be asked for. Progress is bytes
 * beyond the most ever received (nothing is durable mid-stream), so a server
 * that keeps failing at the same point cannot keep the retries alive.
 */
import { InterruptedError, ProtocolError, SourceChangedError, toBitsError } from '../../errors.js';
import type { SourceState } from '../../protocol/downloader.js';
import { bodyBatches, type Transport } from '../../transport/http.js';
import type { TransferEvent } from '../events.js';
import type { RetryBudget } from '../retry.js';
import { statusError } from './fetch.js';
import type { Sink } from './sinks.js';

export interface StreamContext {
  transport: Transport;
  sink: Sink;
  source: SourceState;
  /** The current request signal (user, no-progress deadline). */
  signal(): AbortSignal;
  /** Whether the user (not the deadline) stopped the download. */
  interrupted(): boolean;
  budget: RetryBudget;
  emit(e: TransferEvent): void;
}

/** Streams the whole content into the sink; returns its length and the answer's headers. */
export async function streamWhole(ctx: StreamContext): Promise<{ length: number; headers: Record<string, string> }> {
  const url = new URL(ctx.source.url);
  for (;;) {
    let pos = 0;
    try {
      const res = await ctx.transport.request({ method: 'GET', url, signal: ctx.signal(), bulk: true });
      if (res.status !== 200) {
        await res.discard();
        throw res.status === 206 ? new ProtocolError('HTTP 206 to a request without Range', { httpStatus: 206 }) : statusError(res, 'GET', url);
      }
      ctx.emit({ type: 'phase', phase: 'transferring' });
      for await (const batch of bodyBatches(res)) {
        if (!(await ctx.sink.write(batch, pos))) throw new SourceChangedError('cannot restart a stream already written to stdout', 'remote');
        for (const c of batch) pos += c.length;
        ctx.budget.progress(pos);
        ctx.emit({ type: 'progress', bytesDone: pos });
      }
      return { length: pos, headers: res.headers };
    } catch (err) {
      if (ctx.interrupted()) throw new InterruptedError('download interrupted (the server states no length: it will start again from zero)');
      const e = toBitsError(err);
      // Bytes already on stdout cannot be taken back.
      if (ctx.sink.sequential && pos > 0) throw e;
      if (e.disposition === 'retry') ctx.emit({ type: 'info', message: `${e.message} (no length known: the next try starts again from zero)` });
      await ctx.budget.wait(e);
    }
  }
}
