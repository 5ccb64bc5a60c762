/**
 * Forward proxies: which proxy a URL goes through (--proxy, then HTTP_PROXY /
 * HTTPS_PROXY / ALL_PROXY with NO_PROXY, as curl reads them), how a request reaches
 * it, and proxy authentication.
 *
 * How a request reaches the proxy (what curl and browsers do):
 * - an https:// target goes through a CONNECT tunnel (TLS end to end);
 * - an http:// target is sent to the proxy in absolute form (RFC 7230 §5.3.2,
 *   `GET http://host/path HTTP/1.1` with Proxy-Authorization) over a kept-alive
 *   connection to the proxy, because most corporate proxies (squid's stock
 *   `http_access deny CONNECT !SSL_ports`) refuse CONNECT to anything but port 443.
 *   `proxyTunnel: true` forces a tunnel for http too, and NTLM/Negotiate to an http
 *   origin switches that origin to a tunnel (see HttpTransport): a forward proxy may
 *   carry each request on a different server connection, and NTLM authenticates the
 *   connection.
 *
 * We tunnel with our own connector rather than undici's ProxyAgent because ProxyAgent
 * turns a 407 into an opaque error: it cannot answer a Proxy-Authenticate challenge,
 * and NTLM proxy authentication needs several CONNECTs on one proxy connection. Both
 * paths share answerProxyChallenge (Basic, Digest, NTLM, Negotiate).
 */
import net from 'node:net';
import type { ConnectionOptions } from 'node:tls';
import { createRequire } from 'node:module';
import type { buildConnector as BuildConnector } from 'undici';
import { AuthError, ServerError, TimeoutError, TransportError, UsageError, BitsError } from '../errors.js';
import { parseChallenges, type Challenge } from './auth/challenge.js';
import { HRESULT } from '../protocol/hresult.js';
import { chooseSession, offeredSchemes, type AuthSession } from './auth/session.js';
import { Credentials, PROXY_PASSWORD_VARIABLE, registerSecret, type CredentialProvider } from './credentials.js';
import { describeTlsError, nodeTls } from './tls.js';

/** A proxy URL from an option or the environment: scheme defaults to http; socks is refused. */
export function parseProxyUrl(value: string, from = '--proxy'): URL {
  const v = /^[a-z][a-z0-9+.-]*:\/\//i.test(value) ? value : `http://${value}`;
  let u: URL;
  try {
    u = new URL(v);
  } catch {
    throw new UsageError(`${from}: not a valid proxy URL`);
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') {
    throw new UsageError(`${from}: ${u.protocol.replace(':', '')} proxies are not supported (use an http:// or https:// proxy)`);
  }
  if (u.password) registerSecret(decodeURIComponent(u.password));
  return u;
}

function envValue(env: NodeJS.ProcessEnv, names: string[]): string | undefined {
  for (const n of names) {
    const v = env[n];
    if (v !== undefined && v !== '') return v;
  }
  return undefined;
}

function stripBrackets(h: string): string {
  return h.startsWith('[') && h.endsWith(']') ? h.slice(1, -1) : h;
}

function defaultPort(u: URL): number {
  return u.port ? Number(u.port) : u.protocol === 'https:' ? 443 : 80;
}

/**
 * curl's NO_PROXY rules: comma (or space) separated; `*` alone matches everything;
 * a name matches itself and its subdomains (a leading dot is optional); IP addresses
 * match exactly, or by CIDR prefix; `host:port` matches that port only.
 */
export function matchesNoProxy(target: URL, noProxy: string | undefined): boolean {
  if (!noProxy) return false;
  const host = stripBrackets(target.hostname).toLowerCase();
  const port = defaultPort(target);
  for (let entry of noProxy.split(/[\s,]+/)) {
    entry = entry.trim().toLowerCase();
    if (!entry) continue;
    if (entry === '*') return true;
    let entryPort: number | undefined;
    const m = /^\[([^\]]+)\](?::(\d+))?$/.exec(entry) ?? /^([^:]+):(\d+)$/.exec(entry);
    if (m) {
      entry = m[1]!;
      if (m[2]) entryPort = Number(m[2]);
    }
    if (entryPort !== undefined && entryPort !== port) continue;
    const slash = entry.indexOf('/');
    if (slash > 0) {
      const net0 = entry.slice(0, slash);
      const bits = Number(entry.slice(slash + 1));
      const family = net.isIP(net0);
      if (family && net.isIP(host) === family && Number.isInteger(bits)) {
        const bl = new net.BlockList();
        try {
          bl.addSubnet(net0, bits, family === 6 ? 'ipv6' : 'ipv4');
          if (bl.check(host, family === 6 ? 'ipv6' : 'ipv4')) return true;
        } catch {
          /* malformed CIDR: ignore the entry, as curl does */
        }
      }
      continue;
    }
    if (net.isIP(entry) || net.isIP(host)) {
      if (entry === host) return true;
      continue;
    }
    const name = entry.replace(/^\*?\./, '');
    if (host === name || host.endsWith('.' + name)) return true;
  }
  return false;
}

