#!/usr/bin/env node
// `npm run bench -- load` (or `node bench/load.mjs`): many clients at once, with and without
// hostile connections alongside. Method and the last results: bench/README.md ("Load").
//
// Honest side: N concurrent BITS upload clients (CREATE-SESSION, FRAGMENTs of the bits
// client's default 8 MiB, CLOSE-SESSION over one keep-alive connection each, as `bits upload`
// sends them) against `bits serve`, and N concurrent `curl -T` against nginx WebDAV PUT.
// Hostile side: 1,000 connections, a third each idle (connect, send nothing), dripping (a
// FRAGMENT / PUT body announced as 1 MiB, one byte every 5 s) and non-reading (GET of a
// 64 MiB file, never read); whichever the server cuts reconnects after a second.
// Servers run with their default limits; everything on loopback.
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { promises as fsp, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { findExecutable, MiB, parseSize, sizeLabel } from './lib/util.mjs';
import { startBitsServe, startNginx } from './lib/servers.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const REPO = path.resolve(HERE, '..');
const BITS = path.join(REPO, 'bin', 'bits');
const PROTOCOL = '{7df0354d-249b-430f-820d-3d2a9bef4931}';
const log = (s) => process.stderr.write(`${s}\n`);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const USAGE = `usage: node bench/load.mjs [--clients 200] [--hostile 1000] [--size 16M] [--fragment 8M] [--keep]
  --clients   concurrent honest uploads per run
  --hostile   hostile connections kept open alongside (idle, dripping, non-reading: a third each)
  --size      bytes each honest client uploads
  --fragment  FRAGMENT size of the BITS clients (the bits client's default is 8M)
  --only      bits, nginx or both (default)`;

function parseCli(argv) {
  const { values } = parseArgs({
    args: argv,
    options: {
      clients: { type: 'string', default: '200' },
      hostile: { type: 'string', default: '1000' },
      size: { type: 'string', default: '16M' },
      fragment: { type: 'string', default: '8M' },
      only: { type: 'string' },
      keep: { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false },
    },
  });
  if (values.help) {
    console.log(USAGE);
    process.exit(0);
  }
  const clients = Number(values.clients);
  const hostile = Number(values.hostile);
  if (!Number.isInteger(clients) || clients < 1 || clients > 2000) throw new Error('--clients: expected 1..2000');
  if (!Number.isInteger(hostile) || hostile < 0 || hostile > 5000) throw new Error('--hostile: expected 0..5000');
  const only = values.only ?? 'bits,nginx';
  return { clients, hostile, size: parseSize(values.size), fragment: parseSize(values.fragment), keep: values.keep, only: new Set(only.split(',')) };
}

// ---------------------------------------------------------------------------
// A minimal HTTP/1.1 client on one socket: enough to speak BITS_POST and to measure each Ack.

function connect(port, localAddress) {
  return new Promise((resolve, reject) => {
    const s = net.connect({ port, host: '127.0.0.1', localAddress }, () => {
      s.off('error', reject);
      resolve(s);
    });
    s.once('error', reject);
  });
}

/** Reads responses (Content-Length framed) from a socket, one at a time. */
function responses(socket) {
  let buf = Buffer.alloc(0);
  let wake;
  let closed = false;
  socket.on('data', (d) => {
    buf = buf.length ? Buffer.concat([buf, d]) : d;
    wake?.();
  });
  socket.on('close', () => {
    closed = true;
    wake?.();
  });
  socket.on('error', () => {});
  return async function next(timeoutMs = 120_000) {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const i = buf.indexOf('\r\n\r\n');
      if (i >= 0) {
        const head = buf.subarray(0, i).toString('latin1');
        const status = Number(/^HTTP\/1\.\d (\d{3})/.exec(head)?.[1]);
        const headers = {};
        for (const line of head.split('\r\n').slice(1)) {
          const c = line.indexOf(':');
          headers[line.slice(0, c).toLowerCase()] = line.slice(c + 1).trim();
        }
        const len = Number(headers['content-length'] ?? 0);
        if (buf.length >= i + 4 + len) {
          buf = buf.subarray(i + 4 + len);
          if (status >= 100 && status < 200) continue;
          return { status, headers };
        }
      }
      if (closed) throw new Error('connection closed before a response');
      if (Date.now() > deadline) throw new Error('no response in time');
      await new Promise((r) => {
        wake = r;
        setTimeout(r, 1000);
      });
      wake = undefined;
    }
  };
}

