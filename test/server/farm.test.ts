/**
 * Scale-out (issue 17, README "A farm of `bits serve` nodes"): nginx round-robins
 * CREATE-SESSION over two `bits serve` nodes on 127.0.0.2 and 127.0.0.3; each names itself
 * in BITS-Host-Id, so the client sends the rest of that upload straight to the node that
 * holds the session. All nodes and nginx listen on one port number, as a farm's hosts do
 * (BITS-Host-Id replaces the host, never the port). The built binary, real files, sha256.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { ensureBuilt, runBits, startBits, type RunningBits } from '../helpers/cli.js';
import { NGINX, nginxConfHead } from '../download/helpers.js';

const NODES = ['127.0.0.2', '127.0.0.3'];

let tmp: string;
let port: number;
let nginx: ChildProcess | undefined;
const nodes: RunningBits[] = [];

function canListen(host: string, p: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.createServer();
    s.once('error', () => resolve(false));
    s.listen(p, host, () => s.close(() => resolve(true)));
  });
}

/** A port free on 127.0.0.1 and on every node address. */
async function commonFreePort(): Promise<number> {
  for (let i = 0; i < 50; i++) {
    const p = await new Promise<number>((resolve) => {
      const s = net.createServer().listen(0, '127.0.0.1', () => {
        const a = (s.address() as net.AddressInfo).port;
        s.close(() => resolve(a));
      });
    });
    if ((await Promise.all(NODES.map((h) => canListen(h, p)))).every(Boolean)) return p;
  }
  throw new Error('no common free port');
}

function nginxConf(prefix: string): string {
  return `${nginxConfHead(prefix, { workerConnections: 256, accessLog: `${prefix}/access.log` })}
  upstream bits_farm {
${NODES.map((h) => `    server ${h}:${port};`).join('\n')}
    keepalive 16;
  }
  server {
    listen 127.0.0.1:${port};
    client_max_body_size 0;
    location / {
      proxy_pass http://bits_farm;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $http_host;
      proxy_request_buffering off;
      proxy_buffering off;
    }
  }
}
`;
}

beforeAll(async () => {
  ensureBuilt();
  expect(NGINX, 'nginx is required (.ci/run installs it)').toBeDefined();
  tmp = await mkdtemp(path.join(os.tmpdir(), 'bits-farm-'));
  port = await commonFreePort();
  for (const h of NODES) {
    const root = path.join(tmp, h);
    await mkdir(root, { recursive: true });
    const n = startBits(['serve', '--root', root, '--host', h, '--port', String(port), '--host-id', h, '--json'], { timeoutMs: 60_000 });
    await n.waitFor(/"type":"listening"/, 'stdout', 15_000);
    nodes.push(n);
  }
  const prefix = path.join(tmp, 'nginx');
  for (const d of ['client', 'proxy', 'fastcgi', 'uwsgi', 'scgi']) await mkdir(path.join(prefix, d), { recursive: true });
  await writeFile(path.join(prefix, 'nginx.conf'), nginxConf(prefix));
  nginx = spawn(NGINX!, ['-p', prefix, '-c', path.join(prefix, 'nginx.conf')], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  nginx.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const deadline = Date.now() + 10_000;
  while (!(await new Promise<boolean>((r) => net.connect(port, '127.0.0.1').once('connect', function (this: net.Socket) { this.destroy(); r(true); }).once('error', () => r(false))))) {
    if (Date.now() > deadline || nginx.exitCode !== null) throw new Error(`nginx did not start: ${stderr}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}, 30_000);

afterAll(async () => {
  nginx?.kill('SIGQUIT');
  for (const n of nodes) n.child.kill('SIGTERM');
  await Promise.all(nodes.map((n) => n.done));
  if (tmp) await rm(tmp, { recursive: true, force: true });
});

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

describe('bits serve behind nginx (round robin), sessions pinned by BITS-Host-Id', () => {
  it('uploads through the balancer land whole on the node that created the session, sha256-identical', async () => {
    const home = await mkdtemp(path.join(tmp, 'home-'));
    const files: Array<{ name: string; data: Buffer }> = [];
    for (let i = 0; i < 4; i++) {
      const data = randomBytes(3 * 1024 * 1024 + i * 1000);
      const name = `f${i}.bin`;
      await writeFile(path.join(tmp, name), data);
      files.push({ name, data });
    }
    for (const f of files) {
      // Small fragments: many requests per upload, all of which must reach the session's node.
      const r = await runBits(['upload', path.join(tmp, f.name), `http://127.0.0.1:${port}/up/${f.name}`, '--fragment-size', '256K'], {
        env: { BITS_HOME: home },
        timeoutMs: 60_000,
      });
      expect(r.code, r.stderr).toBe(0);
    }
    const placed: Record<string, number> = {};
    for (const f of files) {
      const on = NODES.filter((h) => existsSync(path.join(tmp, h, 'up', f.name)));
      expect(on, `${f.name} must be on exactly one node`).toHaveLength(1);
      expect(sha(await readFile(path.join(tmp, on[0]!, 'up', f.name)))).toBe(sha(f.data));
      placed[on[0]!] = (placed[on[0]!] ?? 0) + 1;
    }
    // Round robin spread the sessions over both nodes.
    expect(Object.keys(placed).sort()).toEqual(NODES);
    // Each node logged the requests of its own uploads; the balancer carried the first ones.
    const access = await readFile(path.join(tmp, 'nginx', 'access.log'), 'utf8');
    expect(access).toMatch(/BITS_POST \/up\/f0\.bin/);
    for (const [h, count] of Object.entries(placed)) {
      const n = nodes[NODES.indexOf(h)]!;
      expect((n.stderr.match(/BITS_POST \/up\/f\d\.bin Fragment -> 200/g) ?? []).length).toBeGreaterThanOrEqual(count);
    }
  }, 90_000);
});
