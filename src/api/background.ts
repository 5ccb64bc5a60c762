/**
 * The per-user background agent (`bits agent`, scheduler src/jobs/agent.ts)
 * from code: queue a stored job for it, take a job out of its queue, and
 * start it (detached) when none runs for the store.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { overrideTransportSettings, type BackgroundPriority, type Job, type JobNotify, type TransportSettings } from '../store/index.js';
import { isProcessAlive } from '../store/process.js';
import { agentLogPath, runningAgent } from '../jobs/agent-lock.js';
import { BACKGROUND_NO_PROGRESS_MS } from '../jobs/agent.js';
import { settingsOf } from '../jobs/transport.js';
import { storeFor, type StoreOptions } from './options.js';

export type { BackgroundPriority, JobNotify };

/** How long a background job may go without progress before the agent fails it, unless told otherwise: 14 days, as BITS' JobNoProgressTimeout. */
export const DEFAULT_BACKGROUND_TIMEOUT_MS = BACKGROUND_NO_PROGRESS_MS;

/** The executable `bits`: the agent is started the way a user would start it. */
export function binScript(): string {
  return path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'bin', 'bits');
}

export interface AgentStatus {
  pid: number;
  /** True when this call started it. */
  started: boolean;
}

/** The pid of the agent serving this store, when one runs. */
export async function agentPid(opts: StoreOptions = {}): Promise<number | undefined> {
  return runningAgent(path.dirname((await storeFor(opts)).path))?.pid;
}

let lastSpawned: { home: string; pid: number } | undefined;

/**
 * Starts `bits agent` detached (its own session, output to the agent log) if
 * none runs for this store; resolves with the running agent's pid, or the new one's.
 */
export async function ensureAgent(opts: StoreOptions = {}): Promise<AgentStatus> {
  const home = path.dirname((await storeFor(opts)).path);
  const live = runningAgent(home);
  if (live) return { pid: live.pid, started: false };
  // Started by this process a moment ago and still taking its lock: do not start a second one.
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

export interface QueueOptions extends StoreOptions {
  /** The agent runs high before normal before low; default the job's own priority, else normal. */
  priority?: BackgroundPriority;
  /** Shell commands the agent runs when the job completes / fails or is cancelled (BITS_JOB_* variables describe it). */
  notify?: JobNotify;
  /** How long the job may go without progress before the agent fails it; default DEFAULT_BACKGROUND_TIMEOUT_MS (or what it had). */
  backgroundTimeoutMs?: number;
  /** Replaces these stored transport settings (as resume's `transport`). */
  transport?: TransportSettings;
  /** Start the agent when none runs (default true). */
  startAgent?: boolean;
}

export interface QueueResult {
  /** The job as queued. */
  job: Job;
  /** The agent that will run it; undefined when startAgent was false. */
  agent?: AgentStatus;
}

/**
 * Hands a stored job (createUpload / createDownload, or a suspended one) to
 * the background agent and returns at once: the job is queued at its
 * priority, whatever stopped it before (a retry time, a suspend request) is
 * forgotten, and the agent is started if none runs. Follow it with jobs.wait.
 * It does not check the job: use jobs.resumable(id) first for one that may be finished.
 */
export async function queue(id: string, opts: QueueOptions = {}): Promise<QueueResult> {
  const store = await storeFor(opts);
  const transport = opts.transport ?? {};
  const queued = await store.update(id, (j) => ({
    ...j,
    state: 'queued',
    priority: opts.priority ?? j.priority ?? 'normal',
    retryAt: undefined,
    suspendRequested: undefined,
    stalledSince: undefined,
    stalledBytes: undefined,
    runner: undefined,
    ...(opts.notify && (opts.notify.onComplete !== undefined || opts.notify.onError !== undefined) ? { notify: opts.notify } : {}),
    ...(opts.backgroundTimeoutMs !== undefined ? { options: { ...j.options, timeouts: { ...j.options?.timeouts, background: opts.backgroundTimeoutMs } } } : {}),
    ...(Object.keys(transport).length > 0 ? { transport: overrideTransportSettings(settingsOf(j), transport) } : {}),
  }));
  if (opts.startAgent === false) return { job: queued };
  return { job: queued, agent: await ensureAgent(opts) };
}

/**
 * Takes a job out of the agent's queue: it keeps its checkpoint and runs
 * only when resumed in a process (jobs.resume). No change for a job that was not queued.
 */
export async function dequeue(id: string, opts: StoreOptions = {}): Promise<Job> {
  const store = await storeFor(opts);
  const job = await store.get(id);
  if (job.priority === undefined) return job;
  return store.update(job.id, { priority: undefined, retryAt: undefined });
}
