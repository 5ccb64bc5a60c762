/**
 * How jobs look to people (`bits list` table, `bits status` details) and to
 * scripts (one JSON object per job). Pure: liveness of runners is passed in.
 */
import { upgradeUploadCheckpoint, type Job } from '../../store/job.js';
import type { JobInfo } from '../../api/jobs.js';
import { formatBytes } from '../format.js';
import { formatJobError, summarize, type JobSummary } from '../../jobs/lifecycle.js';

/** Finished jobs older than this are hidden by `bits list` without --all. */
export const FINISHED_HIDE_AFTER_MS = 24 * 3600_000;

export function isHiddenByDefault(job: Job, now: number): boolean {
  return (job.state === 'complete' || job.state === 'cancelled') && now - Date.parse(job.updatedAt) > FINISHED_HIDE_AFTER_MS;
}

/**
 * The JSON form of a job for `list --json` and `status --json`: the stored
 * record (which never holds secrets) with `state` as people should see it,
 * plus `running`, `resumable` and `percent`; `storedState` when it differs.
 */
/** An API JobInfo split back into the record as stored and whether its runner lives (jobJson prints the record's own fields only). */
export function storedJob(info: JobInfo): { job: Job; alive: boolean } {
  const { effectiveState: _state, runnerAlive: alive, ...job } = info;
  return { job, alive };
}

export function jobJson(job: Job, runnerAlive: boolean): Record<string, unknown> {
  const s = summarize(job, runnerAlive);
  const out: Record<string, unknown> = { type: 'job', ...job, state: s.state, running: s.running, resumable: s.resumable };
  if (s.state !== job.state) out.storedState = job.state;
  if (s.percent !== undefined) out.percent = s.percent;
  return out;
}

