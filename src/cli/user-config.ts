/**
 * The user's configuration (`bits config`): defaults for options people do not
 * want to repeat on every command line. Precedence is flags > config > built-in
 * defaults (resolveOption). Stored by `conf` as JSON in $BITS_HOME/config.json
 * when BITS_HOME is set, else in the platform's config folder
 * (~/.config/bits/config.json on Linux). Where that place is known without
 * `conf` (BITS_HOME, or Linux's XDG folder), the JSON is read and written here in
 * conf's own format: conf and its ajv validator cost ~100 ms of module loading on
 * every command, for a file of a few keys. Elsewhere (macOS, Windows without
 * BITS_HOME) conf finds the platform's folder and is loaded, lazily.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { LocalFileError, UsageError } from '../errors.js';
import { writeDurable } from '../io/durable.js';
import { knownBitsFolder } from '../store/home.js';
import { parseRate, parseSize } from './format.js';

/** Typed values, as commands receive them from resolveOption. Sizes and rates are bytes and bytes/s. */
export interface ConfigValues {
  'fragment-size': number;
  'limit-rate': number;
  'no-progress-timeout': number;
  'request-timeout': number;
  'response-timeout': number;
  proxy: string;
  'serve.port': number;
  'serve.root': string;
  'serve.host': string;
  'agent.concurrency': number;
  'agent.retry-delay': number;
  'agent.idle-exit': number;
  'agent.no-progress-timeout': number;
}
export type ConfigKey = keyof ConfigValues;

/** What is stored: sizes and rates stay as typed (`16MiB`), numbers as numbers. */
export type StoredValue = string | number;

interface KeySpec<K extends ConfigKey> {
  description: string;
  /** Shown by `bits config list`; commands pass their own default to resolveOption. */
  default?: StoredValue;
  expected: string;
  /** Text from the command line -> what is stored; undefined when invalid. */
  normalize(text: string): StoredValue | undefined;
  /** Stored value (or a flag's value) -> typed value; undefined when invalid. */
  parse(v: unknown): ConfigValues[K] | undefined;
}

