/**
 * The persistent job store: `jobs.json` in bits' folder (home.ts: $BITS_HOME, or
 * the platform's configuration folder for 'bits'), next to the user config
 * (`config.json`) but a separate file.
 *
 * - Every read reads the file anew (another process may have written it);
 *   parsing and validation are ours, so a damaged file always ends in a
 *   one-line StoreError, never in a silent reset.
 * - Every mutation is read-modify-write under a cross-process lock file
 *   (lock.ts) and is committed with writeDurable (durable.ts: temp, fsync,
 *   rename, fsync dir) — not conf's writer; see durable.ts for why.
 * - The store never awaits while holding the lock, so two calls in the same
 *   process cannot deadlock on their own lock.
 */
import fs from 'node:fs';
import path from 'node:path';
import crypto from 'node:crypto';
import { StoreError, UsageError } from '../errors.js';
import { canTransition, isTerminal } from './states.js';
import { removeStaleTemps, writeDurable } from '../io/durable.js';
import { bitsFolder } from './home.js';
import { acquireLock, LockTimeoutError, type LockOptions } from './lock.js';
import {
  ID_ALPHABET,
  ID_LENGTH,
  JOB_KINDS,
  ShapeError,
  STORE_SCHEMA_VERSION,
  sanitizeJob,
  validateJob,
  validateStoreData,
  type Job,
  type JobPatch,
  type JobState,
  type NewJob,
  type StoreData,
} from './job.js';

export const JOBS_FILE_NAME = 'jobs.json';

/**
 * Finished jobs (complete, cancelled) kept for `bits list` and `bits wait`: a job that
 * finishes makes the store forget the ones that finished longest ago beyond this.
 * WHY: every transfer reads and rewrites the whole store several times (persisted before
 * its first request, then at each session change and at the end), so a history that only
 * grew made each transfer slower than the one before: with 2000 finished jobs (2.3 MB) a
 * 1 MiB download took ~860 ms instead of ~400 ms (issue 13). Failed and suspended jobs are
 * never forgotten this way: they wait for the user (`bits resume`, `bits clean --all`).
 */
export const FINISHED_JOBS_KEPT = 100;

export interface OpenJobStoreOptions {
  /** The folder holding jobs.json; default $BITS_HOME, else conf's configuration folder for 'bits'. */
  home?: string;
  /** Lock timing; tests shorten it. */
  lock?: LockOptions;
}

export type JobUpdate = JobPatch | ((job: Job) => Job);

export interface JobStore {
  /** Absolute path of jobs.json. */
  readonly path: string;
  /** Adds a job with a fresh id; state defaults to 'queued', bytesDone to 0. */
  create(input: NewJob): Promise<Job>;
  /** By exact id or a unique prefix of at least 3 characters; UsageError (exit 2) otherwise. */
  get(idOrPrefix: string): Promise<Job>;
  /** Every job, oldest first. */
  list(): Promise<Job[]>;
  /**
   * Atomic read-modify-write of one job under the lock; bumps updatedAt. A
   * patch key set to undefined deletes the field. A state change not allowed
   * by the lifecycle throws InvalidTransitionError (e.g. the job was cancelled
   * by another process meanwhile).
   */
  update(idOrPrefix: string, update: JobUpdate): Promise<Job>;
  /** Removes one job and returns it. Does not check whether it is running: callers do. */
  remove(idOrPrefix: string): Promise<Job>;
  /** Removes, atomically under one lock, every job the predicate accepts; returns them. */
  removeWhere(predicate: (job: Job) => boolean): Promise<Job[]>;
}

/** A state change the lifecycle forbids; a UsageError (exit 2) unless the caller maps it. */
export class InvalidTransitionError extends UsageError {
  constructor(readonly jobId: string, readonly from: JobState, readonly to: JobState) {
    super(`job ${jobId} is ${from}; it cannot become ${to}`);
  }
}

