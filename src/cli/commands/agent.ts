/**
 * `bits agent`: the per-user agent that runs background jobs (the scheduler
 * is src/jobs/agent.ts), one per user and BITS_HOME (src/jobs/agent-lock.ts).
 * It runs in the foreground, for service managers; `--background` commands
 * start it detached on demand. Subcommands: log, status, stop, install.
 */
import type { Command } from 'commander';
import { runAction } from '../run.js';
import { UsageError } from '../../errors.js';

export function register(program: Command): void {
  const agent = program
    .command('agent')
    .description('run background jobs (started on demand by --background and bits wait); log, status, stop, install')
    .addHelpText(
      'after',
      `
The agent runs queued background jobs by priority (high, normal, low; then
oldest first), at most agent.concurrency at once (default 2). A job a dead
process left transferring is taken over from its checkpoint. A transient
failure is retried after agent.retry-delay seconds (default 600, BITS'
MinimumRetryDelay) until the job has made no progress for
agent.no-progress-timeout seconds (default 1209600 = 14 days, BITS'
NoProgressTimeout); then it fails. With nothing to do for agent.idle-exit
seconds (default 10) the agent exits. One agent per user and BITS_HOME: a
second one exits at once. Its log is agent.log beside jobs.json.

Examples:
  bits agent                 (in the foreground, e.g. from a service manager)
  bits agent log
  bits agent install         (prints the systemd user unit / launchd agent; --write installs it)`,
    )
    .action(() => runAction({}, async () => runAgentCommand()));

  agent
    .command('log')
    .description("print the agent's log")
    .option('-n, --lines <n>', 'only the last N lines')
    .action((opts: Record<string, unknown>) =>
      runAction({}, async () => {
        const fs = await import('node:fs');
        const { agentLogPath } = await import('../../jobs/agent-lock.js');
        const file = agentLogPath(await home());
        let text = '';
        try {
          text = fs.readFileSync(file, 'utf8');
        } catch {
          process.stderr.write(`bits: no agent log yet (${file})\n`);
          return;
        }
        if (opts.lines !== undefined) {
          const n = Number(opts.lines);
          if (!Number.isSafeInteger(n) || n < 0) throw new UsageError(`--lines expects a whole number, got ${JSON.stringify(opts.lines)}`);
          text = text.split('\n').filter((l, i, a) => i < a.length - 1 || l !== '').slice(-n).join('\n') + (n > 0 ? '\n' : '');
        }
        process.stdout.write(text);
      }),
    );

  agent
    .command('status')
    .description('say whether the agent runs, and what it has queued')
    .option('--json', 'one JSON object')
    .action((opts: Record<string, unknown>) =>
      runAction({ json: opts.json === true }, async () => {
        const { runningAgent } = await import('../../jobs/agent-lock.js');
        const { openJobStore, isBackground, isTerminal } = await import('../../store/index.js');
        const store = await openJobStore();
        const { homeOf } = await import('../background.js');
        const live = runningAgent(homeOf(store));
        const jobs = (await store.list()).filter((j) => isBackground(j) && !isTerminal(j.state));
        const count = (s: string) => jobs.filter((j) => j.state === s).length;
        const status = { type: 'agent', running: live !== undefined, ...(live ? { pid: live.pid, since: new Date(live.acquiredAt).toISOString() } : {}), queued: count('queued'), transferring: count('transferring'), suspended: count('suspended'), error: count('error') };
        if (opts.json === true) process.stdout.write(JSON.stringify(status) + '\n');
        else process.stdout.write(`${live ? `agent running, pid ${live.pid}, since ${status.since}` : 'agent not running'}; background jobs: ${status.queued} queued, ${status.transferring} transferring, ${status.suspended} suspended, ${status.error} failed\n`);
        return live ? 0 : 1;
      }),
    );

  agent
    .command('stop')
    .description('stop the agent; its running jobs are queued again for the next agent')
    .option('--timeout <seconds>', 'how long to wait for it to exit', '20')
    .action((opts: Record<string, unknown>) =>
      runAction({}, async () => {
        const { runningAgent } = await import('../../jobs/agent-lock.js');
        const { sleep } = await import('../../store/process.js');
        const live = runningAgent(await home());
        if (!live) {
          process.stderr.write('bits: the agent is not running\n');
          return 0;
        }
        process.kill(live.pid, 'SIGTERM');
        const deadline = Date.now() + Number(opts.timeout) * 1000;
        const { isProcessAlive } = await import('../../store/process.js');
        while (isProcessAlive(live.pid)) {
          if (Date.now() > deadline) throw new UsageError(`the agent (pid ${live.pid}) did not stop within ${opts.timeout} s; kill it: kill -9 ${live.pid}`);
          await sleep(50);
        }
        process.stderr.write(`bits: agent (pid ${live.pid}) stopped\n`);
        return 0;
      }),
    );

  agent
    .command('install')
    .description('print (or with --write, install) a systemd user unit (Linux) or launchd agent (macOS) that starts bits agent at login')
    .option('--write', 'install the file (and say how to enable it)')
    .option('--platform <name>', 'linux or darwin (default: this machine)')
    .action((opts: Record<string, unknown>) =>
      runAction({}, async () => {
        const { serviceFile } = await import('../agent-install.js');
        const platform = typeof opts.platform === 'string' ? opts.platform : process.platform;
        const f = serviceFile(platform, { node: process.execPath, bin: (await import('../background.js')).binScript(), home: process.env.BITS_HOME });
        if (opts.write !== true) {
          process.stdout.write(f.content);
          return 0;
        }
        const fs = await import('node:fs');
        const path = await import('node:path');
        fs.mkdirSync(path.dirname(f.path), { recursive: true });
        fs.writeFileSync(f.path, f.content, { mode: 0o644 });
        process.stderr.write(`bits: wrote ${f.path}; enable it with: ${f.enable}\n`);
        return 0;
      }),
    );
}