const sizeText = (text: string) => {
  const n = parseSize(text);
  return n !== undefined && n > 0 ? text.trim() : undefined;
};
const sizeValue = (v: unknown) => {
  const n = typeof v === 'number' ? v : typeof v === 'string' ? parseSize(v) : undefined;
  return n !== undefined && Number.isSafeInteger(n) && n > 0 ? n : undefined;
};
const rateValue = (v: unknown) => {
  const n = typeof v === 'number' ? v : typeof v === 'string' ? parseRate(v) : undefined;
  return n !== undefined && Number.isSafeInteger(n) && n >= 0 ? n : undefined;
};
const secondsValue = (v: unknown) => {
  const n = typeof v === 'number' ? v : typeof v === 'string' && v.trim() !== '' ? Number(v) : NaN;
  return Number.isFinite(n) && n > 0 && n <= 30 * 86400 ? n : undefined;
};
const intIn = (lo: number, hi: number) => (v: unknown) => {
  const n = typeof v === 'number' ? v : typeof v === 'string' && /^\s*\d+\s*$/.test(v) ? Number(v) : NaN;
  return Number.isInteger(n) && n >= lo && n <= hi ? n : undefined;
};
const urlValue = (v: unknown) => {
  if (typeof v !== 'string') return undefined;
  try {
    const u = new URL(v.trim());
    return (u.protocol === 'http:' || u.protocol === 'https:') && u.hostname ? v.trim() : undefined;
  } catch {
    return undefined;
  }
};
const hostValue = (v: unknown) =>
  typeof v === 'string' && /^(?:[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?|\[?[0-9A-Fa-f:.]+\]?)$/.test(v.trim()) ? v.trim() : undefined;
const pathValue = (v: unknown) => (typeof v === 'string' && v.trim() !== '' && !v.includes('\0') ? v : undefined);

const seconds = <K extends 'request-timeout' | 'response-timeout' | 'no-progress-timeout' | 'agent.retry-delay' | 'agent.idle-exit' | 'agent.no-progress-timeout'>(description: string, def?: number): KeySpec<K> => ({
  description,
  default: def,
  expected: 'a positive number of seconds',
  normalize: (t) => secondsValue(t),
  parse: secondsValue as (v: unknown) => ConfigValues[K] | undefined,
});

export const CONFIG_KEYS: { [K in ConfigKey]: KeySpec<K> } = {
  'fragment-size': {
    description: 'size of each upload FRAGMENT request',
    // The upload command's own default (src/client/upload.ts DEFAULT_FRAGMENT_SIZE), shown by `config list`.
    default: '8MiB',
    expected: 'a size such as 8MiB, 512k or 1048576',
    normalize: sizeText,
    parse: sizeValue,
  },
  'limit-rate': {
    description: 'bandwidth limit per transfer (0 = unlimited)',
    default: 0,
    expected: 'a rate such as 10M, 500KiB/s, or 0 for unlimited',
    normalize: (t) => (rateValue(t) === undefined ? undefined : rateValue(t) === 0 ? 0 : t.trim()),
    parse: rateValue,
  },
  'no-progress-timeout': seconds('give up (resumably) when no byte moves for this long', 300),
  'request-timeout': seconds('time allowed to send each request', 120),
  'response-timeout': seconds('time allowed to wait for each response', 300),
  proxy: {
    description: 'HTTP proxy URL for transfers',
    expected: 'an http:// or https:// URL',
    normalize: (t) => urlValue(t),
    parse: urlValue,
  },
  'serve.port': {
    description: 'port `bits serve` listens on',
    expected: 'a port number from 0 to 65535',
    normalize: (t) => intIn(0, 65535)(t),
    parse: intIn(0, 65535),
  },
  'serve.root': {
    description: 'folder `bits serve` serves and stores uploads in',
    expected: 'a folder path',
    // Stored absolute: the config is read from anywhere, a relative path would move with the cwd.
    normalize: (t) => (pathValue(t) === undefined ? undefined : path.resolve(t)),
    parse: pathValue,
  },
  'serve.host': {
    description: 'address `bits serve` binds to',
    expected: 'a host name or IP address',
    normalize: (t) => hostValue(t),
    parse: hostValue,
  },
  'agent.concurrency': {
    description: 'background jobs the agent runs at once',
    default: 2,
    expected: 'a whole number from 1 to 64',
    normalize: (t) => intIn(1, 64)(t),
    parse: intIn(1, 64),
  },
  'agent.retry-delay': seconds('seconds the agent waits before retrying a transient failure (BITS MinimumRetryDelay)', 600),
  'agent.idle-exit': seconds('seconds the agent stays with nothing to do before it exits', 10),
  'agent.no-progress-timeout': seconds('a background job fails after this many seconds without progress across retries (BITS NoProgressTimeout)', 1209600),
};

export const CONFIG_KEY_NAMES = Object.keys(CONFIG_KEYS) as ConfigKey[];

export function isConfigKey(key: string): key is ConfigKey {
  return Object.prototype.hasOwnProperty.call(CONFIG_KEYS, key);
}

export function checkConfigKey(key: string): ConfigKey {
  if (!isConfigKey(key)) throw new UsageError(`unknown config key '${key}' (known keys: ${CONFIG_KEY_NAMES.join(', ')})`);
  return key;
}

/** Validates VALUE for KEY as typed by a user; throws a one-line UsageError. */
export function normalizeConfigValue(key: ConfigKey, text: string): StoredValue {
  const spec = CONFIG_KEYS[key];
  const v = spec.normalize(text);
  if (v === undefined) throw new UsageError(`invalid value for ${key}: ${JSON.stringify(text)} (expected ${spec.expected})`);
  return v;
}

export interface ConfigEntry {
  key: ConfigKey;
  value: StoredValue | undefined;
  source: 'config' | 'default' | 'unset';
  description: string;
}

export interface UserConfig {
  /** The JSON file. */
  readonly path: string;
  /** Raw stored value, undefined when not set. */
  getStored(key: ConfigKey): StoredValue | undefined;
  /** Typed value from the file; throws a UsageError naming the file when a hand edit broke it. */
  get<K extends ConfigKey>(key: K): ConfigValues[K] | undefined;
  set(key: ConfigKey, text: string): StoredValue;
  unset(key: ConfigKey): boolean;
  list(): ConfigEntry[];
  /** Flags > config > fallback, typed (see resolveOption). */
  resolve<K extends ConfigKey>(flagValue: unknown, key: K, fallback: ConfigValues[K]): ConfigValues[K];
  resolve<K extends ConfigKey>(flagValue: unknown, key: K, fallback?: ConfigValues[K]): ConfigValues[K] | undefined;
}

interface ConfStore {
  readonly path: string;
  get(key: string): unknown;
  set(key: string, value: unknown): void;
  has(key: string): boolean;
  delete(key: string): void;
}

let cached: Promise<UserConfig> | undefined;

/** Loads (once per process) the user configuration. */
export function loadUserConfig(): Promise<UserConfig> {
  cached ??= openKnownPath();
  return cached;
}

/**
 * The file at a known place, read and written as conf does (one JSON object, a dotted key
 * nested, tab-indented), durably (io/durable.ts). Where the place is not known, conf itself.
 */
async function openKnownPath(): Promise<UserConfig> {
  const folder = knownBitsFolder();
  if (folder === undefined) return open();
  const file = path.join(folder, 'config.json');
  let data: Record<string, unknown> = {};
  try {
    const parsed: unknown = JSON.parse(readFileSync(file, 'utf8'));
    if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) throw new Error('not a JSON object');
    data = parsed as Record<string, unknown>;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') {
      throw new LocalFileError(`cannot read ${file}: ${(err as Error).message.split('\n')[0]}; fix or delete it`, file, { cause: err });
    }
  }
  const save = () => writeDurable(file, `${JSON.stringify(data, undefined, '\t')}\n`);
  // conf stores a dotted key (serve.port) as a nested object ({"serve": {"port": …}}).
  const lookup = (key: string): { found: boolean; value?: unknown } => {
    let cur: unknown = data;
    for (const part of key.split('.')) {
      if (cur === null || typeof cur !== 'object' || !Object.hasOwn(cur, part)) return { found: false };
      cur = (cur as Record<string, unknown>)[part];
    }
    return { found: true, value: cur };
  };
  const parentOf = (key: string, create: boolean): Record<string, unknown> | undefined => {
    const parts = key.split('.');
    let cur = data;
    for (const part of parts.slice(0, -1)) {
      const next = cur[part];
      if (next === null || typeof next !== 'object' || Array.isArray(next)) {
        if (!create) return undefined;
        cur[part] = {};
      }
      cur = cur[part] as Record<string, unknown>;
    }
    return cur;
  };
  const leaf = (key: string) => key.split('.').at(-1)!;
  return wrap({
    path: file,
    get: (k) => lookup(k).value,
    has: (k) => lookup(k).found,
    set(k, v) {
      parentOf(k, true)![leaf(k)] = v;
      save();
    },
    delete(k) {
      const parent = parentOf(k, false);
      if (!parent || !Object.hasOwn(parent, leaf(k))) return;
      delete parent[leaf(k)];
      save();
    },
  });
}

