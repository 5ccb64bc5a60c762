/**
 * The BITS request messages (§2.2.2-§2.2.10) as HTTP headers, spelled as a
 * Windows client spells them (§4 captures), and the phase each one shows.
 */
import type { TransferEvent } from '../events.js';
import { formatContentRange } from '../../protocol/content-range.js';
import { BITS_POST, H, METHOD_OVERRIDE_HEADER, PROTOCOL_GUID, WIRE_PACKET_TYPE } from '../../protocol/headers.js';
import type { SendAction } from '../../protocol/uploader.js';

/** Request headers of a BITS message, spelled as a Windows client spells them (§4). */
export function bitsRequestHeaders(a: SendAction): Record<string, string> {
  const h: Record<string, string> = { Accept: '*/*', [H.PacketType]: WIRE_PACKET_TYPE[a.type] };
  switch (a.type) {
    case 'CREATE-SESSION':
      h[H.SupportedProtocols] = PROTOCOL_GUID;
      h[H.ContentName] = a.contentName;
      h[H.ContentLength] = '0';
      break;
    case 'PING':
      // §4.1-06 / §4.2-12: a PING carries no session id.
      h[H.ContentLength] = '0';
      break;
    case 'FRAGMENT':
      h[H.SessionId] = a.sessionId;
      h[H.ContentName] = a.contentName; // §6 note 11: Windows sends it with every fragment
      h[H.ContentRange] = formatContentRange(a.offset, a.length, a.total);
      h[H.ContentLength] = String(a.length);
      break;
    case 'CLOSE-SESSION':
      h[H.SessionId] = a.sessionId;
      h[H.ContentName] = a.contentName;
      h[H.ContentLength] = '0';
      break;
    case 'CANCEL-SESSION':
      h[H.SessionId] = a.sessionId;
      h[H.ContentLength] = '0';
      break;
  }
  return h;
}

/**
 * The method a BITS message goes out with: BITS_POST, or (`--method-override`) POST
 * with `X-Http-Method-Override: BITS_POST`, as OneDrive's BITS clients send it: the
 * way through proxies and firewalls that refuse methods they do not know.
 */
export function bitsPostMethod(headers: Record<string, string>, methodOverride: boolean | undefined): string {
  if (!methodOverride) return BITS_POST;
  headers[METHOD_OVERRIDE_HEADER] = BITS_POST;
  return 'POST';
}

export const PHASE_OF: Record<SendAction['type'], TransferEvent & { type: 'phase' }> = {
  'CREATE-SESSION': { type: 'phase', phase: 'creating-session' },
  PING: { type: 'phase', phase: 'pinging' },
  FRAGMENT: { type: 'phase', phase: 'transferring' },
  'CLOSE-SESSION': { type: 'phase', phase: 'closing' },
  'CANCEL-SESSION': { type: 'phase', phase: 'cancelling' },
};

