/**
 * `bits serve`: the BITS upload server (§3.2, with the back-end notification of
 * §3.3/§3.4) and the range download server (§3.5) on one port, over our own
 * HTTP/1.1 layer (node:http refuses BITS_POST).
 */
import { startHttp1Server, type Http1Request, type Http1Response } from './http1.js';
import { UploadServer } from './upload-server.js';
import { DownloadServer } from './download-server.js';
import { checkBasicAuth, type BasicCredentials } from './auth.js';
import {
  DEFAULT_DIRECTORY_CONFIG,
  DEFAULT_DURABILITY,
  DEFAULT_LIMITS,
  type DirectoryConfig,
  type DurabilityConfig,
  type ServerConfig,
  type ServerLimits,
} from './config.js';
import { BITS_POST, isBitsPost } from '../protocol/headers.js';

export interface ServeOptions {
  /** Served folder: every URL path maps below it. */
  root: string;
  /** Default 127.0.0.1: serving beyond loopback is an explicit choice. */
  host?: string;
  /** 0 = any free port. */
  port?: number;
  /** Per-directory settings and limits; missing fields take the defaults. */
  defaults?: Partial<DirectoryConfig>;
  directories?: Record<string, Partial<DirectoryConfig>>;
  limits?: Partial<ServerLimits>;
  /** When acknowledged bytes reach the disk (config.ts DurabilityConfig); default group commit. */
  durability?: Partial<DurabilityConfig>;
  /** Require HTTP Basic authentication for every request. */
  basicAuth?: BasicCredentials;
  /** Serve HTTPS with this certificate. */
  tls?: { cert: string | Buffer; key: string | Buffer };
  /** One line per request / event; silent when absent. */
  log?: (line: string) => void;
}

export interface RunningServer {
  /** `http://127.0.0.1:PORT` (or https). No trailing slash. */
  url: string;
  host: string;
  port: number;
  config: ServerConfig;
  close(): Promise<void>;
}

/** C0 controls, DEL and C1 controls as \xHH: what a client sent is shown, never executed by a terminal. */
export function escapeControls(line: string): string {
  return line.replace(/[\x00-\x1f\x7f-\x9f]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`);
}

export async function startServer(opts: ServeOptions): Promise<RunningServer> {
  const config: ServerConfig = {
    defaults: { ...DEFAULT_DIRECTORY_CONFIG, ...(opts.defaults ?? {}) },
    directories: opts.directories ?? {},
    limits: { ...DEFAULT_LIMITS, ...(opts.limits ?? {}) },
    durability: { ...DEFAULT_DURABILITY, ...(opts.durability ?? {}) },
  };
  const raw = opts.log;
  // Paths and headers are the client's text: a raw ESC or BEL must never reach a terminal or log file.
  const log = raw ? (line: string) => raw(escapeControls(line)) : () => {};
  const uploads = new UploadServer({ root: opts.root, config, log });
  await uploads.start();
  const downloads = new DownloadServer({ root: opts.root, log });

  const handler = async (req: Http1Request): Promise<Http1Response> => {
    if (opts.basicAuth) {
      const denied = checkBasicAuth(req, opts.basicAuth);
      if (denied) {
        await req.discardBody();
        return denied;
      }
      req.user = opts.basicAuth.user;
    }
    if (isBitsPost(req.method, req.headers)) return uploads.handle(req);
    if (req.method === 'GET' || req.method === 'HEAD') return downloads.handle(req);
    await req.discardBody();
    return { status: 405, headers: { Allow: `GET, HEAD, ${BITS_POST}` }, body: '' };
  };

  const host = opts.host ?? '127.0.0.1';
  const l = config.limits;
  let http: Awaited<ReturnType<typeof startHttp1Server>>;
  try {
    http = await startHttp1Server(
      {
        host,
        port: opts.port ?? 0,
        tls: opts.tls,
        maxConnections: l.maxConnections,
        headersTimeoutMs: l.headersTimeoutSeconds * 1000,
        keepAliveTimeoutMs: l.keepAliveTimeoutSeconds * 1000,
        minRateBytesPerSec: l.minRateBytesPerSec,
        rateGraceMs: l.rateGraceSeconds * 1000,
        tlsHandshakeTimeoutMs: l.tlsHandshakeTimeoutSeconds * 1000,
      },
      handler,
    );
  } catch (err) {
    // Not serving after all (the address is taken, a bad certificate): the root's lock and sessions go back.
    await uploads.close();
    throw err;
  }
  const shownHost = http.host.includes(':') ? `[${http.host}]` : http.host;
  return {
    url: `${opts.tls ? 'https' : 'http'}://${shownHost}:${http.port}`,
    host: http.host,
    port: http.port,
    config,
    close: async () => {
      await http.close();
      await uploads.close();
    },
  };
}
