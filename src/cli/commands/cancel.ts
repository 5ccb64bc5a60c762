/**
 * `bits cancel JOB`: an upload's server session is removed with
 * CANCEL-SESSION (MC-BUP §3.1.4.4), a download's partial file is deleted, and
 * the job becomes cancelled (src/jobs/runner.ts cancelJob says what happens
 * when the server cannot be reached or refuses).
 */
import type { Command } from 'commander';
import { printFinal, runAction } from '../run.js';

interface CancelOptions {
  force?: boolean;
  json?: boolean;
  quiet?: boolean;
}

export function register(program: Command): void {
  program
    .command('cancel')
    .description('cancel a transfer job: remove the upload session on the server, or the partial download')
    .argument('<job>', 'job id, or a unique prefix of at least 3 characters')
    .option('-f, --force', 'also cancel a job another bits process is transferring right now (it is stopped and ends as cancelled); remove the job even if the server refuses CANCEL-SESSION')
    .option('--json', 'one JSON object on stdout with the outcome')
    .option('-q, --quiet', 'print errors only')
    .addHelpText(
      'after',
      `
A job being transferred by another process is refused unless --force; with
--force that process stops, cancels the job and exits 11. If the server cannot
be reached, nothing changes locally and the exit code is 4: run the same
command again later. If the server refuses CANCEL-SESSION (400, 500), the job
is kept as failed; --force then removes it here and says the server session
may remain. A session the server no longer knows counts as cancelled.
Ctrl-C twice within 2 s during a transfer cancels it too.

Examples:
  bits cancel k3x9qa
  bits cancel --force k3x9qa`,
    )
    .action((jobArg: string, opts: CancelOptions) =>
      runAction({ json: opts.json === true, quiet: opts.quiet === true }, async (session) => {
        const { cancel } = await import('../../api/jobs.js');
        const { jobResultFields } = await import('../output/final.js');
        const { job, message } = await cancel(jobArg, { force: opts.force === true });
        printFinal(
          { json: opts.json === true, quiet: opts.quiet === true, session },
          { state: 'cancelled', ...jobResultFields(job), message },
        );
      }),
    );
}
