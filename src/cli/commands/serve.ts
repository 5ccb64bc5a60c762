import type { Command } from 'commander';
import { runAction } from '../run.js';
import { UsageError } from '../../errors.js';

export function register(program: Command): void {
  program
    .command('serve')
    .description('(not implemented yet)')
    .allowUnknownOption()
    .action(() => runAction({}, async () => {
      throw new UsageError('bits serve is not implemented yet');
    }));
}
