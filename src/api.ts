/**
 * The programmatic API of bits (package "bits-transfer"): what the `bits`
 * command does, for code. See README "Use from code".
 *
 *   import { upload, download, serve, jobs, BitsError } from 'bits-transfer';
 *
 * Every transfer is a persistent job in the same store `bits list` reads, so
 * an interrupted one (AbortSignal, crash, network loss) continues with
 * jobs.resume(id) or `bits resume <id>`. Failures reject with a BitsError
 * subclass carrying exitCode, httpStatus, hresult and disposition.
 */
import * as jobs from './api/jobs.js';

export { upload, download, downloadToStream, createUpload, createDownload, type UploadOptions, type DownloadOptions, type StreamDownloadOptions, type StreamResult, type TransferResult } from './api/transfer.js';
export { serve, loadServeConfig, type ServeOptions, type Server, type ServerConfigFile, type DurabilityConfig, type DurabilityMode, type NotificationType } from './api/serve.js';
export { prepareTransport, type RunOptions, type StoreOptions, type PreparedTransport } from './api/options.js';
export type { JobInfo, ListOptions, CancelOptions, CleanOptions, WaitOptions, CancelResult, SuspendOptions, SuspendResult, QueueOptions, QueueResult, AgentStatus, BackgroundPriority, JobNotify, JobError } from './api/jobs.js';
export { jobs };
export type { Job, JobState, JobKind, TransportSettings } from './store/index.js';
export type { TransportSecrets } from './jobs/transport.js';
export type { TransferEvent, TransferPhase, TransferKind, SegmentProgress, TransferListener } from './client/events.js';
export type { DirectoryConfig, ServerLimits } from './api/serve.js';
export {
  BitsError,
  UsageError,
  LocalFileError,
  TransportError,
  TimeoutError,
  TlsError,
  ServerError,
  AuthError,
  ProtocolError,
  SourceChangedError,
  StoreError,
  InterruptedError,
  CancelledError,
  ExitCode,
  toBitsError,
  formatErrorLine,
  type ErrorJson,
} from './errors.js';
export { VERSION } from './version.js';
