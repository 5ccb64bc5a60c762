import type { Command } from 'commander';
import { runAction } from '../run.js';
import { UsageError } from '../../errors.js';

export function register(program: Command): void {
  program
    .command('cancel')
    .description('(not implemented yet)')
    .allowUnknownOption()
    .action(() => runAction({}, async () => {
      throw new UsageError('bits cancel is not implemented yet');
    }));
}
