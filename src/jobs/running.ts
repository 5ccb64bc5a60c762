/**
 * Which jobs a live process is transferring. While a process transfers a job
 * it records itself as the job's `runner` ({pid, host, since}); the claim is
 * made under the store lock, so two `bits resume` of the same job cannot both
 * start. A runner that died without releasing (kill -9) is detected by its pid.
 */
import os from 'node:os';
import { UsageError } from '../errors.js';
import { isProcessAlive } from '../store/process.js';
import type { Job, JobPatch, JobStore } from '../store/index.js';

/** A runner on another machine (a shared BITS_HOME) cannot be probed: trust it while it keeps updating the job. */
const FOREIGN_RUNNER_TRUST_MS = 10 * 60_000;

export function runnerAlive(job: Job, now = Date.now()): boolean {
  const r = job.runner;
  if (!r) return false;
  if (r.host !== os.hostname()) return now - Date.parse(job.updatedAt) < FOREIGN_RUNNER_TRUST_MS;
  return isProcessAlive(r.pid);
}

/** Whether this process is the job's runner. */
export function isOwnRunner(job: Job): boolean {
  return job.runner?.pid === process.pid && job.runner.host === os.hostname();
}

/**
 * Marks this process as the job's runner (and applies `patch`, e.g. `{state: 'transferring'}`),
 * atomically. UsageError (exit 2) if another live process is transferring it.
 */
export async function claimJob(store: JobStore, idOrPrefix: string, patch: JobPatch = {}): Promise<Job> {
  return store.update(idOrPrefix, (job) => {
    if (runnerAlive(job) && !isOwnRunner(job)) {
      throw new UsageError(`job ${job.id} is being transferred by pid ${job.runner!.pid} on ${job.runner!.host}; wait for it or stop that process`);
    }
    const next: Job = { ...job, runner: { pid: process.pid, host: os.hostname(), since: new Date().toISOString() } };
    return applyPatch(next, patch);
  });
}

/** Clears this process's claim and applies `patch` (e.g. the final state). A claim held by another process is left alone. */
export async function releaseJob(store: JobStore, idOrPrefix: string, patch: JobPatch = {}): Promise<Job> {
  return store.update(idOrPrefix, (job) => {
    const next: Job = { ...job };
    if (isOwnRunner(job)) delete next.runner;
    return applyPatch(next, patch);
  });
}

function applyPatch(job: Job, patch: JobPatch): Job {
  const target = job as unknown as Record<string, unknown>;
  for (const [k, v] of Object.entries(patch)) {
    if (v === undefined) delete target[k];
    else target[k] = v;
  }
  return job;
}