function head(method, target, headers) {
  let h = `${method} ${target} HTTP/1.1\r\nHost: 127.0.0.1\r\n`;
  for (const [k, v] of Object.entries(headers)) h += `${k}: ${v}\r\n`;
  return Buffer.from(h + '\r\n', 'latin1');
}

function write(socket, b) {
  return new Promise((resolve, reject) => socket.write(b, (err) => (err ? reject(err) : resolve())));
}

/** One BITS upload over one connection; pushes the time from each FRAGMENT's first byte to its Ack. */
async function bitsUpload(port, localAddress, target, data, fragment, acks) {
  const s = await connect(port, localAddress);
  const next = responses(s);
  try {
    await write(s, head('BITS_POST', target, { 'BITS-Packet-Type': 'Create-Session', 'BITS-Supported-Protocols': PROTOCOL, 'Content-Length': 0 }));
    const c = await next();
    if (c.status !== 200) throw new Error(`Create-Session: ${c.status} ${c.headers['bits-error'] ?? ''}`);
    const id = c.headers['bits-session-id'];
    for (let off = 0; off < data.length; off += fragment) {
      const end = Math.min(data.length, off + fragment);
      const t0 = performance.now();
      await write(
        s,
        head('BITS_POST', target, {
          'BITS-Packet-Type': 'Fragment',
          'BITS-Session-Id': id,
          'Content-Range': `bytes ${off}-${end - 1}/${data.length}`,
          'Content-Length': end - off,
        }),
      );
      s.write(data.subarray(off, end));
      const r = await next();
      if (r.status !== 200) throw new Error(`Fragment: ${r.status} ${r.headers['bits-error'] ?? ''}`);
      acks.push(performance.now() - t0);
    }
    await write(s, head('BITS_POST', target, { 'BITS-Packet-Type': 'Close-Session', 'BITS-Session-Id': id, 'Content-Length': 0 }));
    const z = await next();
    if (z.status !== 200) throw new Error(`Close-Session: ${z.status}`);
  } finally {
    s.destroy();
  }
}

function curlPut(curl, file, url, acks) {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const child = spawn(curl, ['-sS', '-f', '-T', file, url, '-o', '/dev/null'], { stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    child.stderr.on('data', (d) => (err += d));
    child.on('close', (code) => {
      if (code === 0) {
        acks.push(performance.now() - t0);
        resolve();
      } else reject(new Error(`curl exited ${code}: ${err.trim()}`));
    });
  });
}

// ---------------------------------------------------------------------------
// Hostile connections: kept at their number until stop() (a cut one reconnects after 1 s).

