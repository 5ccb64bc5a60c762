/**
 * Forward proxies: which proxy a URL goes through (--proxy, then HTTP_PROXY /
 * HTTPS_PROXY / ALL_PROXY with NO_PROXY, as curl reads them), and the CONNECT tunnel.
 *
 * We tunnel with our own connector rather than undici's ProxyAgent because ProxyAgent
 * turns a 407 into an opaque error: it cannot answer a Proxy-Authenticate challenge,
 * and NTLM proxy authentication needs several CONNECTs on one proxy connection. Here
 * the tunnel runs the same 407 logic as the 401 path (Basic, Digest, NTLM, Negotiate),
 * then undici gets the tunnelled socket (wrapped in TLS for https targets) and keeps
 * it alive like any other connection. Plain-http targets are tunnelled too.
 */
import net from 'node:net';
import tls, { type ConnectionOptions } from 'node:tls';
import { createRequire } from 'node:module';
import type { buildConnector as BuildConnector } from 'undici';
import { AuthError, ServerError, TimeoutError, TransportError, UsageError, BitsError } from '../errors.js';
import { parseChallenges } from './auth/challenge.js';
import { chooseSession, offeredSchemes, type AuthSession } from './auth/session.js';
import { Credentials, registerSecret, type CredentialProvider } from './credentials.js';
import { describeTlsError } from './tls.js';

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

/** Proxy credentials for this run: --proxy-user wins over user:password in the proxy URL. */
export function proxyCredentialsFromUrl(proxy: URL): Credentials | undefined {
  if (!proxy.username) return undefined;
  return new Credentials(decodeURIComponent(proxy.username), decodeURIComponent(proxy.password));
}

/** Per-proxy memory: credentials and the session that worked (sent pre-emptively next time). */
export interface ProxyAuthState {
  credentials?: CredentialProvider;
  session?: AuthSession;
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
        ? tls.connect({ ...proxyTls, host, port, servername: net.isIP(host) ? undefined : host })
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
  let session = o.auth.session;
  let fromMemory = session !== undefined;
  const tried = new Set<string>();
  try {
    for (let round = 0; round < 8; round++) {
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
      if (res.status !== 407) {
        throw new ServerError(
          { httpStatus: res.status, request: 'CONNECT', url: `proxy ${proxyName}` },
          `proxy ${proxyName} refused to open a tunnel to ${authority}: HTTP ${res.status}`,
        );
      }
      const challenges = parseChallenges(res.headers['proxy-authenticate']);
      let next = session ? session.onChallenge(challenges) : 'unsupported';
      if (fromMemory && next === 'rejected' && !challenges.some((c) => c.scheme.toLowerCase() === session!.scheme.toLowerCase())) next = 'unsupported';
      if (fromMemory && next !== 'continue') o.auth.session = undefined;
      if (next === 'rejected') {
        throw new AuthError(
          { httpStatus: 407, request: 'CONNECT', url: `proxy ${proxyName}` },
          `proxy ${proxyName} rejected the proxy credentials (HTTP 407, ${session!.scheme})`,
        );
      }
      if (next === 'unsupported') {
        if (!o.auth.credentials) {
          throw new AuthError(
            { httpStatus: 407, request: 'CONNECT', url: `proxy ${proxyName}` },
            `proxy ${proxyName} requires authentication (HTTP 407, offers ${offeredSchemes(challenges)}): give --proxy-user NAME or put the user in the proxy URL`,
          );
        }
        const creds = await o.auth.credentials();
        session = chooseSession(challenges, creds, tried);
        fromMemory = false;
        if (!session) {
          throw new AuthError(
            { httpStatus: 407, request: 'CONNECT', url: `proxy ${proxyName}` },
            `proxy ${proxyName} offers no authentication scheme bits supports (${offeredSchemes(challenges)})`,
          );
        }
        tried.add(session.scheme.toLowerCase());
      }
      const active: AuthSession = session!;
      // Keep the connection when the 407 leaves it usable (NTLM needs that); else reconnect.
      const len = res.headers['content-length'];
      const keep = res.version === '1.1' && len !== undefined && !/\bclose\b/i.test(res.headers['connection'] ?? res.headers['proxy-connection'] ?? '');
      if (keep) await reader.skip(Number(len));
      else {
        if (active.connectionBound) {
          throw new AuthError(
            { httpStatus: 407, request: 'CONNECT', url: `proxy ${proxyName}` },
            `proxy ${proxyName} closed the connection during the ${active.scheme} handshake, which needs one connection`,
          );
        }
        reader.detach();
        socket.destroy();
        signal.removeEventListener('abort', onAbort);
        socket = await openSocket(o.proxy, o.proxyTls);
        signal.addEventListener('abort', onAbort);
        reader = new SocketReader(socket);
      }
    }
    throw new AuthError({ httpStatus: 407, request: 'CONNECT', url: `proxy ${proxyName}` }, `proxy ${proxyName}: authentication did not complete`);
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
  const { buildConnector } = createRequire(import.meta.url)('undici') as typeof import('undici');
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
        } else if (err instanceof BitsError) {
          callback(err, null);
        } else if (describeTlsError(err, `proxy ${o.proxy.host}`)) {
          callback(describeTlsError(err, `proxy ${o.proxy.host}`)!, null);
        } else {
          const code = (err as NodeJS.ErrnoException).code;
          callback(
            new TransportError(`could not connect to proxy ${o.proxy.host}: ${code === 'ECONNREFUSED' ? 'connection refused' : ((err as Error).message ?? String(err))}`, { cause: err }),
            null,
          );
        }
      },
    );
  };
}
