/**
 * Starting the per-user agent (`bits agent`) on demand: any call that queues
 * work or waits for it brings the agent up when none runs for this
 * BITS_HOME, the way a user would start it (the `bits` executable, detached,
 * its output to the agent log). The agent itself is src/jobs/agent.ts.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { JobStore } from '../store/index.js';
import { agentLogPath, runningAgent } from './agent-lock.js';
import { isProcessAlive } from '../store/process.js';

/** The folder holding jobs.json (and the agent's lock and log). */
export function homeOf(store: JobStore): string {
  return path.dirname(store.path);
}

/** The executable `bits` (bin/bits of this package). */
export function binScript(): string {
  return path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'bin', 'bits');
}

let lastSpawned: { home: string; pid: number } | undefined;

/**
 * Starts `bits agent` detached (its own session, stdio to the agent log) if
 * none runs for this store's BITS_HOME; returns the running agent's pid, or the new one's.
 */
export async function ensureAgent(store: JobStore): Promise<{ pid: number; started: boolean }> {
  const home = homeOf(store);
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
