/**
 * `npm run man` (scripts/man.mjs) writes bits.1 from the built CLI's help
 * texts, and it renders: man -l, else groff, with no warnings, showing every
 * command, its options and its examples.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { ensureBuilt, ROOT } from '../helpers/cli.js';
import { makeTempDir } from '../helpers/files.js';

const has = (cmd: string) => spawnSync('sh', ['-c', `command -v ${cmd}`]).status === 0;
let tmp: { dir: string; cleanup: () => Promise<void> };
let page: string;
let roff: string;

beforeAll(async () => {
  ensureBuilt();
  tmp = await makeTempDir('bits-man-');
  page = path.join(tmp.dir, 'bits.1');
  const r = spawnSync(process.execPath, [path.join(ROOT, 'scripts', 'man.mjs'), page], { encoding: 'utf8', timeout: 30_000, env: { ...process.env, SOURCE_DATE_EPOCH: '1767225600' } });
  expect(r.status, r.stderr).toBe(0);
  roff = readFileSync(page, 'utf8');
}, 60_000);
afterAll(async () => {
  await tmp?.cleanup();
});

describe('man page', () => {
  it('has the man(7) structure: .TH, NAME, SYNOPSIS, a section per command, ASCII only', () => {
    expect(roff).toMatch(/^\.TH BITS 1 "2026-01-01" "bits\\-transfer [\d.]+" "User Commands"$/m);
    for (const sh of ['NAME', 'SYNOPSIS', 'DESCRIPTION', 'OPTIONS', 'COMMANDS']) expect(roff).toMatch(new RegExp(`^\\.SH ${sh}$`, 'm'));
    for (const c of ['upload', 'download', 'resume', 'list', 'status', 'cancel', 'clean', 'serve', 'config', 'config set', 'completion']) {
      expect(roff).toMatch(new RegExp(`^\\.SS "bits ${c} `, 'm'));
    }
    expect(roff).not.toMatch(/__demo/);
    expect(roff).not.toMatch(/[^\x00-\x7f]/);
    // No text line that roff would read as a request.
    const body = roff.split('\n').filter((l) => /^[.']/.test(l) && !/^\.(TH|SH|SS|TP|PP|nf|fi|br|\\")/.test(l));
    expect(body).toEqual([]);
  });

  it.skipIf(!has('man') && !has('groff'))('renders without warnings, with options and examples from --help', () => {
    const r = has('man')
      ? spawnSync('man', ['-l', page], { encoding: 'utf8', env: { ...process.env, MANWIDTH: '100', MAN_KEEP_FORMATTING: '', MANPAGER: 'cat', PAGER: 'cat' } })
      : spawnSync('groff', ['-man', '-Tutf8', '-P-cbou', page], { encoding: 'utf8' });
    expect(r.status, r.stderr).toBe(0);
    const text = r.stdout.replace(/.\x08/g, '');
    expect(text).toMatch(/^BITS\(1\)/);
    expect(text).toMatch(/--fragment-size <size>/);
    expect(text).toMatch(/--notification-type <type>/);
    expect(text).toMatch(/bits upload \.\/backup\.tar/);
    expect(text).toMatch(/Exit codes: 0 done/);
    expect(text).toMatch(/§3\.1\.2\.1/);
    if (has('groff')) {
      const w = spawnSync('groff', ['-man', '-Tutf8', '-ww', '-z', page], { encoding: 'utf8' });
      expect(w.stderr).toBe('');
    }
  });
});
