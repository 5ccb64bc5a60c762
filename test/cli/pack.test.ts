/**
 * Packaging as a user meets it: `npm pack` builds (prepack) and ships dist/,
 * the tarball installs globally without npm warning about install scripts
 * (the packed package.json carries no `prepare`), and the installed `bits`
 * runs. Packed from a copy of the repository, so the build there never
 * rewrites the dist/ other tests are running; installed with --offline from
 * npm's cache (the dependencies came from `npm ci`): no traffic leaves the host.
 */
import { spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, expect, test } from 'vitest';
import { ROOT, childEnv } from '../helpers/cli.js';

const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

function npm(args: string[], cwd: string) {
  return spawnSync('npm', args, { cwd, encoding: 'utf8', timeout: 120_000, env: childEnv({ npm_config_update_notifier: 'false' }) });
}

test('npm pack builds and ships dist; npm install -g of the tarball warns of no script and bits runs', () => {
  const work = mkdtempSync(path.join(tmpdir(), 'bits-pack-'));
  dirs.push(work);
  const repo = path.join(work, 'repo');
  // A clone's view: sources, no dist/ (it is never committed).
  for (const f of ['package.json', 'package-lock.json', 'tsconfig.json', 'LICENSE', 'README.md', 'bin', 'src', 'scripts']) {
    cpSync(path.join(ROOT, f), path.join(repo, f), { recursive: true });
  }
  symlinkSync(path.join(ROOT, 'node_modules'), path.join(repo, 'node_modules'));
  expect(existsSync(path.join(repo, 'dist'))).toBe(false);
  const manifestBefore = readFileSync(path.join(repo, 'package.json'), 'utf8');

  const out = path.join(work, 'out');
  mkdirSync(out);
  const pack = npm(['pack', '--pack-destination', out], repo);
  expect(pack.status, pack.stderr).toBe(0);
  // postpack put `prepare` back: a clone's `npm install` still builds.
  expect(readFileSync(path.join(repo, 'package.json'), 'utf8')).toBe(manifestBefore);
  const tgz = readdirSync(out).find((f) => f.endsWith('.tgz'));
  expect(tgz).toBeDefined();

  const list = spawnSync('tar', ['tzf', path.join(out, tgz!)], { encoding: 'utf8' }).stdout.split('\n');
  expect(list).toContain('package/dist/cli/main.js');
  expect(list).toContain('package/dist/bundle/bits.mjs'); // what bin/bits runs
  expect(list).toContain('package/LICENSE');
  expect(list.some((f) => f.startsWith('package/src/'))).toBe(false);
  const packed = JSON.parse(spawnSync('tar', ['xzOf', path.join(out, tgz!), 'package/package.json'], { encoding: 'utf8' }).stdout);
  expect(packed.scripts.prepare).toBeUndefined();
  expect(packed.license).toBe('MIT');

  const prefix = path.join(work, 'prefix');
  const inst = npm(['install', '-g', '--offline', '--no-audit', '--no-fund', '--prefix', prefix, path.join(out, tgz!)], work);
  expect(inst.status, inst.stderr).toBe(0);
  expect(inst.stderr).not.toMatch(/prepare|install-scripts|allowScripts/i);
  expect(inst.stderr).not.toMatch(/npm warn/i);

  const v = spawnSync(path.join(prefix, 'bin', 'bits'), ['--version'], { encoding: 'utf8', timeout: 30_000 });
  expect(v.status, v.stderr).toBe(0);
  expect(v.stdout.trim()).toBe(JSON.parse(manifestBefore).version);
  // --version answers before the bundle's chunks load; help needs them (commander, every command).
  const help = spawnSync(path.join(prefix, 'bin', 'bits'), ['download', '--help'], { encoding: 'utf8', timeout: 30_000 });
  expect(help.status, help.stderr).toBe(0);
  expect(help.stdout).toContain('Usage: bits download');
}, 120_000);
