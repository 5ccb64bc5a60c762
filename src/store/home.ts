/**
 * The folder holding bits' files (jobs.json, config.json, the agent's lock and
 * log): $BITS_HOME when set, else the platform's configuration folder for
 * 'bits' as conf (env-paths) names it: ~/.config/bits on Linux
 * ($XDG_CONFIG_HOME/bits), ~/Library/Preferences/bits on macOS,
 * %APPDATA%\bits\Config on Windows.
 *
 * WHY not always ask conf: loading conf and its ajv validator costs ~100 ms of
 * module loading, on every command, to learn a folder name. Where the answer
 * is known without it (BITS_HOME, Linux) it is computed here; elsewhere conf is
 * loaded, once, for the name alone.
 */
import os from 'node:os';
import path from 'node:path';

/** The folder, where it is known without loading conf; undefined elsewhere. */
export function knownBitsFolder(home?: string): string | undefined {
  const h = home ?? (process.env.BITS_HOME ? process.env.BITS_HOME : undefined);
  if (h !== undefined) return path.resolve(h);
  if (process.platform !== 'linux') return undefined;
  const xdg = process.env.XDG_CONFIG_HOME;
  // env-paths takes XDG_CONFIG_HOME as given, and ~/.config without it.
  return path.join(xdg ? xdg : path.join(os.homedir(), '.config'), 'bits');
}

let fromConf: Promise<string> | undefined;

/** The folder, asking conf where it is not known. */
export function bitsFolder(home?: string): Promise<string> {
  const known = knownBitsFolder(home);
  if (known !== undefined) return Promise.resolve(known);
  fromConf ??= import('conf').then(({ default: Conf }) => path.dirname(new Conf({ projectName: 'bits', projectSuffix: '', configName: 'config' }).path));
  return fromConf;
}
