/**
 * `bits completion bash|zsh|fish` from the built bits: the scripts parse in
 * their shell, and bash (fish too, when installed) really completes the
 * subcommands, their options and option choices when the script is sourced
 * and the completion function is called with COMP_WORDS set.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll } from 'vitest';
import { ensureBuilt, runBits } from '../helpers/cli.js';
import { makeTempDir } from '../helpers/files.js';

const has = (cmd: string) => spawnSync('sh', ['-c', `command -v ${cmd}`]).status === 0;
let tmp: { dir: string; cleanup: () => Promise<void> };
const scripts: Record<string, string> = {};

beforeAll(async () => {
  ensureBuilt();
  tmp = await makeTempDir('bits-completion-');
  for (const shell of ['bash', 'zsh', 'fish']) {
    const r = await runBits(['completion', shell]);
    expect(r.code, r.stderr).toBe(0);
    scripts[shell] = path.join(tmp.dir, `bits.${shell}`);
    writeFileSync(scripts[shell]!, r.stdout);
  }
}, 60_000);
afterAll(async () => {
  await tmp?.cleanup();
});

/** What bash's completion offers for the words typed so far (the last one being completed). */
function bashComplete(...words: string[]): string[] {
  const r = spawnSync(
    'bash',
    ['--norc', '--noprofile', '-c', 'source "$0"; COMP_WORDS=("$@"); COMP_CWORD=$((${#COMP_WORDS[@]} - 1)); _bits; printf "%s\\n" "${COMPREPLY[@]}"', scripts['bash']!, ...words],
    { encoding: 'utf8', timeout: 10_000, cwd: tmp.dir },
  );
  expect(r.stderr).toBe('');
  return r.stdout.split('\n').filter(Boolean);
}

describe('bits completion', () => {
  it('bash: the script parses (bash -n) and registers _bits for bits', () => {
    const n = spawnSync('bash', ['-n', scripts['bash']!], { encoding: 'utf8' });
    expect(n.status, n.stderr).toBe(0);
    const c = spawnSync('bash', ['--norc', '-c', 'source "$0"; complete -p bits', scripts['bash']!], { encoding: 'utf8' });
    expect(c.stdout).toMatch(/-F _bits bits/);
  });

  it('bash: completes subcommands, their options, option choices and nested commands', () => {
    expect(bashComplete('bits', '')).toEqual(expect.arrayContaining(['upload', 'download', 'resume', 'list', 'status', 'cancel', 'clean', 'serve', 'config', 'completion']));
    expect(bashComplete('bits', '')).not.toContain('__demo-progress');
    expect(bashComplete('bits', 'up')).toEqual(['upload']);
    expect(bashComplete('bits', 'upload', '--fr')).toEqual(['--fragment-size']);
    expect(bashComplete('bits', 'download', '--')).toEqual(expect.arrayContaining(['--segments', '--mirror', '--sha256', '--limit-rate', '--json']));
    expect(bashComplete('bits', 'download', '--')).not.toContain('--fragment-size=');
    expect(bashComplete('bits', 'serve', '--notification-type', '').sort()).toEqual(['by-reference', 'by-value', 'none']);
    expect(bashComplete('bits', 'serve', '--no-').sort()).toEqual(['--no-overwrite', '--no-uploads']);
    expect(bashComplete('bits', 'config', '')).toEqual(expect.arrayContaining(['get', 'set', 'unset', 'list', 'path']));
    expect(bashComplete('bits', 'completion', '')).toEqual(['bash', 'zsh', 'fish']);
    // An option's value is skipped: the word after it is the next argument, not a subcommand.
    expect(bashComplete('bits', 'upload', '--limit-rate', '5M', '--js')).toEqual(['--json']);
    // A value-taking option offers files for its value, not options.
    writeFileSync(path.join(tmp.dir, 'cert-file.pem'), '');
    expect(bashComplete('bits', 'upload', '--cacert', 'cert-')).toEqual(['cert-file.pem']);
  });

  it('an unknown shell is a usage error (exit 2, one line)', async () => {
    const r = await runBits(['completion', 'tcsh']);
    expect(r.code).toBe(2);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(/bash, zsh, fish/);
  });

  it.skipIf(!has('zsh'))('zsh: the script parses (zsh -n) and defines a function per command', () => {
    const n = spawnSync('zsh', ['-n', scripts['zsh']!], { encoding: 'utf8' });
    expect(n.status, n.stderr).toBe(0);
    const f = spawnSync('zsh', ['-f', '-c', 'compdef() { print compdef $@ }; source "$1"; print -l ${(k)functions[(I)_bits*]}', 'zsh', scripts['zsh']!], { encoding: 'utf8' });
    expect(f.stdout).toMatch(/compdef _bits bits/);
    expect(f.stdout.split('\n')).toEqual(expect.arrayContaining(['_bits', '_bits_upload', '_bits_serve', '_bits_config_set']));
  });

  it.skipIf(!has('fish'))('fish: completes subcommands, options and choices (complete -C)', () => {
    const q = (line: string) =>
      spawnSync('fish', ['--no-config', '-c', `source ${scripts['fish']}; complete -C '${line}'`], { encoding: 'utf8', timeout: 10_000 })
        .stdout.split('\n')
        .filter(Boolean)
        .map((l) => l.split('\t')[0]);
    expect(q('bits up')).toEqual(['upload']);
    expect(q('bits upload --fr')).toEqual(['--fragment-size']);
    expect(q('bits serve --notification-type ').sort()).toEqual(['by-reference', 'by-value', 'none']);
    expect(q('bits config ')).toEqual(expect.arrayContaining(['get', 'set', 'path']));
  });
});
