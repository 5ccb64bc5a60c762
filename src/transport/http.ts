/**
 * The one HTTP layer both clients use, over undici. HTTP/1.1 keep-alive with a
 * small pool of connections per origin: one for an upload (a BITS session may be
 * tied to its TCP connection, and NTLM always is), N for segmented downloads.
 *
 * A request holds one connection (a "lease") from its first byte until its response
 * body is consumed, across the authentication round trips, so the legs of an NTLM
 * handshake always share a connection whatever the pool size.
 *
 * Through a proxy (src/transport/proxy.ts): https origins get a CONNECT tunnel per
 * connection; http origins are asked in absolute form over connections to the proxy,
 * so "one connection" for an upload is then one connection to the proxy, and an http
 * origin that answers with NTLM/Negotiate is moved to a tunnel (useTunnel).
 *
 * Timers follow MC-BUP §3.1.2 / §3.6.2: the request timer covers sending the
 * request body (it restarts whenever the body makes progress, so a rate limit does
 * not trip it), the response timer covers waiting for the response headers and
 * each gap in the response body. Expiry raises TimeoutError (ERROR_TIMEOUT) naming
 * the timer; connection failures raise TransportError with the WinINet HRESULT
 * Windows would report; TLS failures raise TlsError; 401/407 that the credentials
 * cannot satisfy raise AuthError (§3.1.5.1.7).
 */
import { getHeader, H } from '../protocol/headers.js';
import { PassThrough, Readable } from 'node:stream';
import type { Socket } from 'node:net';
import type { Dispatcher } from 'undici';
import { undici, undiciErrorsIfLoaded, type Client, type buildConnector } from './undici-parts.js';
import { AuthError, BitsError, ProtocolError, ServerError, TimeoutError, TlsError, TransportError, UsageError, toBitsError } from '../errors.js';
import { HRESULT, parseHresult } from '../protocol/hresult.js';
import { VERSION } from '../version.js';
import { noteBufferChurn } from '../memory.js';
import { parseChallenges } from './auth/challenge.js';
import { chooseSession, offeredSchemes, type AuthSession } from './auth/session.js';
import { Credentials, isCredentialHeader, proxyCredentialsFromEnv, type CredentialProvider, type CredentialSource } from './credentials.js';
import {
  answerProxyChallenge,
  createProxyConnector,
  createTunnelConnector,
  isProxyRefusal401,
  proxyAuthError,
  proxyCredentialsFromUrl,
  proxyRefused401,
  resolveProxy,
  startProxyAuth,
  type ProxyAuthProgress,
  type ProxyAuthState,
} from './proxy.js';
import { RateLimiter, ThrottleTransform } from './throttle.js';
import { describeTlsError, refusalHint, tlsConnectOptions, warnInsecureOnce, type TlsSettings } from './tls.js';
import { BulkDeclined, BulkPool, type BulkResponse } from './bulk-get.js';
import { readBatches } from './read-ahead.js';
import { waitInLine } from './queue-wait.js';

export const USER_AGENT = `bits/${VERSION} (+MC-BUP; Node.js)`;

/**
 * What a 3xx to GET/HEAD does, after Windows BITS' BG_JOB_ENABLE_HTTP_REDIRECT
 * policies: follow (ALLOW_SILENT), report (ALLOW_REPORT: followed, the final URL
 * reported), refuse (DISALLOW: exit 5) and allow-https-to-http (ALLOW_HTTPS_TO_HTTP).
 * Without the last one an https URL never leads to http.
 */
export type RedirectPolicy = 'follow' | 'report' | 'refuse' | 'allow-https-to-http';
export const REDIRECT_POLICIES: readonly RedirectPolicy[] = ['follow', 'report', 'refuse', 'allow-https-to-http'];
/** Hops followed from one request (curl's --max-redirs default is 50, wget's 20, Chrome's 20; BITS stops a loop too). */
export const MAX_REDIRECTS = 10;
const REDIRECT_STATUSES = new Set([301, 302, 303, 307, 308]);

export interface TransportOptions {
  /** §3.1.2.1 upload request timeout: 2 minutes by default. */
  requestTimeoutMs?: number;
  /** §3.1.2.2 upload response timeout: 5 minutes by default. */
  responseTimeoutMs?: number;
  /** TCP connect (plus proxy tunnel and TLS handshake): 30 s by default. */
  connectTimeoutMs?: number;
  /** Connections per origin (1 for uploads). */
  connections?: number;
  /** Extra headers sent with every request (`--header`). */
  headers?: Record<string, string>;
  userAgent?: string;
  /** Server credentials, or a provider asked only when a server first answers 401. */
  credentials?: Credentials | CredentialProvider;
  /** Where the credentials came from: what a job store may persist (never the password). */
  credentialSource?: CredentialSource;
  /** --proxy URL; '' or false = no proxy even if the environment names one; undefined = environment. */
  proxy?: string | false;
  /** Proxy credentials (--proxy-user); else user:password in the proxy URL. */
  proxyCredentials?: Credentials | CredentialProvider;
  proxyCredentialSource?: CredentialSource;
  /** Overrides NO_PROXY from the environment. */
  noProxy?: string;
  /**
   * Tunnel http:// targets through the proxy with CONNECT too. By default only
   * https:// is tunnelled and http:// requests go to the proxy in absolute form
   * (RFC 7230 §5.3.2), which proxies that allow CONNECT to port 443 only accept.
   */
  proxyTunnel?: boolean;
  /** --cacert / --cert / --key / --insecure. */
  tls?: TlsSettings;
  /** --limit-rate: bytes per second for request and response bodies together; 0/undefined = unlimited. */
  limitRateBytesPerSec?: number;
  /** Environment for proxy variables (tests); process.env by default. */
  env?: NodeJS.ProcessEnv;
  /** Where warnings go (the --insecure notice); stderr by default. */
  warn?: (message: string) => void;
  /** 3xx answers to GET and HEAD (default 'follow'); other methods never follow one. */
  redirects?: RedirectPolicy;
  /**
   * The origins (scheme://host:port) the server credentials and credential-like
   * `headers` were given for: nothing of them goes anywhere else (a redirect target,
   * a reply URL on another host), even when it answers 401. Default: the first origin
   * that uses them (credential headers: the first request; credentials: the first 401).
   */
  credentialOrigins?: string[];
}

