/**
 * `bits wait JOB…` / `--all`: blocks until the jobs end, showing progress as
 * a foreground run does (from the store, which the agent updates at every
 * checkpoint), and exits with the job's own exit code (the worst of several).
 * It starts the agent when background work is waiting and none runs, so a
 * killed agent comes back. Ctrl-C stops waiting only: the jobs keep running.
 */
import type { Command } from 'commander';
import path from 'node:path';
import { runAction } from '../run.js';
import { UsageError } from '../../errors.js';

const POLL_MS = 250;
/** Starting an agent takes a moment; do not start another before it could have taken its lock. */
const AGENT_RESTART_GAP_MS = 2000;

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
  const { openJobStore, waitIsOver, jobExitCode, isBackground, TERMINAL_STATES } = await import('../../store/index.js');
  const { runnerAlive } = await import('../../jobs/running.js');
  const { backgroundTimeoutMs } = await import('../../jobs/agent.js');
  const { startAgent } = await import('../../api/jobs.js');
  const { createReporter } = await import('../output/reporter.js');
  const { OutputSession, printFinal, jobResultFields } = await import('../output/final.js');
  const { finalStateFor, worstExitCode } = await import('../../jobs/outcome.js');
  const { formatJobError } = await import('../../jobs/lifecycle.js');
  const { TimeoutError } = await import('../../errors.js');
  type Job = import('../../store/index.js').Job;
  const store = await openJobStore();
  let jobs: Job[] = o.all ? (await store.list()).filter((j) => !waitIsOver(j, runnerAlive(j))) : await Promise.all(ids.map((id) => store.get(id)));
  if (jobs.length === 0) {
    if (!o.quiet && !o.json) process.stderr.write('bits: no unfinished jobs\n');
    return 0;
  }
  const single = jobs.length === 1;
  const reporter = single ? createReporter({ json: o.json, quiet: o.quiet, kind: jobs[0]!.kind, jobId: jobs[0]!.id, session: o.session }) : undefined;
  const started = new Map<string, number>();
  const codes = new Map<string, number>();
  const bound = o.timeoutMs ?? Math.max(...jobs.map((j) => backgroundTimeoutMs(j))) + 3_600_000;
  const deadline = Date.now() + bound;
  let lastAgentStart = 0;
  let interrupted = false;
  const onSigint = () => {
    interrupted = true;
  };
  process.removeAllListeners('SIGINT');
  process.on('SIGINT', onSigint);
  try {
    // Bounded by `deadline` (and by the jobs ending).
    for (;;) {
      jobs = await Promise.all(jobs.map((j) => store.get(j.id).catch(() => j)));
      const now = Date.now();
      for (const j of jobs) {
        if (codes.has(j.id)) continue;
        const alive = runnerAlive(j, now);
        if (reporter) {
          if (!started.has(j.id) && (j.state === 'transferring' || j.bytesDone > 0 || TERMINAL_STATES.includes(j.state))) {
            started.set(j.id, j.bytesDone);
            reporter.listener({ type: 'start', kind: j.kind, jobId: j.id, source: j.source, destination: j.destination, ...(j.totalBytes !== undefined ? { totalBytes: j.totalBytes } : {}), resumedAt: j.bytesDone });
          }
          if (started.has(j.id)) reporter.listener({ type: 'progress', bytesDone: j.bytesDone, ...(j.totalBytes !== undefined ? { totalBytes: j.totalBytes } : {}) });
        }
        if (!waitIsOver(j, alive)) continue;
        const code = jobExitCode(j);
        codes.set(j.id, code);
        if (reporter && j.state === 'complete') {
          reporter.listener({ type: 'complete', bytes: j.bytesDone, destination: j.destination });
          reporter.finish();
          continue;
        }
        reporter?.finish();
        const e = j.lastError;
        printFinal(
          { json: o.json, quiet: o.quiet, session: single ? o.session : new OutputSession() },
          {
            state: finalStateFor(j.state),
            ...jobResultFields(j),
            ...(e && j.state !== 'complete' ? { error: { code: e.code, message: formatJobError(e), exitCode: e.exitCode, resumable: e.resumable ?? false } } : {}),
          },
        );
      }
      if (codes.size === jobs.length) break;
      const needAgent = jobs.some((j) => !codes.has(j.id) && isBackground(j) && !runnerAlive(j, now) && (j.state === 'queued' || j.state === 'transferring'));
      if (needAgent && now - lastAgentStart > AGENT_RESTART_GAP_MS) {
        const a = await startAgent({ home: path.dirname(store.path) });
        if (a.started) {
          lastAgentStart = now;
          if (!o.quiet && !o.json) process.stderr.write(`bits: started the agent (pid ${a.pid})\n`);
        }
      }
      if (interrupted) {
        reporter?.finish();
        const left = jobs.filter((j) => !codes.has(j.id)).map((j) => j.id);
        process.stderr.write(`bits: stopped waiting; job${left.length === 1 ? '' : 's'} ${left.join(', ')} continue${left.length === 1 ? 's' : ''} (bits wait ${left.join(' ')})\n`);
        return 10;
      }
      if (now > deadline) {
        reporter?.finish();
        throw new TimeoutError(`gave up waiting after ${Math.round(bound / 1000)} s; the jobs continue (bits list)`, 'no-progress');
      }
      await new Promise((r) => setTimeout(r, POLL_MS));
    }
  } finally {
    process.removeListener('SIGINT', onSigint);
    reporter?.finish();
  }
  return worstExitCode([...codes.values()]);
}
