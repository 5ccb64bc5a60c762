/**
 * GUIDs as the protocol writes them (MS-DTYP §2.3.4.3 in curly-brace form):
 * BITS session ids and protocol identifiers. Pure: no I/O.
 */
import { randomUUID } from 'node:crypto';

const GUID_RE = /^\{?([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})\}?$/;

/** True for `{xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx}`; braces must be balanced. */
export function isGuid(value: string | null | undefined): boolean {
  if (value == null) return false;
  const v = value.trim();
  if (v.startsWith('{') !== v.endsWith('}')) return false;
  return GUID_RE.test(v);
}

/** Canonical form for comparison and storage keys: upper case, with braces. */
export function normalizeGuid(value: string): string {
  const m = GUID_RE.exec(value.trim());
  if (!m || value.trim().startsWith('{') !== value.trim().endsWith('}')) {
    throw new TypeError(`not a GUID: ${JSON.stringify(value)}`);
  }
  return `{${m[1]!.toUpperCase()}}`;
}

export function sameGuid(a: string, b: string): boolean {
  return isGuid(a) && isGuid(b) && normalizeGuid(a) === normalizeGuid(b);
}

/** A new session id in the form IIS sends: `{A0FF5911-4144-45B3-BF27-27AFC8EC8A67}`. */
export function newSessionId(): string {
  return `{${randomUUID().toUpperCase()}}`;
}
