/**
 * HTTP Digest (RFC 7616): MD5, SHA-256, SHA-512-256 and their -sess variants,
 * qop=auth with nonce counting, stale=true handled as "same password, new nonce",
 * userhash. auth-int is not offered (it would hash every fragment body twice).
 */
import { createHash, randomBytes } from 'node:crypto';
import { quote, type Challenge } from './challenge.js';
import type { AuthRequestInfo, AuthSession } from './session.js';
import type { Credentials } from '../credentials.js';

const ALGORITHMS: Record<string, { hash: string; strength: number }> = {
  'md5': { hash: 'md5', strength: 1 },
  'md5-sess': { hash: 'md5', strength: 1 },
  'sha-256': { hash: 'sha256', strength: 2 },
  'sha-256-sess': { hash: 'sha256', strength: 2 },
  'sha-512-256': { hash: 'sha512-256', strength: 3 },
  'sha-512-256-sess': { hash: 'sha512-256', strength: 3 },
};

function qops(c: Challenge): string[] | undefined {
  const q = c.params['qop'];
  return q === undefined ? undefined : q.split(',').map((s) => s.trim().toLowerCase());
}

/** Higher is stronger; -1 when we cannot answer this challenge. */
export function digestStrength(c: Challenge): number {
  const alg = ALGORITHMS[(c.params['algorithm'] ?? 'MD5').toLowerCase()];
  if (!alg || !c.params['nonce'] || c.params['realm'] === undefined) return -1;
  const q = qops(c);
  if (q && !q.includes('auth')) return -1;
  return alg.strength;
}

export function digestHash(algorithm: string, data: string): string {
  const alg = ALGORITHMS[algorithm.toLowerCase()];
  if (!alg) throw new Error(`unsupported Digest algorithm ${algorithm}`);
  return createHash(alg.hash).update(data, 'utf8').digest('hex');
}

export interface DigestParams {
  algorithm: string;
  user: string;
  realm: string;
  password: string;
  method: string;
  uri: string;
  nonce: string;
  cnonce?: string;
  nc?: string;
  qop?: string;
}

/** The `response` value of RFC 7616 §3.4.1 (used by the client and by the test server). */
export function digestResponse(p: DigestParams): string {
  const H = (s: string) => digestHash(p.algorithm, s);
  let ha1 = H(`${p.user}:${p.realm}:${p.password}`);
  if (p.algorithm.toLowerCase().endsWith('-sess')) ha1 = H(`${ha1}:${p.nonce}:${p.cnonce ?? ''}`);
  const ha2 = H(`${p.method}:${p.uri}`);
  return p.qop ? H(`${ha1}:${p.nonce}:${p.nc}:${p.cnonce}:${p.qop}:${ha2}`) : H(`${ha1}:${p.nonce}:${ha2}`);
}

export class DigestSession implements AuthSession {
  readonly scheme = 'Digest';
  readonly connectionBound = false;
  readonly preemptive = true;
  private challenge: Challenge;
  private nc = 0;
  private cnonce = randomBytes(12).toString('hex');

  constructor(challenge: Challenge, private readonly creds: Credentials) {
    this.challenge = challenge;
  }

  authorization(req: AuthRequestInfo): string {
    const c = this.challenge.params;
    const algorithm = c['algorithm'] ?? 'MD5';
    const realm = c['realm'] ?? '';
    const qop = qops(this.challenge) ? 'auth' : undefined;
    const nc = (++this.nc).toString(16).padStart(8, '0');
    const response = digestResponse({
      algorithm,
      user: this.creds.user,
      realm,
      password: this.creds.password,
      method: req.method,
      uri: req.uri,
      nonce: c['nonce']!,
      cnonce: this.cnonce,
      nc,
      qop,
    });
    const parts: string[] = [];
    if (c['userhash']?.toLowerCase() === 'true') {
      parts.push(`username=${quote(digestHash(algorithm, `${this.creds.user}:${realm}`))}`, 'userhash=true');
    } else if (/^[\x20-\x7e]*$/.test(this.creds.user)) {
      parts.push(`username=${quote(this.creds.user)}`);
    } else {
      parts.push(`username*=UTF-8''${encodeURIComponent(this.creds.user)}`);
    }
    parts.push(`realm=${quote(realm)}`, `uri=${quote(req.uri)}`, `algorithm=${algorithm}`, `nonce=${quote(c['nonce']!)}`);
    if (qop) parts.push(`nc=${nc}`, `cnonce=${quote(this.cnonce)}`, `qop=${qop}`);
    parts.push(`response=${quote(response)}`);
    if (c['opaque'] !== undefined) parts.push(`opaque=${quote(c['opaque'])}`);
    return 'Digest ' + parts.join(', ');
  }

  onChallenge(challenges: Challenge[]): 'continue' | 'rejected' | 'unsupported' {
    const mine = challenges.filter((c) => c.scheme.toLowerCase() === 'digest' && digestStrength(c) >= 0);
    if (mine.length === 0) return 'unsupported';
    // RFC 7616 §3.3: stale=true means our password was right but the nonce expired.
    const stale = mine.find((c) => c.params['stale']?.toLowerCase() === 'true');
    if (stale) {
      this.challenge = stale;
      this.nc = 0;
      this.cnonce = randomBytes(12).toString('hex');
      return 'continue';
    }
    return 'rejected';
  }
}
