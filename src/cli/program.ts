/**
 * The commander program: one module per command under ./commands, each adding
 * its options and help; their actions import the heavy code lazily.
 */
import { Command, CommanderError } from 'commander';
import { VERSION } from '../version.js';
import { ExitCode } from '../errors.js';
import * as upload from './commands/upload.js';
import * as download from './commands/download.js';
import * as resume from './commands/resume.js';
import * as list from './commands/list.js';
import * as status from './commands/status.js';
import * as cancel from './commands/cancel.js';
import * as clean from './commands/clean.js';
import * as serve from './commands/serve.js';
import * as config from './commands/config.js';

export async function buildProgram(): Promise<Command> {
  const program = new Command();
  program
    .name('bits')
    .description('Move large files to and from BITS (IIS) servers, resumably, from any platform.')
    .version(VERSION, '-V, --version', 'print the version')
    .showSuggestionAfterError()
    .exitOverride((err: CommanderError) => {
      // Help and version are successes; every other commander error is a usage error.
      if (err.code === 'commander.helpDisplayed' || err.code === 'commander.version' || err.code === 'commander.help') process.exit(0);
      process.exit(ExitCode.USAGE);
    });
  for (const m of [upload, download, resume, list, status, cancel, clean, serve, config]) m.register(program);
  return program;
}