export type RequestBody = Buffer | Uint8Array | string | Readable | AsyncIterable<Uint8Array>;

export interface HttpRequest {
  method: string;
  url: URL;
  headers?: Record<string, string>;
  /**
   * The body, or a factory returning a fresh one. Pass a factory for anything that
   * may have to be sent twice (a fragment answered by 401/407 and re-sent with
   * credentials): a stream given directly can only be sent once.
   */
  body?: RequestBody | (() => RequestBody);
  signal?: AbortSignal;
  /**
   * A GET whose body is the download data, or the HEAD that probes it: it may
   * go through the bulk reader (bulk-get.ts) when nothing about the connection
   * needs undici. Read such a body with `bodyBatches(res)`.
   */
  bulk?: boolean;
}

export interface HttpResponse {
  status: number;
  /** Lower-cased header names; repeated headers joined with ", ". */
  headers: Record<string, string>;
  /** Must be consumed or discarded (`discard()`), or the connection is not reused. */
  body: Readable;
  discard(): Promise<void>;
  text(maxBytes?: number): Promise<string>;
  /**
   * For a refusal (4xx), what the status alone does not say but the connection did:
   * e.g. "the server asked for a client certificate and none was given: pass --cert
   * FILE --key FILE" (see refusalHint). Append it to the error message.
   */
  hint?: string;
  /** https: whether the server sent a TLS CertificateRequest on this connection (undefined: unknown). */
  clientCertificateRequested?: boolean;
  /** The URL that answered: the request's, or where its redirects led. */
  url?: URL;
  /**
   * The body in batches: every chunk that arrived while the consumer was busy, as
   * one array (read-ahead.ts). Use bodyBatches(res), which falls back to `body`.
   */
  batches?(): AsyncIterable<Buffer[]>;
}

/**
 * The body's batches, from any Transport's response. A batch's buffers are
 * valid only until the next batch is asked for (the bulk reader reuses them):
 * copy what must live longer.
 */
export function bodyBatches(res: HttpResponse): AsyncIterable<Buffer[]> {
  return res.batches ? res.batches() : readBatches(res.body);
}

/**
 * What a driver needs of an HTTP stack: the seam that lets the upload and
 * download drivers be tested exchange by exchange with a scripted transport
 * (test/helpers/scripted-transport.ts), as tus-js-client's tests do.
 */
export interface Transport {
  request(req: HttpRequest): Promise<HttpResponse>;
  close(): Promise<void>;
  /** Lets the server credentials go to this origin too (HttpTransport.trustOrigin). */
  trustOrigin?(url: URL): void;
}

type ResolvedOptions = Required<Pick<TransportOptions, 'requestTimeoutMs' | 'responseTimeoutMs' | 'connectTimeoutMs' | 'connections' | 'userAgent'>> & {
  headers: Record<string, string>;
};

interface ConnectionState {
  /** The last TLS-level error the connection's socket reported. */
  tlsError?: Error;
  /** The server sent a TLS CertificateRequest on the current connection. */
  certificateRequested?: boolean;
  /** Counts connections opened, to tell whether a request got a fresh one. */
  connects: number;
}

/**
 * How an origin's requests travel: straight to it, through a CONNECT tunnel, or to
 * the proxy in absolute form ('forward': the Clients' origin is then the proxy).
 */
type Route = { kind: 'direct' } | { kind: 'tunnel'; proxy: URL } | { kind: 'forward'; proxy: URL; auth: ProxyAuthState };

interface Lease {
  client: Client;
  route: Route;
  release(): void;
}

/** Thrown inside a request when an origin must move from absolute form to a tunnel. */
class NeedsTunnel extends Error {}

/** N single-connection undici Clients for one origin, leased to one request at a time. */
class OriginPool {
  private readonly clients: Client[] = [];
  private readonly free: Client[] = [];
  private readonly waiters: Array<(c: Client) => void> = [];

  constructor(
    private readonly size: number,
    private readonly create: () => Client,
    readonly route: Route,
  ) {}

  async acquire(signal?: AbortSignal): Promise<Lease> {
    let client = this.free.shift();
    if (!client && this.clients.length < this.size) {
      client = this.create();
      this.clients.push(client);
    }
    if (!client) client = await waitInLine(this.waiters, signal);
    let released = false;
    const c = client;
    return {
      client: c,
      route: this.route,
      release: () => {
        if (released) return;
        released = true;
        const w = this.waiters.shift();
        if (w) w(c);
        else this.free.push(c);
      },
    };
  }

  close(): Promise<unknown> {
    return Promise.all(this.clients.map((c) => c.close().catch(() => c.destroy())));
  }

  destroy(): Promise<unknown> {
    return Promise.all(this.clients.map((c) => c.destroy()));
  }
}

function toProvider(c: Credentials | CredentialProvider | undefined): CredentialProvider | undefined {
  if (!c) return undefined;
  if (c instanceof Credentials) return () => Promise.resolve(c);
  let p: Promise<Credentials> | undefined;
  return () => {
    p ??= c().catch((e: unknown) => {
      p = undefined;
      throw e;
    });
    return p;
  };
}

function isResendable(body: HttpRequest['body']): boolean {
  return body === undefined || typeof body === 'function' || typeof body === 'string' || body instanceof Uint8Array;
}

export class HttpTransport implements Transport {
  readonly options: ResolvedOptions;
  private readonly pools = new Map<string, OriginPool>();
  /** Basic/Digest sessions that worked, by origin: sent pre-emptively on later requests. */
  private readonly originAuth = new Map<string, AuthSession>();
  private readonly proxyAuth = new Map<string, ProxyAuthState>();
  /** Origins reached through a CONNECT tunnel although http (NTLM/Negotiate to the origin). */
  private readonly tunnelOrigins = new Set<string>();
  private readonly connState = new WeakMap<Client, ConnectionState>();
  private readonly credentials?: CredentialProvider;
  private readonly proxyCredentials?: CredentialProvider;
  private readonly limiter?: RateLimiter;
  private readonly extra: TransportOptions;
  /** Where server credentials may go (see TransportOptions.credentialOrigins); filled by the first request if not given. */
  private readonly credentialOrigins = new Set<string>();
  /** The bulk reader's connections, by origin (see bulkPoolFor). */
  private readonly bulkPools = new Map<string, BulkPool>();
  /** Origins whose data answers the bulk reader declined for good (a 401, chunked bodies). */
  private readonly bulkOff = new Set<string>();
  private closed = false;

