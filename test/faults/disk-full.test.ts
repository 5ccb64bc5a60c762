/**
 * Full disks, for real: small tmpfs mounts (we run as root in CI) for the
 * server's root and for a download's output folder. A full disk must give one
 * clear line and a documented exit code, lose nothing, and leave a job that
 * `bits resume` finishes byte-identical once space is freed (here: the tmpfs
 * is remounted larger).
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startServer, type RunningServer } from '../../src/server/index.js';
import { ensureBuilt, runBits } from '../helpers/cli.js';
import { makeRandomFile, sha256File } from '../helpers/files.js';

const MiB = 1024 * 1024;

function tryMount(dir: string, sizeMiB: number): string | undefined {
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${sizeMiB}m`, 'tmpfs', dir], { stdio: 'pipe' });
    return undefined;
  } catch (err) {
    return String((err as { stderr?: Buffer }).stderr ?? err).trim() || 'mount failed';
  }
}

function remount(dir: string, sizeMiB: number): void {
  execFileSync('mount', ['-o', `remount,size=${sizeMiB}m`, dir], { stdio: 'pipe' });
}

function unmount(dir: string): void {
  try {
    execFileSync('umount', [dir], { stdio: 'pipe' });
  } catch {
    /* already gone */
  }
}

function finalObject(stdout: string): Record<string, unknown> {
  const lines = stdout.trim().split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>);
  return lines[lines.length - 1]!;
}

const work = mkdtempSync(path.join(tmpdir(), 'bits-diskfull-'));
const probe = path.join(work, 'probe');
mkdirSync(probe);
const cannotMount = tryMount(probe, 1);
if (!cannotMount) unmount(probe);
// Only root can mount; a developer's unprivileged run skips with the reason, CI (root) must run it.
const maybe = cannotMount && !process.env.CI ? describe.skip : describe;

maybe(`a full disk${cannotMount ? ` (skipped: ${cannotMount})` : ''}`, () => {
  const env = { BITS_HOME: path.join(work, 'home') };
  let source: string;

  beforeAll(async () => {
    ensureBuilt();
    source = await makeRandomFile(path.join(work, 'source.bin'), 6 * MiB, 7);
  });

  afterAll(() => {
    for (const d of ['server-root', 'out-0', 'out-2']) unmount(path.join(work, d));
    rmSync(work, { recursive: true, force: true });
  });

  it('on the server: the upload stops with ERROR_DISK_FULL in one line, and resumes identical after space is freed', async () => {
    const root = path.join(work, 'server-root');
    mkdirSync(root);
    expect(tryMount(root, 2)).toBeUndefined();
    mkdirSync(path.join(root, 'up'));
    let server: RunningServer | undefined = await startServer({ root, limits: { maxFragmentBytes: 64 * MiB } });
    try {
      const url = `${server.url}/up/source.bin`;
      const first = await runBits(['upload', source, url, '--fragment-size', '256K', '--json'], { env });
      expect(first.code).toBe(5);
      const errLines = first.stderr.trim().split('\n').filter((l) => l.startsWith('bits: error:'));
      expect(errLines).toHaveLength(1);
      expect(errLines[0]).toContain('0x80070112 ERROR_DISK_FULL');
      expect(errLines[0]).toContain('HTTP 500');
      const fin = finalObject(first.stdout);
      const jobId = fin.jobId as string;
      expect(jobId).toBeTruthy();
      expect((fin.error as Record<string, unknown>).hresult).toBe('0x80070112');

      remount(root, 16);
      const again = await runBits(['resume', jobId, '--json'], { env });
      expect(again.stderr).not.toContain('bits: error');
      expect(again.code).toBe(0);
      expect(await sha256File(path.join(root, 'up', 'source.bin'))).toBe(await sha256File(source));
    } finally {
      await server?.close();
      server = undefined;
    }
  });

  it.each([
    ['one stream', [] as string[]],
    ['four segments', ['--segments', '4']],
  ])('on the client (%s): the download stops with exit 3 (no space left), keeps what it has, and resumes identical', async (label, extra) => {
    const srvRoot = path.join(work, `dl-root-${extra.length}`);
    mkdirSync(path.join(srvRoot, 'files'), { recursive: true });
    execFileSync('cp', [source, path.join(srvRoot, 'files', 'big.bin')]);
    const out = path.join(work, `out-${extra.length}`);
    mkdirSync(out);
    expect(tryMount(out, 2)).toBeUndefined();
    const server = await startServer({ root: srvRoot });
    try {
      const dest = path.join(out, 'big.bin');
      const first = await runBits(['download', `${server.url}/files/big.bin`, '-o', dest, '--json', ...extra], { env });
      expect(first.code).toBe(3);
      const errLines = first.stderr.trim().split('\n').filter((l) => l.startsWith('bits: error:'));
      expect(errLines).toHaveLength(1);
      expect(errLines[0]).toMatch(/no space left on device/);
      expect(existsSync(dest)).toBe(false); // never a truncated file under the final name
      const jobId = finalObject(first.stdout).jobId as string;
      expect(jobId).toBeTruthy();

      remount(out, 16);
      const again = await runBits(['resume', jobId], { env });
      expect(again.code).toBe(0);
      expect(await sha256File(dest)).toBe(await sha256File(source));
    } finally {
      await server.close();
      unmount(out);
    }
  });
});
