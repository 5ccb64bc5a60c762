/**
 * `bits suspend JOB`: stops a job until `bits resume`. A background job the
 * agent runs is stopped by the agent (it reads the request from the store at
 * its next tick); a queued one is suspended at once; a foreground run in
 * another process is sent SIGTERM, which suspends it there.
 */
import type { Command } from 'commander';
import { runAction } from '../run.js';
import { UsageError } from '../../errors.js';

/** Bound on waiting for the runner to record the suspension. */
const SUSPEND_WAIT_MS = 20_000;

export function register(program: Command): void {
  program
    .command('suspend')
    .description('suspend a job (background or another process\'s); bits resume continues it')
    .argument('<job>', 'job id, or a unique prefix of at least 3 characters')
    .action((jobArg: string) =>
      runAction({}, async () => {
        const { openJobStore, isTerminal, isBackground } = await import('../../store/index.js');
        const { runnerAlive } = await import('../../jobs/running.js');
        const { runningAgent } = await import('../../jobs/agent-lock.js');
        const { homeOf } = await import('../background.js');
        const { sleep } = await import('../../store/process.js');
        const store = await openJobStore();
        let job = await store.get(jobArg);
        if (isTerminal(job.state)) throw new UsageError(`job ${job.id} is ${job.state}; there is nothing to suspend`);
        if (!runnerAlive(job)) {
          job = await store.update(job.id, { state: job.state === 'error' ? 'error' : 'suspended', retryAt: undefined, runner: undefined });
          process.stderr.write(`bits: job ${job.id} ${job.state === 'error' ? 'stays failed' : 'suspended'}; continue it with: bits resume ${job.id}\n`);
          return 0;
        }
        const r = job.runner!;
        const agent = runningAgent(homeOf(store));
        if (isBackground(job) && agent?.pid === r.pid) await store.update(job.id, { suspendRequested: new Date().toISOString() });
        else process.kill(r.pid, 'SIGTERM');
        const deadline = Date.now() + SUSPEND_WAIT_MS;
        while (runnerAlive(job) && job.runner?.pid === r.pid) {
          if (Date.now() > deadline) throw new UsageError(`job ${job.id}: pid ${r.pid} did not stop it within ${SUSPEND_WAIT_MS / 1000} s`);
          await sleep(100);
          job = await store.get(job.id);
        }
        process.stderr.write(`bits: job ${job.id} ${job.state}; continue it with: bits resume ${job.id}\n`);
        return 0;
      }),
    );
}
