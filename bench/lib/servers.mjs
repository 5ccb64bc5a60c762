// The two servers of the benchmark, both on 127.0.0.1 only: a private nginx
// (static files with ranges + a WebDAV PUT location) and `bits serve`.
import { spawn } from 'node:child_process';
import { promises as fsp, readFileSync } from 'node:fs';
import path from 'node:path';
import { freePort, runCapture, waitForPort } from './util.mjs';

/** nginx >= 1.19.5 takes `-e` for the error log it opens before reading the config. */
async function nginxVersion(bin) {
  const r = await runCapture(bin, ['-v']);
  const m = /nginx\/(\d+)\.(\d+)\.(\d+)/.exec(r.stderr + r.stdout);
  return m ? [Number(m[1]), Number(m[2]), Number(m[3])] : [0, 0, 0];
}

/**
 * Starts nginx with a generated config in `prefix`:
 *   /files/NAME  static files from filesDir (sendfile, byte ranges: nginx's defaults)
 *   /dav/NAME    WebDAV PUT into davDir (no size limit, body temp file in the same file system)
 */
export async function startNginx({ bin, prefix, filesDir, davDir, workerConnections = 256 }) {
  const port = await freePort();
  await fsp.mkdir(prefix, { recursive: true });
  await fsp.mkdir(davDir, { recursive: true });
  for (const d of ['client', 'dav-tmp', 'proxy', 'fastcgi', 'uwsgi', 'scgi']) await fsp.mkdir(path.join(prefix, d), { recursive: true });
  const asRoot = typeof process.getuid === 'function' && process.getuid() === 0;
  // As root the worker would drop to `nobody` and could not write the DAV folder we own.
  const conf = `${asRoot ? 'user root;' : ''}
worker_processes 1;
worker_rlimit_nofile ${workerConnections * 2 + 64};
daemon off;
error_log ${prefix}/error.log warn;
pid ${prefix}/nginx.pid;
events { worker_connections ${workerConnections}; }
http {
  access_log off;
  client_body_temp_path ${prefix}/client;
  proxy_temp_path ${prefix}/proxy;
  fastcgi_temp_path ${prefix}/fastcgi;
  uwsgi_temp_path ${prefix}/uwsgi;
  scgi_temp_path ${prefix}/scgi;
  default_type application/octet-stream;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 10000;
  server {
    listen 127.0.0.1:${port};
    location /files/ {
      alias ${filesDir}/;
    }
    location /dav/ {
      alias ${davDir}/;
      dav_methods PUT;
      create_full_put_path on;
      client_max_body_size 0;
      client_body_temp_path ${prefix}/dav-tmp;
    }
  }
}
`;
  const confFile = path.join(prefix, 'nginx.conf');
  await fsp.writeFile(confFile, conf);
  const [maj, min, patch] = await nginxVersion(bin);
  const hasE = maj > 1 || (maj === 1 && (min > 19 || (min === 19 && patch >= 5)));
  const args = ['-p', prefix, '-c', confFile, ...(hasE ? ['-e', path.join(prefix, 'error.log')] : [])];
  const child = spawn(bin, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d) => (stderr += d));
  const up = await waitForPort(port, () => child.exitCode === null && child.signalCode === null);
  if (!up) {
    child.kill('SIGKILL');
    let log = '';
    try {
      log = readFileSync(path.join(prefix, 'error.log'), 'utf8');
    } catch {
      /* none */
    }
    throw new Error(`nginx did not start: ${(stderr + log).trim().split('\n').slice(-3).join(' | ')}`);
  }
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    pid: child.pid,
    child,
    stop: () => stopChild(child, 'SIGQUIT'),
  };
}

/** `bits serve --port 0 --json`: the listening URL comes back on stdout, so there is no port race. */
export async function startBitsServe({ node, bin, root, env }) {
  await fsp.mkdir(root, { recursive: true });
  const child = spawn(node, [bin, 'serve', '--root', root, '--host', '127.0.0.1', '--port', '0', '--json', '--quiet'], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env,
  });
  let stderr = '';
  child.stderr.on('data', (d) => (stderr += d));
  const url = await new Promise((resolve, reject) => {
    let out = '';
    const t = setTimeout(() => reject(new Error(`bits serve did not start within 15 s: ${stderr.trim()}`)), 15_000);
    child.stdout.on('data', (d) => {
      out += d;
      const line = out.split('\n').find((l) => l.includes('"listening"'));
      if (line) {
        clearTimeout(t);
        resolve(JSON.parse(line).url);
      }
    });
    child.once('exit', (code) => {
      clearTimeout(t);
      reject(new Error(`bits serve exited (${code}): ${stderr.trim()}`));
    });
  });
  child.stdout.resume();
  return { url, pid: child.pid, child, stop: () => stopChild(child, 'SIGINT') };
}

/** Peak resident set of a running process in KiB (Linux /proc; undefined elsewhere). */
export function peakRssKiB(pid) {
  try {
    const m = /^VmHWM:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) : undefined;
  } catch {
    return undefined;
  }
}

async function stopChild(child, signal) {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((r) => child.once('exit', r));
  child.kill(signal);
  const t = setTimeout(() => child.kill('SIGKILL'), 5000);
  await exited;
  clearTimeout(t);
}
