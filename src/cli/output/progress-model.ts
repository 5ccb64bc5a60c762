/**
 * The progress of one transfer as a plain state object, built from the
 * client's events (src/client/events.ts): bytes (in all and in this run),
 * the current rate, ETA, phase and a per-segment table. Pure: the clock is
 * passed in, nothing is drawn or written. The renderings (render-tty.ts,
 * render-lines.ts, render-json.ts) only read it.
 */
import type { TransferEvent, TransferKind, TransferPhase } from '../../client/events.js';

/** The rate people care about is the current one: samples of the last few seconds. */
export const RATE_WINDOW_MS = 5000;

export interface SegmentState {
  /** 0-based, as in the events. */
  index: number;
  done: number;
  total?: number;
  source?: string;
}

export interface ProgressState {
  kind?: TransferKind;
  jobId?: string;
  source?: string;
  destination?: string;
  total?: number;
  /** What the server (upload) or the disk (download) holds. */
  done: number;
  /** `done` when this run started (a resume starts beyond 0): this run's bytes are done - runStartBytes. */
  runStartBytes: number;
  startedAt: number;
  started: boolean;
  phase?: TransferPhase;
  phaseDetail?: string;
  /** A retry countdown: when the next try is due. */
  retryUntil?: number;
  retryAttempt?: number;
  /** (time, bytes) over the last RATE_WINDOW_MS. */
  samples: Array<{ t: number; b: number }>;
  /** Segments in index order, from the progress events' `segments[]`. */
  segments: SegmentState[];
  completed: boolean;
  /** How far along, 0..1, where the byte total is unknown (several downloads before each one's HEAD); the bar shows it. */
  fraction?: number;
}

export function initialProgress(o: { kind?: TransferKind; jobId?: string }, now: number): ProgressState {
  return { kind: o.kind, jobId: o.jobId, done: 0, runStartBytes: 0, startedAt: now, started: false, samples: [], segments: [], completed: false };
}

function sample(s: ProgressState, now: number): void {
  const last = s.samples[s.samples.length - 1];
  if (last && s.done < last.b) s.samples = []; // resync moved us back: old samples would lie
  s.samples.push({ t: now, b: s.done });
  while (s.samples.length > 2 && now - s.samples[0]!.t > RATE_WINDOW_MS) s.samples.shift();
}

/** Applies one event to the state (in place; returns it). */
export function applyEvent(s: ProgressState, e: TransferEvent, now: number): ProgressState {
  switch (e.type) {
    case 'start':
      s.kind = e.kind;
      if (e.jobId !== undefined) s.jobId = e.jobId;
      s.source = e.source;
      s.destination = e.destination;
      s.total = e.totalBytes;
      s.done = e.resumedAt ?? 0;
      s.runStartBytes = s.done;
      s.startedAt = now;
      s.samples = [{ t: now, b: s.done }];
      s.started = true;
      break;
    case 'phase':
      s.phase = e.phase;
      s.phaseDetail = e.detail;
      if (e.phase !== 'retrying') s.retryUntil = undefined;
      s.started = true;
      break;
    case 'progress': {
      if (e.totalBytes !== undefined) s.total = e.totalBytes;
      s.done = e.bytesDone;
      for (const seg of e.segments ?? []) {
        let row = s.segments.find((x) => x.index === seg.index);
        if (!row) {
          row = { index: seg.index, done: 0 };
          s.segments.push(row);
          s.segments.sort((a, b) => a.index - b.index);
        }
        row.done = seg.bytesDone;
        row.total = seg.totalBytes;
        if (seg.source !== undefined) row.source = seg.source;
      }
      // Bytes moving again after the countdown means the retry is over.
      if (s.retryUntil !== undefined && now >= s.retryUntil) {
        s.retryUntil = undefined;
        if (s.phase === 'retrying') s.phase = 'transferring';
      }
      sample(s, now);
      s.started = true;
      break;
    }
    case 'retry':
      s.retryUntil = now + e.delayMs;
      s.retryAttempt = e.attempt;
      s.phase = 'retrying';
      s.phaseDetail = undefined;
      break;
    case 'resync':
      s.done = e.to;
      sample(s, now);
      break;
    case 'complete':
      s.done = e.bytes;
      if (s.total === undefined) s.total = e.bytes;
      s.destination = e.destination;
      s.completed = true;
      sample(s, now);
      break;
    default:
      break;
  }
  return s;
}

/** Records the time passing without events, so a stall shows as a falling rate. */
export function tick(s: ProgressState, now: number): void {
  sample(s, now);
}

/** Bytes per second over the recent window; a stall shows as a falling rate rather than the last good value. */
export function currentRate(s: ProgressState, now: number): number {
  if (s.samples.length < 2) return 0;
  const first = s.samples[0]!;
  const last = s.samples[s.samples.length - 1]!;
  const dt = Math.max(now, last.t) - first.t;
  return dt >= 200 ? ((last.b - first.b) * 1000) / dt : 0;
}

/** Bytes this run moved (a resume does not count what the earlier runs did). */
export function bytesThisRun(s: ProgressState): number {
  return Math.max(0, s.done - s.runStartBytes);
}

export function eta(s: ProgressState, rate: number): number | undefined {
  if (s.total === undefined || rate <= 0 || s.done >= s.total) return undefined;
  return (s.total - s.done) / rate;
}

const PHASE_TEXT: Record<TransferPhase, string> = {
  connecting: 'connecting',
  'creating-session': 'creating session',
  pinging: 'pinging server',
  transferring: '',
  retrying: 'retrying',
  'waiting-host-fallback': 'waiting for host-id fallback',
  closing: 'closing session',
  'getting-reply': 'getting reply',
  verifying: 'verifying',
  suspended: 'suspended',
  cancelling: 'cancelling',
};

/** The phase as people read it: `retrying in 4s (attempt 2)`, `closing session`, or '' while bytes flow. */
export function phaseText(s: ProgressState, now: number): string {
  if (s.retryUntil !== undefined) {
    const left = Math.max(0, Math.ceil((s.retryUntil - now) / 1000));
    return `retrying in ${left}s${s.retryAttempt !== undefined ? ` (attempt ${s.retryAttempt})` : ''}`;
  }
  if (!s.phase) return '';
  const t = PHASE_TEXT[s.phase];
  return s.phaseDetail ? (t ? `${t}: ${s.phaseDetail}` : s.phaseDetail) : t;
}