export interface ProxySelection {
  /** --proxy: a URL, or '' / false for "no proxy even if the environment names one". */
  proxy?: string | false;
  /** Overrides NO_PROXY/no_proxy from the environment. */
  noProxy?: string;
  env?: NodeJS.ProcessEnv;
}

/** The proxy for `target`, or undefined for a direct connection. */
export function resolveProxy(target: URL, sel: ProxySelection = {}): URL | undefined {
  const env = sel.env ?? process.env;
  const noProxy = sel.noProxy ?? envValue(env, ['no_proxy', 'NO_PROXY']);
  if (sel.proxy === false || sel.proxy === '') return undefined;
  let value: string | undefined;
  let from = '--proxy';
  if (sel.proxy !== undefined) value = sel.proxy;
  else {
    const names = target.protocol === 'https:' ? ['https_proxy', 'HTTPS_PROXY'] : ['http_proxy', 'HTTP_PROXY'];
    value = envValue(env, [...names, 'all_proxy', 'ALL_PROXY']);
    from = 'proxy environment variable';
  }
  if (!value || matchesNoProxy(target, noProxy)) return undefined;
  return parseProxyUrl(value, from);
}

/**
 * The credentials in a proxy URL (--proxy-user wins over them). A URL with a user
 * but no password (what a job stores) takes the password from BITS_PROXY_PASSWORD.
 */
export function proxyCredentialsFromUrl(proxy: URL, env: NodeJS.ProcessEnv = {}): Credentials | undefined {
  if (!proxy.username) return undefined;
  const password = proxy.password ? decodeURIComponent(proxy.password) : (env[PROXY_PASSWORD_VARIABLE] ?? '');
  return new Credentials(decodeURIComponent(proxy.username), password);
}

/** Per-proxy memory: credentials and the session that worked (sent pre-emptively next time). */
export interface ProxyAuthState {
  credentials?: CredentialProvider;
  session?: AuthSession;
  /**
   * `scheme realm` (lower case) of every challenge the proxy sent with a 407: a 401
   * carrying one of them came from the proxy, not the server (tinyproxy answers a
   * wrong proxy password with 401 and its own realm).
   */
  realms?: Set<string>;
}

function realmKey(c: Challenge): string {
  return `${c.scheme.toLowerCase()} ${(c.params['realm'] ?? '').toLowerCase()}`;
}

/** Notes the realms of a proxy's 407 challenges (see ProxyAuthState.realms). */
export function rememberProxyRealms(auth: ProxyAuthState, challenges: Challenge[]): void {
  auth.realms ??= new Set();
  for (const c of challenges) auth.realms.add(realmKey(c));
}

/**
 * Whether a 401 answering a request that carried Proxy-Authorization is the proxy
 * refusing its credentials (a proxy that says 401 where RFC 7235 says 407): it
 * challenges with a realm the proxy itself offered in its 407, and has no Via
 * header (a proxy adds one to every response it forwards, RFC 7230 §5.7.1, so a
 * server's 401 in the same realm still reaches the server's credentials).
 */
export function isProxyRefusal401(auth: ProxyAuthState, wwwAuthenticate: string | undefined, via: string | undefined): boolean {
  if (!auth.realms?.size || via) return false;
  return parseChallenges(wwwAuthenticate).some((c) => auth.realms!.has(realmKey(c)));
}

/** The AuthError for a proxy that refused, named as such (exit 6). */
export function proxyAuthError(proxyName: string, request: string, message: string, status = 407): AuthError {
  return new AuthError({ httpStatus: status, request, url: `proxy ${proxyName}` }, message);
}

