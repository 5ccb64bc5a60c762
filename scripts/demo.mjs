#!/usr/bin/env node
// `npm run demo`: the main job end to end against the embedded default server.
// Starts `bits serve` on a loopback port, uploads a sample file over BITS
// (CREATE-SESSION, FRAGMENTs, CLOSE-SESSION), downloads it back with range GETs,
// and shows that the sha256 of all three copies match. Nothing leaves 127.0.0.1.
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream, mkdtempSync, rmSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { once } from 'node:events';

const here = path.dirname(fileURLToPath(import.meta.url));
const bits = path.join(here, '..', 'bin', 'bits');
const work = mkdtempSync(path.join(tmpdir(), 'bits-demo-'));
const env = { ...process.env, BITS_HOME: path.join(work, 'home') };
const sizeMiB = Number(process.env.BITS_DEMO_MIB ?? 48);

function sha256(file) {
  return new Promise((resolve, reject) => {
    const h = createHash('sha256');
    createReadStream(file).on('data', (c) => h.update(c)).on('end', () => resolve(h.digest('hex'))).on('error', reject);
  });
}

function run(args) {
  console.log(`\n$ bits ${args.join(' ')}`);
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, [bits, ...args], { env, stdio: ['ignore', 'inherit', 'inherit'] });
    p.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`bits ${args[0]} exited with ${code}`))));
  });
}

async function main() {
  const root = path.join(work, 'server-root');
  mkdirSync(path.join(root, 'uploads'), { recursive: true });
  const sample = path.join(work, 'sample.bin');
  const out = createWriteStream(sample);
  for (let i = 0; i < sizeMiB; i++) if (!out.write(randomBytes(1024 * 1024))) await once(out, 'drain');
  out.end();
  await once(out, 'finish');
  console.log(`sample file: ${sample} (${sizeMiB} MiB)`);

  console.log(`\n$ bits serve --root ${root} --host 127.0.0.1 --port 0`);
  const server = spawn(process.execPath, [bits, 'serve', '--root', root, '--host', '127.0.0.1', '--port', '0', '--json', '--quiet'], {
    env,
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  let buf = '';
  const url = await new Promise((resolve, reject) => {
    server.stdout.on('data', (d) => {
      buf += d;
      for (const line of buf.split('\n')) {
        try {
          const ev = JSON.parse(line);
          if (ev.type === 'listening') resolve(ev.url);
        } catch {}
      }
    });
    server.on('exit', (code) => reject(new Error(`bits serve exited with ${code}`)));
  });
  console.log(`bits serve is listening on ${url}`);

  try {
    const dest = `${url}/uploads/sample.bin`;
    await run(['upload', sample, dest]);
    const back = path.join(work, 'downloaded.bin');
    await run(['download', dest, '-o', back]);
    const [a, b, c] = await Promise.all([sample, path.join(root, 'uploads', 'sample.bin'), back].map(sha256));
    console.log(`\nsha256 source     ${a}\nsha256 on server  ${b}\nsha256 downloaded ${c}`);
    if (a !== b || a !== c) throw new Error('sha256 mismatch');
    console.log('\nOK: the file went up over BITS and came back byte for byte.');
  } finally {
    server.kill('SIGTERM');
    await once(server, 'exit').catch(() => {});
    rmSync(work, { recursive: true, force: true });
  }
}

main().catch((err) => {
  console.error(`demo failed: ${err.message}`);
  process.exitCode = 1;
});
