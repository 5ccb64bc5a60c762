#!/usr/bin/env node
/**
 * `npm pack` / `npm publish` ship the built dist/, so the packed package.json
 * must not carry `prepare` (`npm run build`): npm runs prepare for a tarball
 * installed from a file, warns about it as an install script, and the build
 * would fail there anyway (no TypeScript, no src/). A git clone still needs it
 * (`npm install` builds). So prepack parks it as `_prepare` and postpack puts
 * it back, as pinst does for postinstall.
 *
 *   node scripts/pack-manifest.mjs disable|enable
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const file = fileURLToPath(new URL('../package.json', import.meta.url));
const mode = process.argv[2];
if (mode !== 'disable' && mode !== 'enable') {
  process.stderr.write('usage: node scripts/pack-manifest.mjs disable|enable\n');
  process.exit(2);
}
const text = readFileSync(file, 'utf8');
const pkg = JSON.parse(text);
const [from, to] = mode === 'disable' ? ['prepare', '_prepare'] : ['_prepare', 'prepare'];
if (pkg.scripts?.[from] !== undefined) {
  // Rename in place, keeping the key order (and so a clean git diff after postpack).
  pkg.scripts = Object.fromEntries(Object.entries(pkg.scripts).map(([k, v]) => [k === from ? to : k, v]));
  writeFileSync(file, JSON.stringify(pkg, null, 2) + (text.endsWith('\n') ? '\n' : ''));
}