async function home(): Promise<string> {
  const { openJobStore } = await import('../../store/index.js');
  const { homeOf } = await import('../background.js');
  return homeOf(await openJobStore());
}

async function runAgentCommand(): Promise<number> {
  const fs = await import('node:fs');
  const { openJobStore } = await import('../../store/index.js');
  const { homeOf } = await import('../background.js');
  const { tryAgentLock, runningAgent, agentLogPath } = await import('../../jobs/agent-lock.js');
  const { runAgent, DEFAULT_CONCURRENCY, DEFAULT_IDLE_EXIT_MS, DEFAULT_RETRY_DELAY_MS } = await import('../../jobs/agent.js');
  const { resolveOption } = await import('../user-config.js');
  const { isOwnRunner } = await import('../../jobs/running.js');
  const store = await openJobStore();
  const dir = homeOf(store);
  const lock = await tryAgentLock(dir);
  if (!lock) {
    process.stderr.write(`bits: an agent already runs for ${dir} (pid ${runningAgent(dir)?.pid ?? '?'})\n`);
    return 0;
  }
  const detached = process.env.BITS_AGENT_DETACHED === '1';
  const logFd = fs.openSync(agentLogPath(dir), 'a', 0o600);
  const log = (line: string) => {
    const s = `${new Date().toISOString()} agent[${process.pid}] ${line}\n`;
    try {
      fs.writeSync(logFd, s);
    } catch {
      // A full disk must not stop the transfers.
    }
    if (!detached) process.stderr.write(s);
  };
  const concurrency = await resolveOption(undefined, 'agent.concurrency', DEFAULT_CONCURRENCY);
  const retryDelayMs = (await resolveOption(undefined, 'agent.retry-delay', DEFAULT_RETRY_DELAY_MS / 1000)) * 1000;
  const idleExitMs = (await resolveOption(undefined, 'agent.idle-exit', DEFAULT_IDLE_EXIT_MS / 1000)) * 1000;
  // conf's when-exit listener re-sends a signal expecting the process to die of it; the agent stops on its own terms.
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.removeAllListeners(sig);
  const stop = new AbortController();
  let forCancel = false;
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.on(sig, () => {
      // `bits cancel --force` stops a job's runner with SIGTERM; for the agent that is one job, not all of them.
      void store
        .list()
        .then((jobs) => {
          forCancel = jobs.some((j) => j.cancelRequested !== undefined && isOwnRunner(j));
        })
        .catch(() => undefined)
        .finally(() => {
          log(`${sig}: stopping${forCancel ? ' (a job is being cancelled; a new agent continues the others)' : ''}`);
          stop.abort();
        });
    });
  }
  log(`started for ${dir} (concurrency ${concurrency}, retry delay ${retryDelayMs / 1000} s, idle exit ${idleExitMs / 1000} s)`);
  try {
    await runAgent({ store, concurrency, retryDelayMs, idleExitMs, log, notifyFd: logFd, signal: stop.signal });
    log(stop.signal.aborted ? 'stopped' : 'idle; exiting');
  } finally {
    lock.release();
  }
  if (forCancel) {
    const { ensureAgent } = await import('../background.js');
    log(`started the next agent (pid ${(await ensureAgent(store)).pid})`);
  }
  fs.closeSync(logFd);
  // Keep-alive sockets and timers of finished transfers must not keep a finished agent alive.
  setTimeout(() => process.exit(process.exitCode ?? 0), 200).unref();
  return 0;
}
