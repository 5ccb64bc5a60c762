#!/usr/bin/env node
// Builds a single-file `bits` executable with Node's single executable applications
// (https://nodejs.org/api/single-executable-applications.html):
//   1. esbuild bundles the CLI and every dependency into ONE CommonJS script
//      (Node 20's SEA runs a single CommonJS file; require() there loads built-ins only);
//   2. node --experimental-sea-config turns it into a blob;
//   3. a copy of this node binary gets the blob injected with postject.
//   npm run build:exe            -> build/exe/bits (bits.exe on Windows)
//   node scripts/build-exe.mjs [OUT]
// The executable is for the platform and architecture of the node running this script
// (linux-x64 here); macOS and Windows builds are described in the README ("Install").
import { build } from 'esbuild';
import { execFileSync } from 'node:child_process';
import { copyFileSync, chmodSync, mkdirSync, writeFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { inlineRuntimeRequires } from './lib/esbuild-shared.mjs';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const exeName = process.platform === 'win32' ? 'bits.exe' : 'bits';
const out = path.resolve(process.argv[2] ?? path.join(root, 'build', 'exe', exeName));
const work = path.join(path.dirname(out), '.sea');
mkdirSync(work, { recursive: true });
const started = Date.now();
const step = (what) => console.log(`build:exe: ${what} (${((Date.now() - started) / 1000).toFixed(1)} s)`);

// src/cli/main.ts uses top-level await, which a CommonJS bundle cannot hold: the same start-up, in a function.
const entry = `
import { VERSION } from './src/version.js';
async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  if (argv.length === 1 && (argv[0] === '--version' || argv[0] === '-V')) {
    process.stdout.write(VERSION + '\\n');
    return;
  }
  (await import('node:v8')).setFlagsFromString('--liftoff-only');
  const { buildProgram } = await import('./src/cli/program.js');
  await (await buildProgram()).parseAsync(process.argv);
}
main().catch((err) => {
  process.stderr.write('bits: ' + String(err && err.stack ? err.stack : err) + '\\n');
  process.exit(1);
});
`;

const bundle = path.join(work, 'bits.cjs');
const result = await build({
  stdin: { contents: entry, resolveDir: root, sourcefile: 'sea-main.ts', loader: 'ts' },
  bundle: true,
  platform: 'node',
  target: 'node20',
  format: 'cjs',
  outfile: bundle,
  plugins: [inlineRuntimeRequires],
  // Dependencies (ESM) that read import.meta.url get the bundle's own location.
  define: { 'import.meta.url': '__bits_import_meta_url' },
  banner: { js: "const __bits_import_meta_url = require('node:url').pathToFileURL(__filename).href;" },
  legalComments: 'none',
  logLevel: 'warning',
});
if (result.errors.length) process.exit(1);
step(`bundled ${(statSync(bundle).size / 1024).toFixed(0)} KiB`);

const blob = path.join(work, 'sea-prep.blob');
const seaConfig = path.join(work, 'sea-config.json');
writeFileSync(seaConfig, JSON.stringify({ main: bundle, output: blob, disableExperimentalSEAWarning: true, useSnapshot: false, useCodeCache: false }));
execFileSync(process.execPath, ['--experimental-sea-config', seaConfig], { stdio: 'inherit' });
step('blob written');

copyFileSync(process.execPath, out);
chmodSync(out, 0o755);
if (process.platform === 'darwin') execFileSync('codesign', ['--remove-signature', out], { stdio: 'inherit' });
const postject = path.join(root, 'node_modules', 'postject', 'dist', 'cli.js');
const inject = [postject, out, 'NODE_SEA_BLOB', blob, '--sentinel-fuse', 'NODE_SEA_FUSE_fce680ab2cc467b6e072b8b5df1996b2'];
if (process.platform === 'darwin') inject.push('--macho-segment-name', 'NODE_SEA');
try {
  execFileSync(process.execPath, inject, { stdio: ['ignore', 'ignore', 'pipe'], encoding: 'utf8' });
} catch (err) {
  process.stderr.write(err.stderr ?? '');
  throw err;
}
if (process.platform === 'darwin') execFileSync('codesign', ['--sign', '-', out], { stdio: 'inherit' });
step(`wrote ${path.relative(process.cwd(), out)} (${(statSync(out).size / 1024 / 1024).toFixed(0)} MiB)`);
