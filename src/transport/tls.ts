/**
 * TLS settings (--cacert, --cert/--key, --insecure) and the one-line explanation of
 * a failed handshake. --cacert replaces the system CAs, as in curl.
 */
import { readFileSync } from 'node:fs';
import { createPrivateKey, X509Certificate, type KeyObject } from 'node:crypto';
import { createRequire } from 'node:module';
import type { ConnectionOptions } from 'node:tls';
import { LocalFileError, TlsError, UsageError } from '../errors.js';

/**
 * node:tls, loaded when a TLS connection is first made: a plain-http transfer never
 * needs it, and loading it (and its secure-context set-up) is start-up time (issue 13).
 */
let tlsModule: typeof import('node:tls') | undefined;
export function nodeTls(): typeof import('node:tls') {
  return (tlsModule ??= createRequire(import.meta.url)('node:tls') as typeof import('node:tls'));
}

export interface TlsSettings {
  /** PEM: trusted CAs instead of the system store. */
  ca?: string | Buffer;
  /** PEM client certificate (and chain). */
  cert?: string | Buffer;
  /** PEM PKCS#8 private key of the certificate. */
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

const PEM_CERT = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g;
/** PKCS#8, PKCS#1 (RSA), SEC1 (EC) and DSA keys, plain or encrypted; `EC PARAMETERS` blocks are skipped. */
const PEM_KEY = /-----BEGIN ((?:RSA |EC |DSA |ENCRYPTED )?PRIVATE KEY)-----[\s\S]+?-----END \1-----/g;

function codeOf(e: unknown): string {
  const x = e as { code?: string; reason?: string };
  return x?.code ?? x?.reason ?? 'unknown';
}

/**
 * The certificates in a --cert file: PEM blocks (a chain, possibly next to its key),
 * else one DER certificate. Returned as PEM, which is what node:tls expects.
 */
function readCertificates(buf: Buffer, file: string): { pem: string; leaf: X509Certificate } {
  const blocks = buf.toString('latin1').match(PEM_CERT) ?? [];
  try {
    if (blocks.length > 0) return { pem: blocks.join('\n') + '\n', leaf: new X509Certificate(blocks[0]!) };
    const der = new X509Certificate(buf);
    return { pem: der.toString(), leaf: der };
  } catch (e) {
    if (blocks.length > 0) throw new UsageError(`--cert ${file}: the certificate cannot be read (${codeOf(e)})`);
    throw new UsageError(
      `--cert ${file}: no certificate in the file (PEM or DER expected; for a PKCS#12 .p12/.pfx file: openssl pkcs12 -in ${file} -nodes -out cert.pem)`,
    );
  }
}

/**
 * The private key in a --key (or combined --cert) file: the first PEM key block of
 * any common kind, else a DER PKCS#8 / PKCS#1 / SEC1 key. undefined if there is none.
 * Errors are told apart by OpenSSL's code, never by its message text.
 */
function readPrivateKey(buf: Buffer, file: string, flag: string): KeyObject | undefined {
  const block = buf.toString('latin1').match(PEM_KEY)?.[0];
  if (block) {
    if (/^-----BEGIN ENCRYPTED|Proc-Type: 4,ENCRYPTED/m.test(block)) {
      throw new UsageError(`${flag} ${file}: the private key is encrypted and bits cannot ask for its passphrase: decrypt it with openssl pkey -in ${file} -out key.pem`);
    }
    try {
      return createPrivateKey(block);
    } catch (e) {
      throw new UsageError(`${flag} ${file}: the private key cannot be read (${codeOf(e)})`);
    }
  }
  if (/-----BEGIN /.test(buf.toString('latin1'))) return undefined; // PEM, but no key in it
  for (const type of ['pkcs8', 'pkcs1', 'sec1'] as const) {
    try {
      return createPrivateKey({ key: buf, format: 'der', type });
    } catch {
      /* not this encoding: try the next */
    }
  }
  return undefined;
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
    const certFile = readPem(opts.cert, '--cert');
    const { pem, leaf } = readCertificates(certFile, opts.cert);
    const key = opts.key ? readPrivateKey(readPem(opts.key, '--key'), opts.key, '--key') : readPrivateKey(certFile, opts.cert, '--cert');
    if (!key) {
      throw new UsageError(opts.key ? `--key ${opts.key}: no private key in the file (PEM or DER expected)` : `--cert ${opts.cert} holds no private key: add --key FILE`);
    }
    if (!leaf.checkPrivateKey(key)) throw new UsageError(`--cert ${opts.cert} and --key ${opts.key ?? opts.cert} do not belong together`);
    s.cert = Buffer.from(pem);
    // PKCS#8 PEM: the one form every OpenSSL build node:tls links against reads.
    s.key = Buffer.from(key.export({ type: 'pkcs8', format: 'pem' }) as string);
    try {
      nodeTls().createSecureContext({ cert: s.cert, key: s.key });
    } catch (e) {
      throw new UsageError(`--cert/--key: the certificate and key cannot be used for TLS (${codeOf(e)})`);
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

/**
 * What a refusal (4xx) over TLS may really mean, when the status says nothing: nginx
 * with `ssl_verify_client on` completes the handshake without a client certificate
 * and answers 400 ("No required SSL certificate was sent" in a body a HEAD never
 * gets). `certificateRequested` is whether the server sent a CertificateRequest in
 * the handshake (undefined: unknown). undefined when there is nothing to add.
 */
export function refusalHint(status: number, url: URL, certificateRequested: boolean | undefined, tls: TlsSettings | undefined): string | undefined {
  if (url.protocol !== 'https:' || ![400, 403, 495, 496].includes(status)) return undefined;
  if (tls?.cert) {
    return certificateRequested && status !== 403 ? 'the server may have refused the client certificate given with --cert' : undefined;
  }
  if (certificateRequested) return 'the server asked for a client certificate during the TLS handshake and none was given: pass --cert FILE --key FILE';
  if (certificateRequested === undefined && status !== 403) return 'the server may require a client certificate: pass --cert FILE --key FILE';
  return undefined;
}

let insecureWarned = false;

/** --insecure: said once per process, on stderr (the caller's `warn`). */
export function warnInsecureOnce(warn: (msg: string) => void): void {
  if (insecureWarned) return;
  insecureWarned = true;
  warn('warning: --insecure: server certificates are not verified; anyone on the path can read and change this transfer');
}
