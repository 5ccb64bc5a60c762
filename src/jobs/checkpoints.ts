/**
 * Download checkpoints as the store keeps them: the one schema of
 * src/store/job.ts, with passwords removed from every URL on the way in and
 * the shape checked on the way out. (Upload checkpoints need no converter:
 * the uploader's UploadCheckpoint is stored as it is.)
 */
import { parseDownloadCheckpoint, type DownloadCheckpoint as ClientDownloadCheckpoint } from '../client/download.js';
import { redactUrl, type DownloadCheckpoint, type Job } from '../store/index.js';

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
  return parseDownloadCheckpoint(job.download);
}
