/**
 * Runs a command action: turns any error into one clear line on stderr (and a
 * final JSON object on stdout with --json) and the documented exit code.
 */
import { formatErrorLine, toBitsError, ExitCode } from '../errors.js';

export interface RunOptions {
  json?: boolean;
}

export async function runAction(opts: RunOptions, fn: () => Promise<number | void>): Promise<void> {
  try {
    const code = await fn();
    process.exitCode = code ?? ExitCode.OK;
  } catch (err) {
    const e = toBitsError(err);
    if (opts.json) process.stdout.write(JSON.stringify({ type: 'error', error: e.toJSON() }) + '\n');
    process.stderr.write(`bits: error: ${formatErrorLine(e)}\n`);
    if (e.exitCode === ExitCode.INTERNAL && process.env.BITS_DEBUG) process.stderr.write(`${(err as Error)?.stack ?? err}\n`);
    process.exitCode = e.exitCode;
  }
}
