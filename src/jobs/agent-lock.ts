/**
 * One agent per user and BITS_HOME: `agent.lock` beside jobs.json holds the
 * agent's pid. It is the store's O_EXCL lock (src/store/lock.ts) held for the
 * agent's whole life: never stale by age, only when its pid is dead, so a
 * SIGKILLed agent's lock is taken over by the next one, race-free.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { tryLifetimeLock, type LockHandle } from '../store/lock.js';
import { isProcessAlive } from '../store/process.js';

export const AGENT_LOCK_NAME = 'agent.lock';
export const AGENT_LOG_NAME = 'agent.log';

export interface AgentInfo {
  pid: number;
  host: string;
  acquiredAt: number;
}

export function agentLockPath(home: string): string {
  return path.join(home, AGENT_LOCK_NAME);
}

export function agentLogPath(home: string): string {
  return path.join(home, AGENT_LOG_NAME);
}

/** The agent's lock, or undefined when another live agent holds it (one attempt, no waiting). */
export async function tryAgentLock(home: string): Promise<LockHandle | undefined> {
  fs.mkdirSync(home, { recursive: true });
  return tryLifetimeLock(agentLockPath(home));
}

/** The live agent of this BITS_HOME, if one runs on this machine. */
export function runningAgent(home: string): AgentInfo | undefined {
  let raw: string;
  try {
    raw = fs.readFileSync(agentLockPath(home), 'utf8');
  } catch {
    return undefined;
  }
  try {
    const v = JSON.parse(raw) as Partial<AgentInfo>;
    if (typeof v.pid !== 'number' || typeof v.host !== 'string') return undefined;
    if (v.host !== os.hostname() || !isProcessAlive(v.pid)) return undefined;
    return { pid: v.pid, host: v.host, acquiredAt: typeof v.acquiredAt === 'number' ? v.acquiredAt : 0 };
  } catch {
    return undefined;
  }
}
