/**
 * serve(): the `bits serve` server (BITS uploads §3.2 and range downloads
 * §3.5 of one folder) embedded in a program. Listens on 127.0.0.1 and any
 * free port unless told otherwise; close() stops it gracefully.
 */
import path from 'node:path';
import { stat } from 'node:fs/promises';
import { UsageError } from '../errors.js';
import type { ServeOptions as ServerOptions, RunningServer } from '../server/index.js';
import type { ServerConfigFile } from '../server/config.js';

export type { DirectoryConfig, DurabilityConfig, DurabilityMode, NotificationType, ServerConfigFile, ServerLimits } from '../server/config.js';

export interface ServeOptions extends Omit<ServerOptions, 'root'> {
  /** Folder to serve; default process.cwd(). */
  root?: string;
}

export interface Server {
  /** `http://127.0.0.1:PORT` (or https), no trailing slash. */
  url: string;
  host: string;
  port: number;
  /** Stops listening and ends open connections; resolves once closed. */
  close(): Promise<void>;
}

/**
 * Starts serving `root`. Rejects with UsageError when root is not a folder or
 * another process serves it (or a folder around or inside it), and with the listening error itself (its `code`: EADDRINUSE, EACCES, ...)
 * when the address cannot be had.
 */
export async function serve(opts: ServeOptions = {}): Promise<Server> {
  const root = path.resolve(opts.root ?? process.cwd());
  const st = await stat(root).catch(() => undefined);
  if (!st?.isDirectory()) throw new UsageError(`serve: root ${root} is not a folder`);
  // Imported here: a program that only uploads never loads the server.
  const { startServer } = await import('../server/index.js');
  let server: RunningServer;
  try {
    server = await startServer({ ...opts, root, host: opts.host ?? '127.0.0.1', port: opts.port ?? 0 });
  } catch (err) {
    // Another process serves this folder (or one around or inside it): the operator's to sort out, like a taken port.
    if ((err as { code?: unknown } | undefined)?.code === 'ERR_BITS_ROOT_IN_USE') throw new UsageError(`serve: ${(err as Error).message}`, { cause: err });
    throw err;
  }
  return { url: server.url, host: server.host, port: server.port, close: () => server.close() };
}

/**
 * Reads a `bits serve --config` JSON file: per-folder settings (`defaults`,
 * `directories`), `limits` and `durability`, to pass on to serve(). Rejects
 * with an Error whose message is one line naming the file and the bad key.
 */
export async function loadServeConfig(file: string): Promise<ServerConfigFile> {
  const { loadServerConfigFile } = await import('../server/config.js');
  return loadServerConfigFile(file);
}
