/**
 * TLS settings (--cacert, --cert/--key, --insecure) and the one-line explanation of
 * a failed handshake. --cacert replaces the system CAs, as in curl.
 */
import { readFileSync } from 'node:fs';
import { createSecureContext, type ConnectionOptions } from 'node:tls';
import { LocalFileError, TlsError, UsageError } from '../errors.js';

export interface TlsSettings {
  /** PEM: trusted CAs instead of the system store. */
  ca?: string | Buffer;
  /** PEM client certificate (may also hold the key). */
  cert?: string | Buffer;
  key?: string | Buffer;
  /** Skip server certificate verification (`--insecure`). */
  insecure?: boolean;
}

function readPem(file: string, flag: string): Buffer {
  try {
    return readFileSync(file);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new LocalFileError(`${flag} ${file}: ${code === 'ENOENT' ? 'no such file' : code === 'EACCES' ? 'permission denied' : (e as Error).message}`, file, { cause: e });
  }
}

/** Reads and checks the files named by --cacert, --cert and --key. */
export function loadTlsFiles(opts: { cacert?: string; cert?: string; key?: string; insecure?: boolean }): TlsSettings {
  const s: TlsSettings = { insecure: !!opts.insecure };
  if (opts.cacert) {
    s.ca = readPem(opts.cacert, '--cacert');
    if (!/-----BEGIN CERTIFICATE-----/.test(s.ca.toString('latin1'))) throw new UsageError(`--cacert ${opts.cacert}: no PEM certificate in the file`);
  }
  if (opts.key && !opts.cert) throw new UsageError('--key needs --cert');
  if (opts.cert) {
    s.cert = readPem(opts.cert, '--cert');
    s.key = opts.key ? readPem(opts.key, '--key') : s.cert;
    try {
      createSecureContext({ cert: s.cert, key: s.key });
    } catch (e) {
      const m = (e as Error).message;
      throw new UsageError(
        /mismatch/i.test(m)
          ? `--cert ${opts.cert} and --key ${opts.key ?? opts.cert} do not belong together`
          : !opts.key && /key/i.test(m)
            ? `--cert ${opts.cert} holds no private key: add --key FILE`
            : `--cert/--key: ${m}`,
      );
    }
  }
  return s;
}

/** The node:tls options for a connection with these settings. */
export function tlsConnectOptions(s: TlsSettings | undefined): ConnectionOptions {
  const o: ConnectionOptions = {};
  if (!s) return o;
  if (s.ca) o.ca = s.ca;
  if (s.cert) o.cert = s.cert;
  if (s.key) o.key = s.key;
  if (s.insecure) o.rejectUnauthorized = false;
  return o;
}

const CERT_PROBLEMS: Record<string, string> = {
  DEPTH_ZERO_SELF_SIGNED_CERT: 'the server certificate is self-signed (trust it with --cacert FILE, or skip checks with --insecure)',
  SELF_SIGNED_CERT_IN_CHAIN: 'the server certificate chain ends in a self-signed CA that is not trusted (add it with --cacert FILE)',
  UNABLE_TO_VERIFY_LEAF_SIGNATURE: 'the server certificate was issued by an unknown CA (trust the CA with --cacert FILE)',
  UNABLE_TO_GET_ISSUER_CERT_LOCALLY: 'the server certificate was issued by an unknown CA (trust the CA with --cacert FILE)',
  UNABLE_TO_GET_ISSUER_CERT: 'the server certificate was issued by an unknown CA (trust the CA with --cacert FILE)',
  CERT_HAS_EXPIRED: 'the server certificate has expired',
  CERT_NOT_YET_VALID: 'the server certificate is not valid yet (check the clock)',
  ERR_TLS_CERT_ALTNAME_INVALID: 'the server certificate does not match the host name',
  CERT_REVOKED: 'the server certificate has been revoked',
  CERT_SIGNATURE_FAILURE: 'the server certificate signature is invalid',
  CERT_UNTRUSTED: 'the server certificate is not trusted',
  INVALID_CA: 'a CA certificate in the chain is invalid',
  ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED: 'the server requires a client certificate (--cert FILE --key FILE)',
  ERR_SSL_SSLV3_ALERT_BAD_CERTIFICATE: 'the server rejected the client certificate',
  ERR_SSL_TLSV1_ALERT_UNKNOWN_CA: 'the server does not trust the issuer of the client certificate',
  ERR_SSL_SSLV3_ALERT_CERTIFICATE_UNKNOWN: 'the server rejected the client certificate',
  ERR_SSL_SSLV3_ALERT_HANDSHAKE_FAILURE: 'the TLS handshake failed (no common protocol or cipher, or a client certificate is required)',
  ERR_SSL_WRONG_VERSION_NUMBER: 'the server did not answer with TLS (is it plain http?)',
  ERR_SSL_PACKET_LENGTH_TOO_LONG: 'the server did not answer with TLS (is it plain http?)',
  ERR_SSL_TLSV1_ALERT_PROTOCOL_VERSION: 'the server and bits share no TLS version',
};

/** A TlsError with one line naming the problem, or undefined if `err` is not a TLS failure. */
export function describeTlsError(err: unknown, host: string): TlsError | undefined {
  const e = err as { code?: string; message?: string; cause?: { code?: string; message?: string } } | undefined;
  const code = e?.code ?? e?.cause?.code;
  if (typeof code !== 'string') return undefined;
  const known = CERT_PROBLEMS[code];
  if (known) return new TlsError(`TLS to ${host} failed: ${known}`, { cause: err });
  if (/CERT|SSL|TLS|SELF_SIGNED|UNABLE_TO_VERIFY/.test(code)) {
    return new TlsError(`TLS to ${host} failed: ${(e?.message ?? code).replace(/\s*\n[\s\S]*$/, '')} (${code})`, { cause: err });
  }
  return undefined;
}

let insecureWarned = false;

/** --insecure: said once per process, on stderr (the caller's `warn`). */
export function warnInsecureOnce(warn: (msg: string) => void): void {
  if (insecureWarned) return;
  insecureWarned = true;
  warn('warning: --insecure: server certificates are not verified; anyone on the path can read and change this transfer');
}
