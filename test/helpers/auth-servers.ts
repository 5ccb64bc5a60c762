/**
 * Authenticating HTTP/1.1 test servers on 127.0.0.1 that check credentials for real:
 * Basic compares, Digest recomputes the response hash (RFC 7616), NTLM verifies the
 * NTLMv2 proof and MIC with the known password and checks that AUTHENTICATE arrives on
 * the socket that got the CHALLENGE. Raw sockets, because node:http refuses BITS_POST.
 * Also a small forward proxy that can demand NTLM (keeping the connection across 407s).
 */
import { createHash, randomBytes } from 'node:crypto';
import net from 'node:net';
import tls from 'node:tls';
import { digestResponse } from '../../src/transport/auth/digest.js';
import { parseChallenges } from '../../src/transport/auth/challenge.js';
import {
  createChallengeMessage,
  parseAuthenticateMessage,
  unwrapSpnego,
  verifyAuthenticateMessage,
} from '../../src/transport/auth/ntlm.js';

export interface RawRequest {
  method: string;
  target: string;
  headers: Record<string, string>;
  body: Buffer;
  /** Which TCP connection carried it (1, 2, …). */
  socketId: number;
}

export interface RawResponse {
  status: number;
  headers?: Record<string, string>;
  body?: Buffer | string;
  close?: boolean;
}

export type Handler = (req: RawRequest) => RawResponse | Promise<RawResponse>;

export interface RawServer {
  url: string;
  port: number;
  requests: RawRequest[];
  connections: number;
  close(): Promise<void>;
}

/** Parses one request from the front of `buf`; undefined if incomplete. */
function parseRequest(buf: Buffer): { req: Omit<RawRequest, 'socketId'>; used: number } | undefined {
  const end = buf.indexOf('\r\n\r\n');
  if (end < 0) return undefined;
  const [line, ...lines] = buf.subarray(0, end).toString('latin1').split('\r\n');
  const [method, target] = line!.split(' ');
  const headers: Record<string, string> = {};
  for (const l of lines) {
    const i = l.indexOf(':');
    const k = l.slice(0, i).trim().toLowerCase();
    const v = l.slice(i + 1).trim();
    headers[k] = headers[k] ? `${headers[k]}, ${v}` : v;
  }
  let pos = end + 4;
  let body: Buffer;
  if (/chunked/i.test(headers['transfer-encoding'] ?? '')) {
    const parts: Buffer[] = [];
    for (;;) {
      const le = buf.indexOf('\r\n', pos);
      if (le < 0) return undefined;
      const n = parseInt(buf.subarray(pos, le).toString('latin1'), 16);
      if (buf.length < le + 2 + n + 2) return undefined;
      parts.push(buf.subarray(le + 2, le + 2 + n));
      pos = le + 2 + n + 2;
      if (n === 0) break;
    }
    body = Buffer.concat(parts);
  } else {
    const n = Number(headers['content-length'] ?? 0);
    if (buf.length < pos + n) return undefined;
    body = Buffer.from(buf.subarray(pos, pos + n));
    pos += n;
  }
  return { req: { method: method!, target: target!, headers, body }, used: pos };
}

export function startRawServer(handler: Handler, opts: { tls?: tls.TlsOptions } = {}): Promise<RawServer> {
  const requests: RawRequest[] = [];
  const sockets = new Set<net.Socket>();
  let nextId = 0;
  const onSocket = (socket: net.Socket) => {
    const id = ++nextId;
    server.connections = nextId;
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => {});
    let buf = Buffer.alloc(0);
    let busy = false;
    const pump = async () => {
      if (busy) return;
      busy = true;
      try {
        for (;;) {
          const p = parseRequest(buf);
          if (!p) break;
          buf = buf.subarray(p.used);
          const req: RawRequest = { ...p.req, socketId: id };
          requests.push(req);
          const res = await handler(req);
          const body = typeof res.body === 'string' ? Buffer.from(res.body) : (res.body ?? Buffer.alloc(0));
          const head = [`HTTP/1.1 ${res.status} X`, `Content-Length: ${body.length}`];
          for (const [k, v] of Object.entries(res.headers ?? {})) head.push(`${k}: ${v}`);
          if (res.close) head.push('Connection: close');
          socket.write(Buffer.concat([Buffer.from(head.join('\r\n') + '\r\n\r\n', 'latin1'), req.method === 'HEAD' ? Buffer.alloc(0) : body]));
          if (res.close) {
            socket.end();
            return;
          }
        }
      } finally {
        busy = false;
      }
    };
    socket.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      void pump();
    });
  };
  const srv = opts.tls ? tls.createServer(opts.tls, onSocket) : net.createServer(onSocket);
  if (opts.tls) srv.on('tlsClientError', () => {});
  const server: RawServer = {
    url: '',
    port: 0,
    requests,
    connections: 0,
    close: () =>
      new Promise<void>((r) => {
        for (const s of sockets) s.destroy();
        srv.close(() => r());
      }),
  };
  return new Promise((resolve) => {
    srv.listen(0, '127.0.0.1', () => {
      server.port = (srv.address() as net.AddressInfo).port;
      server.url = `${opts.tls ? 'https' : 'http'}://127.0.0.1:${server.port}`;
      resolve(server);
    });
  });
}

