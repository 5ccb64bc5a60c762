/**
 * A real TCP proxy on loopback that sits in front of `bits serve` and injects
 * faults per HTTP request: cut the connection after N body bytes, answer a
 * status (503 without BITS-Error) itself, hold the response past the client's
 * response timeout, or run an async hook (e.g. restart the server with its
 * sessions wiped) and then reset the connection.
 *
 * It parses request heads and Content-Length bodies in the client->server
 * direction only (HTTP/1.1, no pipelining — what our client sends); responses
 * are passed through as bytes.
 */
import net from 'node:net';

export type Fault =
  /** Forward the head and at most this many body bytes, then reset both sides. */
  | { type: 'cut'; afterBodyBytes: number }
  /** Do not forward: read the request, answer `status` with no BITS headers. */
  | { type: 'status'; status: number }
  /** Forward, but hold the response this long (past the client's response timeout). */
  | { type: 'delay'; ms: number }
  /** Do not forward: run `run` (e.g. restart the server), then reset the connection. */
  | { type: 'hook'; run: () => Promise<void> };

export interface ProxiedRequest {
  index: number;
  /** The address the client connected to (one proxy can listen on several). */
  listener: string;
  conn: number;
  method: string;
  target: string;
  packetType?: string;
  contentLength: number;
  headers: Record<string, string>;
  fault?: Fault['type'];
}

export interface FaultProxyOptions {
  target: { host: string; port: number };
  /** Addresses to listen on, all with the same port; default ['127.0.0.1']. */
  hosts?: string[];
  decide?: (req: ProxiedRequest) => Fault | undefined;
}

export interface FaultProxy {
  port: number;
  requests: ProxiedRequest[];
  setTarget(target: { host: string; port: number }): void;
  decide: (req: ProxiedRequest) => Fault | undefined;
  close(): Promise<void>;
}

const MAX_HEAD = 64 * 1024;

export async function startFaultProxy(opts: FaultProxyOptions): Promise<FaultProxy> {
  let target = opts.target;
  const sockets = new Set<net.Socket>();
  const servers: net.Server[] = [];
  let conns = 0;
  const proxy: FaultProxy = {
    port: 0,
    requests: [],
    setTarget: (t) => {
      target = t;
    },
    decide: opts.decide ?? (() => undefined),
    close: async () => {
      for (const s of sockets) s.destroy();
      await Promise.all(servers.map((srv) => new Promise<void>((r) => srv.close(() => r()))));
    },
  };

  const onConnection = (listener: string) => (client: net.Socket) => {
    const conn = ++conns;
    sockets.add(client);
    const upstream = net.connect(target.port, target.host);
    sockets.add(upstream);
    let dead = false;
    const kill = () => {
      if (dead) return;
      dead = true;
      client.destroy();
      upstream.destroy();
    };
    client.on('close', () => {
      sockets.delete(client);
      kill();
    });
    upstream.on('close', () => {
      sockets.delete(upstream);
      kill();
    });
    client.on('error', kill);
    upstream.on('error', kill);

    // Response side: optionally held for a while.
    let holdUntil = 0;
    let held: Buffer[] = [];
    let holdTimer: NodeJS.Timeout | undefined;
    upstream.on('data', (d: Buffer) => {
      if (Date.now() < holdUntil) {
        held.push(d);
        if (!holdTimer) {
          holdTimer = setTimeout(() => {
            holdTimer = undefined;
            if (!dead) for (const b of held) client.write(b);
            held = [];
          }, holdUntil - Date.now());
        }
        return;
      }
      if (!dead) client.write(d);
    });
    client.on('close', () => clearTimeout(holdTimer));

    // Request side.
    let buf = Buffer.alloc(0);
    let mode: 'head' | 'body' | 'swallow' | 'busy' = 'head';
    let remaining = 0;
    let cutLeft = Infinity;
    let swallowReply: Buffer | undefined;

    const pump = () => {
      while (!dead && buf.length > 0) {
        if (mode === 'busy') return;
        if (mode === 'head') {
          const end = buf.indexOf('\r\n\r\n');
          if (end < 0) {
            if (buf.length > MAX_HEAD) kill();
            return;
          }
          const head = buf.subarray(0, end + 4);
          buf = buf.subarray(end + 4);
          const [line, ...lines] = head.toString('latin1').split('\r\n');
          const headers: Record<string, string> = {};
          for (const l of lines) {
            const i = l.indexOf(':');
            if (i > 0) headers[l.slice(0, i).trim().toLowerCase()] = l.slice(i + 1).trim();
          }
          const [method = '', reqTarget = ''] = (line ?? '').split(' ');
          const req: ProxiedRequest = {
            index: proxy.requests.length,
            listener,
            conn,
            method,
            target: reqTarget,
            packetType: headers['bits-packet-type'],
            contentLength: Number(headers['content-length'] ?? 0) || 0,
            headers,
          };
          const fault = proxy.decide(req);
          req.fault = fault?.type;
          proxy.requests.push(req);
          remaining = req.contentLength;
          cutLeft = Infinity;
          if (!fault || fault.type === 'delay') {
            if (fault) holdUntil = Date.now() + fault.ms;
            upstream.write(head);
            mode = 'body';
          } else if (fault.type === 'cut') {
            upstream.write(head);
            cutLeft = fault.afterBodyBytes;
            mode = 'body';
            if (cutLeft <= 0 || remaining === 0) {
              // Give the server a moment to see the head, then drop everything.
              setTimeout(kill, 5);
              mode = 'busy';
              return;
            }
          } else if (fault.type === 'status') {
            swallowReply = Buffer.from(`HTTP/1.1 ${fault.status} Fault Injected\r\nContent-Length: 0\r\n\r\n`, 'latin1');
            mode = 'swallow';
          } else {
            mode = 'busy';
            upstream.destroy();
            fault.run().then(kill, kill);
            return;
          }
          if (remaining === 0) finishBody();
          continue;
        }
        // body / swallow
        const n = Math.min(remaining, buf.length);
        const chunk = buf.subarray(0, n);
        buf = buf.subarray(n);
        remaining -= n;
        if (mode === 'body') {
          if (chunk.length >= cutLeft) {
            upstream.write(chunk.subarray(0, cutLeft), () => setTimeout(kill, 5));
            mode = 'busy';
            return;
          }
          cutLeft -= chunk.length;
          upstream.write(chunk);
        }
        if (remaining === 0) finishBody();
      }
    };
    const finishBody = () => {
      if (mode === 'swallow' && swallowReply) {
        client.write(swallowReply);
        swallowReply = undefined;
      }
      mode = 'head';
    };
    client.on('data', (d: Buffer) => {
      buf = buf.length ? Buffer.concat([buf, d]) : d;
      pump();
    });
  };

  const hosts = opts.hosts ?? ['127.0.0.1'];
  for (const host of hosts) {
    const srv = net.createServer(onConnection(host));
    servers.push(srv);
    await new Promise<void>((resolve, reject) => {
      srv.once('error', reject);
      srv.listen(proxy.port, host, () => resolve());
    });
    if (proxy.port === 0) proxy.port = (srv.address() as net.AddressInfo).port;
  }
  return proxy;
}
