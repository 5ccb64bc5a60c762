/**
 * NTLMv2 messages per [MS-NLMP] (client side, plus the server-side check used by
 * the test servers and available to `bits serve`). NTLM authenticates the TCP
 * connection, not the request: NEGOTIATE (type 1), the server's CHALLENGE (type 2)
 * and AUTHENTICATE (type 3) must travel on one connection. LM and NTLMv1 are
 * deliberately not offered: they are broken and Windows stopped sending them by default.
 *
 * Not implemented: key exchange / signing / sealing (HTTP does not use them), channel
 * bindings (EPA) — a server that requires EPA over HTTPS will refuse with 401.
 */
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { md4Digest } from './md4.js';

const SIGNATURE = Buffer.from('NTLMSSP\0', 'latin1');

export const NTLMSSP_NEGOTIATE_UNICODE = 0x00000001;
export const NTLMSSP_NEGOTIATE_OEM = 0x00000002;
export const NTLMSSP_REQUEST_TARGET = 0x00000004;
export const NTLMSSP_NEGOTIATE_NTLM = 0x00000200;
export const NTLMSSP_NEGOTIATE_ALWAYS_SIGN = 0x00008000;
export const NTLMSSP_NEGOTIATE_EXTENDED_SESSIONSECURITY = 0x00080000;
export const NTLMSSP_NEGOTIATE_TARGET_INFO = 0x00800000;
export const NTLMSSP_NEGOTIATE_VERSION = 0x02000000;
export const NTLMSSP_NEGOTIATE_128 = 0x20000000;
export const NTLMSSP_NEGOTIATE_56 = 0x80000000;

/** What we ask for in NEGOTIATE_MESSAGE: no KEY_EXCH (would need RC4), no SIGN/SEAL. */
export const CLIENT_FLAGS =
  (NTLMSSP_NEGOTIATE_UNICODE |
    NTLMSSP_NEGOTIATE_OEM |
    NTLMSSP_REQUEST_TARGET |
    NTLMSSP_NEGOTIATE_NTLM |
    NTLMSSP_NEGOTIATE_ALWAYS_SIGN |
    NTLMSSP_NEGOTIATE_EXTENDED_SESSIONSECURITY |
    NTLMSSP_NEGOTIATE_VERSION |
    NTLMSSP_NEGOTIATE_128 |
    NTLMSSP_NEGOTIATE_56) >>>
  0;

/** AV_PAIR ids (§2.2.2.1). */
export const MsvAvEOL = 0;
export const MsvAvNbComputerName = 1;
export const MsvAvNbDomainName = 2;
export const MsvAvDnsComputerName = 3;
export const MsvAvDnsDomainName = 4;
export const MsvAvFlags = 6;
export const MsvAvTimestamp = 7;
const MSV_AV_FLAG_MIC_PRESENT = 0x2;

/** Version field (§2.2.2.10): what we claim to be; only informative. */
const VERSION_FIELD = Buffer.from([10, 0, 0x61, 0x4a, 0, 0, 0, 0x0f]);

export interface AvPair {
  id: number;
  value: Buffer;
}

export interface ChallengeMessage {
  flags: number;
  serverChallenge: Buffer;
  targetName: string;
  targetInfo: Buffer;
  avPairs: AvPair[];
  /** The exact bytes, needed for the MIC. */
  raw: Buffer;
}

export interface AuthenticateMessage {
  flags: number;
  lmChallengeResponse: Buffer;
  ntChallengeResponse: Buffer;
  domain: string;
  user: string;
  workstation: string;
  encryptedRandomSessionKey: Buffer;
  /** Present when the message has room for it (Version and MIC fields). */
  mic?: Buffer;
  raw: Buffer;
}

export class NtlmError extends Error {}

const utf16 = (s: string) => Buffer.from(s, 'utf16le');
const hmacMd5 = (key: Buffer, ...data: Buffer[]) => {
  const h = createHmac('md5', key);
  for (const d of data) h.update(d);
  return h.digest();
};

/** NTOWFv1 (§3.3.1): MD4 of the UTF-16LE password, the "NT hash". */
export function ntowfv1(password: string): Buffer {
  return md4Digest(utf16(password));
}

/** NTOWFv2 (§3.3.2): HMAC_MD5(NT hash, UNICODE(Uppercase(User) + UserDom)). */
export function ntowfv2(password: string, user: string, domain: string): Buffer {
  return hmacMd5(ntowfv1(password), utf16(user.toUpperCase() + domain));
}

export function parseAvPairs(buf: Buffer): AvPair[] {
  const out: AvPair[] = [];
  let off = 0;
  while (off + 4 <= buf.length) {
    const id = buf.readUInt16LE(off);
    const len = buf.readUInt16LE(off + 2);
    if (id === MsvAvEOL) break;
    if (off + 4 + len > buf.length) throw new NtlmError('truncated AV_PAIR list');
    out.push({ id, value: buf.subarray(off + 4, off + 4 + len) });
    off += 4 + len;
  }
  return out;
}

