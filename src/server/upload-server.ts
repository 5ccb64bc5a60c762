// STUB — implemented by the upload-server helper. See src/server/index.ts for how it is used.
import type { Http1Request, Http1Response } from './http1.js';
import type { ServerConfig } from './config.js';

export interface UploadServerOptions {
  root: string;
  config: ServerConfig;
  log: (line: string) => void;
}

export class UploadServer {
  constructor(readonly options: UploadServerOptions) {}
  /** Load persisted sessions, start the session-timeout sweeper. */
  async start(): Promise<void> {}
  async handle(req: Http1Request): Promise<Http1Response> {
    await req.discardBody();
    return { status: 501, body: '' };
  }
  async close(): Promise<void> {}
}
