/**
 * NTLM and Negotiate over HTTP ([MS-NTHT]). Without Kerberos, a Negotiate offer is
 * answered the way Windows does when no Kerberos ticket can be had: raw NTLM tokens
 * under the Negotiate scheme name. Both are connection-bound: the caller must send
 * every leg on one TCP connection.
 */
import type { Challenge } from './challenge.js';
import type { AuthSession } from './session.js';
import type { Credentials } from '../credentials.js';
import { createAuthenticateMessage, createNegotiateMessage, parseChallengeMessage, splitDomainUser, unwrapSpnego } from './ntlm.js';

export class NtlmSession implements AuthSession {
  readonly connectionBound = true;
  readonly preemptive = false;
  private negotiate?: Buffer;
  private next?: string;
  private sentAuthenticate = false;

  constructor(
    readonly scheme: 'NTLM' | 'Negotiate',
    private readonly creds: Credentials,
    private readonly workstation = '',
  ) {}

  authorization(): string {
    if (this.next) return this.next;
    this.negotiate = createNegotiateMessage();
    return `${this.scheme} ${this.negotiate.toString('base64')}`;
  }

  onChallenge(challenges: Challenge[]): 'continue' | 'rejected' | 'unsupported' {
    if (this.sentAuthenticate) return 'rejected';
    const c = challenges.find((x) => x.scheme.toLowerCase() === this.scheme.toLowerCase());
    // A bare scheme name in answer to our NEGOTIATE: the server did not take it up.
    if (!c?.token68 || !this.negotiate) return 'unsupported';
    let challenge;
    try {
      challenge = parseChallengeMessage(unwrapSpnego(Buffer.from(c.token68, 'base64')));
    } catch {
      return 'unsupported';
    }
    const { domain, user } = splitDomainUser(this.creds.user);
    const msg = createAuthenticateMessage(this.negotiate, challenge, {
      user,
      domain,
      password: this.creds.password,
      workstation: this.workstation,
    });
    this.next = `${this.scheme} ${msg.toString('base64')}`;
    this.sentAuthenticate = true;
    return 'continue';
  }
}