async function open(): Promise<UserConfig> {
  const { default: Conf } = await import('conf');
  const home = process.env.BITS_HOME;
  let store: ConfStore;
  try {
    store = home
      ? new Conf<Record<string, unknown>>({ cwd: path.resolve(home), configName: 'config', projectSuffix: '' })
      : new Conf<Record<string, unknown>>({ projectName: 'bits', projectSuffix: '', configName: 'config' });
  } catch (err) {
    const where = home ? path.join(path.resolve(home), 'config.json') : 'the bits config file';
    throw new LocalFileError(`cannot read ${where}: ${(err as Error).message.split('\n')[0]}; fix or delete it`, where, { cause: err });
  }
  return wrap(store);
}

function wrap(store: ConfStore): UserConfig {
  const getStored = (key: ConfigKey): StoredValue | undefined => {
    const v = store.get(key);
    return typeof v === 'string' || typeof v === 'number' ? v : undefined;
  };
  const get = <K extends ConfigKey>(key: K): ConfigValues[K] | undefined => {
    if (!store.has(key)) return undefined;
    const raw = store.get(key);
    const v = (CONFIG_KEYS[key] as KeySpec<K>).parse(raw);
    if (v === undefined) {
      throw new UsageError(
        `config file ${store.path}: invalid ${key} ${JSON.stringify(raw)} (expected ${CONFIG_KEYS[key].expected}); fix it with: bits config set ${key} VALUE`,
      );
    }
    return v;
  };
  function resolve<K extends ConfigKey>(flagValue: unknown, key: K, fallback?: ConfigValues[K]): ConfigValues[K] | undefined {
    if (flagValue !== undefined && flagValue !== null) return parseFlag(flagValue, key);
    return get(key) ?? fallback;
  }
  return {
    path: store.path,
    getStored,
    get,
    set(key, text) {
      const v = normalizeConfigValue(key, text);
      store.set(key, v);
      return v;
    },
    unset(key) {
      const had = store.has(key);
      store.delete(key);
      return had;
    },
    list() {
      return CONFIG_KEY_NAMES.map((key) => {
        const stored = getStored(key);
        const def = CONFIG_KEYS[key].default;
        return {
          key,
          value: stored ?? def,
          source: stored !== undefined ? 'config' : def !== undefined ? 'default' : 'unset',
          description: CONFIG_KEYS[key].description,
        };
      });
    },
    resolve: resolve as UserConfig['resolve'],
  };
}

