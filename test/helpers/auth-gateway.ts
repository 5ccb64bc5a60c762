/**
 * An authenticating reverse proxy on 127.0.0.1, the way IIS puts Windows
 * authentication in front of the BITS server extension: it REQUIRES Digest or NTLM
 * and forwards each authenticated request byte-for-byte to an upstream (`bits
 * serve`), BITS_POST included. Raw TCP, because node:http refuses BITS_POST.
 *
 * Credentials are checked for real with the server-side code of auth-servers.ts:
 * Digest recomputes every response hash (MD5 or SHA-256, increasing nc), NTLM verifies
 * the NTLMv2 proof and that AUTHENTICATE arrives on the connection that got the
 * CHALLENGE; like IIS, an NTLM-authenticated connection needs no header afterwards,
 * and a new connection must authenticate again.
 *
 * Each client connection gets its own upstream connection, opened at its first
 * authenticated request (so a session tied to a connection stays tied). Requests are
 * read one at a time (no pipelining: undici with pipelining 1 never does it); bodies
 * are framed by Content-Length and streamed with backpressure, never held whole. The
 * upstream's responses flow back unparsed: the client sends its next request only
 * after the previous response arrived in full, so the gateway's own 401 can never
 * land inside an upstream response.
 */
import net from 'node:net';
import { digestAuth, ntlmAuth, type Handler, type NtlmState, type RawRequest, type RawResponse } from './auth-servers.js';

/** 'none' forwards everything: a request counter in front of a server that authenticates itself. */
export type GatewayScheme = 'digest-md5' | 'digest-sha256' | 'ntlm' | 'negotiate' | 'none';

export interface GatewayRequestLog {
  /** Client connection (1, 2, …). */
  socketId: number;
  method: string;
  target: string;
  /** BITS-Packet-Type, if any. */
  packetType?: string;
  contentLength: number;
  /** 'forwarded' to the upstream, or answered by the gateway with this status. */
  outcome: 'forwarded' | 401 | 501;
}

export interface AuthGateway {
  url: string;
  port: number;
  /** Every request head seen, in order. */
  requests: GatewayRequestLog[];
  /** Body bytes the client sent with requests the gateway refused (a fragment sent just to get a 401). */
  deniedBodyBytes: number;
  /** Client connections accepted. */
  connections: number;
  /** NTLM handshake bookkeeping (ntlm/negotiate only). */
  ntlm?: NtlmState;
  /** Digest outcomes: 'none', 'bad-response', 'ok:MD5', … (digest only). */
  digestLog?: string[];
  close(): Promise<void>;
}

export interface GatewayOptions {
  upstream: { host?: string; port: number };
  scheme: GatewayScheme;
  user?: string;
  password?: string;
  domain?: string;
}

const FORWARD: RawResponse = { status: 0 };

function parseHead(head: string): { method: string; target: string; headers: Record<string, string> } {
  const [line, ...lines] = head.split('\r\n');
  const [method = '', target = ''] = line!.split(' ');
  const headers: Record<string, string> = {};
  for (const l of lines) {
    const i = l.indexOf(':');
    if (i <= 0) continue;
    const k = l.slice(0, i).trim().toLowerCase();
    const v = l.slice(i + 1).trim();
    headers[k] = headers[k] ? `${headers[k]}, ${v}` : v;
  }
  return { method, target, headers };
}

function responseBytes(res: RawResponse, method: string): Buffer {
  const body = typeof res.body === 'string' ? Buffer.from(res.body) : (res.body ?? Buffer.alloc(0));
  const reason = res.status === 401 ? 'Unauthorized' : 'Not Implemented';
  const head = [`HTTP/1.1 ${res.status} ${reason}`, `Content-Length: ${body.length}`, 'Content-Type: text/plain'];
  for (const [k, v] of Object.entries(res.headers ?? {})) head.push(`${k}: ${v}`);
  if (res.close) head.push('Connection: close');
  // A response to HEAD has the length of the body it does not carry.
  return Buffer.concat([Buffer.from(head.join('\r\n') + '\r\n\r\n', 'latin1'), method === 'HEAD' ? Buffer.alloc(0) : body]);
}