/** A 401 from the proxy (see isProxyRefusal401), as the AuthError it really is. */
export function proxyRefused401(proxyName: string, request: string, scheme: string | undefined): AuthError {
  return proxyAuthError(
    proxyName,
    request,
    `proxy ${proxyName} rejected the proxy credentials (it answered HTTP 401 instead of 407${scheme ? `, ${scheme}` : ''}): check --proxy-user / BITS_PROXY_USER and BITS_PROXY_PASSWORD`,
    401,
  );
}

/** Where one request stands in a proxy authentication exchange. */
export interface ProxyAuthProgress {
  session?: AuthSession;
  /** The session was remembered from an earlier request, not chosen for this one. */
  fromMemory: boolean;
  tried: Set<string>;
}

export function startProxyAuth(auth: ProxyAuthState): ProxyAuthProgress {
  return { session: auth.session, fromMemory: auth.session !== undefined, tried: new Set() };
}

/**
 * The answer to one 407: the session whose Proxy-Authorization goes with the next
 * attempt, or an AuthError (no credentials, refused, nothing supported). The one
 * place the 407 rules live, for CONNECT and for absolute-form requests.
 */
export async function answerProxyChallenge(
  auth: ProxyAuthState,
  progress: ProxyAuthProgress,
  proxyAuthenticate: string | undefined,
  proxyName: string,
  request: string,
): Promise<AuthSession> {
  const challenges = parseChallenges(proxyAuthenticate);
  rememberProxyRealms(auth, challenges);
  const session = progress.session;
  let next = session ? session.onChallenge(challenges) : 'unsupported';
  if (progress.fromMemory && next === 'rejected' && !challenges.some((c) => c.scheme.toLowerCase() === session!.scheme.toLowerCase())) next = 'unsupported';
  if (progress.fromMemory && next !== 'continue') auth.session = undefined;
  if (next === 'rejected') throw proxyAuthError(proxyName, request, `proxy ${proxyName} rejected the proxy credentials (HTTP 407, ${session!.scheme})`);
  if (next === 'continue') return session!;
  if (!auth.credentials) {
    throw proxyAuthError(
      proxyName,
      request,
      `proxy ${proxyName} requires authentication (HTTP 407, offers ${offeredSchemes(challenges)}): give --proxy-user NAME, put the user in the proxy URL, or set BITS_PROXY_USER/BITS_PROXY_PASSWORD`,
    );
  }
  const creds = await auth.credentials();
  const chosen = chooseSession(challenges, creds, progress.tried);
  progress.fromMemory = false;
  if (!chosen) throw proxyAuthError(proxyName, request, `proxy ${proxyName} offers no authentication scheme bits supports (${offeredSchemes(challenges)})`);
  progress.tried.add(chosen.scheme.toLowerCase());
  progress.session = chosen;
  return chosen;
}

/** The typed error for a failure to reach the proxy itself (TCP or its TLS). */
export function proxyConnectError(err: unknown, proxy: URL): Error {
  if (err instanceof BitsError) return err;
  const tlsErr = describeTlsError(err, `proxy ${proxy.host}`);
  if (tlsErr) return tlsErr;
  const code = (err as NodeJS.ErrnoException).code ?? (err as { cause?: { code?: string } }).cause?.code;
  if (code === 'UND_ERR_CONNECT_TIMEOUT') return new TimeoutError(`could not connect to proxy ${proxy.host}: connect timeout`, 'connect', { cause: err });
  return new TransportError(`could not connect to proxy ${proxy.host}: ${code === 'ECONNREFUSED' ? 'connection refused' : ((err as Error).message ?? String(err))}`, {
    cause: err,
    hresult: code === 'ECONNREFUSED' ? HRESULT.ERROR_INTERNET_CANNOT_CONNECT : undefined,
  });
}

export interface TunnelOptions {
  proxy: URL;
  /** TLS options for the target (https targets), e.g. --cacert. */
  targetTls: ConnectionOptions;
  /** TLS options for an https:// proxy. */
  proxyTls: ConnectionOptions;
  connectTimeoutMs: number;
  userAgent: string;
  auth: ProxyAuthState;
}

