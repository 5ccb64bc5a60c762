/**
 * Every request of a download goes through here: a source that redirected is
 * asked at its final URL (SourceState.finalUrl, kept in the checkpoint, so a
 * resumed job goes straight there), and followed again from its own URL when the
 * final one is gone (404/410) or unreachable. The transport follows the 3xx
 * itself (src/transport/http.ts, under the --redirects policy); this reports the
 * final URL once per change: an `info` event, or a warning with `report`.
 *
 * It also refuses encoded answers: the transport asks for Accept-Encoding:
 * identity, and a 200/206 that is gzip/deflate/br anyway would be the compressed
 * bytes saved as the file. Such bytes cannot be resumed by range nor checked
 * against the length the server states, so bits stops with a ProtocolError (exit 7)
 * instead of decoding (see README "Redirects and encodings").
 */
import { ProtocolError, TimeoutError, TransportError } from '../../errors.js';
import { HRESULT } from '../../protocol/hresult.js';
import type { SourceState } from '../../protocol/downloader.js';
import type { HttpRequest, HttpResponse, RedirectPolicy, Transport } from '../../transport/http.js';
import type { TransferEvent } from '../events.js';

/** Answers that mean the final URL is gone, not that the content is. */
const GONE = new Set([404, 410]);

function unreachable(e: unknown): boolean {
  if (e instanceof TimeoutError) return e.timer === 'connect';
  return e instanceof TransportError && (e.hresult === HRESULT.ERROR_INTERNET_CANNOT_CONNECT || e.hresult === HRESULT.ERROR_INTERNET_NAME_NOT_RESOLVED);
}

export class SourceRoutes implements Transport {
  constructor(
    private readonly inner: Transport,
    private readonly sources: () => readonly SourceState[],
    private readonly policy: RedirectPolicy,
    private readonly emit: (e: TransferEvent) => void,
  ) {}

  async request(req: HttpRequest): Promise<HttpResponse> {
    const src = this.sources().find((s) => s.url === req.url.href);
    const final = src?.finalUrl;
    if (src && final !== undefined && final !== src.url) {
      let why: string;
      try {
        const res = await this.inner.request({ ...req, url: new URL(final) });
        if (!GONE.has(res.status)) return await this.answered(src, req, res);
        await res.discard();
        why = `answers HTTP ${res.status}`;
      } catch (e) {
        if (!unreachable(e)) throw e;
        why = `is unreachable (${(e as Error).message})`;
      }
      delete src.finalUrl;
      this.emit({ type: 'info', message: `${final} ${why}: following ${src.url} again` });
    }
    return this.answered(src, req, await this.inner.request(req));
  }

  private async answered(src: SourceState | undefined, req: HttpRequest, res: HttpResponse): Promise<HttpResponse> {
    const at = res.url?.href ?? req.url.href;
    if (src && at !== (src.finalUrl ?? src.url)) {
      if (at === src.url) delete src.finalUrl;
      else {
        src.finalUrl = at;
        const message = `${src.url} redirects to ${at}`;
        this.emit(this.policy === 'report' ? { type: 'warning', message: `${message} (--redirects report)` } : { type: 'info', message });
      }
    }
    const encoding = (res.headers['content-encoding'] ?? '').trim().toLowerCase();
    if ((res.status === 200 || res.status === 206) && encoding !== '' && encoding !== 'identity') {
      await res.discard();
      throw new ProtocolError(
        `${new URL(at).host} sent ${req.method} ${at} encoded (Content-Encoding: ${encoding}) although bits asked for Accept-Encoding: identity; ` +
          'encoded bytes are not the file and cannot be resumed by range, so nothing is saved: ask the server operator to serve it unencoded',
        { httpStatus: res.status },
      );
    }
    return res;
  }

  close(): Promise<void> {
    return this.inner.close();
  }
}