  constructor(options: TransportOptions = {}) {
    this.options = {
      requestTimeoutMs: options.requestTimeoutMs ?? 2 * 60_000,
      responseTimeoutMs: options.responseTimeoutMs ?? 5 * 60_000,
      connectTimeoutMs: options.connectTimeoutMs ?? 30_000,
      connections: options.connections ?? 1,
      headers: options.headers ?? {},
      userAgent: options.userAgent ?? USER_AGENT,
    };
    this.extra = options;
    for (const o of options.credentialOrigins ?? []) this.credentialOrigins.add(new URL(o).origin);
    this.credentials = toProvider(options.credentials);
    this.proxyCredentials = toProvider(options.proxyCredentials);
    if (options.limitRateBytesPerSec && options.limitRateBytesPerSec > 0) this.limiter = new RateLimiter(options.limitRateBytesPerSec);
    if (options.tls?.insecure) warnInsecureOnce(options.warn ?? ((m) => process.stderr.write(m + '\n')));
  }

  /** The proxy `url` goes through, if any (credentials stripped). */
  proxyFor(url: URL): URL | undefined {
    const p = resolveProxy(url, { proxy: this.extra.proxy, noProxy: this.extra.noProxy, env: this.extra.env });
    if (!p) return undefined;
    const clean = new URL(p.href);
    clean.username = '';
    clean.password = '';
    return clean;
  }

  /**
   * One authentication state per proxy, shared by its tunnels and absolute-form
   * requests. Credentials: proxyCredentials (--proxy-user), else user:password in the
   * proxy URL, else BITS_PROXY_USER / BITS_PROXY_PASSWORD (proxyCredentialsFromEnv).
   */
  private proxyAuthFor(proxy: URL): ProxyAuthState {
    let auth = this.proxyAuth.get(proxy.origin);
    if (!auth) {
      const env = this.extra.env ?? process.env;
      const fixed = proxyCredentialsFromUrl(proxy, env) ?? proxyCredentialsFromEnv(env);
      auth = { credentials: this.proxyCredentials ?? (fixed ? () => Promise.resolve(fixed) : undefined) };
      this.proxyAuth.set(proxy.origin, auth);
    }
    return auth;
  }

  private poolFor(url: URL): OriginPool {
    const origin = url.origin;
    let pool = this.pools.get(origin);
    if (!pool) {
      const tlsOpts = tlsConnectOptions(this.extra.tls);
      const proxy = resolveProxy(url, { proxy: this.extra.proxy, noProxy: this.extra.noProxy, env: this.extra.env });
      let connect: Client.Options['connect'];
      let route: Route = { kind: 'direct' };
      let clientOrigin = origin;
      if (proxy) {
        const auth = this.proxyAuthFor(proxy);
        const proxyUrl = new URL(proxy.href);
        proxyUrl.username = '';
        proxyUrl.password = '';
        if (url.protocol === 'https:' || this.extra.proxyTunnel || this.tunnelOrigins.has(origin)) {
          route = { kind: 'tunnel', proxy: proxyUrl };
          connect = createTunnelConnector({
            proxy: proxyUrl,
            targetTls: tlsOpts,
            proxyTls: tlsOpts,
            connectTimeoutMs: this.options.connectTimeoutMs,
            userAgent: this.options.userAgent,
            auth,
          });
        } else {
          // Absolute form: undici's Client talks to the proxy (as undici's own ProxyAgent
          // does for http targets); send() puts the full URL in the request line.
          route = { kind: 'forward', proxy: proxyUrl, auth };
          clientOrigin = proxyUrl.origin;
          connect = createProxyConnector(proxyUrl, tlsOpts, this.options.connectTimeoutMs);
        }
      } else {
        connect = undici().buildConnector({ ...(tlsOpts as buildConnector.BuildOptions), timeout: this.options.connectTimeoutMs });
      }
      const base = withBitsPostContentLength(connect);
      const create = () => {
        // TLS 1.3 servers refuse a missing client certificate with an alert after the
        // handshake; undici then only reports "other side closed". Keep the socket's own
        // TLS error so the user learns what really happened.
        const seen: ConnectionState = { connects: 0 };
        const client = new (undici().Client)(clientOrigin, {
          pipelining: 1,
          connect: (opts, cb) => {
            seen.tlsError = undefined;
            seen.certificateRequested = undefined;
            seen.connects++;
            base(opts, (err, socket) => {
              if (socket) guardPausedParserEnd(socket as Socket);
              if (socket && url.protocol === 'https:') seen.certificateRequested = serverRequestedCertificate(socket as Socket);
              socket?.on('error', (e: NodeJS.ErrnoException) => {
                if (typeof e.code === 'string' && /SSL|TLS|CERT/.test(e.code)) seen.tlsError = e;
              });
              if (err) cb(err, null);
              else cb(null, socket!);
            });
          },
          // Our own timers cover headers (see send()); undici's body timer covers gaps in the body.
          headersTimeout: 0,
          bodyTimeout: this.options.responseTimeoutMs,
          keepAliveTimeout: 60_000,
          keepAliveMaxTimeout: 10 * 60_000,
        });
        this.connState.set(client, seen);
        return client;
      };
      pool = new OriginPool(Math.max(1, this.options.connections), create, route);
      this.pools.set(origin, pool);
    }
    return pool;
  }

  /**
   * Lets the server credentials go to `url`'s origin too: for a host the server
   * itself moves the upload session to (BITS-Host-ID), never for a redirect or reply URL.
   */
  trustOrigin(url: URL): void {
    this.credentialOrigins.add(url.origin);
  }

  /** Whether credentials may go to `url`; the first origin asking binds them when none were named. */
  private trusts(url: URL): boolean {
    if (this.credentialOrigins.size === 0) this.credentialOrigins.add(url.origin);
    return this.credentialOrigins.has(url.origin);
  }

