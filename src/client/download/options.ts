/**
 * The download options, their defaults, and their checks (made once, here:
 * the CLI passes what the user typed and reports the UsageError as it is).
 */
import { UsageError } from '../../errors.js';
import { parseRangeList } from '../../protocol/content-range.js';
import { parseUserUrl } from '../../protocol/urls.js';
import { DEFAULT_RETRY_POLICY, type RetryPolicy } from '../../protocol/failure.js';
import type { Transport, TransportOptions } from '../../transport/http.js';
import type { TransferListener } from '../events.js';
import type { CheckpointTiming, DownloadCheckpoint } from './checkpoint.js';

export interface DownloadOptions {
  url: string;
  /** Output path; `-` for stdout; undefined: a name derived from the response, in `cwd`. */
  output?: string;
  /** Folder for relative and derived output names (default process.cwd()). */
  cwd?: string;
  /** Overwrite an existing output file. */
  force?: boolean;
  /** APPLICATION_RANGES as typed: `0-99,1000-1099,5000-`. */
  ranges?: string;
  /** Parallel segments over separate connections (default 1, or one per source with mirrors). */
  segments?: number;
  /** Other URLs serving the same content. */
  mirrors?: string[];
  /** Expected SHA-256 of the result (hex). */
  sha256?: string;
  /** Cap on FRAGMENT_LENGTH (bytes per GET); default: the whole remaining window. */
  fragmentSize?: number;
  /** Bytes written between durable checkpoints (default 4 MiB). */
  checkpointBytes?: number;
  /**
   * And at least this long between them (default 1 s, or 0 when checkpointBytes is
   * given): each checkpoint costs an fdatasync plus a durable job-store write, which at
   * loopback speed every 4 MiB dominated the transfer; a crash loses at most ~1 s of data.
   */
  checkpointMinIntervalMs?: number;
  /** Give up (suspended, resumable) after this long without a durable byte beyond the high-water mark (default 5 minutes). */
  noProgressTimeoutMs?: number;
  /** The retry policy's first backoff step and largest step (src/protocol/failure.ts; defaults 1 s, 30 s). */
  retryBaseMs?: number;
  retryMaxMs?: number;
  /** Smallest segment worth its own connection (default 1 MiB). */
  minSegmentBytes?: number;
  transport?: TransportOptions;
  /** Use this transport (not closed here) instead of creating one: a shared HttpTransport, or a scripted one in tests. */
  httpTransport?: Transport;
  /** Where `-o -` writes (default process.stdout). */
  stdout?: NodeJS.WritableStream;
}

export interface DownloadRunOptions extends DownloadOptions {
  resume?: DownloadCheckpoint;
  /** Awaited after each durable write batch (the partial file is fsynced first). */
  onCheckpoint?(cp: DownloadCheckpoint): Promise<void> | void;
  onEvent?: TransferListener;
  /** Abort = suspend: the partial file and last checkpoint stay; InterruptedError. */
  signal?: AbortSignal;
}

export interface DownloadResult {
  path: string;
  bytes: number;
  sha256?: string;
  checkpoint: DownloadCheckpoint;
}

/** The options resolved: a resumed checkpoint's own settings win over the ones given. */
export interface Settings {
  url: string;
  mirrors: string[];
  toStdout: boolean;
  rangeText?: string;
  sha256?: string;
  force: boolean;
  segments: number;
  fragmentSize: number;
  noProgressMs: number;
  policy: RetryPolicy;
  timing: CheckpointTiming;
}

export function resolveSettings(opts: DownloadRunOptions): Settings {
  const cp = opts.resume;
  const mirrors = cp?.mirrors ?? opts.mirrors ?? [];
  const noProgressMs = opts.noProgressTimeoutMs ?? 5 * 60_000;
  const rangeText = cp ? cp.rangeText : opts.ranges;
  const sha256 = (cp?.sha256 ?? opts.sha256)?.toLowerCase();
  const s: Settings = {
    url: cp?.url ?? opts.url,
    mirrors,
    toStdout: !cp && opts.output === '-',
    ...(rangeText !== undefined ? { rangeText } : {}),
    ...(sha256 !== undefined ? { sha256 } : {}),
    force: cp?.force ?? opts.force ?? false,
    segments: cp?.segments ?? opts.segments ?? (mirrors.length > 0 ? mirrors.length + 1 : 1),
    fragmentSize: opts.fragmentSize ?? Infinity,
    noProgressMs,
    policy: {
      ...DEFAULT_RETRY_POLICY,
      ...(opts.retryBaseMs !== undefined ? { baseMs: opts.retryBaseMs } : {}),
      ...(opts.retryMaxMs !== undefined ? { maxMs: opts.retryMaxMs } : {}),
    },
    timing: {
      checkpointBytes: Math.max(64 * 1024, opts.checkpointBytes ?? 4 * 1024 * 1024),
      minIntervalMs: opts.checkpointMinIntervalMs ?? (opts.checkpointBytes === undefined ? 1000 : 0),
      // Only durable bytes are progress: checkpoint well inside the no-progress timeout on a slow link.
      maxIntervalMs: Math.max(250, Math.min(2000, noProgressMs / 4)),
    },
  };
  check(s, opts);
  return s;
}

function check(s: Settings, opts: DownloadRunOptions): void {
  for (const u of [s.url, ...s.mirrors]) {
    try {
      parseUserUrl(u);
    } catch (e) {
      throw new UsageError((e as Error).message);
    }
  }
  if (!Number.isSafeInteger(s.segments) || s.segments < 1 || s.segments > 64) {
    throw new UsageError(`--segments must be from 1 to 64, got ${s.segments}`);
  }
  if (s.sha256 !== undefined && !/^[0-9a-f]{64}$/.test(s.sha256)) throw new UsageError('--sha256 must be 64 hexadecimal digits');
  if (s.rangeText !== undefined && !parseRangeList(s.rangeText)) {
    throw new UsageError(`--range must be a list like 0-99,1000-1099,5000- (got ${JSON.stringify(s.rangeText)})`);
  }
  if (s.toStdout && opts.segments !== undefined && opts.segments > 1) {
    throw new UsageError('--segments cannot be used with -o - (stdout takes bytes in order only)');
  }
  if (opts.fragmentSize !== undefined && !(opts.fragmentSize >= 1)) throw new UsageError('--fragment-size must be at least 1 byte');
}