/** A flag's value for KEY, typed like the config value; the flag is named after the key (`--fragment-size`). */
export function parseFlag<K extends ConfigKey>(flagValue: unknown, key: K): ConfigValues[K] {
  const spec = CONFIG_KEYS[key] as KeySpec<K>;
  const v = typeof flagValue === 'string' && key === 'serve.root' ? (path.resolve(flagValue) as ConfigValues[K]) : spec.parse(flagValue);
  if (v === undefined) {
    const flag = `--${key.replace(/^serve\./, '')}`;
    throw new UsageError(`invalid value for ${flag}: ${JSON.stringify(flagValue)} (expected ${spec.expected})`);
  }
  return v;
}

/**
 * Precedence for options that can also be configured: a flag given on the
 * command line wins, then `bits config`, then the caller's default. String
 * flags are parsed to the key's type (sizes -> bytes, seconds -> number);
 * invalid ones throw a one-line UsageError.
 *
 * Note: commander options declared with .default() always have a value; for
 * those use resolveCommandOption, which asks commander where the value came from.
 */
export async function resolveOption<K extends ConfigKey>(flagValue: unknown, key: K, fallback: ConfigValues[K]): Promise<ConfigValues[K]>;
export async function resolveOption<K extends ConfigKey>(flagValue: unknown, key: K, fallback?: ConfigValues[K]): Promise<ConfigValues[K] | undefined>;
export async function resolveOption<K extends ConfigKey>(flagValue: unknown, key: K, fallback?: ConfigValues[K]): Promise<ConfigValues[K] | undefined> {
  // A flag on the command line does not need the config file at all (and a broken file must not block it).
  if (flagValue !== undefined && flagValue !== null) return parseFlag(flagValue, key);
  const cfg = await loadUserConfig();
  return cfg.resolve(undefined, key, fallback);
}

/** Minimal view of a commander Command, to keep commander out of this module's types. */
export interface OptionSourceCommand {
  getOptionValue(name: string): unknown;
  getOptionValueSource(name: string): string | undefined;
}

/**
 * resolveOption for a commander option that may carry a .default(): a value
 * whose source is 'default' counts as not given. `attribute` is commander's
 * camel-case name (`fragmentSize`).
 */
export async function resolveCommandOption<K extends ConfigKey>(
  cmd: OptionSourceCommand,
  attribute: string,
  key: K,
  fallback: ConfigValues[K],
): Promise<ConfigValues[K]> {
  const source = cmd.getOptionValueSource(attribute);
  const given = source !== undefined && source !== 'default' ? cmd.getOptionValue(attribute) : undefined;
  return resolveOption(given, key, fallback);
}