  /**
   * One request; a 3xx to GET or HEAD is followed under the redirect policy (a 303
   * keeps the method: only GET and HEAD follow, and a HEAD stays a HEAD). Any other
   * method answered with a redirect fails naming the Location: MC-BUP §3.1.5.2.1
   * returns statuses it does not name to the higher layer, and a BITS session
   * lives on one server (only BITS-Host-ID moves it), so BITS_POST never follows.
   */
  async request(req: HttpRequest): Promise<HttpResponse> {
    if (this.closed) throw new TransportError('transport is closed');
    if (req.url.username || req.url.password) {
      // The URL ends up in job stores and messages: a password in it would leak.
      throw new UsageError('credentials in the URL are not accepted: use --user NAME (password prompted) or BITS_USER/BITS_PASSWORD');
    }
    const follows = req.method === 'GET' || req.method === 'HEAD';
    const policy = this.extra.redirects ?? 'follow';
    let hop = req;
    for (let hops = 0; ; hops++) {
      const res = await this.requestOnce(hop);
      const location = res.headers['location'];
      if (!REDIRECT_STATUSES.has(res.status) || location === undefined) return res;
      await res.discard();
      const what = `${req.headers?.['BITS-Packet-Type'] ?? req.method} ${hop.url.href}`;
      const target = redirectTarget(location, hop.url, res.status);
      const refused = (why: string) =>
        new ServerError(
          { httpStatus: res.status, request: req.headers?.['BITS-Packet-Type'] ?? req.method, url: hop.url.href, transient: false },
          `${what} was redirected (HTTP ${res.status}) to ${target.href}: ${why}`,
        );
      if (!follows) throw refused(`a BITS upload session is not redirected (MC-BUP §3.1.5.2.1); upload to ${target.href} instead`);
      if (policy === 'refuse') throw refused('not followed (--redirects refuse)');
      if (hops >= MAX_REDIRECTS) throw new ProtocolError(`too many redirects: more than ${MAX_REDIRECTS} from ${req.url.href} (the last to ${target.href})`, { httpStatus: res.status });
      if (hop.url.protocol === 'https:' && target.protocol === 'http:' && policy !== 'allow-https-to-http') {
        throw new ProtocolError(`${what} was redirected to ${target.href}: refusing to go from https to http (--redirects allow-https-to-http allows it)`, { httpStatus: res.status });
      }
      hop = { ...req, url: target };
    }
  }

  private async requestOnce(req: HttpRequest): Promise<HttpResponse> {
    if (req.bulk && (req.method === 'GET' || req.method === 'HEAD') && req.body === undefined) {
      const pool = this.bulkPoolFor(req.url);
      if (pool) {
        try {
          return this.wrapBulk(await pool.get(req.url.pathname + req.url.search, this.requestHeaders(req), req.signal, req.method), req);
        } catch (err) {
          if (!(err instanceof BulkDeclined)) throw mapTransportError(err, req.url, req.signal?.reason);
          if (err.sticky) this.bulkOff.add(req.url.origin);
          // Sent again the general way, which knows authentication and every body framing.
        }
      }
    }
    for (let attempt = 0; ; attempt++) {
      const lease = await this.poolFor(req.url).acquire(req.signal);
      try {
        return await this.requestWithAuth(lease, req);
      } catch (e) {
        lease.release();
        if (!(e instanceof NeedsTunnel) || attempt > 0) throw e;
        this.useTunnel(req.url);
      }
    }
  }

  /**
   * NTLM and Negotiate authenticate a connection, but a forward proxy may send each
   * absolute-form request over a different connection to the server: from now on the
   * origin goes through a CONNECT tunnel, which is one connection end to end.
   */
  private useTunnel(url: URL): void {
    this.tunnelOrigins.add(url.origin);
    const old = this.pools.get(url.origin);
    this.pools.delete(url.origin);
    void old?.close();
  }

  private authError(status: number, req: HttpRequest, res: Dispatcher.ResponseData, message: string): AuthError {
    // Either name: MC-BUP's BITS-Error or the SDK pages' BITS-Error-Code (getHeader knows both).
    const h = getHeader(res.headers as Record<string, string | string[] | undefined>, H.Error);
    const bitsError = h !== undefined ? parseHresult(h) : undefined;
    return new AuthError(
      { httpStatus: status, request: req.headers?.['BITS-Packet-Type'] ?? req.method, url: `${req.url.origin}${req.url.pathname}`, bitsError: bitsError ?? undefined },
      message,
    );
  }

