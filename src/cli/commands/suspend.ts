/**
 * `bits suspend JOB`: stops a job until `bits resume`. A background job the
 * agent runs is stopped by the agent (it reads the request from the store at
 * its next tick); a queued one is suspended at once; a foreground run in
 * another process is sent SIGTERM, which suspends it there: the API's
 * jobs.suspend (src/api/jobs.ts), with a line for the terminal.
 */
import type { Command } from 'commander';
import { runAction } from '../run.js';

export function register(program: Command): void {
  program
    .command('suspend')
    .description('suspend a job (background or another process\'s); bits resume continues it')
    .argument('<job>', 'job id, or a unique prefix of at least 3 characters')
    .action((jobArg: string) =>
      runAction({}, async () => {
        const { suspend } = await import('../../api/jobs.js');
        const job = await suspend(jobArg);
        const what = job.state === 'error' ? 'stays failed' : job.state;
        process.stderr.write(`bits: job ${job.id} ${what}; continue it with: bits resume ${job.id}\n`);
        return 0;
      }),
    );
}
