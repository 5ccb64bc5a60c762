import type { Command } from 'commander';
import { runAction } from '../run.js';

interface StatusOptions {
  json?: boolean;
}

export function register(program: Command): void {
  program
    .command('status')
    .description('show everything about one job: state, progress, last error (HTTP status, HRESULT), resume data')
    .argument('<job>', 'job id, or a unique prefix of at least 3 characters')
    .option('--json', 'print the job as one JSON object (never contains secrets)')
    .addHelpText(
      'after',
      `
Examples:
  $ bits status k3x9qa
  $ bits status k3x --json | jq .lastError

Exit codes: 0 ok, 2 unknown or ambiguous job id, 8 job store unreadable.`,
    )
    .action((id: string, opts: StatusOptions) =>
      runAction({ json: opts.json }, async () => {
        const { get } = await import('../../api/jobs.js');
        const { formatJobDetails, jobJson, storedJob } = await import('../output/job-format.js');
        const { job, alive } = storedJob(await get(id));
        if (opts.json) process.stdout.write(JSON.stringify(jobJson(job, alive)) + '\n');
        else process.stdout.write(formatJobDetails(job, alive, Date.now()));
      }),
    );
}
