/**
 * What the programmatic API's calls share: where the job store is, how to
 * reach the server, the event callback and the AbortSignal. Turned here into
 * the jobs layer's own inputs (TransportSettings → TransportOptions via
 * src/jobs/transport.ts) so upload, download and resume read them one way.
 */
import { InterruptedError, BitsError } from '../errors.js';
import type { TransferEvent } from '../client/events.js';
import type { TransportOptions } from '../transport/http.js';
import { openJobStore, type JobStore, type TransportSettings } from '../store/index.js';
import { transportFromSettings, type TransportSecrets } from '../jobs/transport.js';

export interface StoreOptions {
  /**
   * Folder of the job store (jobs.json). Default: $BITS_HOME, else the CLI's
   * own folder (~/.config/bits on Linux), so `bits list` sees API jobs too.
   */
  home?: string;
}

export interface RunOptions extends StoreOptions {
  /** Every event of the run: start, phase, progress, retry, resync, info, warning, complete. */
  onEvent?: (event: TransferEvent) => void;
  /**
   * Aborting suspends the job (its checkpoint is kept): the call rejects with
   * InterruptedError (or the BitsError given as the abort reason, e.g. a
   * CancelledError) and `jobs.resume(id)` continues it later.
   */
  signal?: AbortSignal;
  /** How to reach the server: timeouts, proxy, TLS files, rate limit, user, headers. Stored with the job, never a secret. */
  transport?: TransportSettings;
  /** Passwords for this run (never stored). Otherwise BITS_PASSWORD / BITS_PROXY_PASSWORD are read. */
  secrets?: TransportSecrets;
  /**
   * A transport made once by prepareTransport(), shared by several calls:
   * its passwords are asked for (or read) once, not per job. When given,
   * `transport` and `secrets` are ignored for reaching the server.
   */
  prepared?: PreparedTransport;
}

/** How to reach a server, built once: see prepareTransport. */
export interface PreparedTransport {
  /** What is stored with each job (never a secret). */
  readonly settings: TransportSettings;
  /**
   * Asks for the passwords the settings need now (on the terminal, or from
   * BITS_PASSWORD / BITS_PROXY_PASSWORD), before any job or request exists:
   * a prompt that appears later, when a server first challenges, is drawn
   * over by progress output. Resolves at once when they were given.
   */
  askPasswords(): Promise<void>;
  /** @internal The transport layer's options; not part of the API's promise. */
  readonly options: TransportOptions;
}

/**
 * Builds the transport for `settings` (+ this run's passwords) once.
 * Throws UsageError now when a password is needed and there is neither a
 * terminal to ask on nor a variable to read it from.
 */
export function prepareTransport(settings: TransportSettings = {}, secrets?: TransportSecrets): PreparedTransport {
  const options = transportFromSettings(settings, secrets ? { secrets } : {});
  return {
    settings,
    options,
    async askPasswords() {
      for (const c of [options.credentials, options.proxyCredentials]) {
        if (typeof c === 'function') await c();
      }
    },
  };
}

export async function storeFor(opts: StoreOptions = {}): Promise<JobStore> {
  return openJobStore(opts.home !== undefined ? { home: opts.home } : {});
}

export function transportFor(settings: TransportSettings, opts: RunOptions): TransportOptions {
  if (opts.prepared) return opts.prepared.options;
  return transportFromSettings(settings, opts.secrets ? { secrets: opts.secrets } : {});
}

/**
 * The jobs layer wants an InterruptedError as the abort reason (it suspends
 * the job); a caller's plain AbortSignal usually carries a DOMException.
 */
export function jobSignal(signal: AbortSignal | undefined): { signal?: AbortSignal; dispose(): void } {
  if (!signal) return { dispose() {} };
  const ctl = new AbortController();
  const forward = () => ctl.abort(signal.reason instanceof BitsError ? signal.reason : new InterruptedError('aborted by the caller; resume the job to continue'));
  if (signal.aborted) forward();
  else signal.addEventListener('abort', forward, { once: true });
  return { signal: ctl.signal, dispose: () => signal.removeEventListener('abort', forward) };
}
