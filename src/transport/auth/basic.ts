/** HTTP Basic (RFC 7617): the password in clear base64, so only over TLS in earnest. */
import type { AuthSession } from './session.js';
import type { Credentials } from '../credentials.js';

export class BasicSession implements AuthSession {
  readonly scheme = 'Basic';
  readonly connectionBound = false;
  readonly preemptive = true;
  private readonly value: string;

  constructor(creds: Credentials) {
    // RFC 7617 §2.1: UTF-8 is what servers announcing charset="UTF-8" expect, and what
    // everything else gets in practice.
    this.value = 'Basic ' + Buffer.from(`${creds.user}:${creds.password}`, 'utf8').toString('base64');
  }

  authorization(): string {
    return this.value;
  }

  onChallenge(): 'rejected' {
    return 'rejected';
  }
}
