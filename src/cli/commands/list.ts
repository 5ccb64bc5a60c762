import type { Command } from 'commander';
import { runAction } from '../run.js';

interface ListOptions {
  json?: boolean;
  all?: boolean;
}

export function register(program: Command): void {
  program
    .command('list')
    .description('list transfer jobs: unfinished ones, and those finished in the last day')
    .option('--json', 'one JSON object per job per line, then {"type":"summary","count":N}')
    .option('-a, --all', 'also show jobs that finished (complete or cancelled) more than a day ago')
    .addHelpText(
      'after',
      `
Examples:
  $ bits list
  $ bits list --all --json | jq -r 'select(.state == "error") | .id'

Jobs live in jobs.json in $BITS_HOME, else in the bits configuration folder.`,
    )
    .action((opts: ListOptions) =>
      runAction({ json: opts.json }, async () => {
        // Imported here so that `bits --help` does not load conf.
        const { list, storePath, agentPid } = await import('../../api/jobs.js');
        const { formatJobTable, isHiddenByDefault, jobJson, storedJob } = await import('../output/job-format.js');
        const now = Date.now();
        const all = (await list()).map(storedJob);
        const jobsFile = await storePath();
        const shown = opts.all ? all : all.filter(({ job, alive }) => alive || !isHiddenByDefault(job, now));
        const hidden = all.length - shown.length;
        const { backgroundFields, formatBackgroundTable } = await import('../output/background-format.js');
        const bg = backgroundFields(all, await agentPid());
        if (opts.json) {
          for (const { job, alive } of shown) process.stdout.write(JSON.stringify({ ...jobJson(job, alive), ...bg.get(job.id) }) + '\n');
          process.stdout.write(JSON.stringify({ type: 'summary', count: shown.length, hidden }) + '\n');
          return;
        }
        const more = hidden ? `${hidden} job${hidden === 1 ? '' : 's'} finished more than a day ago not shown (bits list --all)\n` : '';
        if (shown.length === 0) {
          process.stdout.write(`no jobs${hidden ? '' : ` in ${jobsFile}`}\n${more}`);
          return;
        }
        const width = process.stdout.isTTY ? process.stdout.columns : undefined;
        process.stdout.write(formatJobTable(shown, now, width) + formatBackgroundTable(shown, bg, now) + more);
      }),
    );
}
