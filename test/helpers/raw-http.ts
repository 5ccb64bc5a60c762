/**
 * Raw-socket HTTP/1.1 for tests: sends exact bytes (BITS_POST, pipelining, split
 * writes, broken framing) and parses responses strictly, so a test sees what a
 * Windows client or a buggy peer would see. Loopback only.
 */
import net from 'node:net';

export interface RawResponse {
  status: number;
  reason: string;
  /** Lower-cased names; repeated headers joined with ", ". */
  headers: Record<string, string>;
  rawHeaders: Array<[string, string]>;
  body: Buffer;
  /** The exact bytes of this response (head + body). */
  raw: Buffer;
}

/** Builds request bytes. Content-Length is added for a body unless a header already sets it or `noContentLength`. */
export function buildRequest(
  method: string,
  target: string,
  headers: Record<string, string | number> | Array<[string, string | number]> = {},
  body?: Buffer | string,
  opts: { noContentLength?: boolean; version?: '1.0' | '1.1' } = {},
): Buffer {
  const list: Array<[string, string]> = (Array.isArray(headers) ? headers : Object.entries(headers)).map(([k, v]) => [
    k,
    String(v),
  ]);
  if (!list.some(([k]) => k.toLowerCase() === 'host')) list.unshift(['Host', '127.0.0.1']);
  const b = body === undefined ? Buffer.alloc(0) : Buffer.isBuffer(body) ? body : Buffer.from(body);
  if (!opts.noContentLength && !list.some(([k]) => k.toLowerCase() === 'content-length')) {
    list.push(['Content-Length', String(b.length)]);
  }
  let head = `${method} ${target} HTTP/${opts.version ?? '1.1'}\r\n`;
  for (const [k, v] of list) head += `${k}: ${v}\r\n`;
  head += '\r\n';
  return Buffer.concat([Buffer.from(head, 'latin1'), b]);
}

/** One client connection with a byte buffer; responses are read in order. */
export class RawConnection {
  private buf: Buffer = Buffer.alloc(0);
  private waiters: Array<() => void> = [];
  ended = false;
  closed = false;

  private constructor(readonly socket: net.Socket) {
    socket.on('data', (d: Buffer) => {
      this.buf = Buffer.concat([this.buf, d]);
      this.wake();
    });
    socket.on('end', () => {
      this.ended = true;
      this.wake();
    });
    socket.on('close', () => {
      this.ended = true;
      this.closed = true;
      this.wake();
    });
    socket.on('error', () => {
      /* seen as close */
    });
  }

  static connect(port: number, host = '127.0.0.1', localAddress?: string): Promise<RawConnection> {
    return new Promise((resolve, reject) => {
      const s = net.connect({ port, host, allowHalfOpen: true, ...(localAddress ? { localAddress } : {}) }, () => {
        s.off('error', reject);
        resolve(new RawConnection(s));
      });
      s.once('error', reject);
    });
  }

  private wake(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }

  private waitMore(deadline: number): Promise<void> {
    return new Promise((resolve, reject) => {
      const left = deadline - Date.now();
      if (left <= 0) return reject(new Error('timed out waiting for the server'));
      const t = setTimeout(() => reject(new Error('timed out waiting for the server')), left);
      this.waiters.push(() => {
        clearTimeout(t);
        resolve();
      });
    });
  }

  write(data: Buffer | string): Promise<void> {
    return new Promise((resolve, reject) => {
      this.socket.write(data, (err) => (err ? reject(err) : resolve()));
    });
  }

  /**
   * Reads the next response. `head: true` for a HEAD request (no body whatever the
   * Content-Length). Without Content-Length the body runs to the close.
   * Interim 1xx responses are skipped.
   */
  async readResponse(opts: { head?: boolean; timeoutMs?: number } = {}): Promise<RawResponse> {
    const deadline = Date.now() + (opts.timeoutMs ?? 10_000);
    for (;;) {
      let idx: number;
      while ((idx = this.buf.indexOf('\r\n\r\n')) < 0) {
        if (this.ended) throw new Error(`connection closed before a response head (${this.buf.length} bytes buffered)`);
        await this.waitMore(deadline);
      }
      const headText = this.buf.subarray(0, idx).toString('latin1');
      const lines = headText.split('\r\n');
      const m = /^HTTP\/1\.[01] (\d{3}) ?(.*)$/.exec(lines[0]!);
      if (!m) throw new Error(`bad status line: ${JSON.stringify(lines[0])}`);
      const status = Number(m[1]);
      const rawHeaders: Array<[string, string]> = [];
      const headers: Record<string, string> = {};
      for (const line of lines.slice(1)) {
        const c = line.indexOf(':');
        if (c <= 0) throw new Error(`bad header line: ${JSON.stringify(line)}`);
        const k = line.slice(0, c);
        const v = line.slice(c + 1).trim();
        rawHeaders.push([k, v]);
        const lk = k.toLowerCase();
        headers[lk] = lk in headers ? `${headers[lk]}, ${v}` : v;
      }
      const headEnd = idx + 4;
      if (status >= 100 && status < 200) {
        this.buf = this.buf.subarray(headEnd);
        continue;
      }
      let bodyLen: number | undefined;
      if (opts.head || status === 204 || status === 304) bodyLen = 0;
      else if (headers['content-length'] !== undefined) bodyLen = Number(headers['content-length']);
      if (bodyLen === undefined) {
        while (!this.ended) await this.waitMore(deadline);
        bodyLen = this.buf.length - headEnd;
      }
      while (this.buf.length < headEnd + bodyLen) {
        if (this.ended) throw new Error(`connection closed inside a response body (${this.buf.length - headEnd}/${bodyLen})`);
        await this.waitMore(deadline);
      }
      const raw = this.buf.subarray(0, headEnd + bodyLen);
      this.buf = this.buf.subarray(headEnd + bodyLen);
      return { status, reason: m[2]!, headers, rawHeaders, body: Buffer.from(raw.subarray(headEnd)), raw: Buffer.from(raw) };
    }
  }

  /** Sends bytes and reads one response. */
  async request(bytes: Buffer | string, opts: { head?: boolean; timeoutMs?: number } = {}): Promise<RawResponse> {
    await this.write(bytes);
    return this.readResponse(opts);
  }

  /** Resolves when the server has closed the connection (or rejects after the timeout). */
  async waitClosed(timeoutMs = 5000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!this.ended) await this.waitMore(deadline);
  }

  /** Bytes received but not yet consumed as a response. */
  get buffered(): number {
    return this.buf.length;
  }

  destroy(): void {
    this.socket.destroy();
  }
}

/** One request on a fresh connection, closed afterwards. */
export async function rawRequest(
  port: number,
  bytes: Buffer | string,
  opts: { head?: boolean; timeoutMs?: number; host?: string } = {},
): Promise<RawResponse> {
  const c = await RawConnection.connect(port, opts.host);
  try {
    return await c.request(bytes, opts);
  } finally {
    c.destroy();
  }
}

/** A BITS_POST with the packet type and extra headers, as our tests send them. */
export function bitsRequest(
  target: string,
  packetType: string,
  headers: Record<string, string | number> = {},
  body?: Buffer,
): Buffer {
  return buildRequest('BITS_POST', target, { 'BITS-Packet-Type': packetType, ...headers }, body);
}
