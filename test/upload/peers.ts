/**
 * BITS upload servers of our own for behaviour tests, on 127.0.0.1 over the
 * project's HTTP/1.1 server (node:http refuses the BITS_POST method). A small
 * honest BITS server (sessions, fragments, CLOSE-SESSION writes the file,
 * HEAD/GET serve it) whose answers a test can override one request at a time,
 * to play the broken and the merely different peers of issues 11 and 12.
 *
 * Every server is bounded: after `maxRequests` it closes each connection
 * without an answer, so a client that loops shows up as a failed count, never
 * as a hung test.
 */
import { startHttp1Server, type Http1Request } from '../../src/server/http1.js';

export interface PeerRequest {
  method: string;
  path: string;
  /** Lower-cased names. */
  headers: Record<string, string>;
  body: Buffer;
  index: number;
  /** The BITS packet type, lower-cased ('create-session', 'fragment', …), or '' for plain HTTP. */
  type: string;
  /** A FRAGMENT's Content-Range. */
  range?: { start: number; end: number; total: number };
}

export interface PeerAnswer {
  status: number;
  headers?: Record<string, string>;
  body?: string;
  /** Never answer (until the server closes). */
  hang?: boolean;
}

export interface PeerOptions {
  /** Answer this request differently; undefined = what an honest server answers. */
  override?: (req: PeerRequest, peer: Peer) => PeerAnswer | undefined;
  /** The n-th session id (0-based); GUIDs by default. */
  sessionId?: (n: number) => string;
  /** The header the HRESULT goes in (MC-BUP: BITS-Error; the SDK pages: BITS-Error-Code). */
  errorHeader?: string;
  /** The header a 416 names the server's offset in. */
  resyncHeader?: string;
  /** Create the file on CLOSE-SESSION (default true); false: only when a FRAGMENT brought bytes. */
  createEmptyOnClose?: boolean;
  maxRequests?: number;
}

export interface Peer {
  url: string;
  requests: PeerRequest[];
  /** Bytes each session holds. */
  sessions: Map<string, Buffer>;
  /** Files closed, by path. */
  files: Map<string, Buffer>;
  /** Answers as the honest server would (for overrides that only sometimes differ). */
  honest(req: PeerRequest): PeerAnswer;
  ack(headers?: Record<string, string>): PeerAnswer;
  error(status: number, hresult: string): PeerAnswer;
  close(): Promise<void>;
}

const guid = (n: number) => `{${(0xa0000000 + n).toString(16).toUpperCase()}-0000-4000-8000-000000000000}`;

async function readBody(req: Http1Request): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of req.body) parts.push(c as Buffer);
  return Buffer.concat(parts);
}

export async function startPeer(opts: PeerOptions = {}): Promise<Peer> {
  const maxRequests = opts.maxRequests ?? 2000;
  const errorHeader = opts.errorHeader ?? 'BITS-Error';
  const resyncHeader = opts.resyncHeader ?? 'BITS-Received-Content-Range';
  let created = 0;
  let closing = false;
  const hangs: Array<() => void> = [];
  const sessions = new Map<string, Buffer>();
  const files = new Map<string, Buffer>();
  const requests: PeerRequest[] = [];

  const ack = (headers: Record<string, string> = {}): PeerAnswer => ({ status: 200, headers: { 'BITS-Packet-Type': 'Ack', ...headers } });
  const error = (status: number, hresult: string): PeerAnswer => ({
    status,
    headers: { 'BITS-Packet-Type': 'Ack', [errorHeader]: hresult, 'BITS-Error-Context': '0x5' },
  });

  const honest = (req: PeerRequest): PeerAnswer => {
    if (req.method === 'HEAD' || req.method === 'GET') {
      const f = files.get(req.path);
      return f ? { status: 200, headers: { 'Content-Length': String(f.length) }, body: req.method === 'GET' ? f.toString('latin1') : undefined } : { status: 404 };
    }
    const sid = req.headers['bits-session-id'];
    switch (req.type) {
      case 'create-session': {
        const id = (opts.sessionId ?? guid)(created++);
        sessions.set(id, Buffer.alloc(0));
        return ack({ 'BITS-Session-Id': id, 'BITS-Protocol': '{7df0354d-249b-430f-820d-3d2a9bef4931}' });
      }
      case 'ping':
        return ack();
      case 'fragment': {
        const have = sid === undefined ? undefined : sessions.get(sid);
        if (have === undefined) return error(500, '0x8020001F');
        const r = req.range!;
        if (r.start !== have.length) return { status: 416, headers: { 'BITS-Packet-Type': 'Ack', [resyncHeader]: String(have.length) } };
        const now = Buffer.concat([have, req.body]);
        sessions.set(sid!, now);
        return ack({ 'BITS-Received-Content-Range': String(now.length) });
      }
      case 'close-session': {
        const have = sid === undefined ? undefined : sessions.get(sid);
        if (have === undefined) return error(500, '0x8020001F');
        if (have.length > 0 || opts.createEmptyOnClose !== false) files.set(req.path, have);
        sessions.delete(sid!);
        return ack();
      }
      case 'cancel-session':
        if (sid !== undefined) sessions.delete(sid);
        return ack();
      default:
        return { status: 400 };
    }
  };

  let peer: Peer;
  const server = await startHttp1Server({ host: '127.0.0.1', port: 0 }, async (h) => {
    const body = await readBody(h);
    const m = /^bytes (\d+)-(\d+)\/(\d+)$/.exec(h.headers['content-range'] ?? '');
    const req: PeerRequest = {
      method: h.method,
      path: decodeURIComponent(h.rawPath),
      headers: h.headers,
      body,
      index: requests.length,
      type: h.method === 'BITS_POST' ? (h.headers['bits-packet-type'] ?? '').toLowerCase() : '',
      ...(m ? { range: { start: Number(m[1]), end: Number(m[2]), total: Number(m[3]) } } : {}),
    };
    requests.push(req);
    if (requests.length > maxRequests) {
      h.socket.destroy();
      return { status: 500, close: true };
    }
    const a = opts.override?.(req, peer) ?? honest(req);
    if (a.hang) {
      await new Promise<void>((resolve) => {
        if (closing) return resolve();
        hangs.push(resolve);
      });
      h.socket.destroy();
      return { status: 500, close: true };
    }
    return { status: a.status, headers: a.headers ?? {}, body: a.body ?? '' };
  });
  peer = {
    url: `http://127.0.0.1:${server.port}`,
    requests,
    sessions,
    files,
    honest,
    ack,
    error,
    async close() {
      closing = true;
      for (const h of hangs.splice(0)) h();
      await server.close();
    },
  };
  return peer;
}
