/**
 * The single-file executable (npm run build:exe, scripts/build-exe.mjs),
 * built once here (about 10 s on 2 cores: esbuild, the SEA blob, postject into
 * a copy of node) into a temp folder with no node_modules and no node on
 * PATH, then run as a user would: --version, and a real upload + download
 * against the executable's own `bits serve`, sha256-identical.
 *
 * Skipped, with the reason, where Node's single executable applications
 * cannot be built: not linux-x64, a node binary without the SEA fuse, or the
 * devDependencies (esbuild, postject) missing.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { ROOT } from '../helpers/cli.js';
import { makeRandomFile, makeTempDir, sha256File } from '../helpers/files.js';

function whyNot(): string | undefined {
  if (`${process.platform}-${process.arch}` !== 'linux-x64') return `SEA build is tested on linux-x64 only (this is ${process.platform}-${process.arch})`;
  for (const dep of ['esbuild', 'postject']) if (!existsSync(path.join(ROOT, 'node_modules', dep))) return `devDependency ${dep} is not installed`;
  if (!readFileSync(process.execPath).includes('NODE_SEA_FUSE_fce680ab2cc467b6e072b8b5df1996b2')) return `${process.execPath} has no NODE_SEA_FUSE (not a SEA-capable node build)`;
  return undefined;
}
const skip = whyNot();
if (skip) console.warn(`exe tests skipped: ${skip}`);
const pkg = JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { version: string };

let tmp: { dir: string; cleanup: () => Promise<void> };
let exe: string;
let env: NodeJS.ProcessEnv;

beforeAll(async () => {
  if (skip) return;
  tmp = await makeTempDir('bits-exe-');
  exe = path.join(tmp.dir, 'bin', 'bits');
  const b = spawnSync(process.execPath, [path.join(ROOT, 'scripts', 'build-exe.mjs'), exe], { cwd: ROOT, encoding: 'utf8', timeout: 170_000 });
  expect(b.status, b.stdout + b.stderr).toBe(0);
  // No node, no node_modules: only the executable's folder on PATH, a job store of its own.
  env = { PATH: path.dirname(exe), HOME: tmp.dir, BITS_HOME: path.join(tmp.dir, 'home'), CI: 'true', NO_COLOR: '1' };
}, 180_000);

afterAll(async () => {
  await tmp?.cleanup();
});

function run(args: string[]) {
  return spawnSync(exe, args, { cwd: tmp.dir, env, encoding: 'utf8', timeout: 30_000 });
}

describe.skipIf(skip !== undefined)('single executable (linux-x64)', () => {
  it('is one file that runs without node or node_modules: bits --version', () => {
    expect(existsSync(path.join(tmp.dir, 'node_modules'))).toBe(false);
    expect(spawnSync('sh', ['-c', 'command -v node'], { env }).status).not.toBe(0);
    const r = run(['--version']);
    expect(r.stderr).toBe('');
    expect(r.stdout.trim()).toBe(pkg.version);
    expect(run(['upload', '--help']).stdout).toMatch(/--fragment-size/);
  });

  it('serves, uploads and downloads with itself, sha256-identical', async () => {
    const root = path.join(tmp.dir, 'root');
    await mkdir(root);
    const src = await makeRandomFile(path.join(tmp.dir, 'big.bin'), 3 * 1024 * 1024 + 123, 11);
    const server = spawn(exe, ['serve', '--root', root, '--port', '0', '--json', '--quiet'], { cwd: tmp.dir, env, stdio: ['ignore', 'pipe', 'pipe'] });
    try {
      const url = await new Promise<string>((resolve, reject) => {
        let out = '';
        const t = setTimeout(() => reject(new Error(`serve did not listen within 15 s: ${out}`)), 15_000);
        server.stdout.on('data', (d: Buffer) => {
          out += d.toString();
          const line = out.split('\n').find((l) => l.includes('"listening"'));
          if (line) {
            clearTimeout(t);
            resolve((JSON.parse(line) as { url: string }).url);
          }
        });
        server.on('exit', (code) => reject(new Error(`serve exited ${code}`)));
      });
      const up = run(['upload', '--fragment-size', '1M', src, `${url}/in/big.bin`]);
      expect(up.status, up.stderr).toBe(0);
      expect(await sha256File(path.join(root, 'in', 'big.bin'))).toBe(await sha256File(src));
      const out = path.join(tmp.dir, 'copy.bin');
      const down = run(['download', '--segments', '2', '-o', out, `${url}/in/big.bin`]);
      expect(down.status, down.stderr).toBe(0);
      expect(await sha256File(out)).toBe(await sha256File(src));
      const list = run(['list', '--all', '--json']);
      expect(list.status, list.stderr).toBe(0);
      expect(list.stdout.match(/"state":"complete"/g)?.length).toBe(2);
    } finally {
      if (server.exitCode === null && server.signalCode === null) {
        const exited = new Promise<number | null>((r) => server.once('exit', (code) => r(code)));
        server.kill('SIGTERM');
        expect(await exited).toBe(0);
      }
    }
  });
});
