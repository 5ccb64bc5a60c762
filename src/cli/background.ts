/**
 * Handing a job to the per-user agent: the `--background`, `--priority`,
 * `--on-complete` and `--on-error` flags of upload and download, and starting
 * the agent (detached) when none runs. The agent itself is `bits agent`
 * (src/cli/commands/agent.ts, scheduler src/jobs/agent.ts).
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Option, type Command } from 'commander';
import { UsageError } from '../errors.js';
import type { BackgroundPriority, Job, JobNotify, JobStore } from '../store/index.js';
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

/** The executable `bits`: the agent is started the way a user would start it. */
export function binScript(): string {
  return path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'bin', 'bits');
}

let lastSpawned: { home: string; pid: number } | undefined;

/**
 * Starts `bits agent` detached (its own session, stdio to the agent log) if
 * none runs for this BITS_HOME; returns the running agent's pid, or the new one's.
 */
export async function ensureAgent(store: JobStore): Promise<{ pid: number; started: boolean }> {
  const { runningAgent, agentLogPath } = await import('../jobs/agent-lock.js');
  const home = homeOf(store);
  const live = runningAgent(home);
  if (live) return { pid: live.pid, started: false };
  // Started by this process a moment ago and still taking its lock: do not start a second one.
  const { isProcessAlive } = await import('../store/process.js');
  if (lastSpawned?.home === home && isProcessAlive(lastSpawned.pid)) return { pid: lastSpawned.pid, started: false };
  fs.mkdirSync(home, { recursive: true });
  const fd = fs.openSync(agentLogPath(home), 'a', 0o600);
  try {
    // BITS_HOME is passed on: the agent must serve this store, whatever the default would be.
    const child = spawn(process.execPath, [binScript(), 'agent'], {
      detached: true,
      stdio: ['ignore', fd, fd],
      env: { ...process.env, BITS_HOME: home, BITS_AGENT_DETACHED: '1' },
    });
    child.unref();
    if (child.pid !== undefined) lastSpawned = { home, pid: child.pid };
    return { pid: child.pid ?? 0, started: true };
  } finally {
    fs.closeSync(fd);
  }
}

/** Marks a freshly created job as background, hands it to the agent and prints its id (stdout) and a line (stderr). */
export async function queueInBackground(store: JobStore, job: Job, req: BackgroundRequest, out: OutputOptions, backgroundTimeoutMs: number): Promise<Job> {
  const queued = await store.update(job.id, (j) => ({
    ...j,
    priority: req.priority,
    ...(req.notify.onComplete !== undefined || req.notify.onError !== undefined ? { notify: req.notify } : {}),
    options: { ...j.options, timeouts: { ...j.options?.timeouts, background: backgroundTimeoutMs } },
  }));
  const agent = await ensureAgent(store);
  announceQueued(queued, agent.pid, out);
  return queued;
}

export function announceQueued(job: Job, agentPid: number, out: OutputOptions): void {
  if (out.json) {
    writeJson(process.stdout, { type: 'queued', time: isoNow(), jobId: job.id, kind: job.kind, priority: job.priority ?? 'normal', source: job.source, destination: job.destination, agentPid });
    return;
  }
  process.stdout.write(`${job.id}\n`);
  if (!out.quiet) process.stderr.write(`bits: job ${job.id} queued for the agent (pid ${agentPid}, priority ${job.priority ?? 'normal'}); bits wait ${job.id} shows its progress\n`);
}

/** queueInBackground with the configured background no-progress timeout; the command's exit code (0). */
export async function queueBackgroundJob(store: JobStore, job: Job, req: BackgroundRequest, out: OutputOptions): Promise<number> {
  const { resolveOption } = await import('./user-config.js');
  const { BACKGROUND_NO_PROGRESS_MS } = await import('../jobs/agent.js');
  const timeoutS = await resolveOption(undefined, 'agent.no-progress-timeout', BACKGROUND_NO_PROGRESS_MS / 1000);
  await queueInBackground(store, job, req, out, timeoutS * 1000);
  return 0;
}

/**
 * `bits resume` of a background job (or with --priority high|normal|low):
 * queue it again for the agent instead of running it here. Returns false
 * when the job is to run in the foreground (priority foreground drops the
 * job's background priority).
 */
export async function requeueIfBackground(
  store: JobStore,
  job: Job,
  priority: string | undefined,
  out: OutputOptions,
  transport: Partial<import('../store/index.js').TransportSettings>,
): Promise<boolean> {
  if (priority === 'foreground') {
    if (job.priority !== undefined) await store.update(job.id, { priority: undefined, retryAt: undefined });
    return false;
  }
  const target = (priority ?? job.priority) as BackgroundPriority | undefined;
  if (target === undefined) return false;
  const { overrideTransportSettings } = await import('../store/index.js');
  const { settingsOf } = await import('../jobs/transport.js');
  const settings = overrideTransportSettings(settingsOf(job), transport);
  const queued = await store.update(job.id, {
    state: 'queued',
    priority: target,
    retryAt: undefined,
    suspendRequested: undefined,
    stalledSince: undefined,
    stalledBytes: undefined,
    runner: undefined,
    ...(Object.keys(transport).length > 0 ? { transport: settings } : {}),
  });
  const agent = await ensureAgent(store);
  announceQueued(queued, agent.pid, out);
  return true;
}
