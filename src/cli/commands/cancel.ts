/**
 * `bits cancel JOB`: an upload's server session is removed with
 * CANCEL-SESSION (MC-BUP §3.1.4.4), a download's partial file is deleted, and
 * the job becomes cancelled. If the server cannot be reached the job is kept
 * unchanged (exit 4) so the cancel can be retried — marking it cancelled
 * locally would leave the session, and its disk space, on the server.
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
    .option('-f, --force', 'also cancel a job another bits process is transferring right now (it is stopped with SIGTERM first)')
    .option('--json', 'one JSON object on stdout with the outcome')
    .option('-q, --quiet', 'print errors only')
    .addHelpText(
      'after',
      `
A job being transferred by another process is refused unless --force. If the
server cannot be reached, nothing changes locally and the exit code is 4: run
the same command again later. A session the server no longer knows counts as
cancelled. Ctrl-C twice within 2 s during a transfer cancels it too.

Examples:
  bits cancel k3x9qa
  bits cancel --force k3x9qa`,
    )
    .action((jobArg: string, opts: CancelOptions) =>
      runAction({ json: opts.json === true, quiet: opts.quiet === true }, async () => {
        const { openJobStore } = await import('../../store/index.js');
        const { cancelJob } = await import('../../jobs/runner.js');
        const store = await openJobStore();
        const { job, already } = await cancelJob(store, jobArg, { force: opts.force === true });
        printFinal(
          { json: opts.json === true, quiet: opts.quiet === true },
          {
            state: 'cancelled',
            jobId: job.id,
            kind: job.kind,
            bytes: job.bytesDone,
            totalBytes: job.totalBytes,
            source: job.source,
            destination: job.destination,
            message: already ? `job ${job.id} was already cancelled` : `job ${job.id} cancelled${job.kind === 'upload' ? ' (the server session is removed)' : ' (the partial file is removed)'}`,
          },
        );
      }),
    );
}
