import type { Command } from 'commander';
import { runAction } from '../run.js';
import { UsageError } from '../../errors.js';

export function register(program: Command): void {
  program
    .command('status')
    .description('(not implemented yet)')
    .allowUnknownOption()
    .action(() => runAction({}, async () => {
      throw new UsageError('bits status is not implemented yet');
    }));
}
