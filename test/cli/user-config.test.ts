/**
 * Precedence flags > config > defaults, against a real config file in a temp
 * BITS_HOME (this file runs in its own worker, so setting the env here is safe).
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Command } from 'commander';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { UsageError } from '../../src/errors.js';

let home: string;
let mod: typeof import('../../src/cli/user-config.js');

beforeAll(async () => {
  home = mkdtempSync(path.join(os.tmpdir(), 'bits-config-'));
  process.env.BITS_HOME = home;
  mod = await import('../../src/cli/user-config.js');
});

afterAll(() => {
  delete process.env.BITS_HOME;
  rmSync(home, { recursive: true, force: true });
});

describe('resolveOption', () => {
  test('default when neither flag nor config', async () => {
    expect(await mod.resolveOption(undefined, 'fragment-size', 8 * 1024 * 1024)).toBe(8 * 1024 * 1024);
    expect(await mod.resolveOption(undefined, 'proxy')).toBeUndefined();
  });

  test('config beats the default; the flag beats config', async () => {
    const cfg = await mod.loadUserConfig();
    cfg.set('fragment-size', '16MiB');
    cfg.set('request-timeout', '30');
    cfg.set('serve.port', '8080');
    expect(cfg.path).toBe(path.join(home, 'config.json'));
    expect(JSON.parse(readFileSync(cfg.path, 'utf8'))).toEqual({ 'fragment-size': '16MiB', 'request-timeout': 30, serve: { port: 8080 } });

    expect(await mod.resolveOption(undefined, 'fragment-size', 1)).toBe(16 * 1024 * 1024);
    expect(await mod.resolveOption('1M', 'fragment-size', 1)).toBe(1024 * 1024);
    expect(await mod.resolveOption(undefined, 'request-timeout', 120)).toBe(30);
    expect(await mod.resolveOption('5', 'request-timeout', 120)).toBe(5);
    expect(await mod.resolveOption(undefined, 'serve.port', 0)).toBe(8080);
    cfg.unset('fragment-size');
    expect(await mod.resolveOption(undefined, 'fragment-size', 1)).toBe(1);
  });

  test('a bad flag value is a one-line UsageError naming the flag', async () => {
    await expect(mod.resolveOption('lots', 'fragment-size', 1)).rejects.toThrow(UsageError);
    await expect(mod.resolveOption('lots', 'fragment-size', 1)).rejects.toThrow(/^invalid value for --fragment-size: "lots" \(expected /);
    await expect(mod.resolveOption('ftp://x', 'proxy')).rejects.toThrow(/--proxy/);
  });

  test('resolveCommandOption treats a commander default as "not given"', async () => {
    const cfg = await mod.loadUserConfig();
    cfg.set('response-timeout', '42');
    const parse = (argv: string[]) => {
      const cmd = new Command().exitOverride().option('--response-timeout <s>', 'x', '300');
      cmd.parse(argv, { from: 'user' });
      return cmd;
    };
    expect(await mod.resolveCommandOption(parse([]), 'responseTimeout', 'response-timeout', 300)).toBe(42);
    expect(await mod.resolveCommandOption(parse(['--response-timeout', '7']), 'responseTimeout', 'response-timeout', 300)).toBe(7);
    cfg.unset('response-timeout');
    expect(await mod.resolveCommandOption(parse([]), 'responseTimeout', 'response-timeout', 300)).toBe(300);
  });
});

describe('validation', () => {
  test.each([
    ['fragment-size', '0'],
    ['fragment-size', 'big'],
    ['limit-rate', '-5'],
    ['no-progress-timeout', '0'],
    ['request-timeout', 'soon'],
    ['proxy', 'not a url'],
    ['proxy', 'ftp://proxy.example'],
    ['serve.port', '65536'],
    ['serve.host', 'two words'],
  ] as const)('%s %j is refused', (key, value) => {
    expect(() => mod.normalizeConfigValue(key, value)).toThrow(UsageError);
  });

  test.each([
    ['limit-rate', '0', 0],
    ['limit-rate', '5M', '5M'],
    ['proxy', 'http://127.0.0.1:3128', 'http://127.0.0.1:3128'],
    ['serve.host', '::1', '::1'],
    ['serve.root', '/srv/bits', path.resolve('/srv/bits')],
  ] as const)('%s %j is stored as %j', (key, value, stored) => {
    expect(mod.normalizeConfigValue(key, value)).toEqual(stored);
  });

  test('unknown keys name the known ones', () => {
    expect(() => mod.checkConfigKey('fragmentsize')).toThrow(/unknown config key 'fragmentsize' \(known keys: fragment-size, /);
  });
});
