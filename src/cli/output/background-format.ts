/**
 * What `bits list` adds for background jobs: priority, place in the agent's
 * queue and the process that owns the job. Pure: liveness and the agent's pid
 * are passed in.
 */
import { compareQueue, isBackground, isTerminal, type Job } from '../../store/index.js';

export interface BackgroundFields {
  priority: string;
  /** 1 = the agent runs it next; absent when not queued. */
  queuePosition?: number;
  /** The live process transferring it. */
  owner?: { pid: number; host: string; agent: boolean };
}

/** Fields per job id (every job: a foreground one has priority 'foreground'). */
export function backgroundFields(jobs: Array<{ job: Job; alive: boolean }>, agentPid: number | undefined): Map<string, BackgroundFields> {
  const queue = jobs
    .filter(({ job, alive }) => isBackground(job) && !alive && (job.state === 'queued' || job.state === 'transferring'))
    .map(({ job }) => job)
    .sort(compareQueue);
  const out = new Map<string, BackgroundFields>();
  for (const { job, alive } of jobs) {
    const f: BackgroundFields = { priority: job.priority ?? 'foreground' };
    const pos = queue.findIndex((j) => j.id === job.id);
    if (pos >= 0) f.queuePosition = pos + 1;
    if (alive && job.runner) f.owner = { pid: job.runner.pid, host: job.runner.host, agent: job.runner.pid === agentPid };
    out.set(job.id, f);
  }
  return out;
}

/** The lines under the `bits list` table for unfinished background jobs; '' when there are none. */
export function formatBackgroundTable(jobs: Array<{ job: Job; alive: boolean }>, fields: Map<string, BackgroundFields>, now: number): string {
  const rows = jobs
    .filter(({ job }) => isBackground(job) && !isTerminal(job.state))
    .map(({ job }) => {
      const f = fields.get(job.id)!;
      const retry = job.retryAt && job.state === 'queued' && Date.parse(job.retryAt) > now ? ` (retry at ${job.retryAt.slice(11, 19)})` : '';
      const queue = f.queuePosition !== undefined ? `#${f.queuePosition}${retry}` : '-';
      const owner = f.owner ? `${f.owner.agent ? 'agent ' : ''}pid ${f.owner.pid}` : '-';
      return [job.id, f.priority, queue, owner];
    });
  if (rows.length === 0) return '';
  const header = ['BACKGROUND', 'PRIORITY', 'QUEUE', 'OWNER'];
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]) => cells.map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i]!))).join('  ') + '\n';
  return '\n' + line(header) + rows.map(line).join('');
}
