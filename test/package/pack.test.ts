/**
 * The package as a user gets it: `npm pack`, `npm install <tarball>` into a
 * fresh project (dependencies from the npm cache, --offline, falling back to
 * --prefer-offline), imported by its name, then a real upload and download
 * through its own serve(), sha256-identical, with the events checked; and
 * its type declarations compile against a consumer's TypeScript.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync, existsSync } from 'node:fs';
import path from 'node:path';
import { ensureBuilt, ROOT } from '../helpers/cli.js';
import { makeTempDir } from '../helpers/files.js';

const pkg = JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { name: string; version: string };
let tmp: { dir: string; cleanup: () => Promise<void> };
let proj: string;

function npm(args: string[], cwd: string) {
  return spawnSync('npm', [...args, '--no-audit', '--no-fund', '--loglevel=error'], { cwd, encoding: 'utf8', timeout: 120_000, env: { ...process.env, npm_config_update_notifier: 'false' } });
}

beforeAll(async () => {
  ensureBuilt();
  tmp = await makeTempDir('bits-pack-');
  // dist/ is already built (npm test builds first): the lifecycle scripts would only build it again.
  const packed = npm(['pack', '--ignore-scripts', '--pack-destination', tmp.dir], ROOT);
  expect(packed.status, packed.stderr).toBe(0);
  const tgz = path.join(tmp.dir, `${pkg.name.replace(/^@/, '').replace('/', '-')}-${pkg.version}.tgz`);
  expect(existsSync(tgz)).toBe(true);
  proj = path.join(tmp.dir, 'consumer');
  const { mkdir } = await import('node:fs/promises');
  await mkdir(proj);
  writeFileSync(path.join(proj, 'package.json'), JSON.stringify({ name: 'consumer', private: true, type: 'module' }));
  let inst = npm(['install', tgz, '--offline'], proj);
  if (inst.status !== 0) inst = npm(['install', tgz, '--prefer-offline'], proj);
  expect(inst.status, inst.stderr).toBe(0);
}, 180_000);

afterAll(async () => {
  await tmp?.cleanup();
});

const SCRIPT = `
import { createHash } from 'node:crypto';
import { mkdtemp, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { upload, download, serve, jobs, BitsError, VERSION } from '${pkg.name}';
const work = await mkdtemp(path.join(process.cwd(), 'w-'));
const file = path.join(work, 'in.bin');
const data = Buffer.alloc(1536 * 1024);
for (let i = 0; i < data.length; i++) data[i] = (i * 7919) % 251;
await writeFile(file, data);
const root = await mkdtemp(path.join(work, 'root-'));
const server = await serve({ root });
const up = [], down = [];
const u = await upload({ file, url: server.url + '/in/copy.bin', fragmentSize: 256 * 1024, home: work, onEvent: (e) => up.push(e) });
const d = await download({ url: server.url + '/in/copy.bin', output: path.join(work, 'out.bin'), home: work, onEvent: (e) => down.push(e) });
const sha = async (f) => createHash('sha256').update(await readFile(f)).digest('hex');
const listed = await jobs.list({ home: work });
await server.close();
console.log(JSON.stringify({
  version: VERSION, errorClass: typeof BitsError,
  src: await sha(file), uploaded: await sha(path.join(root, 'in', 'copy.bin')), downloaded: await sha(d.destination),
  up: up.map((e) => e.type), down: down.map((e) => e.type),
  upProgress: up.filter((e) => e.type === 'progress').map((e) => e.bytesDone),
  states: listed.map((j) => j.state), bytes: [u.bytes, d.bytes],
}));
`;

describe(`npm pack → npm install → import '${pkg.name}'`, () => {
  it('uploads and downloads through serve() with the installed package, sha256-identical, with its events', () => {
    writeFileSync(path.join(proj, 'use.mjs'), SCRIPT);
    const r = spawnSync(process.execPath, ['use.mjs'], { cwd: proj, encoding: 'utf8', timeout: 60_000 });
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    const out = JSON.parse(r.stdout.trim());
    expect(out.version).toBe(pkg.version);
    expect(out.errorClass).toBe('function');
    expect(out.uploaded).toBe(out.src);
    expect(out.downloaded).toBe(out.src);
    expect(out.bytes).toEqual([1536 * 1024, 1536 * 1024]);
    for (const ev of [out.up, out.down]) {
      expect(ev).toContain('start');
      expect(ev).toContain('phase');
      expect(ev).toContain('progress');
      expect(ev.at(-1)).toBe('complete');
    }
    // One progress per acknowledged 256 KiB fragment at least, ending at the size.
    expect(out.upProgress.length).toBeGreaterThanOrEqual(6);
    expect(out.upProgress.at(-1)).toBe(1536 * 1024);
    expect(out.states).toEqual(['complete', 'complete']);
  });

  it('ships type declarations a TypeScript consumer compiles against (and a wrong call fails to compile)', () => {
    const tsc = path.join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc');
    const base = ['--noEmit', '--strict', '--module', 'nodenext', '--moduleResolution', 'nodenext', '--target', 'es2022', '--skipLibCheck', '--types', 'node', '--typeRoots', path.join(ROOT, 'node_modules', '@types')];
    writeFileSync(
      path.join(proj, 'good.ts'),
      `import { upload, serve, jobs, ServerError, type TransferEvent, type Server } from '${pkg.name}';\n` +
        `const s: Promise<Server> = serve({ root: '.' });\n` +
        `const on = (e: TransferEvent): number => (e.type === 'progress' ? e.bytesDone : 0);\n` +
        `export const p = upload({ file: 'a', url: 'http://127.0.0.1/x', onEvent: on, signal: AbortSignal.timeout(1) }).then((r) => r.job.id);\n` +
        `export const l = jobs.list().then((j) => j.map((x) => x.effectiveState));\n` +
        `export const e = (x: unknown): number | undefined => (x instanceof ServerError ? x.httpStatus : undefined); void s;\n`,
    );
    const good = spawnSync(process.execPath, [tsc, ...base, 'good.ts'], { cwd: proj, encoding: 'utf8', timeout: 60_000 });
    expect(good.stdout + good.stderr).toBe('');
    expect(good.status).toBe(0);
    writeFileSync(path.join(proj, 'bad.ts'), `import { upload } from '${pkg.name}';\nexport const p = upload({ file: 1, url: 'x' });\n`);
    const bad = spawnSync(process.execPath, [tsc, ...base, 'bad.ts'], { cwd: proj, encoding: 'utf8', timeout: 60_000 });
    expect(bad.status).not.toBe(0);
    expect(bad.stdout).toMatch(/bad\.ts.*not assignable/s);
  });
});
