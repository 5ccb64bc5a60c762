/**
 * upload() and download(): a transfer run as a persistent job in this
 * process, exactly as `bits upload` / `bits download` run it (the job is
 * written before the first request and checkpointed after every acknowledged
 * fragment or durable write), without the terminal: events go to onEvent,
 * a stop request comes in as an AbortSignal.
 */
import { UsageError } from '../errors.js';
import { DEFAULT_FRAGMENT_SIZE, DEFAULT_NO_PROGRESS_TIMEOUT_MS } from '../client/upload.js';
import { parseDestinationUrl } from '../protocol/urls.js';
import { createDownloadJob, createUploadJob, runJob, type DownloadJobSpec, type UploadJobSpec } from '../jobs/runner.js';
import type { Job, JobStore } from '../store/index.js';
import type { TransportOptions } from '../transport/http.js';
import { jobSignal, storeFor, transportFor, type RunOptions } from './options.js';

/** The job specs of src/jobs/runner.ts, with the CLI's defaults filled in for what is left out. */
export type UploadOptions = RunOptions &
  Pick<UploadJobSpec, 'file' | 'url'> &
  Partial<Pick<UploadJobSpec, 'fragmentSize' | 'noProgressTimeoutMs' | 'replyFile' | 'requireReply' | 'methodOverride'>> & {
    /** Called with the job once it is stored, before the first request (e.g. to keep its id). */
    onJob?: (job: Job) => void;
  };

/** `cwd` defaults to process.cwd(), `output` to the server's name for the file in cwd. */
export type DownloadOptions = RunOptions &
  Pick<DownloadJobSpec, 'url'> &
  Partial<Omit<DownloadJobSpec, 'url' | 'transport'>> & {
    onJob?: (job: Job) => void;
  };

export interface TransferResult {
  /** The completed job (state 'complete'). */
  job: Job;
  /** Bytes transferred in all (the file's size). */
  bytes: number;
  /** Uploads: the URL; downloads: the absolute path written. */
  destination: string;
}

/** Uploads one file with the BITS upload protocol (MC-BUP §3.1). Rejects with a BitsError. */
export async function upload(opts: UploadOptions): Promise<TransferResult> {
  const { store, job, transport } = await storeUpload(opts);
  return run(store, job, transport, opts);
}

/** Downloads one file with resumable range requests (§3.6). Rejects with a BitsError. */
export async function download(opts: DownloadOptions): Promise<TransferResult> {
  const { store, job, transport } = await storeDownload(opts);
  return run(store, job, transport, opts);
}

/**
 * Stores an upload job (state queued) without running it: run it later with
 * jobs.run(job.id), resume(job.id), or queue it for the background agent.
 * The same checks as upload(): a bad URL or unreadable file rejects before any job exists.
 */
export async function createUpload(opts: UploadOptions): Promise<Job> {
  return (await storeUpload(opts)).job;
}

/** Stores a download job (state queued) without running it; see createUpload. */
export async function createDownload(opts: DownloadOptions): Promise<Job> {
  return (await storeDownload(opts)).job;
}

interface Stored {
  store: JobStore;
  job: Job;
  transport: TransportOptions;
}

