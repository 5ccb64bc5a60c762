/** The API tests' world: a temporary folder with a served root, a job store home, and the API's own serve(). */
import path from 'node:path';
import { mkdir } from 'node:fs/promises';
import { serve, type Server } from '../../src/api.js';
import { makeTempDir } from '../helpers/files.js';

export interface ApiWorld {
  dir: string;
  root: string;
  home: string;
  server: Server;
  close(): Promise<void>;
}

export async function apiWorld(prefix: string): Promise<ApiWorld> {
  const tmp = await makeTempDir(prefix);
  const root = path.join(tmp.dir, 'root');
  await mkdir(root);
  const server = await serve({ root });
  return {
    dir: tmp.dir,
    root,
    home: path.join(tmp.dir, 'home'),
    server,
    async close() {
      await server.close();
      await tmp.cleanup();
    },
  };
}
