/**
 * Client checkpoints <-> the store's records. The clients own their
 * checkpoint shapes (src/client/upload.ts, src/client/download.ts); the store
 * keeps them under its own names (src/store/job.ts), and these are the only
 * converters between the two.
 */
import type { UploadCheckpoint as ClientUploadCheckpoint } from '../client/upload.js';
import type { DownloadCheckpoint as ClientDownloadCheckpoint } from '../client/download.js';
import { redactUrl, type DownloadCheckpoint, type Job, type UploadCheckpoint } from '../store/index.js';

/** The client's checkpoint as the store keeps it (null fields omitted; store names for `bits status`). */
export function toStoredUpload(cp: ClientUploadCheckpoint, replyFile?: string): UploadCheckpoint {
  const out: UploadCheckpoint = {
    sourceSize: cp.sourceSize,
    sourceMtimeMs: cp.sourceMtimeMs,
    confirmedOffset: cp.offset,
    fragmentSize: cp.fragmentSize,
    contentName: cp.contentName,
    hostIdFallbackTimeout: cp.hostIdFallbackTimeout,
  };
  if (cp.sessionId !== null) out.sessionId = cp.sessionId;
  if (cp.hostId !== null) out.hostId = cp.hostId;
  if (cp.hostIdFallbackDeadline !== null) out.hostIdFallbackDeadlineMs = cp.hostIdFallbackDeadline;
  if (cp.replyUrl !== null) out.replyUrl = cp.replyUrl;
  if (replyFile !== undefined) out.replyFile = replyFile;
  return out;
}

/**
 * The client checkpoint to resume from, or undefined when the job never got a
 * session (killed before CREATE-SESSION was acknowledged and saved): such a job
 * starts a new session.
 */
export function fromStoredUpload(job: Pick<Job, 'destination' | 'upload' | 'options'>): ClientUploadCheckpoint | undefined {
  const u = job.upload;
  if (!u || u.sessionId === undefined || u.contentName === undefined || u.sourceSize === undefined || u.sourceMtimeMs === undefined) return undefined;
  return {
    destination: job.destination,
    sessionId: u.sessionId,
    hostId: u.hostId ?? null,
    hostIdFallbackTimeout: u.hostIdFallbackTimeout ?? 0xffffffff,
    hostIdFallbackDeadline: u.hostIdFallbackDeadlineMs ?? null,
    offset: u.confirmedOffset ?? 0,
    fragmentSize: u.fragmentSize ?? job.options?.fragmentSize ?? 8 * 1024 * 1024,
    replyUrl: u.replyUrl ?? null,
    sourceSize: u.sourceSize,
    sourceMtimeMs: u.sourceMtimeMs,
    contentName: u.contentName,
  };
}

/** The download client's checkpoint as stored: URLs without passwords (the store redacts only source and destination). */
export function toStoredDownload(cp: ClientDownloadCheckpoint): DownloadCheckpoint {
  const clean: ClientDownloadCheckpoint = {
    ...cp,
    url: redactUrl(cp.url),
    mirrors: cp.mirrors.map(redactUrl),
    sources: cp.sources.map((s) => ({ ...s, url: redactUrl(s.url) })),
    toc: cp.toc.map((r) => ({ ...r, source: r.source === null ? null : redactUrl(r.source) })),
  };
  return JSON.parse(JSON.stringify(clean)) as DownloadCheckpoint;
}

/** The checkpoint to resume from; undefined when none was saved yet (the download starts again). */
export function fromStoredDownload(job: Pick<Job, 'download'>): ClientDownloadCheckpoint | undefined {
  const d = job.download as unknown as Partial<ClientDownloadCheckpoint> | undefined;
  if (!d || d.version !== 1 || typeof d.partialPath !== 'string' || typeof d.outputPath !== 'string' || !Array.isArray(d.toc) || !Array.isArray(d.sources)) {
    return undefined;
  }
  return d as ClientDownloadCheckpoint;
}