function startHostile({ port, count, kind, bigPath, dripTarget, stats }) {
  let stopped = false;
  const sockets = new Set();
  const kinds = ['idle', 'drip', 'noread'];
  const one = async (i) => {
    const mode = kinds[i % 3];
    const localAddress = `127.0.2.${1 + (i % 50)}`;
    let sessionId;
    while (!stopped) {
      let s;
      try {
        if (mode === 'drip' && kind === 'bits' && !sessionId) {
          s = await connect(port, localAddress);
          const next = responses(s);
          await write(s, head('BITS_POST', dripTarget(i), { 'BITS-Packet-Type': 'Create-Session', 'BITS-Supported-Protocols': PROTOCOL, 'Content-Length': 0 }));
          const r = await next(30_000);
          sessionId = r.headers['bits-session-id'];
          s.destroy();
          if (r.status !== 200) throw new Error(`hostile Create-Session ${r.status}`);
        }
        s = await connect(port, localAddress);
        sockets.add(s);
        stats.opened++;
        s.on('error', () => {});
        const closed = new Promise((r) => s.once('close', r));
        if (mode === 'drip') {
          const h =
            kind === 'bits'
              ? head('BITS_POST', dripTarget(i), { 'BITS-Packet-Type': 'Fragment', 'BITS-Session-Id': sessionId, 'Content-Range': `bytes 0-${MiB - 1}/${MiB}`, 'Content-Length': MiB })
              : head('PUT', dripTarget(i), { 'Content-Length': MiB });
          s.write(h);
          const t = setInterval(() => s.writable && s.write('x'), 5000);
          await closed;
          clearInterval(t);
        } else if (mode === 'noread') {
          s.write(head('GET', bigPath, {}));
          s.pause();
          await closed;
        } else await closed;
        stats.cut++;
      } catch {
        stats.failed++;
      } finally {
        if (s) {
          sockets.delete(s);
          s.destroy();
        }
      }
      if (!stopped) await sleep(1000);
    }
  };
  const all = Array.from({ length: count }, (_, i) => one(i));
  return {
    async stop() {
      stopped = true;
      for (const s of sockets) s.destroy();
      await Promise.allSettled(all);
    },
  };
}

// ---------------------------------------------------------------------------
// Server-side measurements from /proc: peak RSS (VmHWM) and descriptors, summed over a process and its children.

function pids(root) {
  const out = [root];
  try {
    for (const t of readdirSync(`/proc/${root}/task`)) {
      const kids = readFileSync(`/proc/${root}/task/${t}/children`, 'utf8').trim();
      if (kids) for (const k of kids.split(/\s+/)) out.push(...pids(Number(k)));
    }
  } catch {
    /* gone */
  }
  return out;
}

function sampler(rootPid) {
  let peakFds = 0;
  const fdsNow = () => pids(rootPid).reduce((n, p) => {
    try {
      return n + readdirSync(`/proc/${p}/fd`).length;
    } catch {
      return n;
    }
  }, 0);
  const t = setInterval(() => (peakFds = Math.max(peakFds, fdsNow())), 200);
  return {
    fdsNow,
    stop() {
      clearInterval(t);
      let rss = 0;
      for (const p of pids(rootPid)) {
        try {
          rss += Number(/^VmHWM:\s+(\d+) kB/m.exec(readFileSync(`/proc/${p}/status`, 'utf8'))?.[1] ?? 0);
        } catch {
          /* gone */
        }
      }
      return { peakFds, peakRssMiB: rss / 1024 };
    },
  };
}

function percentile(values, p) {
  const v = [...values].sort((a, b) => a - b);
  if (v.length === 0) return NaN;
  return v[Math.min(v.length - 1, Math.ceil((p / 100) * v.length) - 1)];
}

// ---------------------------------------------------------------------------