/** Folder of the store: option, then $BITS_HOME, then conf's default. */
export function resolveBitsHome(home?: string): string | undefined {
  const h = home ?? (process.env.BITS_HOME ? process.env.BITS_HOME : undefined);
  return h === undefined ? undefined : path.resolve(h);
}

export async function openJobStore(opts: OpenJobStoreOptions = {}): Promise<JobStore> {
  const home = resolveBitsHome(opts.home);
  const dir = await bitsFolder(home);
  const file = path.join(dir, JOBS_FILE_NAME);
  try {
    fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  } catch (err) {
    throw unreadable(file, err);
  }
  const store = new FileJobStore(file, opts.lock ?? {});
  store.readData(); // fail now, before any transfer starts, if the file is damaged
  removeStaleTemps(store.path, 60_000, ['.tmp-', '.lock.stale-']);
  return store;
}

class FileJobStore implements JobStore {
  readonly path: string;
  private readonly lockPath: string;
  /**
   * The last text of jobs.json this store validated, or wrote (from validated data and records
   * `checked` here). Validation is a pure function of the text: the same text again (a read
   * after our own write, the usual case in a transfer's ~10 reads) needs only JSON.parse.
   * Any other text — another process's write, a damaged file — is validated in full.
   */
  private validText: string | undefined;

  constructor(file: string, private readonly lockOpts: LockOptions) {
    this.path = file;
    this.lockPath = `${file}.lock`;
  }