  private async requestWithAuth(lease: Lease, req: HttpRequest): Promise<HttpResponse> {
    const origin = req.url.origin;
    const info = { method: req.method, uri: req.url.pathname + req.url.search };
    let session = this.originAuth.get(origin);
    let fromMemory = session !== undefined;
    const tried = new Set<string>();
    let firstBodyUsed = false;
    const where = req.url.host;
    const route = lease.route;
    const forward = route.kind === 'forward' ? route : undefined;
    const proxyProgress: ProxyAuthProgress | undefined = forward ? startProxyAuth(forward.auth) : undefined;
    for (let round = 0; round < 10; round++) {
      const headers = this.requestHeaders(req);
      if (session) headers['authorization'] = session.authorization(info);
      if (forward) {
        headers['host'] = req.url.host;
        if (proxyProgress!.session) headers['proxy-authorization'] = proxyProgress!.session.authorization({ method: req.method, uri: absoluteTarget(req.url) });
      }
      let body: RequestBody | undefined;
      if (typeof req.body === 'function') body = req.body();
      else {
        body = req.body;
        firstBodyUsed = true;
      }
      const { res, finish } = await this.send(lease, req, headers, body);
      const resendCheck = async (status: number, fail: (m: string) => Promise<never>) => {
        if (firstBodyUsed && !isResendable(req.body)) {
          await fail(`${status === 407 ? `proxy ${forward!.proxy.host}` : where} asked for authentication (HTTP ${status}) but the request body was a stream that cannot be sent again`);
        }
      };
      if (forward && res.statusCode === 407) {
        // The proxy's challenge to an absolute-form request: the same rules as for CONNECT.
        const fail = async (message: string): Promise<never> => {
          await dump(res);
          finish();
          throw proxyAuthError(forward.proxy.host, req.headers?.['BITS-Packet-Type'] ?? req.method, message);
        };
        let active: AuthSession;
        try {
          active = await answerProxyChallenge(forward.auth, proxyProgress!, headerValue(res.headers['proxy-authenticate']), forward.proxy.host, req.method);
        } catch (e) {
          await dump(res);
          finish();
          throw e;
        }
        await resendCheck(407, fail);
        if (active.connectionBound && closesConnection(res.headers)) {
          await fail(`proxy ${forward.proxy.host} closed the connection during the ${active.scheme} handshake, which needs one connection`);
        }
        await dump(res);
        finish();
        continue;
      }
      if (res.statusCode !== 401) {
        if (session?.preemptive) this.originAuth.set(origin, session);
        if (proxyProgress?.session?.preemptive) forward!.auth.session = proxyProgress.session;
        return this.wrapResponse(res, req, lease, finish);
      }
      if (forward && proxyProgress!.session && isProxyRefusal401(forward.auth, headerValue(res.headers['www-authenticate']), headerValue(res.headers['via']))) {
        // tinyproxy: a wrong proxy password is answered with 401 in the proxy's own realm.
        if (proxyProgress!.fromMemory) forward.auth.session = undefined;
        await dump(res);
        finish();
        throw proxyRefused401(forward.proxy.host, req.headers?.['BITS-Packet-Type'] ?? req.method, proxyProgress!.session.scheme);
      }
      // 401: RFC 7235 + §3.1.5.1.7.
      const challenges = parseChallenges(headerValue(res.headers['www-authenticate']));
      let next = session ? session.onChallenge(challenges) : 'unsupported';
      if (fromMemory && next === 'rejected' && !challenges.some((c) => c.scheme.toLowerCase() === session!.scheme.toLowerCase())) next = 'unsupported';
      if (fromMemory && next !== 'continue') this.originAuth.delete(origin);
      const fail = async (message: string): Promise<never> => {
        const err = this.authError(401, req, res, message);
        await dump(res);
        finish();
        throw err;
      };
      if (next === 'rejected') await fail(`${where} rejected the credentials for ${this.userLabel()} (HTTP 401, ${session!.scheme})`);
      if (next === 'unsupported') {
        if (this.credentials && !this.trusts(req.url)) {
          await fail(
            `${where} requires authentication (HTTP 401, offers ${offeredSchemes(challenges)}), but the credentials were given for ${[...this.credentialOrigins].join(', ')} and are not sent to another origin`,
          );
        }
        if (!this.credentials) await fail(`${where} requires authentication (HTTP 401, offers ${offeredSchemes(challenges)}): give --user NAME or set BITS_USER`);
        let creds: Credentials;
        try {
          creds = await this.credentials!();
        } catch (e) {
          await dump(res);
          finish();
          throw e;
        }
        session = chooseSession(challenges, creds, tried);
        fromMemory = false;
        if (!session) await fail(`${where} offers no authentication scheme bits supports (HTTP 401, offers ${offeredSchemes(challenges)})`);
        tried.add(session!.scheme.toLowerCase());
      }
      await resendCheck(401, fail);
      if (forward && session!.connectionBound) {
        await dump(res);
        finish();
        throw new NeedsTunnel();
      }
      if (session!.connectionBound && closesConnection(res.headers)) {
        await fail(`${where} closed the connection during the ${session!.scheme} handshake, which needs one connection`);
      }
      await dump(res);
      finish();
    }
    throw new AuthError({ httpStatus: 401, request: req.method, url: `${req.url.origin}${req.url.pathname}` }, `${where}: authentication did not complete`);
  }

  /** The header fields every request carries, then the request's own (no authentication). */
  private requestHeaders(req: HttpRequest): Record<string, string> {
    const given = lowerKeys(this.options.headers);
    const secret = Object.keys(given).filter(isCredentialHeader);
    if (secret.length > 0 && !this.trusts(req.url)) for (const k of secret) delete given[k];
    return {
      'user-agent': this.options.userAgent,
      // Compressed bytes cannot be resumed by range nor checked against the length: ask for none.
      'accept-encoding': 'identity',
      ...given,
      ...lowerKeys(req.headers ?? {}),
    };
  }

  /**
   * The bulk reader's pool for `url`, when nothing about the connection needs
   * undici: no proxy (tunnels, absolute form, proxy authentication), no server
   * credentials (NTLM and Negotiate bind a connection; Basic and Digest answer a
   * 401 there), no client certificate (its refusal hints come from undici's
   * connection), no --limit-rate (the throttle paces undici's body stream).
   */
  private bulkPoolFor(url: URL): BulkPool | undefined {
    const origin = url.origin;
    let pool = this.bulkPools.get(origin);
    if (pool) return this.bulkOff.has(origin) || this.originAuth.has(origin) ? undefined : pool;
    if (this.closed || this.bulkOff.has(origin) || this.originAuth.has(origin) || this.tunnelOrigins.has(origin)) return undefined;
    if (this.limiter || this.credentials || this.extra.tls?.cert) return undefined;
    if (url.protocol !== 'http:' && url.protocol !== 'https:') return undefined;
    if (resolveProxy(url, { proxy: this.extra.proxy, noProxy: this.extra.noProxy, env: this.extra.env })) return undefined;
    pool = new BulkPool(url, Math.max(1, this.options.connections), {
      connectTimeoutMs: this.options.connectTimeoutMs,
      responseTimeoutMs: this.options.responseTimeoutMs,
      tls: tlsConnectOptions(this.extra.tls),
    });
    this.bulkPools.set(origin, pool);
    return pool;
  }

