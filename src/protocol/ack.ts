/**
 * Classifies the server's answer to an upload request (an "Ack", §2.2.3,
 * §2.2.5, §2.2.7, §2.2.9, §2.2.11) into what the HTTPUploader state machine
 * needs: success, resync, session lost, fragment too large, auth, transient or
 * permanent failure, or a message that must be discarded because it is not
 * valid BITS (§3.1.5.2.2-§3.1.5.2.6 "verify … discarding the message if not").
 * Pure: no I/O.
 */
import { getHeader, H, parsePacketType, PROTOCOL_GUID, type RequestPacketType } from './headers.js';
import { sameGuid } from './guid.js';
import { HRESULT, parseErrorContext, parseHresult } from './hresult.js';
import { parseReceivedContentRange } from './content-range.js';
import { classifyHttpFailure } from './failure.js';

export type AckKind =
  /** 200 and a valid Ack for the request sent. */
  | 'ok'
  /** 416 to a FRAGMENT: the server tells its offset in BITS-Received-Content-Range (§3.1.5.2.4). */
  | 'resync'
  /** BITS-Error BG_E_SESSION_NOT_FOUND on anything but CANCEL-SESSION (§3.1.5.2.1). */
  | 'session-not-found'
  /** 413 to a FRAGMENT (§3.1.5.2.4, §6 note 16). */
  | 'fragment-too-large'
  /** 401/407 (§3.1.5.2.1, §3.1.5.1.7). */
  | 'auth'
  /** Worth retrying: what classifyHttpFailure (src/protocol/failure.ts) calls 'retry'. */
  | 'transient'
  /** The server refused and retrying will not help (§3.1.5.2.1 "return this error to the higher-layer protocol"). */
  | 'permanent'
  /** Not a valid BITS Ack: the message is discarded and reported as BG_E_INVALID_SERVER_RESPONSE. */
  | 'invalid';

export interface Ack {
  kind: AckKind;
  status: number;
  /** The request this answers. */
  request: RequestPacketType;
  /** BITS-Session-Id exactly as received, when present and a usable header token (see isSessionId). */
  sessionId?: string;
  /** BITS-Received-Content-Range: the next offset the server expects (§2.2.7.2). */
  receivedContentRange?: number;
  /** BITS-Reply-URL as sent (relative, maybe with backslashes: resolve with resolveReplyUrl). */
  replyUrl?: string;
  /** BITS-Error (or BITS-Error-Code) HRESULT. */
  bitsError?: number;
  /** BITS-Error-Context. */
  bitsErrorContext?: number;
  /** BITS-Host-Id (§2.2.3.2), CREATE-SESSION only. */
  hostId?: string;
  /** BITS-Host-Id-Fallback-Timeout in seconds (§2.2.3.2), CREATE-SESSION only. */
  hostIdFallbackTimeout?: number;
  /** BITS-Protocol (§2.2.3.2). */
  protocol?: string;
  /** Retry-After as sent (parse with parseRetryAfter, which needs the time). */
  retryAfter?: string;
  /** Why the message was classified 'invalid' (or a note on a lenient acceptance). */
  problem?: string;
}

/** Longest session id accepted: far above a GUID's 38 characters, far below Windows' 4 KB header limit (§6 note 2). */
export const MAX_SESSION_ID_LENGTH = 256;

/**
 * §2.2.1.2 calls BITS-Session-Id a GUID, but servers built for Windows'
 * Start-BitsTransfer send ids such as `-5816921724287494047`, and Windows
 * accepts them: any value that can be sent back verbatim as a header is an
 * id. Printable ASCII only (no CR/LF or other control characters, no obs-text),
 * at most MAX_SESSION_ID_LENGTH characters.
 */