export function relativeTime(iso: string, now: number): string {
  const t = Date.parse(iso);
  if (Number.isNaN(t)) return '?';
  const s = Math.round((now - t) / 1000);
  if (s < 0) return 'just now';
  if (s < 60) return `${s}s ago`;
  if (s < 3600) return `${Math.floor(s / 60)}m ago`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ago`;
  if (s < 7 * 86400) return `${Math.floor(s / 86400)}d ago`;
  return iso.slice(0, 10);
}

/** Shortens in the middle, keeping the end (the file name matters most). */
export function shorten(text: string, max: number): string {
  if (text.length <= max) return text;
  if (max <= 1) return '…';
  const tail = Math.ceil((max - 1) * 0.6);
  const head = max - 1 - tail;
  return text.slice(0, head) + '…' + text.slice(text.length - tail);
}

function progressCell(s: JobSummary): string {
  if (s.percent !== undefined) return `${s.percent.toFixed(1)}%`;
  return s.bytesDone > 0 ? formatBytes(s.bytesDone) : '-';
}

/**
 * The `bits list` table. `width` bounds the line length by shortening the
 * source → destination column (undefined: no limit, e.g. stdout is a pipe).
 */
export function formatJobTable(jobs: Array<{ job: Job; alive: boolean }>, now: number, width?: number): string {
  const header = ['ID', 'KIND', 'STATE', 'PROGRESS', 'SIZE', 'UPDATED', 'SOURCE → DESTINATION'];
  const rows = jobs.map(({ job, alive }) => {
    const s = summarize(job, alive);
    return [
      s.id,
      s.kind,
      s.state,
      progressCell(s),
      s.totalBytes !== undefined ? formatBytes(s.totalBytes) : '?',
      relativeTime(s.updatedAt, now),
      { source: s.source, destination: s.destination },
    ] as const;
  });
  const fixed = header.length - 1;
  const widths = header.slice(0, fixed).map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] as string).length)));
  const pad = (cells: readonly string[]) => cells.map((c, i) => c.padEnd(widths[i]!)).join('  ');
  const prefixWidth = widths.reduce((a, b) => a + b, 0) + 2 * fixed;
  const lines = [pad(header.slice(0, fixed)) + '  ' + header[fixed]];
  for (const r of rows) {
    const { source, destination } = r[fixed] as { source: string; destination: string };
    let transfer = `${source} → ${destination}`;
    if (width !== undefined) {
      const room = Math.max(20, width - prefixWidth);
      if (transfer.length > room) {
        const each = Math.max(8, Math.floor((room - 3) / 2));
        transfer = `${shorten(source, each)} → ${shorten(destination, room - 3 - Math.min(source.length, each))}`;
      }
    }
    lines.push(pad(r.slice(0, fixed) as readonly string[]) + '  ' + transfer);
  }
  return lines.join('\n') + '\n';
}

/** `bits status`: everything about one job, one `label  value` per line. */
export function formatJobDetails(job: Job, alive: boolean, now: number): string {
  const s = summarize(job, alive);
  const rows: Array<[string, string]> = [];
  rows.push(['job', `${job.id} (${job.kind})`]);
  let state: string = s.state;
  if (s.state !== job.state) state += ` (recorded as ${job.state}; the process transferring it is gone)`;
  if (s.resumable) state += `; continue with: bits resume ${job.id}`;
  rows.push(['state', state]);
  const total = job.totalBytes !== undefined ? ` of ${formatBytes(job.totalBytes)} (${job.totalBytes} bytes)` : '';
  rows.push(['progress', `${s.percent !== undefined ? `${s.percent.toFixed(1)}%, ` : ''}${formatBytes(job.bytesDone)}${total}`]);
  rows.push(['source', job.source]);
  rows.push(['destination', job.destination]);
  rows.push(['created', `${job.createdAt} (${relativeTime(job.createdAt, now)})`]);
  rows.push(['updated', `${job.updatedAt} (${relativeTime(job.updatedAt, now)})`]);
  if (job.runner) {
    rows.push(['runner', `pid ${job.runner.pid} on ${job.runner.host} since ${job.runner.since}${alive ? '' : ' (no longer running)'}`]);
  }
  if (job.lastError) rows.push(['last error', `${formatJobError(job.lastError)}${job.lastError.at ? ` (${job.lastError.at})` : ''}`]);
  const u = upgradeUploadCheckpoint(job.upload);
  if (u) {
    if (u.bitsSessionId) rows.push(['session', u.bitsSessionId]);
    if (u.bitsHostId) rows.push(['host id', `${u.bitsHostId}${u.hostIdFallbackDeadline ? ` (fallback after ${new Date(u.hostIdFallbackDeadline).toISOString()})` : ''}`]);
    if (u.bitsSessionId) rows.push(['confirmed', `${formatBytes(u.bytesTransferred)} acknowledged by the server`]);
    rows.push(['source file', `${formatBytes(u.sourceEntitySize)} (${u.sourceEntitySize} bytes), modified ${new Date(u.sourceMtimeMs).toISOString()}`]);
    if (u.replyUrl) rows.push(['reply url', u.replyUrl]);
  }
  if (typeof job.options?.replyFile === 'string') rows.push(['reply file', job.options.replyFile]);
  const d = job.download;
  if (d) {
    if (d.outputPath) rows.push(['output', d.outputPath]);
    if (d.partialPath) rows.push(['partial file', d.partialPath]);
    const v = d.validators;
    if (v && typeof v === 'object') {
      const parts = [v.etag ? `ETag ${v.etag}` : '', v.lastModified ? `Last-Modified ${v.lastModified}` : '', v.length !== undefined ? `length ${v.length}` : ''].filter(Boolean);
      if (parts.length) rows.push(['validators', parts.join(', ')]);
    }
  }
  const o = job.options;
  if (o) {
    const parts: string[] = [];
    if (o.fragmentSize !== undefined) parts.push(`fragment size ${formatBytes(o.fragmentSize)}`);
    if (o.timeouts) for (const [k, v] of Object.entries(o.timeouts)) parts.push(`${k} ${v} ms`);
    if (o.headers && Object.keys(o.headers).length) parts.push(`headers ${Object.keys(o.headers).join(', ')}`);
    if (parts.length) rows.push(['options', parts.join('; ')]);
  }
  const t = job.transport;
  if (t) {
    const parts: string[] = [];
    for (const [k, label] of [['connectTimeoutMs', 'connect'], ['requestTimeoutMs', 'request'], ['responseTimeoutMs', 'response']] as const) {
      if (t[k] !== undefined) parts.push(`${label} timeout ${t[k]} ms`);
    }
    if (t.proxy !== undefined) parts.push(t.proxy === '' ? 'no proxy' : `proxy ${t.proxy}${t.proxyUser ? ` (user ${t.proxyUser})` : ''}`);
    for (const k of ['cacert', 'cert', 'key'] as const) if (t[k]) parts.push(`--${k} ${t[k]}`);
    if (t.insecure) parts.push('certificate not verified (--insecure)');
    if (t.limitRateBytesPerSec) parts.push(`rate ${formatBytes(t.limitRateBytesPerSec)}/s`);
    if (t.headers && Object.keys(t.headers).length) parts.push(`headers ${Object.keys(t.headers).join(', ')}`);
    if (parts.length) rows.push(['transport', `${parts.join('; ')} (bits resume JOB --OPTION changes them)`.replace('JOB', job.id)]);
  }
  const c = job.credentialSource;
  if (c) rows.push(['credentials', `${c.kind === 'env' ? 'from the environment' : c.kind === 'prompt' ? 'asked for at the prompt' : 'given on the command line'}${c.user ? ` (user ${c.user})` : ''}; never stored: resume gets them the same way again`]);
  const w = Math.max(...rows.map(([k]) => k.length));
  return rows.map(([k, v]) => `${k.padEnd(w)}  ${v}`).join('\n') + '\n';
}