export function encodeAvPairs(pairs: AvPair[]): Buffer {
  const parts: Buffer[] = [];
  for (const p of pairs) {
    const h = Buffer.alloc(4);
    h.writeUInt16LE(p.id, 0);
    h.writeUInt16LE(p.value.length, 2);
    parts.push(h, p.value);
  }
  parts.push(Buffer.alloc(4)); // MsvAvEOL
  return Buffer.concat(parts);
}

/** Builds a message from fixed header bytes plus payload fields referenced by (len, maxlen, offset). */
function layout(header: Buffer, fields: Array<{ at: number; data: Buffer }>): Buffer {
  let offset = header.length;
  const payload: Buffer[] = [];
  for (const f of fields) {
    header.writeUInt16LE(f.data.length, f.at);
    header.writeUInt16LE(f.data.length, f.at + 2);
    header.writeUInt32LE(f.data.length ? offset : offset, f.at + 4);
    payload.push(f.data);
    offset += f.data.length;
  }
  return Buffer.concat([header, ...payload]);
}

function field(buf: Buffer, at: number): Buffer {
  if (at + 8 > buf.length) return Buffer.alloc(0);
  const len = buf.readUInt16LE(at);
  const off = buf.readUInt32LE(at + 4);
  if (len === 0) return Buffer.alloc(0);
  if (off + len > buf.length) throw new NtlmError('NTLM message field points past its end');
  return buf.subarray(off, off + len);
}

function checkHeader(buf: Buffer, type: number): void {
  if (buf.length < 12 || !buf.subarray(0, 8).equals(SIGNATURE)) throw new NtlmError('not an NTLMSSP message');
  if (buf.readUInt32LE(8) !== type) throw new NtlmError(`expected NTLM message type ${type}, got ${buf.readUInt32LE(8)}`);
}

/** NEGOTIATE_MESSAGE (§2.2.1.1), without domain or workstation. */
export function createNegotiateMessage(flags = CLIENT_FLAGS): Buffer {
  const h = Buffer.alloc(40);
  SIGNATURE.copy(h, 0);
  h.writeUInt32LE(1, 8);
  h.writeUInt32LE(flags >>> 0, 12);
  // DomainNameFields and WorkstationFields stay zero (offset 40 = end).
  h.writeUInt32LE(40, 20);
  h.writeUInt32LE(40, 28);
  VERSION_FIELD.copy(h, 32);
  return h;
}

/** CHALLENGE_MESSAGE (§2.2.1.2). */
export function parseChallengeMessage(buf: Buffer): ChallengeMessage {
  checkHeader(buf, 2);
  if (buf.length < 32) throw new NtlmError('NTLM challenge message is too short');
  const flags = buf.readUInt32LE(20);
  const unicode = (flags & NTLMSSP_NEGOTIATE_UNICODE) !== 0;
  const tn = field(buf, 12);
  const targetInfo = buf.length >= 48 ? Buffer.from(field(buf, 40)) : Buffer.alloc(0);
  return {
    flags,
    serverChallenge: Buffer.from(buf.subarray(24, 32)),
    targetName: unicode ? tn.toString('utf16le') : tn.toString('latin1'),
    targetInfo,
    avPairs: parseAvPairs(targetInfo),
    raw: Buffer.from(buf),
  };
}

/** Server side: a CHALLENGE_MESSAGE with a target info block (and a timestamp, as Windows sends). */
export function createChallengeMessage(opts: {
  serverChallenge?: Buffer;
  targetName?: string;
  computerName?: string;
  timestamp?: bigint | null;
  flags?: number;
}): Buffer {
  const targetName = utf16(opts.targetName ?? 'BITS');
  const pairs: AvPair[] = [
    { id: MsvAvNbDomainName, value: targetName },
    { id: MsvAvNbComputerName, value: utf16(opts.computerName ?? 'SERVER') },
  ];
  if (opts.timestamp !== null) {
    const ts = Buffer.alloc(8);
    ts.writeBigUInt64LE(opts.timestamp ?? fileTimeNow());
    pairs.push({ id: MsvAvTimestamp, value: ts });
  }
  const h = Buffer.alloc(56);
  SIGNATURE.copy(h, 0);
  h.writeUInt32LE(2, 8);
  h.writeUInt32LE(
    (opts.flags ??
      (NTLMSSP_NEGOTIATE_UNICODE |
        NTLMSSP_REQUEST_TARGET |
        NTLMSSP_NEGOTIATE_NTLM |
        NTLMSSP_NEGOTIATE_ALWAYS_SIGN |
        NTLMSSP_NEGOTIATE_EXTENDED_SESSIONSECURITY |
        NTLMSSP_NEGOTIATE_TARGET_INFO |
        NTLMSSP_NEGOTIATE_VERSION |
        NTLMSSP_NEGOTIATE_128 |
        NTLMSSP_NEGOTIATE_56)) >>> 0,
    20,
  );
  (opts.serverChallenge ?? randomBytes(8)).copy(h, 24);
  VERSION_FIELD.copy(h, 48);
  return layout(h, [
    { at: 12, data: targetName },
    { at: 40, data: encodeAvPairs(pairs) },
  ]);
}

