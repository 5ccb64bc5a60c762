/**
 * Events a transfer emits. Clients (upload, download) produce them; the
 * presentation layer (progress bars, CI status lines, `--json`) and the job
 * store consume them. Keeping this the only seam means the protocol code never
 * prints and the CLI never parses protocol state.
 */
export type TransferKind = 'upload' | 'download';

/** Human-readable phase shown next to the progress bar. */
export type TransferPhase =
  | 'connecting'
  | 'creating-session'
  | 'pinging'
  | 'transferring'
  | 'retrying'
  | 'waiting-host-fallback'
  | 'closing'
  | 'getting-reply'
  | 'verifying'
  | 'suspended'
  | 'cancelling';

export interface SegmentProgress {
  /** 0-based segment number. */
  index: number;
  bytesDone: number;
  totalBytes: number;
  /** The source (origin or mirror) serving it now, when known. */
  source?: string;
}

export type TransferEvent =
  | { type: 'start'; kind: TransferKind; jobId?: string; source: string; destination: string; totalBytes?: number; resumedAt?: number }
  | { type: 'phase'; phase: TransferPhase; detail?: string }
  | {
      type: 'progress';
      /** What the server (upload) or the disk (download) holds: never beyond what was confirmed. */
      bytesDone: number;
      totalBytes?: number;
      /** Downloads with segments: every segment's own progress, in segment order. */
      segments?: SegmentProgress[];
    }
  | { type: 'retry'; attempt: number; delayMs: number; reason: string }
  | { type: 'resync'; from: number; to: number }
  | { type: 'info'; message: string }
  | { type: 'warning'; message: string }
  | { type: 'complete'; bytes: number; destination: string; replyFile?: string; sha256?: string }
  | { type: 'error'; error: { code: string; message: string; exitCode: number; resumable: boolean } };

export type TransferListener = (e: TransferEvent) => void;
