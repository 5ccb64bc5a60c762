/**
 * `bits resume JOB` / `bits resume --all`: continue suspended or interrupted
 * jobs (and, when named, a failed one) with the options they were started
 * with; transport options given here override the stored ones. Uploads resume
 * as MC-BUP §3.1.4.3 says (PING, then FRAGMENT from the offset the server
 * confirms); downloads from their partial file with If-Range (§3.6.4.2).
 */
import { Option, type Command } from 'commander';
import { PRIORITIES, requeueIfBackground } from '../background.js';
import { runAction } from '../run.js';
import { addTransportOptions, settingsFromFlags } from '../transport-options.js';
import { UsageError } from '../../errors.js';
import type { Job } from '../../api.js';
import { secretHeaderNote } from '../../store/secrets.js';

interface Out {
  json: boolean;
  quiet: boolean;
  session: import('../output/final.js').OutputSession;
}

export function register(program: Command): void {
  const cmd = program
    .command('resume')
    .description('continue an interrupted transfer job, or retry a failed one (see bits list)')
    .argument('[job]', 'job id, or a unique prefix of at least 3 characters')
    .option('-a, --all', 'resume every suspended or queued job, one after another (for cron and CI); failed jobs and jobs another process is running are skipped')
    .option('--json', 'one JSON object per line on stdout')
    .option('-q, --quiet', 'print errors only')
    .addOption(new Option('--priority <priority>', 'foreground: run it here; high, normal or low: queue it for the agent (default: as it was)').choices(PRIORITIES));
  addTransportOptions(cmd);
  cmd.addHelpText(
    'after',
    `
The job continues with the options it was started with; the transport options
above, when given, replace the stored ones for this and later runs (a new
password, proxy, certificate, timeout or rate). Passwords are never saved:
they are read again from BITS_PASSWORD (BITS_PROXY_PASSWORD for the proxy), or
asked for on the terminal.

--all resumes suspended and queued jobs only. A job that failed for good
(state error: a 404, a refused upload, a wrong password) is skipped with a
line saying why, as Windows BITS never retries a job in ERROR by itself;
resume it by id once the cause is fixed. The exit code is the worst outcome
of the jobs resumed (0 when every one completed), and with --json the last
line is {"type":"summary",...}. A Ctrl-C stops the current job and the rest.

Examples:
  bits resume k3x9qa
  bits resume k3x9qa --user alice --cacert ./ca.pem
  bits resume --all --quiet       (e.g. from cron)`,
  );
  cmd.action((jobArg: string | undefined, opts: Record<string, unknown>, command: Command) =>
    runAction({ json: opts.json === true, quiet: opts.quiet === true }, async (session) => {
      if (opts.all && jobArg !== undefined) throw new UsageError('give a job id or --all, not both');
      if (!opts.all && jobArg === undefined) throw new UsageError('which job? give its id (see bits list), or --all');
      // Only what was typed overrides the job's settings: commander's defaults ('120', '0', ...) must not.
      const typed = (k: string) => command.getOptionValueSource(k) === 'cli';
      const override = settingsFromFlags(opts, { given: typed });
      const out: Out = { json: opts.json === true, quiet: opts.quiet === true, session };
      if (!opts.all) {
        const { resumable } = await import('../../api/jobs.js');
        const job = await resumable(jobArg!);
        if (await requeueIfBackground(job, opts.priority as string | undefined, out, override.settings)) return;
        await resumeOne(job, out, override);
        return;
      }
      return resumeAll(out, override);
    }),
  );
}

/** Applies the typed transport options to the job (stored, so later resumes keep them), then runs it in the foreground. */
async function resumeOne(job: Job, out: Out, override: ReturnType<typeof settingsFromFlags>): Promise<Job> {
  const { prepareResume } = await import('../../api/jobs.js');
  const { executeJob } = await import('../foreground.js');
  // Built before the job is claimed: a password that cannot be asked for is a usage error, not the job's failure.
  const { job: current, prepared } = await prepareResume(job.id, { transport: override.settings, secrets: override.secrets });
  return executeJob(current, {
    ...out,
    prepared,
    beforeStart: (reporter) => {
      for (const h of override.droppedHeaders) {
        reporter.listener({ type: 'info', message: secretHeaderNote(h, job.id) });
      }
    },
  });
}

async function resumeAll(out: Out, override: ReturnType<typeof settingsFromFlags>): Promise<number> {
  const { toBitsError, ExitCode } = await import('../../errors.js');
  const { list, resumable, get, errorLine, worstExitCode } = await import('../../api/jobs.js');
  const all = await list();
  const jobs = await list({ only: 'resumable' });
  // Say what is not resumed and why: a cron log must show the failed job, not hide it.
  const skipped: Array<{ jobId: string; state: string; reason: string }> = [];
  for (const j of all) {
    const state = j.effectiveState;
    if (j.runnerAlive) skipped.push({ jobId: j.id, state, reason: `being transferred by pid ${j.runner!.pid} on ${j.runner!.host}` });
    else if (state === 'error') {
      skipped.push({ jobId: j.id, state, reason: `failed${j.lastError ? ` (${errorLine(j.lastError)})` : ''}; once the cause is fixed: bits resume ${j.id}, or remove it: bits cancel ${j.id}` });
    }
  }
  for (const s of skipped) {
    if (out.json) process.stdout.write(JSON.stringify({ type: 'skipped', time: new Date().toISOString(), ...s }) + '\n');
    else if (!out.quiet) process.stderr.write(`bits: skipped job ${s.jobId}: ${s.reason}\n`);
  }
  const codes: number[] = [];
  const results: Array<{ jobId: string; state: string; exitCode: number }> = [];
  if (jobs.length === 0 && !out.quiet && !out.json) process.stderr.write('bits: no resumable jobs\n');
  for (const candidate of jobs) {
    // Re-read: a job may have been resumed or cancelled by someone else since the list was taken.
    const job = await resumable(candidate.id).catch(() => undefined);
    if (!job) continue;
    if (await requeueIfBackground(job, undefined, out, override.settings)) {
      results.push({ jobId: job.id, state: 'queued', exitCode: 0 });
      continue;
    }
    try {
      const done = await resumeOne(job, out, override);
      codes.push(0);
      results.push({ jobId: done.id, state: done.state, exitCode: 0 });
    } catch (err) {
      const e = toBitsError(err);
      codes.push(e.exitCode);
      const latest = await get(job.id).catch(() => job);
      results.push({ jobId: job.id, state: latest.state, exitCode: e.exitCode });
      // Ctrl-C means stop everything, not just this job.
      if (e.exitCode === ExitCode.INTERRUPTED || e.exitCode === ExitCode.CANCELLED) break;
    }
  }
  const code = worstExitCode(codes);
  if (out.json) {
    process.stdout.write(
      JSON.stringify({
        type: 'summary',
        time: new Date().toISOString(),
        resumed: results.length,
        complete: results.filter((r) => r.state === 'complete').length,
        skipped: skipped.length,
        exitCode: code,
        jobs: results,
      }) + '\n',
    );
  } else if (!out.quiet && results.length + skipped.length > 1) {
    const ok = results.filter((r) => r.state === 'complete').length;
    const notOk = results.length - ok;
    process.stderr.write(`bits: resumed ${results.length} job${results.length === 1 ? '' : 's'}: ${ok} complete${notOk ? `, ${notOk} not (exit ${code})` : ''}${skipped.length ? `; skipped ${skipped.length}` : ''}\n`);
  }
  return code;
}
