/** Root confinement: URL path decoding (pure) and resolution against real files and symlinks. */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdir, mkdtemp, realpath, rm, symlink, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { PathRejected, resolveUnderRoot, safeSegments } from '../../src/server/paths.js';

describe('safeSegments', () => {
  it.each([
    ['/', []],
    ['/a/b.txt', ['a', 'b.txt']],
    ['//a///b/', ['a', 'b']],
    ['/a%20b/c%2Bd', ['a b', 'c+d']],
    ['/%7BGUID%7D/reply.bin', ['{GUID}', 'reply.bin']],
    ['/caf%C3%A9', ['café']],
    ['/...', ['...']],
    ['/..foo/.bar', ['..foo', '.bar']],
    ['/%252e%252e', ['%2e%2e']], // double-encoded: a literal, harmless name
    ['/ab:c', ['ab:c']], // a legal POSIX name (a drive-letter-like 'a:' is refused everywhere)
  ])('%s -> %j', (raw, want) => {
    expect(safeSegments(raw, 'linux')).toEqual(want);
  });

  it.each([
    'relative/path',
    '',
    '*',
    'http://host/a',
    '/..',
    '/a/../b',
    '/.',
    '/a/./b',
    '/%2e%2e/x',
    '/%2E/x',
    '/a%2fb',
    '/a%2Fb',
    '/a%5cb',
    '/a\\b',
    '/a%00b',
    '/%',
    '/%zz',
    '/%c0%ae%c0%ae', // overlong UTF-8 dots
    '/C:/Windows',
    '/c%3A/x',
  ])('rejects %j', (raw) => {
    expect(() => safeSegments(raw, 'linux')).toThrow(PathRejected);
  });

  it.each(['/file.txt:secret', '/file.txt::$DATA', '/BITS-Sessions./x', '/name%20', '/dir./f'])(
    'rejects the Windows alias %j on win32 only',
    (raw) => {
      expect(() => safeSegments(raw, 'win32')).toThrow(PathRejected);
      expect(() => safeSegments(raw, 'linux')).not.toThrow();
    },
  );
});

describe('resolveUnderRoot', () => {
  let tmp: string;
  let root: string;

  beforeAll(async () => {
    tmp = await realpath(await mkdtemp(path.join(os.tmpdir(), 'bits-paths-')));
    root = path.join(tmp, 'root');
    await mkdir(path.join(root, 'dir'), { recursive: true });
    await mkdir(path.join(tmp, 'outside'));
    await writeFile(path.join(root, 'dir', 'f.txt'), 'x');
    await writeFile(path.join(tmp, 'outside', 'secret'), 's');
    await symlink(path.join(tmp, 'outside'), path.join(root, 'out-dir'));
    await symlink(path.join(tmp, 'outside', 'secret'), path.join(root, 'out-file'));
    await symlink(path.join(tmp, 'outside', 'not-yet'), path.join(root, 'dangling-out'));
    await symlink(path.join(root, 'dir'), path.join(root, 'in-dir'));
    await symlink('loop', path.join(root, 'loop'));
  });

  afterAll(async () => {
    if (tmp) await rm(tmp, { recursive: true, force: true });
  });

  it('maps existing and not-yet-existing paths below the root', async () => {
    expect(await resolveUnderRoot(root, '/dir/f.txt')).toBe(path.join(root, 'dir', 'f.txt'));
    expect(await resolveUnderRoot(root, '/')).toBe(root);
    // Uploads create files: the deepest existing ancestor is what is checked.
    expect(await resolveUnderRoot(root, '/dir/new/deeper/file.bin')).toBe(path.join(root, 'dir', 'new', 'deeper', 'file.bin'));
  });

  it('follows symlinks that stay inside the root', async () => {
    expect(await resolveUnderRoot(root, '/in-dir/f.txt')).toBe(path.join(root, 'in-dir', 'f.txt'));
  });

  it('works when the root itself is reached through a symlink', async () => {
    const alias = path.join(tmp, 'root-alias');
    await symlink(root, alias);
    expect(await resolveUnderRoot(alias, '/dir/f.txt')).toBe(path.join(root, 'dir', 'f.txt'));
    await expect(resolveUnderRoot(alias, '/out-file')).rejects.toThrow(PathRejected);
  });

  it.each(['/out-dir/secret', '/out-file', '/out-dir/new-file', '/out-dir/new/deeper'])('refuses %s (symlink out of the root)', async (p) => {
    await expect(resolveUnderRoot(root, p)).rejects.toThrow(PathRejected);
  });

  it('refuses a dangling symlink (writing through it would create a file outside)', async () => {
    await expect(resolveUnderRoot(root, '/dangling-out')).rejects.toThrow(PathRejected);
    await expect(resolveUnderRoot(root, '/dangling-out/x')).rejects.toThrow(PathRejected);
  });

  it('refuses a symlink loop', async () => {
    await expect(resolveUnderRoot(root, '/loop')).rejects.toThrow(PathRejected);
  });

  it('refuses traversal before touching the file system', async () => {
    await expect(resolveUnderRoot(root, '/../outside/secret')).rejects.toThrow(PathRejected);
    await expect(resolveUnderRoot(root, '/dir/%2e%2e/%2e%2e/outside/secret')).rejects.toThrow(PathRejected);
  });

  it('a missing root is an error, not a path under /', async () => {
    await expect(resolveUnderRoot(path.join(tmp, 'missing'), '/x')).rejects.toMatchObject({ code: 'ENOENT' });
  });
});