/** What the protected resource answers: method, target and the body's sha256 and length. */
export const echoApp: Handler = (req) => ({
  status: 200,
  headers: { 'Content-Type': 'application/json', 'BITS-Packet-Type': 'Ack' },
  body: JSON.stringify({
    method: req.method,
    target: req.target,
    length: req.body.length,
    sha256: createHash('sha256').update(req.body).digest('hex'),
  }),
});

export interface Account {
  user: string;
  password: string;
}

export function basicAuth(account: Account, app: Handler = echoApp): Handler {
  const want = 'Basic ' + Buffer.from(`${account.user}:${account.password}`).toString('base64');
  return (req) => (req.headers['authorization'] === want ? app(req) : { status: 401, headers: { 'WWW-Authenticate': 'Basic realm="bits", charset="UTF-8"' }, body: 'no' });
}

export interface DigestOptions extends Account {
  realm?: string;
  algorithm?: 'MD5' | 'SHA-256' | 'MD5-sess' | 'SHA-256-sess';
  /** The first correct answer the server sees gets 401 stale=true (nonce expired). */
  staleFirst?: boolean;
  /** Offer several algorithms in one 401, as RFC 7616 §3.7 suggests. */
  offer?: Array<'MD5' | 'SHA-256'>;
  userhash?: boolean;
}

/** A Digest server that recomputes every response hash and enforces increasing nc. */
export function digestAuth(o: DigestOptions, app: Handler = echoApp): Handler & { log: string[] } {
  const realm = o.realm ?? 'bits@127.0.0.1';
  const nonces = new Map<string, { lastNc: number; used: boolean }>();
  const log: string[] = [];
  let staleSent = false;
  const challenge = (stale: boolean) => {
    const nonce = randomBytes(16).toString('hex');
    nonces.set(nonce, { lastNc: 0, used: false });
    const algs = o.offer ?? [o.algorithm ?? 'MD5'];
    return algs.map(
      (a) => `Digest realm="${realm}", qop="auth, auth-int", algorithm=${a}, nonce="${nonce}", opaque="op4que"${stale ? ', stale=true' : ''}${o.userhash ? ', userhash=true' : ''}`,
    );
  };
  const handler = (async (req: RawRequest) => {
    const h = req.headers['authorization'];
    const deny = (stale: boolean, why: string): RawResponse => {
      log.push(why);
      return { status: 401, headers: { 'WWW-Authenticate': challenge(stale).join(', ') }, body: 'no' };
    };
    if (!h) return deny(false, 'none');
    const c = parseChallenges(h)[0];
    if (!c || c.scheme.toLowerCase() !== 'digest') return deny(false, 'scheme');
    const p = c.params;
    const alg = p['algorithm'] ?? 'MD5';
    const st = nonces.get(p['nonce'] ?? '');
    if (!st) return deny(true, 'unknown-nonce');
    if (p['opaque'] !== 'op4que' || p['realm'] !== realm || p['qop'] !== 'auth') return deny(false, 'params');
    if (p['uri'] !== req.target) return deny(false, 'uri');
    const nc = parseInt(p['nc'] ?? '', 16);
    if (!(nc > st.lastNc)) return deny(false, 'nc-replay');
    const user = o.userhash ? undefined : p['username'];
    if (o.userhash) {
      const { digestHash } = await import('../../src/transport/auth/digest.js');
      if (p['userhash'] !== 'true' || p['username'] !== digestHash(alg, `${o.user}:${realm}`)) return deny(false, 'userhash');
    } else if (user !== o.user) return deny(false, 'user');
    const expect = digestResponse({ algorithm: alg, user: o.user, realm, password: o.password, method: req.method, uri: req.target, nonce: p['nonce']!, cnonce: p['cnonce'], nc: p['nc'], qop: 'auth' });
    if (expect !== p['response']) return deny(false, 'bad-response');
    st.lastNc = nc;
    if (o.staleFirst && !staleSent) {
      staleSent = true;
      nonces.delete(p['nonce']!);
      return deny(true, 'stale');
    }
    st.used = true;
    log.push(`ok:${alg}`);
    return app(req);
  }) as Handler & { log: string[] };
  handler.log = log;
  return handler;
}

export interface NtlmOptions extends Account {
  domain?: string;
  /** What the 401 offers: `NTLM`, `Negotiate` or both (IIS default order). */
  offer?: Array<'Negotiate' | 'NTLM'>;
  /** Header names: WWW-Authenticate/Authorization, or the proxy ones. */
  proxy?: boolean;
}

export interface NtlmState {
  /** AUTHENTICATE messages that arrived on a socket other than their CHALLENGE's. */
  wrongSocket: number;
  verified: number;
  failed: number;
  authenticatedSockets: Set<number>;
}

/**
 * NTLM (or Negotiate carrying raw NTLM) server. Connection-based like IIS: once a
 * socket has authenticated, later requests on it need no header.
 */
