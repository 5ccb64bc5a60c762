/** The persistent job store: the API the transfer commands code against. */
export {
  openJobStore,
  resolveBitsHome,
  resolveJob,
  newJobId,
  parseStoreText,
  InvalidTransitionError,
  JOBS_FILE_NAME,
  type JobStore,
  type JobUpdate,
  type OpenJobStoreOptions,
} from './store.js';
export {
  JOB_STATES,
  JOB_KINDS,
  STORE_SCHEMA_VERSION,
  ID_ALPHABET,
  ID_LENGTH,
  isSecretHeader,
  redactUrl,
  sanitizeJob,
  validateJob,
  validateStoreData,
  ShapeError,
  type Job,
  type JobKind,
  type JobState,
  type JobError,
  type JobOptions,
  type JobPatch,
  type JobRunner,
  type JobTimeouts,
  type NewJob,
  type CredentialSource,
  type UploadCheckpoint,
  type DownloadCheckpoint,
  type JsonValue,
  type JsonObject,
  type StoreData,
} from './job.js';
export { isProcessAlive } from './process.js';
export {
  TERMINAL_STATES,
  canTransition,
  effectiveState,
  isCleanable,
  isResumable,
  isTerminal,
  progressPercent,
  resumesByItself,
} from './states.js';
export {
  legacyTransportSettings,
  overrideTransportSettings,
  sanitizeTransportSettings,
  type StoredCredentialSource,
  type TransportSettings,
} from './transport-settings.js';
export { writeDurable } from '../io/durable.js';
export type { LockOptions } from './lock.js';
