/**
 * `bits suspend JOB`: stops a job until `bits resume`. A background job the
 * agent runs is stopped by the agent (it reads the request from the store at
 * its next tick); a queued one is suspended at once; a foreground run in
 * another process is sent SIGTERM, which suspends it there.
 */
import type { Command } from 'commander';
import { runAction } from '../run.js';

/** Bound on waiting for the runner to record the suspension. */
const SUSPEND_WAIT_MS = 20_000;

export function register(program: Command): void {
  program
    .command('suspend')
    .description('suspend a job (background or another process\'s); bits resume continues it')
    .argument('<job>', 'job id, or a unique prefix of at least 3 characters')
    .action((jobArg: string) =>
      runAction({}, async () => {
        const { suspend } = await import('../../api/jobs.js');
        const { job, stoppedPid } = await suspend(jobArg, { timeoutMs: SUSPEND_WAIT_MS });
        if (stoppedPid === undefined) {
          process.stderr.write(`bits: job ${job.id} ${job.state === 'error' ? 'stays failed' : 'suspended'}; continue it with: bits resume ${job.id}\n`);
          return 0;
        }
        process.stderr.write(`bits: job ${job.id} ${job.state}; continue it with: bits resume ${job.id}\n`);
        return 0;
      }),
    );
}
