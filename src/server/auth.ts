/** Optional HTTP Basic authentication for `bits serve` (RFC 7617). */
import { timingSafeEqual } from 'node:crypto';
import type { Http1Request, Http1Response } from './http1.js';

export interface BasicCredentials {
  user: string;
  password: string;
  realm?: string;
}

/** Undefined when the request is authorised; otherwise the 401 to send. */
export function checkBasicAuth(req: Http1Request, creds: BasicCredentials): Http1Response | undefined {
  const h = req.headers['authorization'];
  if (h) {
    const m = /^Basic\s+([A-Za-z0-9+/=]+)\s*$/i.exec(h);
    if (m) {
      const got = Buffer.from(m[1]!, 'base64');
      const want = Buffer.from(`${creds.user}:${creds.password}`, 'utf8');
      if (got.length === want.length && timingSafeEqual(got, want)) return undefined;
    }
  }
  return {
    status: 401,
    headers: { 'WWW-Authenticate': `Basic realm="${(creds.realm ?? 'bits').replace(/"/g, '')}", charset="UTF-8"` },
    body: '',
  };
}
