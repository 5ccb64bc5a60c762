#!/usr/bin/env node
// The CLI as bin/bits runs it: src/cli/main.ts and its dependencies bundled by esbuild into
// dist/bundle/bits.mjs (ESM), each lazily imported part (a command, the server, the agent,
// conf) in a chunk of its own beside it, loaded only when it runs. Part of `npm run build`,
// after tsc (which still builds dist/ for the API and the tests).
//
// Why (issue 13, bench/README.md "Start-up profile"): loading ~40 dist modules and undici's
// CommonJS files one by one — resolving, reading, compiling each — was a large share of a
// 1 MiB transfer's start-up. One file per part is read and compiled once.
//
// The chunks sit in the same folder as bits.mjs, two levels below the package root as
// dist/api/*.js are: code that finds bin/bits from import.meta.url (src/api/background.ts)
// gets the same answer from both.
//   node scripts/bundle.mjs          -> dist/bundle/
//   node scripts/bundle.mjs OUTDIR   (a test compares a fresh build with dist/bundle/)
import { build } from 'esbuild';
import { builtinModules } from 'node:module';
import { renameSync, rmSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { inlineRuntimeRequires } from './lib/esbuild-shared.mjs';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const target = path.resolve(process.argv[2] ?? path.join(root, 'dist', 'bundle'));
// Built beside it and swapped in: no chunks of an older build left behind, and a `bits` started
// meanwhile finds the old bundle or the new one.
const outdir = `${target}.tmp-${process.pid}`;
rmSync(outdir, { recursive: true, force: true });

// `import fs from 'node:fs'` in an ES module costs more than require('node:fs'): node builds an ES
// module facade for the built-in (syncExports of every export) after resolving the specifier
// through the ESM loader; ~20 built-ins on a transfer's path. Built-ins imported by our sources
// become CommonJS requires in the bundle (esbuild does the interop as for any CommonJS module).
const builtins = new Set(builtinModules.flatMap((m) => [m, `node:${m}`]));
const builtinsByRequire = {
  name: 'builtins-by-require',
  setup(b) {
    b.onResolve({ filter: /^[a-z_/:]+$/ }, (args) => {
      // Static imports only: a dynamic import() of a CommonJS module would give a namespace with
      // only `default` (esbuild cannot know its named exports); those stay ES imports.
      if (!builtins.has(args.path) || args.kind !== 'import-statement') return undefined;
      return { path: args.path.replace(/^node:/, ''), namespace: 'builtin' };
    });
    b.onLoad({ filter: /.*/, namespace: 'builtin' }, (args) => ({ contents: `module.exports = require(${JSON.stringify(`node:${args.path}`)});`, loader: 'js' }));
  },
};

const result = await build({
  entryPoints: { bits: path.join(root, 'src', 'cli', 'main.ts') },
  bundle: true,
  format: 'esm',
  platform: 'node',
  target: 'node20',
  outdir,
  outExtension: { '.js': '.mjs' },
  chunkNames: '[name]-[hash]',
  splitting: true,
  plugins: [inlineRuntimeRequires, builtinsByRequire],
  // The bundled CommonJS dependencies (undici, commander, cli-progress) call require() for
  // node's built-ins; an ES module has none of its own.
  banner: { js: "import { createRequire as __bitsCreateRequire } from 'node:module';\nconst require = __bitsCreateRequire(import.meta.url);" },
  // Error names and messages, the output users see, must not depend on how esbuild renames.
  keepNames: true,
  // Less to read and compile at every start (1 MiB download ~10% faster than unminified).
  minify: true,
  legalComments: 'none',
  logLevel: 'warning',
});
if (result.errors.length) process.exit(1);
const old = `${target}.old-${process.pid}`;
try {
  renameSync(target, old);
} catch (err) {
  if (err.code !== 'ENOENT') throw err;
}
renameSync(outdir, target);
rmSync(old, { recursive: true, force: true });
