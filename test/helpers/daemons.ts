/**
 * Real daemons for the transport tests: squid (stock Debian CONNECT rules plus Basic
 * auth), tinyproxy (BasicAuth) and nginx over TLS demanding a client certificate,
 * each with its own config in a temp dir, in the foreground on a loopback port the
 * test picks, killed afterwards. `.ci/run` installs them; a test skips (with the
 * reason) only when the binary is not there.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync, chmodSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { nginxConfHead } from '../download/helpers.js';

export const SQUID = ['/usr/sbin/squid', '/usr/bin/squid', '/usr/local/sbin/squid'].find((p) => existsSync(p));
export const NGINX = ['/usr/sbin/nginx', '/usr/bin/nginx', '/usr/local/sbin/nginx', '/usr/local/bin/nginx'].find((p) => existsSync(p));
export const TINYPROXY = ['/usr/bin/tinyproxy', '/usr/sbin/tinyproxy', '/usr/local/bin/tinyproxy'].find((p) => existsSync(p));
const NCSA_AUTH = ['/usr/lib/squid/basic_ncsa_auth', '/usr/lib64/squid/basic_ncsa_auth', '/usr/libexec/squid/basic_ncsa_auth'].find((p) => existsSync(p));

/** Why a daemon test cannot run here, or undefined. */
export const squidMissing = !SQUID ? 'squid is not installed (apt-get install squid; .ci/run installs it)' : !NCSA_AUTH ? 'squid has no basic_ncsa_auth helper' : undefined;
export const nginxMissing = !NGINX ? 'nginx is not installed (apt-get install nginx; .ci/run installs it)' : undefined;
export const tinyproxyMissing = !TINYPROXY ? 'tinyproxy is not installed (apt-get install tinyproxy; .ci/run installs it)' : undefined;

export interface RunningProxy {
  url: string;
  port: number;
  dir: string;
  /** squid: access.log lines so far (`… TCP_MISS/200 … GET http://… user …`). */
  accessLog(): string[];
  stop(): Promise<void>;
}

/** A free loopback port: bound and released (the daemon binds it right after). */
export async function freePort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', () => r()));
  const port = (s.address() as net.AddressInfo).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

/** Resolves once something accepts connections on the port, within `ms`. */
async function waitListening(port: number, child: ChildProcess, output: () => string, ms = 15_000): Promise<void> {
  const deadline = Date.now() + ms;
  for (let i = 0; Date.now() < deadline && i < 300; i++) {
    if (child.exitCode !== null || child.signalCode !== null) throw new Error(`proxy exited: ${output()}`);
    const ok = await new Promise<boolean>((resolve) => {
      const c = net.connect({ host: '127.0.0.1', port }, () => {
        c.destroy();
        resolve(true);
      });
      c.on('error', () => resolve(false));
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  child.kill('SIGKILL');
  throw new Error(`proxy did not listen on ${port} within ${ms} ms: ${output()}`);
}

function startDaemon(cmd: string, args: string[], port: number, dir: string, accessLog: string | undefined): Promise<RunningProxy> {
  const child = spawn(cmd, args, { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout!.setEncoding('utf8').on('data', (d: string) => (out += d));
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (out += d));
  const exited = new Promise<void>((r) => child.on('close', () => r()));
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
    const t = setTimeout(() => child.kill('SIGKILL'), 3000);
    await exited;
    clearTimeout(t);
    rmSync(dir, { recursive: true, force: true });
  };
  return waitListening(port, child, () => out).then(
    () => ({
      url: `http://127.0.0.1:${port}`,
      port,
      dir,
      accessLog: () => (accessLog && existsSync(accessLog) ? readFileSync(accessLog, 'utf8').split('\n').filter(Boolean) : []),
      stop,
    }),
    async (e: unknown) => {
      await stop();
      throw e;
    },
  );
}

/**
 * squid with Debian's stock access rules (Safe_ports, `deny CONNECT !SSL_ports`)
 * and Basic proxy auth for `user`:`password`; no cache, DNS pointed at loopback.
 */
export async function startSquid(user: string, password: string): Promise<RunningProxy> {
  if (squidMissing) throw new Error(squidMissing);
  const dir = mkdtempSync(join(tmpdir(), 'bits-squid-'));
  // squid drops root for its cache_effective_user (proxy): it must write its logs here.
  chmodSync(dir, 0o777);
  const hash = execFileSync('openssl', ['passwd', '-apr1', password], { encoding: 'utf8' }).trim();
  writeFileSync(join(dir, 'passwd'), `${user}:${hash}\n`, { mode: 0o644 });
  const port = await freePort();
  writeFileSync(
    join(dir, 'squid.conf'),
    `http_port 127.0.0.1:${port}
pid_filename ${dir}/squid.pid
cache_log ${dir}/cache.log
access_log stdio:${dir}/access.log
cache_store_log none
cache deny all
cache_mem 4 MB
coredump_dir ${dir}
visible_hostname bits-test
dns_nameservers 127.0.0.1
shutdown_lifetime 0 seconds
auth_param basic program ${NCSA_AUTH} ${dir}/passwd
auth_param basic children 2
auth_param basic realm bits-test-squid
acl SSL_ports port 443
acl Safe_ports port 80
acl Safe_ports port 443
acl Safe_ports port 1025-65535
acl CONNECT method CONNECT
acl authed proxy_auth REQUIRED
http_access deny !Safe_ports
http_access deny CONNECT !SSL_ports
http_access allow localhost authed
http_access deny all
`,
  );
  return startDaemon(SQUID!, ['-N', '-f', join(dir, 'squid.conf')], port, dir, join(dir, 'access.log'));
}

/** tinyproxy with BasicAuth `user` `password` (it answers a wrong password with 401). */
export async function startTinyproxy(user: string, password: string): Promise<RunningProxy> {
  if (tinyproxyMissing) throw new Error(tinyproxyMissing);
  const dir = mkdtempSync(join(tmpdir(), 'bits-tinyproxy-'));
  chmodSync(dir, 0o755);
  const port = await freePort();
  writeFileSync(join(dir, 'tinyproxy.conf'), `Port ${port}\nListen 127.0.0.1\nTimeout 60\nLogLevel Info\nMaxClients 20\nBasicAuth ${user} ${password}\n`);
  return startDaemon(TINYPROXY!, ['-d', '-c', join(dir, 'tinyproxy.conf')], port, dir, undefined);
}

/**
 * nginx serving `root` over TLS with `ssl_verify_client on` against `clientCa`: a
 * request without a client certificate gets 400 ("No required SSL certificate was
 * sent"), after a handshake that succeeded.
 */
export async function startClientCertNginx(root: string, tls: { certFile: string; keyFile: string; clientCaFile: string }): Promise<RunningProxy> {
  if (nginxMissing) throw new Error(nginxMissing);
  const dir = mkdtempSync(join(tmpdir(), 'bits-nginx-tls-'));
  const port = await freePort();
  writeFileSync(
    join(dir, 'nginx.conf'),
    `${nginxConfHead(dir, { workerConnections: 64 })}
  server {
    listen 127.0.0.1:${port} ssl;
    ssl_certificate ${tls.certFile};
    ssl_certificate_key ${tls.keyFile};
    ssl_client_certificate ${tls.clientCaFile};
    ssl_verify_client on;
    root ${root};
    location / { }
  }
}
`,
  );
  const d = await startDaemon(NGINX!, ['-c', join(dir, 'nginx.conf'), '-p', dir], port, dir, undefined);
  return { ...d, url: `https://127.0.0.1:${port}` };
}
