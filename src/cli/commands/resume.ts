/**
 * `bits resume JOB` / `bits resume --all`: continue suspended, failed or
 * interrupted jobs with the options they were started with. Uploads resume as
 * MC-BUP §3.1.4.3 says (PING, then FRAGMENT from the offset the server
 * confirms); downloads from their partial file with If-Range (§3.6.4.2).
 */
import type { Command } from 'commander';
import { runAction } from '../run.js';
import { UsageError } from '../../errors.js';

interface ResumeOptions {
  all?: boolean;
  json?: boolean;
  quiet?: boolean;
}

export function register(program: Command): void {
  program
    .command('resume')
    .description('continue an interrupted or failed transfer job (see bits list)')
    .argument('[job]', 'job id, or a unique prefix of at least 3 characters')
    .option('-a, --all', 'resume every resumable job, one after another (for cron and CI); skips jobs another process is running')
    .option('--json', 'one JSON object per line on stdout')
    .option('-q, --quiet', 'print errors only')
    .addHelpText(
      'after',
      `
The job continues with the options it was started with. Passwords are never
saved: they are read again from BITS_PASSWORD, or asked for on the terminal.

With --all the exit code is the worst outcome (the highest exit code of any
job; 0 when every job completed), and with --json the last line is
{"type":"summary",...}. A Ctrl-C stops the current job and the remaining ones.

Examples:
  bits resume k3x9qa
  bits resume --all --quiet       (e.g. from cron)`,
    )
    .action((jobArg: string | undefined, opts: ResumeOptions) =>
      runAction({ json: opts.json === true, quiet: opts.quiet === true }, async () => {
        if (opts.all && jobArg !== undefined) throw new UsageError('give a job id or --all, not both');
        if (!opts.all && jobArg === undefined) throw new UsageError('which job? give its id (see bits list), or --all');
        const { openJobStore } = await import('../../store/index.js');
        const runner = await import('../../jobs/runner.js');
        const { runnerAlive } = await import('../../jobs/running.js');
        const store = await openJobStore();
        const out = { json: opts.json === true, quiet: opts.quiet === true };
        if (!opts.all) {
          const job = await store.get(jobArg!);
          const refusal = runner.resumeRefusal(job, runnerAlive(job));
          if (refusal) throw refusal;
          await runner.executeJob(store, job, out);
          return;
        }
        return resumeAll(store, out, runner, runnerAlive);
      }),
    );
}

async function resumeAll(
  store: import('../../store/index.js').JobStore,
  out: { json: boolean; quiet: boolean },
  runner: typeof import('../../jobs/runner.js'),
  runnerAlive: (job: import('../../store/index.js').Job) => boolean,
): Promise<number> {
  const { toBitsError, ExitCode } = await import('../../errors.js');
  const { isResumable } = await import('../../jobs/lifecycle.js');
  const jobs = (await store.list()).filter((j) => isResumable(j, runnerAlive(j)));
  const codes: number[] = [];
  const results: Array<{ jobId: string; state: string; exitCode: number }> = [];
  if (jobs.length === 0 && !out.quiet && !out.json) process.stderr.write('bits: no resumable jobs\n');
  for (const candidate of jobs) {
    // Re-read: a job may have been resumed or cancelled by someone else since the list was taken.
    const job = await store.get(candidate.id).catch(() => undefined);
    if (!job || runner.resumeRefusal(job, runnerAlive(job))) continue;
    try {
      const done = await runner.executeJob(store, job, out);
      codes.push(0);
      results.push({ jobId: done.id, state: done.state, exitCode: 0 });
    } catch (err) {
      const e = toBitsError(err);
      codes.push(e.exitCode);
      const latest = await store.get(job.id).catch(() => job);
      results.push({ jobId: job.id, state: latest.state, exitCode: e.exitCode });
      // Ctrl-C means stop everything, not just this job.
      if (e.exitCode === ExitCode.INTERRUPTED || e.exitCode === ExitCode.CANCELLED) break;
    }
  }
  const code = runner.worstExitCode(codes);
  if (out.json) {
    process.stdout.write(JSON.stringify({ type: 'summary', time: new Date().toISOString(), resumed: results.length, complete: results.filter((r) => r.state === 'complete').length, exitCode: code, jobs: results }) + '\n');
  } else if (!out.quiet && results.length > 1) {
    const ok = results.filter((r) => r.state === 'complete').length;
    process.stderr.write(`bits: resumed ${results.length} jobs: ${ok} complete${ok < results.length ? `, ${results.length - ok} not (exit ${code})` : ''}\n`);
  }
  return code;
}