export function ntlmAuth(o: NtlmOptions, app: Handler = echoApp): Handler & { state: NtlmState } {
  const offer = o.offer ?? ['NTLM'];
  const pending = new Map<number, { negotiate: Buffer; challenge: Buffer; serverChallenge: Buffer; scheme: string }>();
  const state: NtlmState = { wrongSocket: 0, verified: 0, failed: 0, authenticatedSockets: new Set() };
  const authH = o.proxy ? 'proxy-authorization' : 'authorization';
  const challH = o.proxy ? 'Proxy-Authenticate' : 'WWW-Authenticate';
  const status = o.proxy ? 407 : 401;
  const handler = ((req: RawRequest) => {
    if (state.authenticatedSockets.has(req.socketId)) return app(req);
    const h = req.headers[authH];
    const m = h ? /^(NTLM|Negotiate)\s+([A-Za-z0-9+/=]+)$/i.exec(h) : null;
    if (!m) return { status, headers: { [challH]: offer.join(', ') }, body: 'auth' };
    const scheme = m[1]!;
    let token: Buffer;
    try {
      token = unwrapSpnego(Buffer.from(m[2]!, 'base64'));
    } catch {
      return { status, headers: { [challH]: offer.join(', ') }, body: 'bad token' };
    }
    const type = token.length >= 12 ? token.readUInt32LE(8) : 0;
    if (type === 1) {
      const serverChallenge = randomBytes(8);
      const challenge = createChallengeMessage({ serverChallenge, targetName: o.domain ?? 'BITS' });
      pending.set(req.socketId, { negotiate: token, challenge, serverChallenge, scheme });
      return { status, headers: { [challH]: `${scheme} ${challenge.toString('base64')}` }, body: 'continue' };
    }
    if (type === 3) {
      const p = pending.get(req.socketId);
      pending.delete(req.socketId);
      if (!p) {
        state.wrongSocket++;
        return { status, headers: { [challH]: offer.join(', ') }, body: 'no challenge on this connection' };
      }
      const auth = parseAuthenticateMessage(token);
      const ok =
        auth.user.toUpperCase() === o.user.toUpperCase() &&
        auth.domain.toUpperCase() === (o.domain ?? '').toUpperCase() &&
        verifyAuthenticateMessage({ auth, serverChallenge: p.serverChallenge, password: o.password, negotiate: p.negotiate, challenge: p.challenge });
      if (!ok) {
        state.failed++;
        return { status, headers: { [challH]: offer.join(', ') }, body: 'denied' };
      }
      state.verified++;
      state.authenticatedSockets.add(req.socketId);
      return app(req);
    }
    return { status, headers: { [challH]: offer.join(', ') }, body: 'bad message' };
  }) as Handler & { state: NtlmState };
  handler.state = state;
  return handler;
}

/**
 * A forward proxy that only tunnels (CONNECT) and demands NTLM proxy authentication,
 * answering 407 with keep-alive so the handshake can continue on one connection.
 */
export async function startNtlmProxy(o: Account & { domain?: string }): Promise<{ url: string; state: NtlmState; connects: number; close(): Promise<void> }> {
  const auth = ntlmAuth({ ...o, proxy: true }, () => ({ status: 200 }));
  const sockets = new Set<net.Socket>();
  let nextId = 0;
  const result = { url: '', state: auth.state, connects: 0, close: async () => {} };
  const srv = net.createServer((socket) => {
    const id = ++nextId;
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => {});
    let buf = Buffer.alloc(0);
    const onData = async (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      const p = parseRequest(buf);
      if (!p) return;
      buf = buf.subarray(p.used);
      result.connects++;
      const res = await auth({ ...p.req, socketId: id });
      if (res.status !== 200 || p.req.method !== 'CONNECT') {
        const body = Buffer.from(String(res.body ?? ''));
        const head = [`HTTP/1.1 ${res.status} Proxy Authentication Required`, `Content-Length: ${body.length}`];
        for (const [k, v] of Object.entries(res.headers ?? {})) head.push(`${k}: ${v}`);
        socket.write(head.join('\r\n') + '\r\n\r\n');
        socket.write(body);
        return;
      }
      socket.removeListener('data', onData);
      const [host, port] = [p.req.target.slice(0, p.req.target.lastIndexOf(':')), Number(p.req.target.slice(p.req.target.lastIndexOf(':') + 1))];
      const upstream = net.connect({ host: host.replace(/^\[|\]$/g, ''), port }, () => {
        socket.write('HTTP/1.1 200 Connection established\r\n\r\n');
        if (buf.length) upstream.write(buf);
        socket.pipe(upstream);
        upstream.pipe(socket);
      });
      upstream.on('error', () => socket.destroy());
      socket.on('close', () => upstream.destroy());
    };
    socket.on('data', onData);
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()));
  result.url = `http://127.0.0.1:${(srv.address() as net.AddressInfo).port}`;
  result.close = () =>
    new Promise<void>((r) => {
      for (const s of sockets) s.destroy();
      srv.close(() => r());
    });
  return result;
}
