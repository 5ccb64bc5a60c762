/**
 * Test PKI made with the openssl CLI in a temp dir: a CA, server certificates for
 * 127.0.0.1/localhost (valid, expired, wrong host name, self-signed) and a client
 * certificate. EC P-256 keys so generation takes milliseconds.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface TestPki {
  dir: string;
  caFile: string;
  ca: Buffer;
  server: { cert: Buffer; key: Buffer };
  expired: { cert: Buffer; key: Buffer };
  wrongHost: { cert: Buffer; key: Buffer };
  selfSigned: { cert: Buffer; key: Buffer };
  client: { certFile: string; keyFile: string; cert: Buffer; key: Buffer };
  /** A second CA the server does not trust, with a client cert under it. */
  otherClient: { certFile: string; keyFile: string };
  cleanup(): void;
}

function ossl(dir: string, args: string[]): void {
  execFileSync('openssl', args, { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] });
}

const EC = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];

function makeCa(dir: string, name: string): void {
  ossl(dir, ['req', '-x509', ...EC, '-keyout', `${name}.key`, '-out', `${name}.crt`, '-days', '2', '-subj', `/CN=bits test ${name}`,
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign']);
}

function issue(dir: string, ca: string, name: string, ext: string, days = '2'): void {
  ossl(dir, ['req', ...EC, '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${name}`]);
  writeFileSync(join(dir, `${name}.ext`), ext);
  ossl(dir, ['x509', '-req', '-in', `${name}.csr`, '-CA', `${ca}.crt`, '-CAkey', `${ca}.key`, '-CAcreateserial', '-out', `${name}.crt`, '-days', days, '-extfile', `${name}.ext`]);
}

export function makeTestPki(): TestPki {
  const dir = mkdtempSync(join(tmpdir(), 'bits-pki-'));
  makeCa(dir, 'ca');
  makeCa(dir, 'otherca');
  const serverExt = 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n';
  issue(dir, 'ca', 'server', serverExt);
  // -days -1: notAfter is yesterday.
  issue(dir, 'ca', 'expired', serverExt, '-1');
  issue(dir, 'ca', 'wronghost', 'subjectAltName=DNS:other.invalid\nextendedKeyUsage=serverAuth\n');
  issue(dir, 'ca', 'client', 'extendedKeyUsage=clientAuth\n');
  issue(dir, 'otherca', 'otherclient', 'extendedKeyUsage=clientAuth\n');
  ossl(dir, ['req', '-x509', ...EC, '-keyout', 'selfsigned.key', '-out', 'selfsigned.crt', '-days', '2', '-subj', '/CN=localhost',
    '-addext', 'subjectAltName=IP:127.0.0.1,DNS:localhost']);
  const r = (f: string) => readFileSync(join(dir, f));
  const pair = (n: string) => ({ cert: r(`${n}.crt`), key: r(`${n}.key`) });
  return {
    dir,
    caFile: join(dir, 'ca.crt'),
    ca: r('ca.crt'),
    server: pair('server'),
    expired: pair('expired'),
    wrongHost: pair('wronghost'),
    selfSigned: pair('selfsigned'),
    client: { certFile: join(dir, 'client.crt'), keyFile: join(dir, 'client.key'), ...pair('client') },
    otherClient: { certFile: join(dir, 'otherclient.crt'), keyFile: join(dir, 'otherclient.key') },
    cleanup: () => rmSync(dir, { recursive: true, force: true }),
  };
}