/** Windows FILETIME: 100 ns ticks since 1601-01-01. */
export function fileTimeNow(): bigint {
  return (BigInt(Date.now()) + 11644473600000n) * 10000n;
}

export interface Ntlmv2Inputs {
  user: string;
  domain: string;
  password: string;
  serverChallenge: Buffer;
  clientChallenge: Buffer;
  /** FILETIME for the blob. */
  time: bigint;
  /** AV pairs as they go into the blob ("ServerName" in §3.3.2), EOL included. */
  targetInfo: Buffer;
}

export interface Ntlmv2Result {
  responseKeyNT: Buffer;
  ntProofStr: Buffer;
  ntChallengeResponse: Buffer;
  lmChallengeResponse: Buffer;
  sessionBaseKey: Buffer;
}

/** The NTLMv2 computation of §3.3.2 (checked against the §4.2.4 test vectors). */
export function computeNtlmv2(i: Ntlmv2Inputs): Ntlmv2Result {
  const responseKeyNT = ntowfv2(i.password, i.user, i.domain);
  const time = Buffer.alloc(8);
  time.writeBigUInt64LE(i.time);
  const temp = Buffer.concat([
    Buffer.from([1, 1, 0, 0, 0, 0, 0, 0]),
    time,
    i.clientChallenge,
    Buffer.alloc(4),
    i.targetInfo,
    Buffer.alloc(4),
  ]);
  const ntProofStr = hmacMd5(responseKeyNT, i.serverChallenge, temp);
  return {
    responseKeyNT,
    ntProofStr,
    ntChallengeResponse: Buffer.concat([ntProofStr, temp]),
    lmChallengeResponse: Buffer.concat([hmacMd5(responseKeyNT, i.serverChallenge, i.clientChallenge), i.clientChallenge]),
    sessionBaseKey: hmacMd5(responseKeyNT, ntProofStr),
  };
}

export interface AuthenticateOptions {
  user: string;
  domain: string;
  password: string;
  workstation?: string;
  /** Tests only: fixed randomness and clock. */
  clientChallenge?: Buffer;
  time?: bigint;
}

/**
 * AUTHENTICATE_MESSAGE (§2.2.1.3) answering `challenge`, following §3.1.5.1.2: when
 * the server sent MsvAvTimestamp we reuse its time, send Z(24) as the LM response and
 * add a MIC over the three messages (flag MsvAvFlags 0x2 in the blob).
 */
export function createAuthenticateMessage(negotiate: Buffer, challenge: ChallengeMessage, o: AuthenticateOptions): Buffer {
  const serverTime = challenge.avPairs.find((p) => p.id === MsvAvTimestamp);
  const withMic = serverTime !== undefined;
  let pairs = challenge.avPairs.slice();
  if (withMic) {
    const existing = pairs.find((p) => p.id === MsvAvFlags);
    const flags = ((existing ? existing.value.readUInt32LE(0) : 0) | MSV_AV_FLAG_MIC_PRESENT) >>> 0;
    const v = Buffer.alloc(4);
    v.writeUInt32LE(flags);
    pairs = pairs.filter((p) => p.id !== MsvAvFlags);
    pairs.push({ id: MsvAvFlags, value: v });
  }
  const targetInfo = challenge.targetInfo.length || withMic ? encodeAvPairs(pairs) : Buffer.alloc(0);
  const r = computeNtlmv2({
    user: o.user,
    domain: o.domain,
    password: o.password,
    serverChallenge: challenge.serverChallenge,
    clientChallenge: o.clientChallenge ?? randomBytes(8),
    time: serverTime ? serverTime.value.readBigUInt64LE(0) : (o.time ?? fileTimeNow()),
    targetInfo,
  });
  const flags = ((challenge.flags & CLIENT_FLAGS) | NTLMSSP_NEGOTIATE_UNICODE | NTLMSSP_NEGOTIATE_NTLM) >>> 0;
  const h = Buffer.alloc(88);
  SIGNATURE.copy(h, 0);
  h.writeUInt32LE(3, 8);
  h.writeUInt32LE(flags, 60);
  VERSION_FIELD.copy(h, 64);
  const msg = layout(h, [
    { at: 12, data: withMic ? Buffer.alloc(24) : r.lmChallengeResponse },
    { at: 20, data: r.ntChallengeResponse },
    { at: 28, data: utf16(o.domain) },
    { at: 36, data: utf16(o.user) },
    { at: 44, data: utf16(o.workstation ?? '') },
    { at: 52, data: Buffer.alloc(0) },
  ]);
  if (withMic) {
    // Without KEY_EXCH the ExportedSessionKey is the KeyExchangeKey, i.e. SessionBaseKey (§3.4.5.1).
    hmacMd5(r.sessionBaseKey, negotiate, challenge.raw, msg).copy(msg, 72);
  }
  return msg;
}

