/**
 * Header-value rules of §2.2.1 and §2.2.1.1 (and §6 notes 2 and 3). Pure: no I/O.
 */

/** §2.2.1, §6 note 2: header values SHOULD NOT exceed 4 KB; Windows servers enforce it. */
export const MAX_HEADER_VALUE_BYTES = 4096;
/** §2.2.1.1: Content-Name SHOULD NOT exceed 260 characters. */
export const MAX_CONTENT_NAME_CHARS = 260;
/** §6 note 3: characters Windows refuses in Content-Name. */
export const CONTENT_NAME_FORBIDDEN = /[\\/:*?"<>|]/;

export type Invalid = { ok: false; reason: string };
export type Valid = { ok: true };

/** A header value must be a single line (no CR, LF or NUL) of at most 4 KB. */
export function checkHeaderValue(value: string): Valid | Invalid {
  if (/[\r\n\0]/.test(value)) return { ok: false, reason: 'contains CR, LF or NUL' };
  if (Buffer.byteLength(value, 'latin1') > MAX_HEADER_VALUE_BYTES) {
    return { ok: false, reason: `longer than ${MAX_HEADER_VALUE_BYTES} bytes` };
  }
  return { ok: true };
}

/** Validates a Content-Name received from a client (§2.2.1.1, §6 note 3). */
export function checkContentName(name: string): Valid | Invalid {
  const h = checkHeaderValue(name);
  if (!h.ok) return h;
  if (name.length > MAX_CONTENT_NAME_CHARS) return { ok: false, reason: `longer than ${MAX_CONTENT_NAME_CHARS} characters` };
  if (CONTENT_NAME_FORBIDDEN.test(name)) return { ok: false, reason: 'contains one of \\ / : * ? " < > |' };
  // eslint-disable-next-line no-control-regex
  if (/[\x00-\x1f\x7f]/.test(name)) return { ok: false, reason: 'contains control characters' };
  return { ok: true };
}

/**
 * Makes a Content-Name from a local file name: forbidden characters become `_`,
 * non-ASCII characters are percent-encoded as UTF-8 (header values are octets;
 * Node refuses characters above U+00FF), and the result is cut to 260 characters
 * on an escape boundary. The server does not use the value (§2.2.1.1), so a
 * readable approximation beats a rejected request.
 */
export function encodeContentName(fileName: string): string {
  let out = '';
  for (const ch of fileName) {
    const cp = ch.codePointAt(0)!;
    let piece: string;
    if (CONTENT_NAME_FORBIDDEN.test(ch) || cp < 0x20 || cp === 0x7f) piece = '_';
    else if (cp > 0x7e) piece = encodeURIComponent(ch);
    else if (ch === '%') piece = '%25';
    else piece = ch;
    if (out.length + piece.length > MAX_CONTENT_NAME_CHARS) break;
    out += piece;
  }
  return out === '' ? '_' : out;
}