export async function startAuthGateway(o: GatewayOptions): Promise<AuthGateway> {
  // The app behind the check is "forward": the sentinel tells the connection loop to pass the request on.
  const forward: Handler = () => FORWARD;
  let check: Handler;
  const gw: AuthGateway = { url: '', port: 0, requests: [], deniedBodyBytes: 0, connections: 0, close: async () => {} };
  if (o.scheme === 'digest-md5' || o.scheme === 'digest-sha256') {
    const d = digestAuth({ user: o.user ?? '', password: o.password ?? '', algorithm: o.scheme === 'digest-md5' ? 'MD5' : 'SHA-256' }, forward);
    gw.digestLog = d.log;
    check = d;
  } else if (o.scheme === 'none') {
    check = forward;
  } else {
    const n = ntlmAuth({ user: o.user ?? '', password: o.password ?? '', domain: o.domain, offer: o.scheme === 'ntlm' ? ['NTLM'] : ['Negotiate', 'NTLM'] }, forward);
    gw.ntlm = n.state;
    check = n;
  }

  const sockets = new Set<net.Socket>();
  const server = net.createServer((client) => {
    const socketId = ++gw.connections;
    sockets.add(client);
    client.on('error', () => {});
    let upstream: net.Socket | undefined;
    let buf = Buffer.alloc(0);
    // Body bytes still to come for the current request, and where they go.
    let bodyLeft = 0;
    let bodyTo: 'upstream' | 'discard' = 'discard';
    let pending: Buffer | undefined; // the gateway's answer, sent once the refused body is read
    let busy = false;

    const openUpstream = (): net.Socket => {
      if (upstream && !upstream.destroyed) return upstream;
      const up = net.connect({ host: o.upstream.host ?? '127.0.0.1', port: o.upstream.port });
      sockets.add(up);
      up.on('error', () => client.destroy());
      up.on('close', () => {
        sockets.delete(up);
        // The upstream said Connection: close (or died): the client's connection ends with it.
        client.end();
      });
      up.pipe(client, { end: false });
      up.on('drain', () => client.resume());
      upstream = up;
      return up;
    };

    const sendBody = (chunk: Buffer) => {
      if (bodyTo === 'upstream') {
        if (!upstream!.write(chunk)) client.pause();
      } else gw.deniedBodyBytes += chunk.length;
    };

    const step = async (): Promise<void> => {
      if (busy) return;
      busy = true;
      try {
        for (;;) {
          if (bodyLeft > 0) {
            if (buf.length === 0) return;
            const n = Math.min(bodyLeft, buf.length);
            sendBody(buf.subarray(0, n));
            buf = buf.subarray(n);
            bodyLeft -= n;
            if (bodyLeft > 0) return;
          }
          if (pending) {
            client.write(pending);
            pending = undefined;
          }
          const end = buf.indexOf('\r\n\r\n');
          if (end < 0) return;
          const headBytes = buf.subarray(0, end + 4);
          buf = buf.subarray(end + 4);
          const { method, target, headers } = parseHead(headBytes.toString('latin1'));
          const contentLength = Number(headers['content-length'] ?? 0);
          const entry: GatewayRequestLog = { socketId, method, target, contentLength, outcome: 'forwarded' };
          if (headers['bits-packet-type']) entry.packetType = headers['bits-packet-type'];
          gw.requests.push(entry);
          if (headers['transfer-encoding'] || !Number.isInteger(contentLength) || contentLength < 0) {
            // Not needed by bits (it always frames by Content-Length); refuse loudly rather than guess.
            entry.outcome = 501;
            client.end(responseBytes({ status: 501, body: 'the gateway frames request bodies by Content-Length only', close: true }, method));
            return;
          }
          const req: RawRequest = { method, target, headers, body: Buffer.alloc(0), socketId };
          const res = await check(req);
          bodyLeft = contentLength;
          if (res === FORWARD) {
            bodyTo = 'upstream';
            openUpstream().write(headBytes);
          } else {
            entry.outcome = 401;
            bodyTo = 'discard';
            pending = responseBytes(res, method);
          }
        }
      } finally {
        busy = false;
      }
    };

    client.on('data', (d: Buffer) => {
      buf = buf.length ? Buffer.concat([buf, d]) : d;
      void step().then(() => {
        // data that arrived while an async check ran
        if (buf.length && !busy) void step();
      });
    });
    client.on('close', () => {
      sockets.delete(client);
      upstream?.destroy();
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  gw.port = (server.address() as net.AddressInfo).port;
  gw.url = `http://127.0.0.1:${gw.port}`;
  gw.close = () =>
    new Promise<void>((r) => {
      for (const s of sockets) s.destroy();
      server.close(() => r());
    });
  return gw;
}
