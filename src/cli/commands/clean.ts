import type { Command } from 'commander';
import { runAction } from '../run.js';

interface CleanOptions {
  json?: boolean;
  all?: boolean;
}

export function register(program: Command): void {
  program
    .command('clean')
    .description('forget finished jobs (complete and cancelled); a running job is never removed')
    .option('-a, --all', 'also forget failed jobs (state error); their upload sessions are cancelled on the server first, best-effort')
    .option('--json', 'one {"type":"removed",…} object per job, then {"type":"summary","count":N}')
    .addHelpText(
      'after',
      `
Examples:
  $ bits clean
  $ bits clean --all --json

Only the job records are removed; downloaded, partial and reply files are left alone.`,
    )
    .action((opts: CleanOptions) =>
      runAction({ json: opts.json }, async () => {
        const { clean, list } = await import('../../api/jobs.js');
        const all = opts.all === true;
        const removed = await clean({ all });
        if (opts.json) {
          for (const j of removed) process.stdout.write(JSON.stringify({ type: 'removed', id: j.id, kind: j.kind, state: j.state }) + '\n');
          process.stdout.write(JSON.stringify({ type: 'summary', count: removed.length }) + '\n');
          return;
        }
        const n = removed.length;
        let line = n ? `removed ${n} job${n === 1 ? '' : 's'}: ${removed.map((j) => j.id).join(', ')}` : 'nothing to clean';
        if (!all) {
          const failed = (await list()).filter((j) => j.state === 'error' && !j.runnerAlive).length;
          if (failed) line += `; ${failed} failed job${failed === 1 ? '' : 's'} kept (bits clean --all removes them)`;
        }
        process.stdout.write(line + '\n');
      }),
    );
}
