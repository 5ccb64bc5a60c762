/**
 * The typed error (src/errors.ts) for what §3.1.5.1.7 returns to the higher
 * layer. Its `disposition` is what the retry wait (src/client/retry.ts) asks:
 * the uploader's 'transient' is a ServerError marked transient, everything the
 * failure table (src/protocol/failure.ts) calls 'fail' is not.
 */
import { AuthError, BitsError, ProtocolError, ServerError, TransportError, type ServerErrorInfo } from '../../errors.js';
import type { UploadErrorInfo } from '../../protocol/uploader.js';

/** `hint`: the transport's explanation of a refusal (HttpResponse.hint, e.g. a client certificate the server wants). */
export function errorFromInfo(info: UploadErrorInfo, transportError: unknown, hint?: string): BitsError {
  if (info.httpStatus === 0 && transportError instanceof BitsError && info.kind !== 'protocol' && info.message === transportError.message) return transportError;
  const sinfo: ServerErrorInfo = {
    httpStatus: info.httpStatus,
    bitsError: info.bitsError,
    bitsErrorContext: info.bitsErrorContext,
    request: info.request,
    url: info.url,
    transient: info.kind === 'transient',
    retryAfterMs: info.retryAfterMs,
  };
  switch (info.kind) {
    case 'auth':
      return new AuthError(sinfo, hint ? `${ServerError.describe(sinfo)}; ${hint}` : undefined);
    case 'protocol': {
      const where = info.request ? ` to ${info.request}` : '';
      const status = info.httpStatus ? ` (HTTP ${info.httpStatus})` : '';
      return new ProtocolError(`invalid server response${where}${status}: ${info.message ?? 'not a BITS Ack'}`, {
        httpStatus: info.httpStatus || undefined,
      });
    }
    default:
      if (info.httpStatus === 0) return new TransportError(info.message ?? 'transfer failed', { hresult: info.hresult });
      if (info.httpStatus === 501 && info.bitsError === undefined) {
        // Issue 12.4: a web server that does not implement BITS_POST, not a BITS server refusing.
        const host = info.url ? new URL(info.url).host : 'the server';
        return new ServerError(sinfo, `${host} is not a BITS upload server (HTTP 501 to BITS_POST ${info.request ?? ''})`.trimEnd());
      }
      const detail = [info.message ? ` (${info.message})` : '', hint ? `; ${hint}` : ''].join('');
      return new ServerError(sinfo, detail ? `${ServerError.describe(sinfo)}${detail}` : undefined);
  }
}
