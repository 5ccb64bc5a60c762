/**
 * How a job ends, decided once. The runner stores it, the command's last line
 * prints it and the --json final object carries it: all three ask this module,
 * which asks the one failure policy (BitsError.disposition, src/errors.ts).
 *
 *   disposition  job state   why
 *   retry        suspended   the driver retried until the no-progress deadline and gave up; resume retries
 *   suspend      suspended   Ctrl-C, SIGTERM, a full disk: stopped on purpose or for a local reason
 *   fail         error       retrying cannot help (404, 403, BG_E_TOO_LARGE, auth, TLS, protocol)
 *   cancel       cancelled
 */
import { InterruptedError, toBitsError } from '../errors.js';
import type { JobError, JobState } from '../store/index.js';
import { jobErrorFrom } from './lifecycle.js';

export type EndState = Extract<JobState, 'suspended' | 'error' | 'cancelled'>;

/**
 * The outcome scripts see (the --json final object's `state`): the store's
 * own words (JobState), so `bits status` and the last line of a run agree.
 */
export type FinalState = Extract<JobState, 'complete' | 'suspended' | 'cancelled' | 'error'>;

export interface JobOutcome {
  state: EndState;
  /** What to store as lastError; undefined clears it (an interrupt is not a failure worth showing). */
  lastError?: JobError;
}

/** The state a job ends in after its transfer threw `err`. */
export function outcomeForError(err: unknown, now = new Date()): JobOutcome {
  const e = toBitsError(err);
  switch (e.disposition) {
    case 'cancel':
      return { state: 'cancelled' };
    case 'suspend':
      return e instanceof InterruptedError ? { state: 'suspended' } : { state: 'suspended', lastError: jobErrorFrom(e, now) };
    case 'retry':
      return { state: 'suspended', lastError: jobErrorFrom(e, now) };
    case 'fail':
      return { state: 'error', lastError: jobErrorFrom(e, now) };
  }
}

/** How a job's state is reported as the command's outcome. */
export function finalStateFor(state: JobState): FinalState {
  switch (state) {
    case 'complete':
      return 'complete';
    case 'cancelled':
      return 'cancelled';
    case 'error':
      return 'error';
    default:
      return 'suspended';
  }
}

/**
 * The outcome of a command that ended with `err`. Without a job (stdout
 * downloads, usage errors) nothing can be resumed, so what would suspend a job fails.
 */
export function finalStateForError(err: unknown, hasJob: boolean): FinalState {
  const state = outcomeForError(err).state;
  if (state === 'suspended' && !hasJob) return 'error';
  return finalStateFor(state);
}

/** `bits resume --all`: the exit code of the worst outcome; 0 when every job completed. */
export function worstExitCode(codes: readonly number[]): number {
  return codes.reduce((a, b) => Math.max(a, b), 0);
}
