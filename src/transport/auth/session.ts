/**
 * One authentication exchange for an origin (or a proxy): which header to send next,
 * and what a further 401/407 means (§3.1.5.1.7: resend once with credentials; a 401
 * after the credentials went out is an error, not a loop).
 */
import type { Challenge } from './challenge.js';
import type { Credentials } from '../credentials.js';
import { BasicSession } from './basic.js';
import { DigestSession, digestStrength } from './digest.js';
import { NtlmSession } from './negotiate.js';

export interface AuthRequestInfo {
  method: string;
  /** The request-target as sent (path and query; authority-form for CONNECT). */
  uri: string;
}

export interface AuthSession {
  readonly scheme: 'Basic' | 'Digest' | 'NTLM' | 'Negotiate';
  /** NTLM/Negotiate authenticate the TCP connection: every leg must use the same one. */
  readonly connectionBound: boolean;
  /** Basic/Digest may be sent with later requests without waiting for a 401 (saves a round trip per fragment). */
  readonly preemptive: boolean;
  authorization(req: AuthRequestInfo): string;
  /**
   * The answer to our last header was another 401/407 with `challenges`:
   * 'continue' = send again (next handshake leg, or a stale Digest nonce);
   * 'rejected' = the credentials were refused;
   * 'unsupported' = the server did not take this scheme up at all (try another offered one).
   */
  onChallenge(challenges: Challenge[]): 'continue' | 'rejected' | 'unsupported';
}

/** Strongest first: Negotiate (answered with NTLM, no Kerberos here) > NTLM > Digest > Basic. */
export function rankChallenges(challenges: Challenge[]): Challenge[] {
  const rank = (c: Challenge): number => {
    switch (c.scheme.toLowerCase()) {
      case 'negotiate':
        return 400;
      case 'ntlm':
        return 300;
      case 'digest': {
        const s = digestStrength(c);
        return s < 0 ? -1 : 200 + s;
      }
      case 'basic':
        return 100;
      default:
        return -1;
    }
  };
  return challenges
    .map((c) => ({ c, r: rank(c) }))
    .filter((x) => x.r >= 0)
    .sort((a, b) => b.r - a.r)
    .map((x) => x.c);
}

/** A session for the strongest offered scheme not yet tried, or undefined. */
export function chooseSession(challenges: Challenge[], creds: Credentials, tried: ReadonlySet<string>): AuthSession | undefined {
  for (const c of rankChallenges(challenges)) {
    const scheme = c.scheme.toLowerCase();
    if (tried.has(scheme)) continue;
    switch (scheme) {
      case 'negotiate':
        return new NtlmSession('Negotiate', creds);
      case 'ntlm':
        return new NtlmSession('NTLM', creds);
      case 'digest':
        return new DigestSession(c, creds);
      case 'basic':
        return new BasicSession(creds);
    }
  }
  return undefined;
}

/** For messages: the schemes a server offered, e.g. "Negotiate, NTLM". */
export function offeredSchemes(challenges: Challenge[]): string {
  return [...new Set(challenges.map((c) => c.scheme))].join(', ') || 'none';
}