/** Reads an HTTP response head and bodies from a raw socket (the proxy's CONNECT answers). */
class SocketReader {
  private buf: Buffer = Buffer.alloc(0);
  private ended: Error | undefined;
  private wake: (() => void) | undefined;
  private readonly onData = (d: Buffer) => {
    this.buf = this.buf.length ? Buffer.concat([this.buf, d]) : d;
    this.wake?.();
  };
  private readonly onEnd = () => {
    this.ended ??= new TransportError('the proxy closed the connection');
    this.wake?.();
  };
  private readonly onError = (e: Error) => {
    this.ended = e;
    this.wake?.();
  };

  constructor(private readonly socket: net.Socket) {
    socket.on('data', this.onData);
    socket.on('end', this.onEnd);
    socket.on('close', this.onEnd);
    socket.on('error', this.onError);
  }

  private async more(): Promise<void> {
    if (this.ended) throw this.ended;
    await new Promise<void>((r) => (this.wake = r));
    this.wake = undefined;
  }

  async head(): Promise<{ status: number; version: string; headers: Record<string, string> }> {
    for (;;) {
      const i = this.buf.indexOf('\r\n\r\n');
      if (i >= 0) {
        const text = this.buf.subarray(0, i).toString('latin1');
        this.buf = this.buf.subarray(i + 4);
        const [statusLine, ...lines] = text.split('\r\n');
        const m = /^HTTP\/(1\.[01]) (\d{3})/.exec(statusLine ?? '');
        if (!m) throw new TransportError('the proxy sent an invalid response to CONNECT');
        const headers: Record<string, string> = {};
        for (const l of lines) {
          const c = l.indexOf(':');
          if (c <= 0) continue;
          const k = l.slice(0, c).trim().toLowerCase();
          const v = l.slice(c + 1).trim();
          headers[k] = headers[k] ? `${headers[k]}, ${v}` : v;
        }
        return { status: Number(m[2]), version: m[1]!, headers };
      }
      if (this.buf.length > 64 * 1024) throw new TransportError('the proxy sent an oversized response head');
      await this.more();
    }
  }

  async skip(n: number): Promise<void> {
    while (this.buf.length < n) await this.more();
    this.buf = this.buf.subarray(n);
  }

  /** Stops reading; returns the bytes already read past the head (the tunnel's first bytes). */
  detach(): Buffer {
    this.socket.removeListener('data', this.onData);
    this.socket.removeListener('end', this.onEnd);
    this.socket.removeListener('close', this.onEnd);
    this.socket.removeListener('error', this.onError);
    this.socket.pause();
    return this.buf;
  }
}

function openSocket(proxy: URL, proxyTls: ConnectionOptions): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const host = stripBrackets(proxy.hostname);
    const port = defaultPort(proxy);
    const s =
      proxy.protocol === 'https:'
        ? nodeTls().connect({ ...proxyTls, host, port, servername: net.isIP(host) ? undefined : host })
        : net.connect({ host, port });
    s.setNoDelay(true);
    s.once(proxy.protocol === 'https:' ? 'secureConnect' : 'connect', () => {
      s.removeListener('error', reject);
      resolve(s);
    });
    s.once('error', reject);
  });
}

