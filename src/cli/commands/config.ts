/**
 * `bits config get|set|unset|list|path`: the user's defaults for options (see
 * ../user-config.ts for keys, storage and precedence).
 */
import type { Command } from 'commander';
import { runAction } from '../run.js';

export function register(program: Command): void {
  const config = program
    .command('config')
    .description('show or change your defaults (fragment-size, limit-rate, timeouts, proxy, serve.*)')
    .addHelpText(
      'after',
      `
Keys: fragment-size, limit-rate, no-progress-timeout, request-timeout,
      response-timeout, proxy, serve.port, serve.root, serve.host
Options given on the command line win over these; these win over built-in defaults.
Stored in $BITS_HOME/config.json when BITS_HOME is set (see: bits config path).

Examples:
  bits config set fragment-size 4MiB
  bits config set limit-rate 5M
  bits config list --json`,
    );

  config
    .command('get')
    .description('print the value of KEY (its default when not set)')
    .argument('<key>', 'a config key')
    .option('--json', 'print {"key","value","source"} as JSON')
    .action((key: string, opts: { json?: boolean }) =>
      runAction({ json: opts.json }, async () => {
        const { checkConfigKey, loadUserConfig } = await import('../user-config.js');
        const k = checkConfigKey(key);
        const cfg = await loadUserConfig();
        const entry = cfg.list().find((e) => e.key === k)!;
        if (opts.json) process.stdout.write(JSON.stringify({ key: k, value: entry.value ?? null, source: entry.source }) + '\n');
        else if (entry.value !== undefined) process.stdout.write(`${entry.value}\n`);
      }),
    );

  config
    .command('set')
    .description('set KEY to VALUE (checked before it is saved)')
    .argument('<key>', 'a config key')
    .argument('<value>', 'the new value')
    .action((key: string, value: string) =>
      runAction({}, async () => {
        const { checkConfigKey, normalizeConfigValue, loadUserConfig } = await import('../user-config.js');
        const k = checkConfigKey(key);
        normalizeConfigValue(k, value); // validate before touching the file
        const cfg = await loadUserConfig();
        cfg.set(k, value);
      }),
    );

  config
    .command('unset')
    .description('remove KEY, so the built-in default applies again')
    .argument('<key>', 'a config key')
    .action((key: string) =>
      runAction({}, async () => {
        const { checkConfigKey, loadUserConfig } = await import('../user-config.js');
        const k = checkConfigKey(key);
        const cfg = await loadUserConfig();
        cfg.unset(k);
      }),
    );

  config
    .command('list')
    .description('show every key with its value and where it comes from')
    .option('--json', 'print one JSON object: {"path", "keys": [{"key","value","source","description"}]}')
    .action((opts: { json?: boolean }) =>
      runAction({ json: opts.json }, async () => {
        const { loadUserConfig } = await import('../user-config.js');
        const cfg = await loadUserConfig();
        const entries = cfg.list();
        if (opts.json) {
          process.stdout.write(JSON.stringify({ path: cfg.path, keys: entries.map((e) => ({ ...e, value: e.value ?? null })) }) + '\n');
          return;
        }
        const w = Math.max(...entries.map((e) => e.key.length));
        const vw = Math.max(1, ...entries.map((e) => String(e.value ?? '-').length));
        for (const e of entries) {
          const source = e.source === 'config' ? '' : `(${e.source === 'default' ? 'default' : 'not set'})`;
          process.stdout.write(`${e.key.padEnd(w)}  ${String(e.value ?? '-').padEnd(vw)}  ${source}`.trimEnd() + '\n');
        }
      }),
    );

  config
    .command('path')
    .description('print the path of the config file')
    .action(() =>
      runAction({}, async () => {
        const { loadUserConfig } = await import('../user-config.js');
        process.stdout.write(`${(await loadUserConfig()).path}\n`);
      }),
    );
}
