/**
 * Handing a job to the per-user agent: the `--background`, `--priority`,
 * `--on-complete` and `--on-error` flags of upload and download, and starting
 * the agent (detached) when none runs. The agent itself is `bits agent`
 * (src/cli/commands/agent.ts, scheduler src/jobs/agent.ts).
 */
import path from 'node:path';
import { Option, type Command } from 'commander';
import { UsageError } from '../errors.js';
import type { JobStore } from '../store/index.js';
import type { BackgroundPriority, Job, JobNotify, TransportSettings } from '../api.js';
import { isoNow, writeJson, type OutputOptions } from './output/final.js';

export const PRIORITIES = ['foreground', 'high', 'normal', 'low'] as const;

/** The flags that send a job to the agent. */
export function addBackgroundOptions(cmd: Command): Command {
  return cmd
    .option('--background', 'queue the job for the bits agent and return at once (see bits wait, bits list)')
    .addOption(new Option('--priority <priority>', 'foreground runs here (the default); high, normal or low queue it for the agent').choices(PRIORITIES))
    .option('--on-complete <cmd>', 'shell command run when the job completes (background jobs; BITS_JOB_* variables describe it)')
    .option('--on-error <cmd>', 'shell command run when the job fails or is cancelled (background jobs)');
}

export interface BackgroundRequest {
  priority: BackgroundPriority;
  notify: JobNotify;
}

/** What the flags ask for; undefined: run in the foreground. UsageError for contradictions. */
export function backgroundRequest(opts: Record<string, unknown>): BackgroundRequest | undefined {
  const p = typeof opts.priority === 'string' ? opts.priority : undefined;
  if (p === 'foreground' && opts.background === true) throw new UsageError('--background cannot run at --priority foreground; use high, normal or low');
  const notify: JobNotify = {};
  if (typeof opts.onComplete === 'string') notify.onComplete = opts.onComplete;
  if (typeof opts.onError === 'string') notify.onError = opts.onError;
  if (opts.background !== true && (p === undefined || p === 'foreground')) {
    if (notify.onComplete !== undefined || notify.onError !== undefined) throw new UsageError('--on-complete and --on-error need --background (or --priority high|normal|low)');
    return undefined;
  }
  return { priority: (p ?? 'normal') as BackgroundPriority, notify };
}

/** The folder holding jobs.json (and the agent's lock and log). */
export function homeOf(store: JobStore): string {
  return path.dirname(store.path);
}

export { binScript } from '../api/background.js';

/** Starts the agent when none runs for this store (api jobs.ensureAgent). */
export async function ensureAgent(store: JobStore): Promise<{ pid: number; started: boolean }> {
  const { ensureAgent: start } = await import('../api/background.js');
  return start({ home: homeOf(store) });
}

export function announceQueued(job: Job, agentPid: number, out: OutputOptions): void {
  if (out.json) {
    writeJson(process.stdout, { type: 'queued', time: isoNow(), jobId: job.id, kind: job.kind, priority: job.priority ?? 'normal', source: job.source, destination: job.destination, agentPid });
    return;
  }
  process.stdout.write(`${job.id}\n`);
  if (!out.quiet) process.stderr.write(`bits: job ${job.id} queued for the agent (pid ${agentPid}, priority ${job.priority ?? 'normal'}); bits wait ${job.id} shows its progress\n`);
}

/** A freshly created job handed to the agent with the configured background no-progress timeout, announced; the command's exit code (0). */
export async function queueBackgroundJob(job: Job, req: BackgroundRequest, out: OutputOptions): Promise<number> {
  const { resolveOption } = await import('./user-config.js');
  const { queue, DEFAULT_BACKGROUND_TIMEOUT_MS } = await import('../api/background.js');
  const timeoutS = await resolveOption(undefined, 'agent.no-progress-timeout', DEFAULT_BACKGROUND_TIMEOUT_MS / 1000);
  const { job: queued, agent } = await queue(job.id, { priority: req.priority, notify: req.notify, backgroundTimeoutMs: timeoutS * 1000 });
  announceQueued(queued, agent!.pid, out);
  return 0;
}

/**
 * `bits resume` of a background job (or with --priority high|normal|low):
 * queue it again for the agent instead of running it here. Returns false
 * when the job is to run in the foreground (priority foreground drops the
 * job's background priority).
 */
export async function requeueIfBackground(job: Job, priority: string | undefined, out: OutputOptions, transport: TransportSettings): Promise<boolean> {
  const { queue, dequeue } = await import('../api/background.js');
  if (priority === 'foreground') {
    await dequeue(job.id);
    return false;
  }
  const target = (priority ?? job.priority) as BackgroundPriority | undefined;
  if (target === undefined) return false;
  const { job: queued, agent } = await queue(job.id, { priority: target, transport });
  announceQueued(queued, agent!.pid, out);
  return true;
}