/** Opens a CONNECT tunnel to host:port through the proxy, answering 407 challenges. */
export async function openTunnel(o: TunnelOptions, host: string, port: number, signal: AbortSignal): Promise<net.Socket> {
  const authority = `${host}:${port}`;
  const proxyName = o.proxy.host;
  let socket = await openSocket(o.proxy, o.proxyTls);
  const onAbort = () => socket.destroy();
  signal.addEventListener('abort', onAbort);
  let reader = new SocketReader(socket);
  const progress = startProxyAuth(o.auth);
  try {
    for (let round = 0; round < 8; round++) {
      const session = progress.session;
      const lines = [`CONNECT ${authority} HTTP/1.1`, `Host: ${authority}`, `User-Agent: ${o.userAgent}`, 'Proxy-Connection: keep-alive'];
      if (session) lines.push(`Proxy-Authorization: ${session.authorization({ method: 'CONNECT', uri: authority })}`);
      socket.write(lines.join('\r\n') + '\r\n\r\n');
      const res = await reader.head();
      if (res.status >= 200 && res.status < 300) {
        if (session?.preemptive) o.auth.session = session;
        const rest = reader.detach();
        if (rest.length) socket.unshift(rest);
        return socket;
      }
      // Nothing but the proxy answers a CONNECT: its 401 is its refusal of our credentials.
      if (res.status === 401) {
        if (progress.fromMemory) o.auth.session = undefined;
        throw session
          ? proxyRefused401(proxyName, 'CONNECT', session.scheme)
          : proxyAuthError(proxyName, 'CONNECT', `proxy ${proxyName} requires authentication (HTTP 401): give --proxy-user NAME or set BITS_PROXY_USER/BITS_PROXY_PASSWORD`, 401);
      }
      if (res.status !== 407) {
        throw new ServerError(
          { httpStatus: res.status, request: 'CONNECT', url: `proxy ${proxyName}` },
          `proxy ${proxyName} refused to open a tunnel to ${authority}: HTTP ${res.status}`,
        );
      }
      const active = await answerProxyChallenge(o.auth, progress, res.headers['proxy-authenticate'], proxyName, 'CONNECT');
      // Keep the connection when the 407 leaves it usable (NTLM needs that); else reconnect.
      const len = res.headers['content-length'];
      const keep = res.version === '1.1' && len !== undefined && !/\bclose\b/i.test(res.headers['connection'] ?? res.headers['proxy-connection'] ?? '');
      if (keep) await reader.skip(Number(len));
      else {
        if (active.connectionBound) {
          throw proxyAuthError(proxyName, 'CONNECT', `proxy ${proxyName} closed the connection during the ${active.scheme} handshake, which needs one connection`);
        }
        reader.detach();
        socket.destroy();
        signal.removeEventListener('abort', onAbort);
        socket = await openSocket(o.proxy, o.proxyTls);
        signal.addEventListener('abort', onAbort);
        reader = new SocketReader(socket);
      }
    }
    throw proxyAuthError(proxyName, 'CONNECT', `proxy ${proxyName}: authentication did not complete`);
  } catch (e) {
    reader.detach();
    socket.destroy();
    throw e;
  } finally {
    signal.removeEventListener('abort', onAbort);
  }
}

/** An undici connector that reaches every origin through a CONNECT tunnel. */
export function createTunnelConnector(o: TunnelOptions): BuildConnector.connector {
  // undici is loaded here rather than at the top: this module is imported to define
  // command-line flags, and `bits list` or `bits --help` should not pay for undici.
  const buildConnector = createRequire(import.meta.url)('undici/lib/core/connect.js') as typeof import('undici').buildConnector; // not the index: see undici-parts.ts
  const tlsUpgrade = buildConnector({ ...(o.targetTls as BuildConnector.BuildOptions), timeout: o.connectTimeoutMs });
  return (opts, callback) => {
    const port = Number(opts.port) || (opts.protocol === 'https:' ? 443 : 80);
    const ac = new AbortController();
    const timer = setTimeout(() => ac.abort(), o.connectTimeoutMs);
    openTunnel(o, opts.hostname, port, ac.signal).then(
      (socket) => {
        clearTimeout(timer);
        if (opts.protocol === 'https:') {
          tlsUpgrade({ ...opts, httpSocket: socket }, callback);
        } else {
          callback(null, socket);
        }
      },
      (err: unknown) => {
        clearTimeout(timer);
        if (ac.signal.aborted) {
          callback(new TimeoutError(`could not open a tunnel through proxy ${o.proxy.host} within ${Math.round(o.connectTimeoutMs / 1000)} s`, 'connect', { cause: err }), null);
        } else {
          callback(proxyConnectError(err, o.proxy), null);
        }
      },
    );
  };
}

/**
 * An undici connector to the proxy itself, for requests sent to it in absolute
 * form: TCP, or TLS to an https:// proxy; failures name the proxy.
 */
export function createProxyConnector(proxy: URL, proxyTls: ConnectionOptions, connectTimeoutMs: number): BuildConnector.connector {
  const buildConnector = createRequire(import.meta.url)('undici/lib/core/connect.js') as typeof import('undici').buildConnector; // not the index: see undici-parts.ts
  const base = buildConnector({ ...(proxyTls as BuildConnector.BuildOptions), timeout: connectTimeoutMs });
  return (opts, callback) =>
    base(opts, (err, socket) => {
      if (err) callback(proxyConnectError(err, proxy), null);
      else callback(null, socket!);
    });
}