export function parseAuthenticateMessage(buf: Buffer): AuthenticateMessage {
  checkHeader(buf, 3);
  if (buf.length < 64) throw new NtlmError('NTLM authenticate message is too short');
  const flags = buf.readUInt32LE(60);
  const unicode = (flags & NTLMSSP_NEGOTIATE_UNICODE) !== 0;
  const str = (b: Buffer) => (unicode ? b.toString('utf16le') : b.toString('latin1'));
  // The payload starts at the lowest field offset; MIC exists when that leaves room for it.
  const offsets = [12, 20, 28, 36, 44, 52].map((at) => buf.readUInt32LE(at + 4));
  const payloadStart = Math.min(...offsets);
  return {
    flags,
    lmChallengeResponse: field(buf, 12),
    ntChallengeResponse: field(buf, 20),
    domain: str(field(buf, 28)),
    user: str(field(buf, 36)),
    workstation: str(field(buf, 44)),
    encryptedRandomSessionKey: field(buf, 52),
    mic: payloadStart >= 88 ? Buffer.from(buf.subarray(72, 88)) : undefined,
    raw: Buffer.from(buf),
  };
}

/**
 * Server side (§3.2.5.1.2): recompute the NTLMv2 proof from the password and check
 * it, and the MIC when the client flagged one. True only for the right password.
 */
export function verifyAuthenticateMessage(opts: {
  auth: AuthenticateMessage;
  serverChallenge: Buffer;
  password: string;
  negotiate?: Buffer;
  challenge?: Buffer;
}): boolean {
  const nt = opts.auth.ntChallengeResponse;
  if (nt.length <= 24) return false; // NTLMv1 or anonymous: refused
  const proof = nt.subarray(0, 16);
  const temp = nt.subarray(16);
  // Windows tries the domain as sent; a client that sent none hashes with an empty one.
  const key = ntowfv2(opts.password, opts.auth.user, opts.auth.domain);
  const expected = hmacMd5(key, opts.serverChallenge, temp);
  if (!timingSafeEqual(expected, proof)) return false;
  const blobPairs = parseAvPairs(temp.subarray(28));
  const f = blobPairs.find((p) => p.id === MsvAvFlags);
  if (f && (f.value.readUInt32LE(0) & MSV_AV_FLAG_MIC_PRESENT) !== 0) {
    if (!opts.auth.mic || !opts.negotiate || !opts.challenge) return false;
    const sessionBaseKey = hmacMd5(key, proof);
    const zeroed = Buffer.from(opts.auth.raw);
    zeroed.fill(0, 72, 88);
    const mic = hmacMd5(sessionBaseKey, opts.negotiate, opts.challenge, zeroed);
    if (!timingSafeEqual(mic, opts.auth.mic)) return false;
  }
  return true;
}

/** `DOMAIN\user` -> {domain, user}; `user@realm` stays a user name (UPN), as Windows accepts it. */
export function splitDomainUser(name: string): { domain: string; user: string } {
  const i = name.indexOf('\\');
  if (i < 0) return { domain: '', user: name };
  return { domain: name.slice(0, i), user: name.slice(i + 1) };
}

/** Finds the NTLMSSP token inside a SPNEGO (Negotiate) token, or returns it unchanged if raw. */
export function unwrapSpnego(token: Buffer): Buffer {
  if (token.subarray(0, 8).equals(SIGNATURE)) return token;
  const i = token.indexOf(SIGNATURE);
  if (i < 0) throw new NtlmError('Negotiate token carries no NTLMSSP message (Kerberos is not supported)');
  // The NTLM token is a DER OCTET STRING: take exactly its length, so that trailing
  // SPNEGO fields (mechListMIC) do not end up in the bytes the MIC is computed over.
  if (i >= 2 && token[i - 2] === 0x04 && token[i - 1]! < 0x80) return token.subarray(i, i + token[i - 1]!);
  if (i >= 3 && token[i - 3] === 0x04 && token[i - 2] === 0x81) return token.subarray(i, i + token[i - 1]!);
  if (i >= 4 && token[i - 4] === 0x04 && token[i - 3] === 0x82) return token.subarray(i, i + token.readUInt16BE(i - 2));
  return token.subarray(i);
}
