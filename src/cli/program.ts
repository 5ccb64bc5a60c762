/**
 * The commander program: one module per command under ./commands, each adding
 * its options and help; their actions import the heavy code lazily.
 *
 * Every command-line mistake (unknown option or command, missing or bad
 * argument) prints ONE line and exits 2, as curl and git do, instead of
 * commander's usage dump: scripts read the line, people get a pointer to help.
 */
import { Command, CommanderError, InvalidArgumentError, Option, type Argument } from 'commander';
import { VERSION } from '../version.js';
import { BitsError, ExitCode, UsageError } from '../errors.js';
import { printUsageError, wantsJson } from './run.js';
import * as upload from './commands/upload.js';
import * as download from './commands/download.js';
import * as resume from './commands/resume.js';
import * as list from './commands/list.js';
import * as status from './commands/status.js';
import * as cancel from './commands/cancel.js';
import * as clean from './commands/clean.js';
import * as serve from './commands/serve.js';
import * as config from './commands/config.js';
import * as completion from './commands/completion.js';
import * as agent from './commands/agent.js';
import * as wait from './commands/wait.js';
import * as suspend from './commands/suspend.js';

const MAIN_HELP_AFTER = `
Exit codes: 0 done, 2 bad command line, 3 local file, 4 network (resumable),
  5 server refused, 6 auth, 7 protocol, 8 job store, 9 source changed,
  10 interrupted (resumable), 11 cancelled, 12 TLS, 1 a bug in bits.
Scripts: add --json for one JSON object per line on stdout (progress, then the
  outcome with job id, state, bytes and error); --quiet prints only errors.

Examples:
  bits upload ./backup.tar https://server.example/uploads/backup.tar
  bits download https://server.example/files/big.iso ./big.iso
  bits resume <job-id>          (after Ctrl-C or a network failure)

Run 'bits <command> --help' for a command's options.`;

export async function buildProgram(): Promise<Command> {
  const program = new Command();
  program
    .name('bits')
    .description('Move large files to and from BITS (IIS) servers, resumably, from any platform.')
    .version(VERSION, '-V, --version', 'print the version')
    .helpOption('-h, --help', 'show help')
    .helpCommand('help [command]', 'show help for a command')
    .showSuggestionAfterError()
    .addHelpText('after', MAIN_HELP_AFTER);
  for (const m of [upload, download, resume, list, status, cancel, clean, serve, config, agent, wait, suspend, completion]) m.register(program);

  // Internal: drives the real reporter with synthetic events (tests, and a way to see the bars).
  program
    .command('__demo-progress', { hidden: true })
    .description('show progress output for a synthetic transfer')
    .option('--json', 'JSON events on stdout')
    .option('-q, --quiet', 'errors only')
    .option('--size <bytes>', 'total bytes', '10485760')
    .addOption(new Option('--steps <n>', 'progress events').default(20).argParser((v) => wholeNumber(v, 1, 10_000)))
    .option('--step-ms <ms>', 'delay between progress events', '50')
    .option('--segments <n>', 'report per-segment progress for N segments', '0')
    .option('--retry', 'include a retry halfway')
    .option('--fail', 'end with a network error instead of completing')
    .option('--wait', 'stop halfway and wait for Ctrl-C (then suspend)')
    .option('--suspend-ms <ms>', 'time the suspend takes after Ctrl-C', '0')
    .option('--job-id <id>', 'job id to report', 'demo-0001')
    .action(async (opts: Record<string, string | boolean | undefined>) => {
      const { runDemo } = await import('./output/demo.js');
      await runDemo(opts);
    });

  configureTree(program);
  // `bits config list | head -1`: a closed pipe is the reader's choice, not an error.
  process.stdout.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code === 'EPIPE') process.exit(process.exitCode ?? 0);
    throw err;
  });
  return program;
}

/** Applies the one-line error contract to every command (commander copies settings only at creation). */
function configureTree(cmd: Command): void {
  cmd.configureOutput({ outputError: () => {} });
  cmd.exitOverride((err) => exitFor(cmd, err));
  for (const opt of cmd.options as Option[]) wrapParser(opt);
  for (const arg of cmd.registeredArguments as readonly Argument[]) wrapParser(arg);
  for (const sub of cmd.commands) configureTree(sub);
}

/**
 * A command's value parser may throw our UsageError; commander only turns its own
 * InvalidArgumentError into a usage error, anything else would escape as a crash.
 */
function wrapParser(target: Option | Argument): void {
  const parse = target.parseArg;
  if (!parse) return;
  target.parseArg = <T>(value: string, previous: T): T => {
    try {
      return parse.call(target, value, previous) as T;
    } catch (err) {
      if (err instanceof BitsError && err.exitCode === ExitCode.USAGE) throw new InvalidArgumentError(err.message);
      throw err;
    }
  };
}

function wholeNumber(v: string, min: number, max: number): number {
  const n = /^\d+$/.test(v.trim()) ? Number(v) : NaN;
  if (!Number.isSafeInteger(n) || n < min || n > max) throw new UsageError(`expected a whole number from ${min} to ${max}`);
  return n;
}

function commandPath(cmd: Command): string {
  const names: string[] = [];
  for (let c: Command | null = cmd; c; c = c.parent) names.unshift(c.name());
  return names.join(' ');
}

function exitFor(cmd: Command, err: CommanderError): never {
  switch (err.code) {
    case 'commander.helpDisplayed':
    case 'commander.version':
      process.exit(ExitCode.OK);
    // falls through (process.exit never returns)
    case 'commander.help':
      // `bits` or `bits config` alone: help went to stderr; it is a usage error, as in curl.
      process.exit(err.exitCode === 0 ? ExitCode.OK : ExitCode.USAGE);
  }
  printUsageError(`${oneLine(err.message)} (see '${commandPath(cmd)} --help')`, wantsJson(process.argv.slice(2)));
  process.exit(ExitCode.USAGE);
}

/** "error: unknown option '--x'\n(Did you mean --y?)" -> "unknown option '--x'; did you mean --y?" */
export function oneLine(message: string): string {
  const lines = message
    .replace(/^error:\s*/i, '')
    .split(/\r?\n/)
    .map((l) => l.trim())
    .filter(Boolean);
  let s = lines[0] ?? 'invalid command line';
  // commander: "option '--x <n>' argument 'abc' is invalid. why" -> "invalid value 'abc' for option '--x <n>': why"
  const bad = /^(option '.+?') argument '(.*?)' is invalid\.\s*(.*)$/.exec(s);
  if (bad) s = `invalid value '${bad[2]}' for ${bad[1]}${bad[3] ? `: ${bad[3]}` : ''}`;
  for (const l of lines.slice(1)) {
    const m = /^\(Did you mean (.+)\?\)$/.exec(l);
    s += m ? `; did you mean '${m[1]}'?` : `; ${l}`;
  }
  return s.replace(/\.$/, '');
}
