/** Shared helpers of the download tests: temp files, hashes, a private nginx. */
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, existsSync } from 'node:fs';
import * as fsp from 'node:fs/promises';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';

export async function tempDir(prefix = 'bits-dl-'): Promise<string> {
  return fsp.mkdtemp(path.join(os.tmpdir(), prefix));
}

/** A file of random bytes, written in 1 MiB chunks. */
export async function makeFile(p: string, size: number): Promise<string> {
  const fh = await fsp.open(p, 'w');
  try {
    for (let done = 0; done < size; ) {
      const n = Math.min(1024 * 1024, size - done);
      await fh.write(randomBytes(n));
      done += n;
    }
  } finally {
    await fh.close();
  }
  return p;
}

export async function sha256(p: string): Promise<string> {
  const h = createHash('sha256');
  for await (const c of createReadStream(p)) h.update(c as Buffer);
  return h.digest('hex');
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

/**
 * The part of an nginx.conf every test nginx shares, up to the \`http\` block's
 * common settings: in the foreground, pid, logs and temp folders under \`prefix\`
 * (never the system's), and \`user root\` when we are root (nginx refuses to run
 * its workers as root otherwise). Callers add their own settings and server blocks,
 * then close the \`http\` block.
 */
export function nginxConfHead(prefix: string, opts: { workerConnections: number; accessLog?: string }): string {
  const asRoot = typeof process.getuid === 'function' && process.getuid() === 0;
  return `${asRoot ? 'user root;' : ''}
worker_processes 1;
daemon off;
error_log ${prefix}/error.log warn;
pid ${prefix}/nginx.pid;
events { worker_connections ${opts.workerConnections}; }
http {
  access_log ${opts.accessLog ?? 'off'};
  client_body_temp_path ${prefix}/client;
  proxy_temp_path ${prefix}/proxy;
  fastcgi_temp_path ${prefix}/fastcgi;
  uwsgi_temp_path ${prefix}/uwsgi;
  scgi_temp_path ${prefix}/scgi;
  default_type application/octet-stream;`;
}

export const NGINX = ['/usr/sbin/nginx', '/usr/bin/nginx', '/usr/local/sbin/nginx', '/usr/local/bin/nginx'].find((p) => existsSync(p));

export interface Nginx {
  url: string;
  stop(): Promise<void>;
}

/** Starts a private nginx serving `root` on a free 127.0.0.1 port. */
export async function startNginx(root: string, extra = ''): Promise<Nginx> {
  if (!NGINX) throw new Error('nginx not installed');
  const prefix = await tempDir('bits-nginx-');
  const port = await freePort();
  const conf = `
${nginxConfHead(prefix, { workerConnections: 128 })}
  sendfile on;
  ${extra}
  server {
    listen 127.0.0.1:${port};
    root ${root};
    location / { }
  }
}
`;
  await fsp.writeFile(path.join(prefix, 'nginx.conf'), conf);
  const child: ChildProcess = spawn(NGINX, ['-c', path.join(prefix, 'nginx.conf'), '-p', prefix], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr?.on('data', (d) => (stderr += String(d)));
  const deadline = Date.now() + 10_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`nginx exited: ${stderr}`);
    const ok = await new Promise<boolean>((resolve) => {
      const s = net.connect(port, '127.0.0.1');
      s.once('connect', () => {
        s.destroy();
        resolve(true);
      });
      s.once('error', () => resolve(false));
    });
    if (ok) break;
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`nginx did not start: ${stderr}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    url: `http://127.0.0.1:${port}`,
    async stop() {
      if (child.exitCode === null) {
        const exited = new Promise((r) => child.once('exit', r));
        child.kill('SIGQUIT');
        const t = setTimeout(() => child.kill('SIGKILL'), 3000);
        await exited;
        clearTimeout(t);
      }
      await fsp.rm(prefix, { recursive: true, force: true });
    },
  };
}

/** `dd` the bytes [skip, skip+count) of a file (real dd when available). */
export async function ddBytes(file: string, skip: number, count: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const child = spawn('dd', [`if=${file}`, 'bs=64K', 'iflag=skip_bytes,count_bytes', `skip=${skip}`, `count=${count}`, 'status=none'], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const out: Buffer[] = [];
    let err = '';
    child.stdout.on('data', (d: Buffer) => out.push(d));
    child.stderr.on('data', (d) => (err += String(d)));
    child.once('error', reject);
    child.once('close', (code) => (code === 0 ? resolve(Buffer.concat(out)) : reject(new Error(`dd failed: ${err}`))));
  });
}

/** What a RangeServer sends: the bytes, their validators, and whether GET bodies stall half-way. */
export interface RangeServerState {
  data: Buffer;
  etag?: string;
  lastModified?: string;
  /** GET bodies stop after half their bytes; the connection stays open. */
  stall: boolean;
}

export interface RangeServer {
  url: string;
  state: RangeServerState;
  /** The Range header of every GET, in order. */
  ranges: (string | undefined)[];
  close(): Promise<void>;
}

/**
 * A plain web server of our own on 127.0.0.1: HEAD, GET with one range or a
 * list of them (answered as a single 206, multipart/byteranges, or 200),
 * If-Range, and a switch that makes bodies stall half-way.
 */
export async function startRangeServer(state: RangeServerState): Promise<RangeServer> {
  const http = await import('node:http');
  const ranges: (string | undefined)[] = [];
  const open = new Set<import('node:http').ServerResponse>();
  const server = http.createServer((req, res) => {
    const { data, etag, lastModified } = state;
    const size = data.length;
    const vh: Record<string, string> = { 'accept-ranges': 'bytes' };
    if (etag) vh['etag'] = etag;
    if (lastModified) vh['last-modified'] = lastModified;
    if (req.method === 'HEAD') {
      res.writeHead(200, { ...vh, 'content-length': size });
      return res.end();
    }
    ranges.push(req.headers.range);
    const ifRange = req.headers['if-range'];
    const useRange = req.headers.range !== undefined && (ifRange === undefined || ifRange === etag || ifRange === lastModified);
    const specs = useRange
      ? req.headers.range!.replace(/^bytes=/, '').split(',').map((p) => {
          const [a, b] = p.split('-');
          return a === '' ? { first: size - Number(b), last: size - 1 } : { first: Number(a), last: b === '' ? size - 1 : Math.min(size - 1, Number(b)) };
        })
      : [];
    let status = 200;
    let body = data;
    const headers: Record<string, string | number> = { ...vh };
    if (specs.length === 1) {
      status = 206;
      body = data.subarray(specs[0]!.first, specs[0]!.last + 1);
      headers['content-range'] = `bytes ${specs[0]!.first}-${specs[0]!.last}/${size}`;
    } else if (specs.length > 1) {
      status = 206;
      const parts: Buffer[] = [];
      for (const r of specs) {
        parts.push(Buffer.from(`\r\n--RS\r\ncontent-range: bytes ${r.first}-${r.last}/${size}\r\n\r\n`), data.subarray(r.first, r.last + 1));
      }
      parts.push(Buffer.from('\r\n--RS--\r\n'));
      body = Buffer.concat(parts);
      headers['content-type'] = 'multipart/byteranges; boundary=RS';
    }
    res.writeHead(status, { ...headers, 'content-length': body.length });
    if (!state.stall) return res.end(body);
    res.write(body.subarray(0, Math.floor(body.length / 2)));
    open.add(res);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    url: `http://127.0.0.1:${(server.address() as net.AddressInfo).port}`,
    state,
    ranges,
    async close() {
      for (const r of open) r.destroy();
      server.closeAllConnections();
      await new Promise((r) => server.close(r));
    },
  };
}