async function storeUpload(opts: UploadOptions): Promise<Stored> {
  let url: URL;
  try {
    url = parseDestinationUrl(opts.url);
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  const settings = opts.prepared?.settings ?? opts.transport ?? {};
  // Before any job is written: a password that cannot be had is a usage error, not a failed job.
  const transport = transportFor(settings, opts);
  const store = await storeFor(opts);
  const replyFile = opts.replyFile;
  const job = await createUploadJob(store, {
    file: opts.file,
    url: url.href,
    fragmentSize: opts.fragmentSize ?? DEFAULT_FRAGMENT_SIZE,
    noProgressTimeoutMs: opts.noProgressTimeoutMs ?? DEFAULT_NO_PROGRESS_TIMEOUT_MS,
    ...(replyFile !== undefined ? { replyFile } : {}),
    requireReply: opts.requireReply === true || replyFile !== undefined,
    ...(opts.methodOverride === true ? { methodOverride: true } : {}),
    transport: settings,
  });
  return { store, job, transport };
}

async function storeDownload(opts: DownloadOptions): Promise<Stored> {
  const settings = opts.prepared?.settings ?? opts.transport ?? {};
  const transport = transportFor(settings, opts);
  const store = await storeFor(opts);
  const job = await createDownloadJob(store, {
    url: opts.url,
    ...(opts.output !== undefined ? { output: opts.output } : {}),
    cwd: opts.cwd ?? process.cwd(),
    force: opts.force === true,
    ...(opts.ranges !== undefined ? { ranges: opts.ranges } : {}),
    ...(opts.segments !== undefined ? { segments: opts.segments } : {}),
    mirrors: opts.mirrors ?? [],
    ...(opts.sha256 !== undefined ? { sha256: opts.sha256 } : {}),
    ...(opts.fragmentSize !== undefined ? { fragmentSize: opts.fragmentSize } : {}),
    noProgressTimeoutMs: opts.noProgressTimeoutMs ?? DEFAULT_NO_PROGRESS_TIMEOUT_MS,
    transport: settings,
  });
  return { store, job, transport };
}

async function run(store: JobStore, job: Job, transport: TransportOptions, opts: RunOptions & { onJob?: (job: Job) => void }): Promise<TransferResult> {
  opts.onJob?.(job);
  const s = jobSignal(opts.signal);
  try {
    const done = await runJob(job.id, { store, transport, ...(opts.onEvent ? { onEvent: opts.onEvent } : {}), ...(s.signal ? { signal: s.signal } : {}) });
    return { job: done, bytes: done.bytesDone, destination: done.destination };
  } finally {
    s.dispose();
  }
}

/** downloadToStream's inputs: no job and no file, so no `home`, output, cwd, force or segments. */
export type StreamDownloadOptions = Omit<RunOptions, 'home' | 'transport'> &
  Pick<DownloadJobSpec, 'url'> &
  Partial<Pick<DownloadJobSpec, 'ranges' | 'mirrors' | 'sha256' | 'fragmentSize' | 'noProgressTimeoutMs' | 'transport'>> & {
    /** Where the bytes go, in order (e.g. process.stdout, a file stream, a hash). It is not ended. */
    to: NodeJS.WritableStream;
  };

export interface StreamResult {
  /** Bytes written to `to`. */
  bytes: number;
  /** The content's sha256 (hex), when it was checked. */
  sha256?: string;
}

/**
 * Downloads into a stream (`bits download -o -`): bytes are written in
 * order and cannot be taken back, so there is no job, no resume and one
 * connection; a failure, an abort or a changed source mid-way rejects with a
 * BitsError and what was written stays written. The 'complete' event comes
 * before `to` has flushed: wait for its drain if that matters.
 */
export async function downloadToStream(opts: StreamDownloadOptions): Promise<StreamResult> {
  const { downloadFile } = await import('../client/download.js');
  const transport = transportFor(opts.prepared?.settings ?? opts.transport ?? {}, opts);
  const s = jobSignal(opts.signal);
  try {
    const r = await downloadFile({
      url: opts.url,
      output: '-',
      stdout: opts.to,
      ...(opts.ranges !== undefined ? { ranges: opts.ranges } : {}),
      segments: 1,
      mirrors: opts.mirrors ?? [],
      ...(opts.sha256 !== undefined ? { sha256: opts.sha256 } : {}),
      ...(opts.fragmentSize !== undefined ? { fragmentSize: opts.fragmentSize } : {}),
      noProgressTimeoutMs: opts.noProgressTimeoutMs ?? DEFAULT_NO_PROGRESS_TIMEOUT_MS,
      transport,
      ...(opts.onEvent ? { onEvent: opts.onEvent } : {}),
      ...(s.signal ? { signal: s.signal } : {}),
    });
    return { bytes: r.bytes, ...(r.sha256 ? { sha256: r.sha256 } : {}) };
  } finally {
    s.dispose();
  }
}
