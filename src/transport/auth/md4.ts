/**
 * MD4 (RFC 1320), needed only for the NT hash (NTOWFv1/v2 in MS-NLMP §3.3).
 * Node 20 links OpenSSL 3, whose default provider no longer offers MD4, so
 * `crypto.createHash('md4')` throws there: this small pure version is the fallback.
 */
import { createHash } from 'node:crypto';

function rotl(x: number, n: number): number {
  return (x << n) | (x >>> (32 - n));
}

export function md4(data: Uint8Array): Buffer {
  const bitLen = data.length * 8;
  // Pad to 56 mod 64, then the 64-bit little-endian bit length (RFC 1320 §3.1-3.2).
  const padLen = ((data.length + 8) >>> 6) * 64 + 64;
  const msg = Buffer.alloc(padLen);
  msg.set(data);
  msg[data.length] = 0x80;
  msg.writeUInt32LE(bitLen >>> 0, padLen - 8);
  msg.writeUInt32LE(Math.floor(bitLen / 0x100000000) >>> 0, padLen - 4);

  let a = 0x67452301;
  let b = 0xefcdab89;
  let c = 0x98badcfe;
  let d = 0x10325476;
  const x = new Array<number>(16);
  const F = (p: number, q: number, r: number) => (p & q) | (~p & r);
  const G = (p: number, q: number, r: number) => (p & q) | (p & r) | (q & r);
  const H = (p: number, q: number, r: number) => p ^ q ^ r;

  for (let off = 0; off < padLen; off += 64) {
    for (let i = 0; i < 16; i++) x[i] = msg.readUInt32LE(off + i * 4);
    const aa = a, bb = b, cc = c, dd = d;
    // Round 1
    for (const i of [0, 4, 8, 12]) {
      a = rotl((a + F(b, c, d) + x[i]!) | 0, 3);
      d = rotl((d + F(a, b, c) + x[i + 1]!) | 0, 7);
      c = rotl((c + F(d, a, b) + x[i + 2]!) | 0, 11);
      b = rotl((b + F(c, d, a) + x[i + 3]!) | 0, 19);
    }
    // Round 2
    for (const i of [0, 1, 2, 3]) {
      a = rotl((a + G(b, c, d) + x[i]! + 0x5a827999) | 0, 3);
      d = rotl((d + G(a, b, c) + x[i + 4]! + 0x5a827999) | 0, 5);
      c = rotl((c + G(d, a, b) + x[i + 8]! + 0x5a827999) | 0, 9);
      b = rotl((b + G(c, d, a) + x[i + 12]! + 0x5a827999) | 0, 13);
    }
    // Round 3
    for (const i of [0, 2, 1, 3]) {
      a = rotl((a + H(b, c, d) + x[i]! + 0x6ed9eba1) | 0, 3);
      d = rotl((d + H(a, b, c) + x[i + 8]! + 0x6ed9eba1) | 0, 9);
      c = rotl((c + H(d, a, b) + x[i + 4]! + 0x6ed9eba1) | 0, 11);
      b = rotl((b + H(c, d, a) + x[i + 12]! + 0x6ed9eba1) | 0, 15);
    }
    a = (a + aa) | 0;
    b = (b + bb) | 0;
    c = (c + cc) | 0;
    d = (d + dd) | 0;
  }
  const out = Buffer.alloc(16);
  out.writeInt32LE(a, 0);
  out.writeInt32LE(b, 4);
  out.writeInt32LE(c, 8);
  out.writeInt32LE(d, 12);
  return out;
}

let nativeMd4: boolean | undefined;

/** MD4 via OpenSSL when it still has it (faster), else the pure version. */
export function md4Digest(data: Uint8Array): Buffer {
  if (nativeMd4 === undefined) {
    try {
      createHash('md4').update('').digest();
      nativeMd4 = true;
    } catch {
      nativeMd4 = false;
    }
  }
  return nativeMd4 ? createHash('md4').update(data).digest() : md4(data);
}