  readData(): StoreData {
    let raw: string | undefined;
    try {
      raw = fs.readFileSync(this.path, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw unreadable(this.path, err);
    }
    if (raw === undefined) return { schemaVersion: STORE_SCHEMA_VERSION, jobs: {} };
    if (raw === this.validText) return JSON.parse(raw) as StoreData;
    const data = parseStoreText(raw, this.path);
    this.validText = raw;
    return data;
  }

  private writeData(data: StoreData): void {
    const text = JSON.stringify(data, null, '\t') + '\n';
    try {
      writeDurable(this.path, text);
      this.validText = text;
    } catch (err) {
      throw new StoreError(`cannot write job store ${this.path} (${errnoSummary(err)})`, this.path, { cause: err });
    }
  }

  /** Runs `fn` on a fresh read under the lock and commits what it changed. `fn` must be synchronous. */
  private async mutate<T>(fn: (data: StoreData) => T): Promise<T> {
    for (let attempt = 0; ; attempt++) {
      const lock = await this.lock();
      let lost = false;
      try {
        const data = this.readData();
        const result = fn(data);
        // Someone judged us stale (we were stopped for > staleMs): redo on fresh data rather than overwrite theirs.
        if (!lock.stillHeld()) {
          lost = true;
          if (attempt < 3) continue;
          throw new StoreError(`lost the lock on job store ${this.path} repeatedly; is another bits process hung?`, this.path);
        }
        this.writeData(data);
        return result;
      } finally {
        if (!lost) lock.release();
      }
    }
  }

  private async lock() {
    try {
      // The folder may have been removed since open (a user cleaning up): recreate it as conf would.
      fs.mkdirSync(path.dirname(this.lockPath), { recursive: true });
      return await acquireLock(this.lockPath, this.lockOpts);
    } catch (err) {
      if (err instanceof LockTimeoutError) {
        const h = err.holder;
        const who = h ? `pid ${h.pid} on ${h.host}` : 'another process';
        throw new StoreError(
          `job store ${this.path} is locked by ${who} (waited ${Math.round(err.waitedMs / 1000)} s); if no bits process is running, remove ${err.lockPath}`,
          this.path,
        );
      }
      throw new StoreError(`cannot lock job store ${this.path} (${errnoSummary(err)})`, this.path, { cause: err });
    }
  }

  async create(input: NewJob): Promise<Job> {
    if (!JOB_KINDS.includes(input.kind)) throw new TypeError(`job kind must be upload or download, not ${String(input.kind)}`);
    return this.mutate((data) => {
      let id: string;
      do id = newJobId();
      while (data.jobs[id] !== undefined);
      // Creation order is list order (and queue order): two jobs created in the same millisecond
      // must not be ordered by their random ids, so createdAt only ever moves forward.
      const latest = Object.values(data.jobs).reduce((m, j) => Math.max(m, Date.parse(j.createdAt) || 0), 0);
      const now = new Date(Math.max(Date.now(), latest + 1)).toISOString();
      const { kind, source, destination, state, bytesDone, ...rest } = input;
      const job = checked(sanitizeJob(dropUndefined({
        id, kind, source, destination,
        state: state ?? 'queued',
        bytesDone: bytesDone ?? 0,
        createdAt: now,
        updatedAt: now,
        ...rest,
      } as Job)));
      data.jobs[id] = job;
      return job;
    });
  }

  async get(idOrPrefix: string): Promise<Job> {
    return resolveJob(this.readData(), idOrPrefix);
  }

  async list(): Promise<Job[]> {
    return Object.values(this.readData().jobs).sort(byCreation);
  }

  async update(idOrPrefix: string, update: JobUpdate): Promise<Job> {
    return this.mutate((data) => {
      const cur = resolveJob(data, idOrPrefix);
      let next: Job;
      if (typeof update === 'function') {
        next = update(structuredClone(cur));
      } else {
        next = { ...cur };
        const target = next as unknown as Record<string, unknown>;
        for (const [k, v] of Object.entries(update)) {
          if (v === undefined) delete target[k];
          else target[k] = v;
        }
      }
      if (next.id !== cur.id || next.kind !== cur.kind || next.createdAt !== cur.createdAt) {
        throw new TypeError(`job ${cur.id}: id, kind and createdAt cannot change`);
      }
      if (!canTransition(cur.state, next.state)) throw new InvalidTransitionError(cur.id, cur.state, next.state);
      next = checked(sanitizeJob(dropUndefined({ ...next, updatedAt: new Date().toISOString() })));
      data.jobs[cur.id] = next;
      if (!isTerminal(cur.state) && isTerminal(next.state)) forgetOldFinished(data);
      return next;
    });
  }

  async remove(idOrPrefix: string): Promise<Job> {
    return this.mutate((data) => {
      const job = resolveJob(data, idOrPrefix);
      delete data.jobs[job.id];
      return job;
    });
  }

  async removeWhere(predicate: (job: Job) => boolean): Promise<Job[]> {
    return this.mutate((data) => {
      const removed = Object.values(data.jobs).filter(predicate).sort(byCreation);
      for (const j of removed) delete data.jobs[j.id];
      return removed;
    });
  }
}

/** Drops the finished jobs beyond FINISHED_JOBS_KEPT, the ones that finished longest ago first. */
function forgetOldFinished(data: StoreData): void {
  const finished = Object.values(data.jobs).filter((j) => isTerminal(j.state));
  if (finished.length <= FINISHED_JOBS_KEPT) return;
  finished.sort((a, b) => (a.updatedAt < b.updatedAt ? -1 : a.updatedAt > b.updatedAt ? 1 : byCreation(a, b)));
  for (const j of finished.slice(0, finished.length - FINISHED_JOBS_KEPT)) delete data.jobs[j.id];
}

function byCreation(a: Job, b: Job): number {
  return a.createdAt < b.createdAt ? -1 : a.createdAt > b.createdAt ? 1 : a.id < b.id ? -1 : 1;
}

/** 30 random bits as 6 Crockford base32 characters. */
export function newJobId(): string {
  const bytes = crypto.randomBytes(ID_LENGTH);
  let id = '';
  for (let i = 0; i < ID_LENGTH; i++) id += ID_ALPHABET[bytes[i]! & 31];
  return id;
}

export function resolveJob(data: StoreData, idOrPrefix: string): Job {
  const key = idOrPrefix.trim().toLowerCase();
  if (key === '') throw new UsageError('a job id is required (see bits list)');
  const exact = data.jobs[key];
  if (exact) return exact;
  if (key.length < 3) throw new UsageError(`job id "${idOrPrefix}" is too short: type at least 3 characters of it (see bits list)`);
  const matches = Object.keys(data.jobs).filter((id) => id.startsWith(key)).sort();
  if (matches.length === 1) return data.jobs[matches[0]!]!;
  if (matches.length === 0) throw new UsageError(`no job "${idOrPrefix}" (bits list --all shows every job)`);
  const shown = matches.slice(0, 5).join(', ') + (matches.length > 5 ? ', …' : '');
  throw new UsageError(`job id "${idOrPrefix}" is ambiguous: it matches ${shown}; type more characters`);
}

/** A record the store is about to write must be valid: a failure is a bug in the caller. */
function checked(job: Job): Job {
  try {
    return validateJob(job, `job ${job.id}`);
  } catch (err) {
    if (err instanceof ShapeError) throw new TypeError(`invalid job record: ${err.message}`);
    throw err;
  }
}

function dropUndefined<T extends object>(o: T): T {
  for (const k of Object.keys(o) as (keyof T)[]) if (o[k] === undefined) delete o[k];
  return o;
}

// ---------------------------------------------------------------------------
// Errors: one line, naming the file and how to recover.

function quote(p: string): string {
  if (/^[\w@%+=:,./\\-]+$/.test(p)) return p;
  return process.platform === 'win32' ? `"${p}"` : `'${p.replace(/'/g, `'\\''`)}'`;
}

function moveAside(file: string): string {
  const mv = process.platform === 'win32' ? 'move' : 'mv';
  return `move it aside to start afresh: ${mv} ${quote(file)} ${quote(file + '.bad')}`;
}

function oneLine(s: string, max = 160): string {
  const t = s.replace(/\s+/g, ' ').trim();
  return t.length > max ? t.slice(0, max - 1) + '…' : t;
}

export function parseStoreText(text: string, file: string): StoreData {
  if (text.trim() === '') throw new StoreError(`job store ${file} is corrupt (the file is empty); ${moveAside(file)}`, file);
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw new StoreError(`job store ${file} is corrupt (${oneLine((err as Error).message)}); ${moveAside(file)}`, file, { cause: err });
  }
  try {
    return validateStoreData(value);
  } catch (err) {
    if (!(err instanceof ShapeError)) throw err;
    if (err.reason === 'newer') {
      throw new StoreError(`job store ${file} was written by a newer bits (${err.message}); upgrade bits, or ${moveAside(file)}`, file);
    }
    throw new StoreError(`job store ${file} is not valid (${oneLine(err.message)}); ${moveAside(file)}`, file);
  }
}

const ERRNO_TEXT: Record<string, string> = {
  EISDIR: 'it is a directory',
  ENOTDIR: 'a parent is not a directory',
  EACCES: 'permission denied',
  EPERM: 'operation not permitted',
  ENOSPC: 'no space left on device',
  EDQUOT: 'disk quota exceeded',
  EROFS: 'read-only file system',
  EIO: 'input/output error',
  EMFILE: 'too many open files',
};

function errnoSummary(err: unknown): string {
  const e = err as NodeJS.ErrnoException;
  if (e && typeof e.code === 'string') return `${e.code}: ${ERRNO_TEXT[e.code] ?? oneLine(e.message.replace(/,\s*\w+\s*'.*'$/, ''))}`;
  return oneLine(err instanceof Error ? err.message : String(err));
}

function unreadable(file: string, err: unknown): StoreError {
  if (err instanceof StoreError) return err;
  return new StoreError(`job store ${file} cannot be read (${errnoSummary(err)}); fix it or ${moveAside(file)}`, file, { cause: err });
}
