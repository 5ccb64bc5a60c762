/**
 * §3.3 back-end client: tells the server application (§3.4) that a request
 * entity is complete (§2.2.12) and collects its answer (§2.2.13), which in
 * upload-reply mode defines the response entity.
 */
import { createReadStream, createWriteStream } from 'node:fs';
import { access, mkdir, open } from 'node:fs/promises';
import { pipeline } from 'node:stream/promises';
import path from 'node:path';
import { Agent, request, errors as undiciErrors } from 'undici';
import { H, getHeader } from '../protocol/headers.js';
import { ErrorContext, HRESULT, hresultFromHttpStatus, parseHresult } from '../protocol/hresult.js';
import { VERSION } from '../version.js';

/** §3.3.2 timers all default to 5 minutes. */
export const DEFAULT_NOTIFICATION_TIMEOUT_MS = 5 * 60 * 1000;
/** §2.2.1.2 table: a reply URL from the server application longer than this is E_INVALIDARG. */
export const MAX_REPLY_URL_CHARS = 2200;

export interface NotificationRequest {
  type: 'by-reference' | 'by-value';
  /** NotificationURL */
  notificationUrl: string;
  /** BITS-Original-Request-URL: the destination URL. */
  originalRequestUrl: string;
  /** RequestEntityPath (absolute local path). */
  requestFile: string;
  /** Size of the request entity (the by-value body length). */
  requestLength: number;
  /** Where the response entity goes (ResponseEntityPath). */
  responseFile: string;
  /** Each §3.3.2 timer (send, receive, receive-response). */
  timeoutMs?: number;
}

export type NotificationResult =
  | {
      ok: true;
      /** IsReplyStaticURL with its ReplyURL (BITS-Static-Response-URL), sent to the client as is. */
      staticReplyUrl?: string;
      /** ShouldcopyToDestination: the app sent BITS-Copy-File-To-Destination. */
      copyToDestination: boolean;
    }
  | {
      ok: false;
      /** HTTPStatusCode / BitsErrorCode to return to the client, with context 0x7. */
      status: number;
      bitsError: number;
      context: number;
      message: string;
    };

function failure(status: number, bitsError: number, message: string): NotificationResult {
  return { ok: false, status, bitsError, context: ErrorContext.RemoteApplication, message };
}

/** One keep-alive pool for all notifications of a server; closed with it. */
export class BackEndClient {
  private readonly agent = new Agent({ keepAliveTimeout: 4000, connections: 8 });

  async close(): Promise<void> {
    await this.agent.close().catch(() => {});
  }

  async notify(n: NotificationRequest): Promise<NotificationResult> {
    const timeoutMs = n.timeoutMs ?? DEFAULT_NOTIFICATION_TIMEOUT_MS;
    const headers: Record<string, string> = {
      [H.OriginalRequestUrl]: n.originalRequestUrl,
      'User-Agent': `bits/${VERSION}`,
      Accept: '*/*',
    };
    let body: NodeJS.ReadableStream | undefined;
    if (n.type === 'by-reference') {
      headers[H.RequestDataFileName] = n.requestFile;
      headers[H.ResponseDataFileName] = n.responseFile;
      headers['Content-Length'] = '0';
    } else {
      headers['Content-Length'] = String(n.requestLength);
      body = n.requestLength > 0 ? createReadStream(n.requestFile) : undefined;
    }
    await mkdir(path.dirname(n.responseFile), { recursive: true });
    // Notification send + receive timers (§3.3.2.1/.2): one overall deadline covering both;
    // the receive-response timer (§3.3.2.3) is undici's headersTimeout.
    const ac = new AbortController();
    const timer = setTimeout(() => ac.abort(new Error('notification timeout')), 2 * timeoutMs);
    try {
      const res = await request(n.notificationUrl, {
        method: 'POST',
        headers,
        body: body as never,
        dispatcher: this.agent,
        signal: ac.signal,
        headersTimeout: timeoutMs,
        bodyTimeout: timeoutMs,
      });
      const rh = res.headers as Record<string, string | string[] | undefined>;
      if (res.statusCode < 200 || res.statusCode > 299) {
        await res.body.dump().catch(() => {});
        const appError = parseHresult(getHeader(rh, H.Error));
        const status = res.statusCode >= 400 ? res.statusCode : 500;
        return failure(
          status,
          appError !== undefined && appError !== 0 ? appError : hresultFromHttpStatus(res.statusCode),
          `server application answered ${res.statusCode}`,
        );
      }
      const staticUrl = getHeader(rh, H.StaticResponseUrl)?.trim();
      const copyToDestination = getHeader(rh, H.CopyFileToDestination) !== undefined;
      if (staticUrl) {
        await res.body.dump().catch(() => {});
        let ok = staticUrl.length <= MAX_REPLY_URL_CHARS;
        try {
          const u = new URL(staticUrl);
          ok &&= u.protocol === 'http:' || u.protocol === 'https:';
        } catch {
          ok = false;
        }
        if (!ok) return failure(400, HRESULT.E_INVALIDARG, 'BITS-Static-Response-URL is not an absolute http(s) URL of at most 2200 characters');
        return { ok: true, staticReplyUrl: staticUrl, copyToDestination };
      }
      if (n.type === 'by-value') {
        await pipeline(res.body, createWriteStream(n.responseFile));
      } else {
        // By reference the app writes the response file itself; §3.4.5.2 also lets it answer with
        // the response entity as the body, so a body is kept when the app wrote no file.
        let wrote = false;
        try {
          await access(n.responseFile);
          wrote = true;
        } catch {
          /* not written by the app */
        }
        if (wrote) await res.body.dump().catch(() => {});
        else await pipeline(res.body, createWriteStream(n.responseFile));
      }
      // The Ack that follows promises the reply is there.
      const fh = await open(n.responseFile, 'r');
      try {
        await fh.sync().catch(() => {});
      } finally {
        await fh.close();
      }
      return { ok: true, copyToDestination };
    } catch (err) {
      if (isTimeout(err) || ac.signal.aborted) {
        // §3.3.6: 408 with x80070112 and CONTEXT_REMOTE_APPLICATION (the spec's value, odd as it is).
        return failure(408, HRESULT.ERROR_DISK_FULL, 'server application timed out');
      }
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOSPC' || code === 'EDQUOT') return failure(500, HRESULT.ERROR_DISK_FULL, 'disk full while storing the reply');
      return failure(502, hresultFromHttpStatus(502), `cannot reach the server application: ${(err as Error).message}`);
    } finally {
      clearTimeout(timer);
      if (body && 'destroy' in body) (body as { destroy(): void }).destroy();
    }
  }
}

function isTimeout(err: unknown): boolean {
  return (
    err instanceof undiciErrors.HeadersTimeoutError ||
    err instanceof undiciErrors.BodyTimeoutError ||
    err instanceof undiciErrors.ConnectTimeoutError
  );
}