export function isSessionId(value: string): boolean {
  return value.length > 0 && value.length <= MAX_SESSION_ID_LENGTH && /^[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?$/.test(value);
}

/** GUIDs compare as GUIDs (case and braces aside); any other id must match exactly. */
export function sameSessionId(a: string, b: string): boolean {
  return a === b || sameGuid(a, b);
}

/** §3.1.1.2: BitsHostIDFallbackTimeout starts as 0xFFFFFFFF, meaning INFINITE (§3.1.2.3). */
export const FALLBACK_TIMEOUT_INFINITE = 0xffffffff;

export interface AckInput {
  request: RequestPacketType;
  status: number;
  /** Response headers; names in any case. */
  headers: Record<string, string | string[] | undefined>;
  /** The BITS-Session-Id we sent (not for CREATE-SESSION or PING). */
  sentSessionId?: string;
}

export function classifyAck(input: AckInput): Ack {
  const { request, status, headers } = input;
  const get = (name: string) => {
    const v = getHeader(headers, name);
    return v === undefined ? undefined : v.trim();
  };
  const ack: Ack = { kind: 'ok', status, request };

  const rawSession = get(H.SessionId);
  if (rawSession !== undefined && isSessionId(rawSession)) ack.sessionId = rawSession;
  const rawError = get(H.Error);
  if (rawError !== undefined) ack.bitsError = parseHresult(rawError);
  const rawContext = get(H.ErrorContext);
  if (rawContext !== undefined) ack.bitsErrorContext = parseErrorContext(rawContext);
  const rawReceived = get(H.ReceivedContentRange);
  if (rawReceived !== undefined) ack.receivedContentRange = parseReceivedContentRange(rawReceived);
  const rawReply = get(H.ReplyUrl);
  if (rawReply !== undefined && rawReply !== '') ack.replyUrl = rawReply;
  const rawProtocol = get(H.Protocol);
  if (rawProtocol !== undefined) ack.protocol = rawProtocol;
  const rawRetryAfter = get('Retry-After');
  if (rawRetryAfter !== undefined && rawRetryAfter !== '') ack.retryAfter = rawRetryAfter;
  if (request === 'CREATE-SESSION') {
    const hostId = get(H.HostId);
    if (hostId !== undefined && hostId !== '') ack.hostId = hostId;
    const fb = get(H.HostIdFallbackTimeout);
    if (fb !== undefined && /^\d{1,10}$/.test(fb)) ack.hostIdFallbackTimeout = Math.min(Number(fb), FALLBACK_TIMEOUT_INFINITE);
  }

  const invalid = (problem: string): Ack => ({ ...ack, kind: 'invalid', problem });

  // §3.1.5.2.1: BG_E_SESSION_NOT_FOUND restarts the upload, "for all the messages
  // except CANCEL-SESSION" — for CANCEL-SESSION a missing session is what we wanted.
  // Only on an error status: a BITS error on a 200 Ack is noise (one server sends
  // `BITS-Error-Code: 1` on every PING answer), never a failure.
  if (status !== 200 && ack.bitsError === HRESULT.BG_E_SESSION_NOT_FOUND) {
    if (request === 'CANCEL-SESSION') return { ...ack, kind: 'ok', problem: 'session already gone' };
    return { ...ack, kind: 'session-not-found' };
  }

  if (status === 200) {
    if (ack.bitsError !== undefined) {
      ack.problem = `ignored BITS-Error ${rawError} on a 200 Ack`;
      delete ack.bitsError;
      delete ack.bitsErrorContext;
    }
    // §2.2.1: every response carries BITS-Packet-Type: Ack. A 200 without it is
    // what a plain web server answers to anything; believing it would "upload" nowhere.
    const pt = parsePacketType(get(H.PacketType));
    if (pt !== 'Ack') return invalid(pt === undefined ? 'response has no BITS-Packet-Type: Ack (is this a BITS upload URL?)' : `BITS-Packet-Type is ${pt}, expected Ack`);
    // §2.2.1.2: BITS-Session-Id "MUST be present in response messages with an HTTP
    // status of 200"; if present "its value MUST be the same as in the request".
    // IIS omits it in Acks to FRAGMENT (§4.1-05), PING and CLOSE-SESSION (§4.1-07/09),
    // so only CREATE-SESSION requires it; a different id is always an error.
    if (rawSession !== undefined && ack.sessionId === undefined) {
      return invalid(`BITS-Session-Id is not a usable header value (control characters, or longer than ${MAX_SESSION_ID_LENGTH}): ${JSON.stringify(rawSession.slice(0, 80))}`);
    }
    if (request === 'CREATE-SESSION') {
      if (ack.sessionId === undefined) return invalid('CREATE-SESSION Ack has no BITS-Session-Id');
      // §2.2.3.2 BITS-Protocol: the server's pick among what we offered — we offered one.
      if (ack.protocol !== undefined && !sameGuid(ack.protocol, PROTOCOL_GUID)) {
        return invalid(`server chose protocol ${ack.protocol}, which bits did not offer`);
      }
    } else if (ack.sessionId !== undefined && input.sentSessionId !== undefined && !sameSessionId(ack.sessionId, input.sentSessionId)) {
      return invalid(`Ack carries session ${ack.sessionId}, the request was for ${input.sentSessionId}`);
    }
    if (request === 'FRAGMENT') {
      // §2.2.7.2: BITS-Received-Content-Range "MUST be included".
      if (rawReceived === undefined) return invalid('FRAGMENT Ack has no BITS-Received-Content-Range');
      if (ack.receivedContentRange === undefined) return invalid(`BITS-Received-Content-Range is not a byte offset: ${JSON.stringify(rawReceived)}`);
    }
    return ack;
  }

  if (status === 416 && request === 'FRAGMENT') {
    if (ack.receivedContentRange === undefined) return invalid('416 to FRAGMENT without a valid BITS-Received-Content-Range');
    return { ...ack, kind: 'resync' };
  }
  if (status === 413 && request === 'FRAGMENT') return { ...ack, kind: 'fragment-too-large' };
  if (status === 401 || status === 407) return { ...ack, kind: 'auth' };
  if (status >= 200 && status < 300) return invalid(`unexpected HTTP ${status} to ${request}`);
  // Apache, lighttpd, Python's http.server answer a method they do not know so.
  if (status === 501 && ack.bitsError === undefined) return { ...ack, kind: 'permanent', problem: 'not a BITS upload server (HTTP 501 to BITS_POST)' };
  // The one failure table: 408/429/503 and plain 5xx are worth retrying; 403,
  // 501 + E_ACCESSDENIED, BG_E_TOO_LARGE, E_INVALIDARG, ERROR_DISK_FULL, any
  // other status: §3.1.5.2.1 hands it to the higher layer.
  return { ...ack, kind: classifyHttpFailure(status, ack.bitsError) === 'retry' ? 'transient' : 'permanent' };
}