async function runOne({ name, server, honest, hostile, opts }) {
  log(`${name}: ${opts.clients} clients${hostile ? ` + ${opts.hostile} hostile connections` : ''}…`);
  // Fresh server per run: VmHWM is a per-process peak.
  const srv = await server.start();
  const sample = sampler(srv.pid);
  const stats = { opened: 0, cut: 0, failed: 0 };
  let attack;
  try {
    if (hostile) {
      attack = startHostile({ port: srv.port, count: opts.hostile, kind: server.kind, bigPath: server.bigPath, dripTarget: server.dripTarget, stats });
      // Let the attack establish itself before the honest clients start.
      const deadline = Date.now() + 20_000;
      while (stats.opened < opts.hostile && Date.now() < deadline) await sleep(100);
      await sleep(1000);
    }
    const acks = [];
    const t0 = performance.now();
    const results = await Promise.allSettled(Array.from({ length: opts.clients }, (_, i) => honest(srv, i, acks)));
    const seconds = (performance.now() - t0) / 1000;
    const failures = results.filter((r) => r.status === 'rejected');
    if (failures.length) log(`  ${failures.length} honest uploads failed, first: ${failures[0].reason?.message}`);
    const m = sample.stop();
    const row = {
      name,
      hostile: hostile ? opts.hostile : 0,
      mibPerSec: ((opts.clients - failures.length) * opts.size) / MiB / seconds,
      seconds,
      p50: percentile(acks, 50),
      p99: percentile(acks, 99),
      acks: acks.length,
      failed: failures.length,
      peakRssMiB: m.peakRssMiB,
      peakFds: m.peakFds,
      hostileCut: stats.cut,
    };
    log(`  ${row.mibPerSec.toFixed(0)} MiB/s, Ack p50 ${row.p50.toFixed(0)} ms p99 ${row.p99.toFixed(0)} ms, RSS ${row.peakRssMiB.toFixed(0)} MiB, fds ${row.peakFds}, hostile cut ${stats.cut}`);
    await srv.verify?.();
    return row;
  } finally {
    await attack?.stop();
    await srv.stop();
  }
}