  /** A bulk answer as an HttpResponse: the same headers, hints and error mapping as the undici path. */
  private wrapBulk(b: BulkResponse, req: HttpRequest): HttpResponse {
    const url = req.url;
    const signal = req.signal;
    const onAbort = () => b.abort(signal!.reason);
    signal?.addEventListener('abort', onAbort, { once: true });
    const certificateRequested = url.protocol === 'https:' ? serverRequestedCertificate(b.socket) : undefined;
    const hint = refusalHint(b.status, url, certificateRequested, this.extra.tls);
    let started = false;
    async function* batches(): AsyncGenerator<Buffer[]> {
      if (started) throw new TypeError('the response body was already read');
      started = true;
      try {
        yield* b.batches();
      } catch (err) {
        throw mapTransportError(err, url, signal?.reason);
      } finally {
        signal?.removeEventListener('abort', onAbort);
      }
    }
    let body: Readable | undefined;
    const getBody = () =>
      (body ??= Readable.from(
        (async function* () {
          // Copies: a stream consumer may keep a chunk past the next read.
          for await (const batch of batches()) for (const c of batch) yield Buffer.from(c);
        })(),
        { objectMode: false },
      ));
    return {
      status: b.status,
      headers: b.headers,
      url,
      ...(hint ? { hint } : {}),
      ...(certificateRequested !== undefined ? { clientCertificateRequested: certificateRequested } : {}),
      get body() {
        return getBody();
      },
      batches,
      discard: async () => {
        signal?.removeEventListener('abort', onAbort);
        if (body) body.destroy();
        else if (!started) await b.discard();
      },
      text: async (maxBytes = 1024 * 1024) => {
        const chunks: Buffer[] = [];
        let n = 0;
        for await (const batch of batches()) {
          for (const c of batch) {
            n += c.length;
            if (n > maxBytes) return Buffer.concat(chunks).toString('utf8');
            chunks.push(Buffer.from(c));
          }
        }
        return Buffer.concat(chunks).toString('utf8');
      },
    };
  }

  private userLabel(): string {
    const s = this.extra.credentialSource;
    return s ? `user ${JSON.stringify(s.user)}` : 'the user given';
  }

  /** One HTTP exchange up to the response headers, with the request and response timers. */
  private async send(
    lease: Lease,
    req: HttpRequest,
    headers: Record<string, string>,
    body: RequestBody | undefined,
  ): Promise<{ res: Dispatcher.ResponseData; finish: () => void; ac: AbortController }> {
    const ac = new AbortController();
    const onAbort = () => ac.abort(req.signal?.reason);
    if (req.signal?.aborted) throw req.signal.reason instanceof Error ? req.signal.reason : new TransportError('aborted');
    req.signal?.addEventListener('abort', onAbort, { once: true });
    const o = this.options;
    let timer: NodeJS.Timeout | undefined;
    const arm = (which: 'request' | 'response') => {
      clearTimeout(timer);
      const ms = which === 'request' ? o.requestTimeoutMs : o.responseTimeoutMs;
      timer = setTimeout(
        () =>
          ac.abort(
            new TimeoutError(
              which === 'request'
                ? `sending the request to ${req.url.host} made no progress for ${Math.round(ms / 1000)} s (request timeout)`
                : `no response from ${req.url.host} within ${Math.round(ms / 1000)} s (response timeout)`,
              which,
            ),
          ),
        ms,
      );
    };
    const finish = () => {
      clearTimeout(timer);
      req.signal?.removeEventListener('abort', onAbort);
    };
    let dispatchBody: Dispatcher.DispatchOptions['body'] = undefined;
    if (body === undefined || (body instanceof Uint8Array && body.length === 0) || body === '') {
      if (body !== undefined) dispatchBody = typeof body === 'string' ? body : Buffer.from(body as Uint8Array);
      arm('response');
    } else {
      if (headers['content-length'] === undefined && (typeof body === 'string' || body instanceof Uint8Array)) {
        headers['content-length'] = String(typeof body === 'string' ? Buffer.byteLength(body) : body.length);
      }
      arm('request');
      dispatchBody = Readable.from(this.paceBody(body, ac.signal, () => arm('request'), () => arm('response')), { objectMode: false });
    }
    const client = lease.client;
    const connectsBefore = this.connState.get(client)?.connects ?? 0;
    try {
      const res = await client.request({
        path: lease.route.kind === 'forward' ? absoluteTarget(req.url) : req.url.pathname + req.url.search,
        method: req.method as Dispatcher.HttpMethod,
        headers,
        body: dispatchBody,
        signal: ac.signal,
        // undici closes the connection after a body sent with a method it does not know
        // as a payload method (BITS_POST); an upload wants its one keep-alive connection.
        reset: false,
        // The body stream's buffer before undici pauses its parser (default 64 KiB): a
        // consumer briefly slower than the network (disk, --limit-rate) then rarely pauses
        // it, and a paused parser is what undici 7 trips over (see guardPausedParserEnd).
        highWaterMark: RESPONSE_HIGH_WATER_MARK,
      });
      clearTimeout(timer);
      return { res, finish, ac };
    } catch (err) {
      finish();
      const state = this.connState.get(client);
      const code = (err as { code?: string })?.code;
      if (code === 'UND_ERR_SOCKET' || code === 'ECONNRESET') {
        if (state?.tlsError) throw mapTransportError(state.tlsError, req.url);
        // A server refusing our client certificate under TLS 1.3 often just closes the
        // connection after the handshake: no alert reaches us, only the close.
        if (state && state.connects !== connectsBefore && req.url.protocol === 'https:' && this.extra.tls?.cert) {
          throw new TlsError(`TLS to ${req.url.host} failed: the server closed the connection right after the handshake; it probably rejected the client certificate (--cert)`, { cause: err });
        }
      }
      throw mapTransportError(err, req.url, ac.signal.reason);
    }
  }

  /** The body as paced slices, reporting progress (request timer) and completion (response timer). */
  private async *paceBody(body: RequestBody, signal: AbortSignal, progress: () => void, sent: () => void): AsyncGenerator<Uint8Array> {
    const source: AsyncIterable<Uint8Array | string> | Iterable<Uint8Array> =
      typeof body === 'string' ? [Buffer.from(body)] : body instanceof Uint8Array ? [body] : (body as AsyncIterable<Uint8Array>);
    // The caller's slices as they are, up to a fragment (bufferBody sizes them to the link); a bigger chunk is cut.
    const max = 16 * 1024 * 1024;
    for await (const c of source) {
      const chunk = typeof c === 'string' ? Buffer.from(c) : c;
      if (this.limiter) {
        for await (const slice of this.limiter.pace(chunk, signal)) {
          yield slice;
          progress();
        }
      } else {
        for (let off = 0; off < chunk.length; off += max) {
          yield chunk.subarray(off, Math.min(chunk.length, off + max));
          progress();
        }
      }
    }
    sent();
  }

