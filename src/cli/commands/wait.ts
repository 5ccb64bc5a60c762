/**
 * `bits wait JOB…` / `--all`: blocks until the jobs end, showing progress as
 * a foreground run does (from the store, which the agent updates at every
 * checkpoint), and exits with the job's own exit code (the worst of several).
 * It starts the agent when background work is waiting and none runs, so a
 * killed agent comes back. Ctrl-C stops waiting only: the jobs keep running.
 */
import type { Command } from 'commander';
import { runAction } from '../run.js';
import { UsageError } from '../../errors.js';

const POLL_MS = 250;

export function register(program: Command): void {
  program
    .command('wait')
    .description('wait until jobs end, showing their progress; exits with their exit code (Ctrl-C leaves them running)')
    .argument('[jobs...]', 'job ids (or unique prefixes)')
    .option('-a, --all', 'every unfinished job')
    .option('--timeout <seconds>', 'give up waiting after this long (exit 4); default: the jobs\' own no-progress timeout')
    .option('--json', 'one JSON object per line on stdout')
    .option('-q, --quiet', 'print errors only')
    .addHelpText(
      'after',
      `
Exit code: 0 when every job completed, else the worst job's own code (5 the
server refused, 10 suspended, 11 cancelled, ...; see bits --help). A job the
agent will retry later is still waited for.

Examples:
  bits wait $(bits upload --background ./big.iso https://server/uploads/big.iso)
  bits wait --all --quiet`,
    )
    .action((ids: string[], opts: Record<string, unknown>) =>
      runAction({ json: opts.json === true, quiet: opts.quiet === true }, async (session) => {
        if (opts.all && ids.length) throw new UsageError('give job ids or --all, not both');
        if (!opts.all && ids.length === 0) throw new UsageError('which jobs? give their ids (see bits list), or --all');
        const timeoutMs = opts.timeout !== undefined ? Number(opts.timeout) * 1000 : undefined;
        if (timeoutMs !== undefined && !(Number.isFinite(timeoutMs) && timeoutMs > 0)) throw new UsageError(`--timeout expects a positive number of seconds, got ${JSON.stringify(opts.timeout)}`);
        return waitForJobs(ids, { all: opts.all === true, json: opts.json === true, quiet: opts.quiet === true, session, timeoutMs });
      }),
    );
}

interface WaitOptions {
  all: boolean;
  json: boolean;
  quiet: boolean;
  session: import('../output/final.js').OutputSession;
  timeoutMs?: number;
}

async function waitForJobs(ids: string[], o: WaitOptions): Promise<number> {
  const { list, get, waitAll, exitCodeOf, worstExitCode, errorLine, backgroundTimeoutOf } = await import('../../api/jobs.js');
  const { createReporter } = await import('../output/reporter.js');
  const { OutputSession, printFinal, jobResultFields, finalStateFor } = await import('../output/final.js');
  const { InterruptedError, TimeoutError } = await import('../../errors.js');
  const jobs = o.all ? await list({ only: 'unfinished' }) : await Promise.all(ids.map((id) => get(id)));
  if (jobs.length === 0) {
    if (!o.quiet && !o.json) process.stderr.write('bits: no unfinished jobs\n');
    return 0;
  }
  const single = jobs.length === 1;
  const reporter = single ? createReporter({ json: o.json, quiet: o.quiet, kind: jobs[0]!.kind, jobId: jobs[0]!.id, session: o.session }) : undefined;
  const codes = new Map<string, number>();
  const bound = o.timeoutMs ?? Math.max(...jobs.map((j) => backgroundTimeoutOf(j))) + 3_600_000;
  // Ctrl-C stops the waiting only; the API reads the store once more, then rejects.
  const stop = new AbortController();
  const onSigint = () => stop.abort();
  process.removeAllListeners('SIGINT');
  process.on('SIGINT', onSigint);
  try {
    await waitAll(
      jobs.map((j) => j.id),
      {
        agent: true,
        timeoutMs: bound,
        pollMs: POLL_MS,
        signal: stop.signal,
        ...(reporter ? { onEvent: (e) => reporter.listener(e) } : {}),
        onAgentStart: (pid) => {
          if (!o.quiet && !o.json) process.stderr.write(`bits: started the agent (pid ${pid})\n`);
        },
        onEnd: (j) => {
          codes.set(j.id, exitCodeOf(j));
          reporter?.finish();
          if (reporter && j.state === 'complete') return;
          const e = j.lastError;
          printFinal(
            { json: o.json, quiet: o.quiet, session: single ? o.session : new OutputSession() },
            {
              state: finalStateFor(j.state),
              ...jobResultFields(j),
              ...(e && j.state !== 'complete' ? { error: { code: e.code, message: errorLine(e), exitCode: e.exitCode, resumable: e.resumable ?? false } } : {}),
            },
          );
        },
      },
    );
  } catch (err) {
    reporter?.finish();
    if (stop.signal.aborted) {
      const left = jobs.filter((j) => !codes.has(j.id)).map((j) => j.id);
      process.stderr.write(`bits: stopped waiting; job${left.length === 1 ? '' : 's'} ${left.join(', ')} continue${left.length === 1 ? 's' : ''} (bits wait ${left.join(' ')})\n`);
      return 10;
    }
    if (err instanceof InterruptedError) throw new TimeoutError(`gave up waiting after ${Math.round(bound / 1000)} s; the jobs continue (bits list)`, 'no-progress');
    throw err;
  } finally {
    process.removeListener('SIGINT', onSigint);
    reporter?.finish();
  }
  return worstExitCode([...codes.values()]);
}