async function main() {
  const opts = parseCli(process.argv.slice(2).filter((a) => a !== 'load'));
  const work = mkdtempSync(path.join(os.tmpdir(), 'bits-load-'));
  const nginxBin = findExecutable('nginx', ['/usr/sbin', '/usr/local/sbin', '/sbin']);
  const curl = findExecutable('curl');
  const data = randomBytes(opts.size);
  const sha = createHash('sha256').update(data).digest('hex');
  const dataFile = path.join(work, 'upload.bin');
  await fsp.writeFile(dataFile, data);
  const filesDir = path.join(work, 'files');
  await fsp.mkdir(filesDir, { recursive: true });
  await fsp.writeFile(path.join(filesDir, 'big.bin'), randomBytes(64 * MiB));
  const env = { ...process.env, BITS_HOME: path.join(work, 'bits-home'), NO_COLOR: '1' };
  let n = 0;

  const verifyDir = async (dir, count) => {
    const names = (await fsp.readdir(dir)).filter((f) => f.startsWith('c'));
    let bad = 0;
    for (const f of names) if (createHash('sha256').update(await fsp.readFile(path.join(dir, f))).digest('hex') !== sha) bad++;
    if (names.length !== count || bad) throw new Error(`${dir}: ${names.length}/${count} files, ${bad} with a wrong sha256`);
    await fsp.rm(dir, { recursive: true, force: true });
  };

  const bitsServer = {
    kind: 'bits',
    bigPath: '/files/big.bin',
    dripTarget: (i) => `/hostile/d${i}.bin`,
    async start() {
      const root = path.join(work, `bits-root-${n++}`);
      await fsp.mkdir(path.join(root, 'files'), { recursive: true });
      await fsp.link(path.join(filesDir, 'big.bin'), path.join(root, 'files', 'big.bin'));
      const s = await startBitsServe({ node: process.execPath, bin: BITS, root, env });
      return {
        ...s,
        port: Number(new URL(s.url).port),
        verify: async () => {
          await verifyDir(path.join(root, 'up'), opts.clients);
          await fsp.rm(root, { recursive: true, force: true });
        },
      };
    },
  };
  const bitsHonest = (srv, i, acks) => bitsUpload(srv.port, `127.0.1.${1 + (i % 20)}`, `/up/c${i}.bin`, data, opts.fragment, acks);

  const rows = [];
  if (opts.only.has('bits')) {
    rows.push(await runOne({ name: 'bits serve', server: bitsServer, honest: bitsHonest, hostile: false, opts }));
    rows.push(await runOne({ name: 'bits serve', server: bitsServer, honest: bitsHonest, hostile: true, opts }));
  }
  if (!opts.only.has('nginx')) {
    /* bits only */
  } else if (nginxBin && curl) {
    const nginxServer = {
      kind: 'nginx',
      bigPath: '/files/big.bin',
      dripTarget: (i) => `/dav/hostile/d${i}.bin`,
      async start() {
        const davDir = path.join(work, `dav-${n++}`);
        const s = await startNginx({ bin: nginxBin, prefix: path.join(work, `nginx-${n}`), filesDir, davDir, workerConnections: 8192 });
        return { ...s, verify: () => verifyDir(davDir, opts.clients) };
      },
    };
    const curlHonest = (srv, i, acks) => curlPut(curl, dataFile, `${srv.url}/dav/c${i}.bin`, acks);
    rows.push(await runOne({ name: 'nginx PUT (curl -T)', server: nginxServer, honest: curlHonest, hostile: false, opts }));
    rows.push(await runOne({ name: 'nginx PUT (curl -T)', server: nginxServer, honest: curlHonest, hostile: true, opts }));
  } else log('nginx or curl missing (Debian packages nginx, curl): the nginx rows are skipped');

  const [base, attacked] = rows;
  if (!opts.only.has('bits')) return 0;
  const targets = [
    { what: 'honest throughput under attack ≥ ½ of without', ok: attacked.mibPerSec >= base.mibPerSec / 2, value: `${(attacked.mibPerSec / base.mibPerSec).toFixed(2)}×` },
    { what: 'honest Ack p99 under attack ≤ 2× without', ok: attacked.p99 <= 2 * base.p99, value: `${(attacked.p99 / base.p99).toFixed(2)}×` },
    { what: 'bits serve peak RSS ≤ 150 MB', ok: Math.max(base.peakRssMiB, attacked.peakRssMiB) * MiB <= 150e6, value: `${(Math.max(base.peakRssMiB, attacked.peakRssMiB) * MiB / 1e6).toFixed(0)} MB` },
    { what: 'no honest upload failed', ok: rows.every((r) => r.failed === 0), value: String(rows.reduce((a, r) => a + r.failed, 0)) },
  ];
  const lines = [
    `${opts.clients} concurrent clients × ${sizeLabel(opts.size)} (BITS fragments of ${sizeLabel(opts.fragment)}), ${os.cpus().length} × ${os.cpus()[0]?.model ?? 'cpu'}, node ${process.version}`,
    '',
    '| server | hostile connections | MiB/s | Ack p50 | Ack p99 | server peak RSS | server peak fds |',
    '|---|---:|---:|---:|---:|---:|---:|',
    ...rows.map((r) => `| ${r.name} | ${r.hostile} | ${r.mibPerSec.toFixed(0)} | ${(r.p50 / 1000).toFixed(2)} s | ${(r.p99 / 1000).toFixed(2)} s | ${r.peakRssMiB.toFixed(0)} MiB | ${r.peakFds} |`),
    '',
    ...targets.map((t) => `- ${t.ok ? 'met' : 'MISSED'}: ${t.what} (${t.value})`),
  ];
  const markdown = lines.join('\n');
  process.stdout.write(`\n${markdown}\n`);
  const stamp = new Date().toISOString().replace(/[:.]/g, '-');
  await fsp.mkdir(path.join(HERE, 'results'), { recursive: true });
  const file = path.join(HERE, 'results', `load-${stamp}.json`);
  await fsp.writeFile(file, JSON.stringify({ options: opts, rows, targets, markdown }, null, 2) + '\n');
  log(`\nraw results: ${path.relative(process.cwd(), file)}`);
  if (!opts.keep) rmSync(work, { recursive: true, force: true });
  return targets.every((t) => t.ok) ? 0 : 1;
}

main().then(
  (code) => process.exit(code),
  (err) => {
    log(`bench load: ${err instanceof Error ? err.stack : String(err)}`);
    process.exit(1);
  },
);
