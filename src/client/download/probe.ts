/**
 * STATE_SIZE (§3.6.4.1): learn DATA_LENGTH, DATA_TIMESTAMP and the ETag of
 * each source with HEAD, or with `GET Range: bytes=0-0` from a server that
 * refuses HEAD or states no length there; mirrors not serving the same
 * content are dropped.
 */
import { toBitsError } from '../../errors.js';
import type { Transport } from '../../transport/http.js';
import { classifyHttpFailure } from '../../protocol/failure.js';
import { answerKind, sameContent, validatorsFrom, type Validators } from '../../protocol/download-validate.js';
import type { SourceState } from '../../protocol/downloader.js';
import { ProtocolError } from '../../errors.js';
import { statusError } from './fetch.js';

export interface Probed {
  validators: Validators;
  headers: Record<string, string>;
}

export interface ProbeContext {
  readonly transport: Transport;
  readonly signal: AbortSignal;
  /** Runs `fn` under the one retry policy (RetryBudget.wait between tries). */
  retrying<T>(fn: () => Promise<T>): Promise<T>;
  drop(src: SourceState, why: string): void;
}

/** HEAD, else GET 0-0 (206 names the length; 200 gives Content-Length). */
export async function probe(ctx: ProbeContext, src: SourceState): Promise<Probed> {
  const url = new URL(src.url);
  // bulk: over a direct connection the bulk reader answers it, and the download never loads undici.
  const head = await ctx.transport.request({ method: 'HEAD', url, signal: ctx.signal, bulk: true });
  await head.discard();
  const headOk = answerKind(head.status) === 'bytes';
  if (headOk) {
    const v = validatorsFrom(200, head.headers);
    if (v.length !== undefined) return { validators: v, headers: head.headers };
  } else if (head.status === 401 || head.status === 407 || classifyHttpFailure(head.status) === 'retry') {
    throw statusError(head, 'HEAD', url);
  }
  const get = await ctx.transport.request({ method: 'GET', url, headers: { range: 'bytes=0-0' }, signal: ctx.signal });
  // Only the headers matter; a 200 body is cut off by destroying it.
  get.body.destroy();
  if (answerKind(get.status) !== 'bytes') {
    // A server refusing both: HEAD's answer names the problem unless the GET's is worth a retry.
    if (!headOk && classifyHttpFailure(get.status) !== 'retry' && get.status !== 401 && get.status !== 407) throw statusError(head, 'HEAD', url);
    throw statusError(get, 'GET', url);
  }
  // A 206 `bytes 0-0/*` states no length: the server does not know it either.
  return { validators: validatorsFrom(get.status, get.headers), headers: { ...head.headers, ...get.headers } };
}

/**
 * Probes the sources: the first that answers is the reference (with mirrors,
 * an unreachable origin is dropped rather than waited for; the last one left
 * is retried), the others must serve the same content.
 */
export async function stateSize(ctx: ProbeContext, sources: SourceState[]): Promise<{ primary: SourceState; probed: Probed }> {
  const live = sources.filter((s) => !s.dropped);
  if (live.length === 0) throw new ProtocolError('no usable source left');
  let found: { primary: SourceState; probed: Probed } | undefined;
  for (let k = 0; k < live.length && !found; k++) {
    const s = live[k]!;
    const last = k === live.length - 1;
    try {
      const probed = last ? await ctx.retrying(() => probe(ctx, s)) : await probe(ctx, s);
      found = { primary: s, probed };
    } catch (err) {
      if (ctx.signal.aborted || last) throw err;
      ctx.drop(s, `source ${s.url} is not usable: ${toBitsError(err).message}`);
    }
  }
  const { primary, probed } = found!;
  primary.validators = probed.validators;
  await Promise.all(
    sources
      .filter((m) => !m.dropped && m !== primary)
      .map(async (m) => {
        try {
          const r = await probe(ctx, m);
          m.validators = r.validators;
          const diff = sameContent(probed.validators, r.validators);
          if (diff) ctx.drop(m, `mirror ${m.url} does not serve the same content (${diff}); not used`);
        } catch (err) {
          if (ctx.signal.aborted) throw err;
          ctx.drop(m, `mirror ${m.url} is not usable: ${toBitsError(err).message}`);
        }
      }),
  );
  return found!;
}