  private wrapResponse(res: Dispatcher.ResponseData, req: HttpRequest, lease: Lease, finish: () => void): HttpResponse {
    const h: Record<string, string> = {};
    for (const [k, v] of Object.entries(res.headers)) {
      if (v === undefined) continue;
      h[k.toLowerCase()] = Array.isArray(v) ? v.join(', ') : String(v);
    }
    const raw = res.body;
    let done = false;
    const end = () => {
      if (done) return;
      done = true;
      finish();
      lease.release();
    };
    raw.once('close', end);
    let out: Readable | undefined;
    const limiter = this.limiter;
    const getBody = (): Readable => {
      if (!out) {
        const o: Readable = limiter ? new ThrottleTransform(limiter) : new PassThrough();
        out = o;
        raw.on('error', (e) => o.destroy(mapTransportError(e, req.url)));
        o.on('close', () => {
          if (!raw.readableEnded) raw.destroy();
        });
        raw.pipe(o as PassThrough);
        // Each chunk is a fresh socket buffer: see src/memory.ts.
        raw.on('data', (c: Buffer) => noteBufferChurn(c.length));
      }
      return out;
    };
    const certificateRequested = req.url.protocol === 'https:' ? this.connState.get(lease.client)?.certificateRequested : undefined;
    const hint = refusalHint(res.statusCode, req.url, certificateRequested, this.extra.tls);
    return {
      status: res.statusCode,
      headers: h,
      url: req.url,
      ...(hint ? { hint } : {}),
      ...(certificateRequested !== undefined ? { clientCertificateRequested: certificateRequested } : {}),
      get body() {
        return getBody();
      },
      batches: () => readBatches(getBody()),
      discard: async () => {
        if (out) {
          out.destroy();
          return;
        }
        await dump(res);
      },
      text: async (maxBytes = 1024 * 1024) => {
        const body = getBody();
        const chunks: Buffer[] = [];
        let n = 0;
        for await (const c of body) {
          n += (c as Buffer).length;
          if (n > maxBytes) {
            body.destroy();
            break;
          }
          chunks.push(c as Buffer);
        }
        return Buffer.concat(chunks).toString('utf8');
      },
    };
  }

  async close(): Promise<void> {
    this.closed = true;
    for (const p of this.bulkPools.values()) p.close();
    this.bulkPools.clear();
    await Promise.all([...this.pools.values()].map((p) => p.close()));
    this.pools.clear();
  }

  async destroy(): Promise<void> {
    this.closed = true;
    for (const p of this.bulkPools.values()) p.close();
    this.bulkPools.clear();
    await Promise.all([...this.pools.values()].map((p) => p.destroy()));
    this.pools.clear();
  }
}

/** Buffered response body per connection before undici's parser pauses (memory is used only under backpressure). */
export const RESPONSE_HIGH_WATER_MARK = 2 * 1024 * 1024;

/**
 * undici 7 (nodejs/undici#5360, fixed only in undici 8 which needs Node 22) throws an
 * uncatchable `AssertionError: assert(!this.paused)` from the socket's 'end' (or
 * ECONNRESET 'error') handler when a response without keep-alive (`Connection: close`,
 * HTTP/1.0, a body delimited by EOF) ends while its parser is paused because the body
 * consumer is slower than the network. A `--limit-rate` download from such a server
 * hits it almost every time: the throttle holds the body back, so the last chunk
 * always meets a full buffer. This guard defers that 'end' (and the close of our side
 * that follows it) until the consumer has read on and the parser has resumed (it then
 * completes the message, and undici closes the socket itself), and turns such an ECONNRESET into a plain socket error
 * (the data after a reset is lost anyway), so undici never calls finish() on a paused
 * parser. It looks at undici's private parser state and does nothing if that is not
 * there (another undici version).
 */
export function guardPausedParserEnd(socket: Socket): void {
  const emit = socket.emit as (this: Socket, event: string | symbol, ...args: unknown[]) => boolean;
  const parserOf = (): { paused?: boolean; statusCode?: number; shouldKeepAlive?: boolean } | undefined => {
    const key = Object.getOwnPropertySymbols(socket).find((k) => k.description === 'parser');
    const p = key ? (socket as unknown as Record<symbol, unknown>)[key] : undefined;
    return p && typeof p === 'object' ? (p as { paused?: boolean; statusCode?: number; shouldKeepAlive?: boolean }) : undefined;
  };
  const atRisk = () => {
    const p = parserOf();
    return p?.paused === true && !!p.statusCode && p.shouldKeepAlive === false;
  };
  socket.emit = function (this: Socket, event: string | symbol, ...args: unknown[]): boolean {
    if (event === 'end' && atRisk()) {
      // Right after emitting 'end', a stream that is not half-open ends its writable side
      // too (endWritableNT), and the 'close' that follows reaches the same finish() from
      // undici's close handler: stay half-open until the deferred 'end' is delivered.
      const halfOpen = socket.allowHalfOpen;
      socket.allowHalfOpen = true;
      const retry = () => {
        if (socket.destroyed) return; // undici completed (or failed) the response and closed the socket itself
        if (atRisk()) {
          setTimeout(retry, 5);
          return;
        }
        socket.allowHalfOpen = halfOpen;
        emit.call(socket, 'end', ...args);
        if (!halfOpen && socket.writable && !socket.writableEnded && !socket.destroyed) socket.end();
      };
      setTimeout(retry, 5);
      return true;
    }
    if (event === 'error' && (args[0] as { code?: string } | undefined)?.code === 'ECONNRESET' && atRisk()) {
      const cause = args[0] as Error;
      // Without the code undici takes its ordinary error path (no finish()); mapTransportError
      // still reads ECONNRESET from the cause.
      return emit.call(socket, 'error', new Error(cause.message, { cause }));
    }
    return emit.call(this, event, ...args);
  } as Socket['emit'];
}

async function dump(res: Dispatcher.ResponseData): Promise<void> {
  try {
    await res.body.dump({ limit: 64 * 1024 });
  } catch {
    /* the connection is dropped instead of reused: harmless */
  }
}

/**
 * A Location resolved against the URL that answered (RFC 7231 §7.1.2: it may be
 * relative). User info in it is dropped: credentials come from the user, never a server.
 */
