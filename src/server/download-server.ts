// STUB — implemented by the download-server helper. See src/server/index.ts for how it is used.
import type { Http1Request, Http1Response } from './http1.js';

export interface DownloadServerOptions {
  root: string;
  log: (line: string) => void;
}

export class DownloadServer {
  constructor(readonly options: DownloadServerOptions) {}
  async handle(req: Http1Request): Promise<Http1Response> {
    await req.discardBody();
    return { status: 404, body: '' };
  }
}
