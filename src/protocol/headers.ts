/**
 * MC-BUP §2.2 — message syntax of the BITS Upload Protocol: the method, the
 * packet types and every header the protocol introduces. Pure: no I/O.
 */

import { formatErrorContext, formatHresult } from './hresult.js';

/** §2.2.1: every upload request is this HTTP extension method. */
export const BITS_POST = 'BITS_POST';

/**
 * A `POST` carrying this header with the value `BITS_POST` is a BITS_POST: how OneDrive's
 * BITS clients send it, and the way through proxies and firewalls that refuse unknown methods.
 */
export const METHOD_OVERRIDE_HEADER = 'X-Http-Method-Override';

/** Whether a request is a BITS upload message: `BITS_POST`, or `POST` overridden to it (value case-insensitive). */
export function isBitsPost(method: string, headers: Record<string, string | string[] | undefined>): boolean {
  if (method === BITS_POST) return true;
  if (method !== 'POST') return false;
  return getHeader(headers, METHOD_OVERRIDE_HEADER)?.trim().toUpperCase() === BITS_POST;
}

/** §1.7.1 / §6 note 6: the one protocol this version of the spec defines. */
export const PROTOCOL_GUID = '{7df0354d-249b-430f-820d-3d2a9bef4931}';

/** Header names, spelled as on the wire (Node lower-cases incoming names; compare with lower()). */
export const H = {
  // §2.2.1.2
  PacketType: 'BITS-Packet-Type',
  SessionId: 'BITS-Session-Id',
  Error: 'BITS-Error',
  // The Win32 SDK pages for the upload protocol (Ack for Fragment, …) name the HRESULT header so.
  ErrorCode: 'BITS-Error-Code',
  ErrorContext: 'BITS-Error-Context',
  // §2.2.2.2 / §2.2.3.2
  SupportedProtocols: 'BITS-Supported-Protocols',
  Protocol: 'BITS-Protocol',
  HostId: 'BITS-Host-Id',
  HostIdFallbackTimeout: 'BITS-Host-Id-Fallback-Timeout',
  // §2.2.7.2
  ReceivedContentRange: 'BITS-Received-Content-Range',
  ReplyUrl: 'BITS-Reply-URL',
  // §2.2.12.2 — the prose says "DataEntity", the §4.2 capture (what IIS really sends) says "DataFile".
  OriginalRequestUrl: 'BITS-Original-Request-URL',
  RequestDataFileName: 'BITS-Request-DataFile-Name',
  ResponseDataFileName: 'BITS-Response-DataFile-Name',
  // §2.2.13.2
  StaticResponseUrl: 'BITS-Static-Response-URL',
  CopyFileToDestination: 'BITS-Copy-File-To-Destination',
  // §2.2.1.1 / §2.2.6.1 (standard HTTP headers with BITS rules)
  ContentName: 'Content-Name',
  ContentLength: 'Content-Length',
  ContentRange: 'Content-Range',
} as const;

/**
 * Alternate spellings accepted on input: the spec prose vs. the capture, and
 * what deployed peers send. MC-BUP names the HRESULT header `BITS-Error`;
 * Microsoft's Win32 SDK pages for the upload protocol and third-party servers
 * name it `BITS-Error-Code`. A published Go server misspells the resync header
 * `BITS-Recieved-Content-Range`.
 */
export const H_ALIASES: Record<string, readonly string[]> = {
  [H.RequestDataFileName]: ['BITS-Request-DataEntity-Name'],
  [H.ResponseDataFileName]: ['BITS-Response-DataEntity-Name'],
  [H.Error]: ['BITS-Error-Code'],
  [H.ReceivedContentRange]: ['BITS-Recieved-Content-Range'],
};

/** §2.2.1.2 BITS-Packet-Type values, canonical (spec) spelling. */
export const PacketType = {
  CreateSession: 'CREATE-SESSION',
  Ping: 'PING',
  Fragment: 'FRAGMENT',
  CloseSession: 'CLOSE-SESSION',
  CancelSession: 'CANCEL-SESSION',
  Ack: 'Ack',
} as const;
export type PacketType = (typeof PacketType)[keyof typeof PacketType];
export type RequestPacketType = Exclude<PacketType, 'Ack'>;

/**
 * The spelling a Windows client puts on the wire (§4 captures: `Create-Session`,
 * `Fragment`, `Ping`, `Close-Session`). We send these rather than the spec's upper
 * case because every deployed BITS server has been exercised by Windows clients,
 * while a server that only accepts the upper-case form has never met one.
 */
export const WIRE_PACKET_TYPE: Record<RequestPacketType, string> = {
  'CREATE-SESSION': 'Create-Session',
  PING: 'Ping',
  FRAGMENT: 'Fragment',
  'CLOSE-SESSION': 'Close-Session',
  'CANCEL-SESSION': 'Cancel-Session',
};

const BY_LOWER = new Map<string, PacketType>(
  Object.values(PacketType).map((t) => [t.toLowerCase(), t]),
);

/** Packet types are matched case-insensitively: `Ping`, `PING` and `ping` are one type. */
export function parsePacketType(value: string | null | undefined): PacketType | undefined {
  if (value == null) return undefined;
  return BY_LOWER.get(value.trim().toLowerCase());
}

/**
 * §2.2.2.2: BITS-Supported-Protocols is a space- or comma-delimited list of GUIDs,
 * most preferred first.
 */
export function parseSupportedProtocols(value: string): string[] {
  return value
    .split(/[\s,]+/)
    .map((s) => s.trim())
    .filter((s) => s.length > 0);
}

/**
 * Case-insensitive lookup over a plain header record (Node's IncomingHttpHeaders
 * or undici's). The spec's name wins over an alias when both are present.
 */
export function getHeader(
  headers: Record<string, string | string[] | undefined>,
  name: string,
): string | undefined {
  const want = [name, ...(H_ALIASES[name] ?? [])].map((n) => n.toLowerCase());
  let found: string | undefined;
  let rank = want.length;
  for (const [k, v] of Object.entries(headers)) {
    const i = want.indexOf(k.toLowerCase());
    if (i < 0 || i >= rank || v === undefined) continue;
    rank = i;
    found = Array.isArray(v) ? v.join(', ') : v;
  }
  return found;
}

/**
 * The headers of an error answer (§2.2.1.2): the HRESULT under both names, MC-BUP's
 * `BITS-Error` and the SDK pages' `BITS-Error-Code`, so a client that follows either
 * document reads it, and the context.
 */
export function errorAnswerHeaders(hr: number, context: number): Record<string, string> {
  const code = formatHresult(hr);
  return { [H.Error]: code, [H.ErrorCode]: code, [H.ErrorContext]: formatErrorContext(context) };
}