function redirectTarget(location: string, base: URL, status: number): URL {
  let u: URL;
  try {
    u = new URL(location, base);
  } catch {
    throw new ProtocolError(`${base.host} redirected (HTTP ${status}) to an invalid Location ${JSON.stringify(location)}`, { httpStatus: status });
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') {
    throw new ProtocolError(`${base.host} redirected (HTTP ${status}) to ${JSON.stringify(location)}: only http and https are followed`, { httpStatus: status });
  }
  u.username = '';
  u.password = '';
  // RFC 7231 §7.1.2: a Location without a fragment inherits the request's.
  if (!u.hash && base.hash) u.hash = base.hash;
  return u;
}

/** The absolute-form request-target (RFC 7230 §5.3.2): the URL without fragment. */
function absoluteTarget(url: URL): string {
  return `${url.origin}${url.pathname}${url.search}`;
}

function closesConnection(headers: Dispatcher.ResponseData['headers']): boolean {
  return /\bclose\b/i.test(headerValue(headers['connection']) ?? headerValue(headers['proxy-connection']) ?? '');
}

/**
 * Whether the server sent a TLS CertificateRequest: a client only learns the
 * server's signature algorithms from one, so getSharedSigalgs() is empty otherwise.
 */
export function serverRequestedCertificate(socket: Socket): boolean | undefined {
  const s = socket as Socket & { getSharedSigalgs?: () => string[]; isSessionReused?: () => boolean };
  if (typeof s.getSharedSigalgs !== 'function') return undefined;
  try {
    // A resumed session has no CertificateRequest (TLS 1.3 forbids it with a PSK): unknown.
    if (s.isSessionReused?.()) return undefined;
    return s.getSharedSigalgs().length > 0;
  } catch {
    return undefined;
  }
}

function headerValue(v: string | string[] | undefined): string | undefined {
  return Array.isArray(v) ? v.join(', ') : v;
}

function lowerKeys(h: Record<string, string>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(h)) out[k.toLowerCase()] = v;
  return out;
}

/** Maps undici/Node errors to typed errors carrying the HRESULT Windows would show. */
export function mapTransportError(err: unknown, url: URL, abortReason?: unknown): Error {
  if (abortReason instanceof BitsError) return abortReason;
  if (err instanceof BitsError) return err;
  const e = err as { code?: string; message?: string; name?: string; path?: string; syscall?: string; cause?: { code?: string; message?: string } };
  const code = e?.code ?? e?.cause?.code;
  const where = url.host;
  // A TypeError, RangeError or ReferenceError without an error code is a bug in bits,
  // not a network fault: retrying it until the no-progress timeout only hides it.
  if ((err instanceof TypeError || err instanceof RangeError || err instanceof ReferenceError) && code === undefined) return toBitsError(err);
  const undiciErrors = undiciErrorsIfLoaded();
  if (undiciErrors && err instanceof undiciErrors.HeadersTimeoutError) return new TimeoutError(`no response headers from ${where} within the response timeout`, 'response', { cause: err });
  if (undiciErrors && err instanceof undiciErrors.BodyTimeoutError) return new TimeoutError(`response body from ${where} stalled past the response timeout`, 'response', { cause: err });
  if (undiciErrors && err instanceof undiciErrors.ConnectTimeoutError) return new TimeoutError(`could not connect to ${where}: connect timeout`, 'connect', { cause: err });
  if (e?.name === 'AbortError' && abortReason !== undefined) return abortReason instanceof Error ? abortReason : new TransportError(String(abortReason));
  // A local file failing while it is read as a request body is the file's fault, not the network's.
  if (typeof e?.path === 'string' && e.syscall !== 'connect') return toBitsError(err);
  const tlsErr = describeTlsError(err, where);
  if (tlsErr) return tlsErr;
  switch (code) {
    case 'ECONNREFUSED':
      return new TransportError(`could not connect to ${where}: connection refused`, { cause: err, hresult: HRESULT.ERROR_INTERNET_CANNOT_CONNECT });
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
      return new TransportError(`could not resolve host ${url.hostname}`, { cause: err, hresult: HRESULT.ERROR_INTERNET_NAME_NOT_RESOLVED });
    case 'ECONNRESET':
    case 'EPIPE':
    case 'UND_ERR_SOCKET':
    case 'UND_ERR_CLOSED':
      return new TransportError(`connection to ${where} was reset`, { cause: err, hresult: HRESULT.ERROR_INTERNET_CONNECTION_RESET });
    case 'ETIMEDOUT':
      return new TimeoutError(`connection to ${where} timed out`, 'connect', { cause: err });
    case 'EHOSTUNREACH':
    case 'ENETUNREACH':
      return new TransportError(`host ${where} is unreachable`, { cause: err, hresult: HRESULT.ERROR_INTERNET_CANNOT_CONNECT });
  }
  if (err instanceof TlsError) return err;
  return new TransportError(`transfer to ${where} failed: ${e?.message ?? String(err)}`, { cause: err });
}

/**
 * undici never writes `Content-Length: 0` for a bodiless request whose method it does
 * not know as a payload method (RFC 7230 §3.3.2 "SHOULD NOT"), but MC-BUP §2.2.1.1 says
 * every BITS_POST MUST carry Content-Length, and IIS and `bits serve` refuse it without
 * (§3.2.5.2.3, §6 note 23). So the connector adds it to such request heads.
 * (Added by the upload-client helper.)
 */
function withBitsPostContentLength(connect: Client.Options['connect']): buildConnector.connector {
  const base: buildConnector.connector =
    typeof connect === 'function' ? (connect as buildConnector.connector) : undici().buildConnector((connect ?? {}) as buildConnector.BuildOptions);
  return (opts, callback) =>
    base(opts, (err, socket) => {
      if (err || !socket) return callback(err ?? new Error('no socket'), null);
      addBitsPostContentLength(socket as Socket);
      callback(null, socket);
    });
}

export function addBitsPostContentLength(socket: Socket): void {
  const write = socket.write;
  socket.write = function (this: Socket, chunk: unknown, ...rest: unknown[]) {
    if (typeof chunk === 'string' && chunk.startsWith('BITS_POST ') && chunk.endsWith('\r\n\r\n') && !/\r\ncontent-length:/i.test(chunk)) {
      chunk = chunk.slice(0, -2) + 'content-length: 0\r\n\r\n';
    }
    return (write as (...a: unknown[]) => boolean).call(this, chunk, ...rest);
  } as Socket['write'];
}
