/**
 * The one stat of an upload's source file, with errno mapped to the one-line
 * errors users see. Every place that checks the source (the command before a
 * job is written, the job before it resumes, the driver before and after each
 * FRAGMENT) calls these, so the messages and the "changed" rule cannot drift.
 */
import { promises as fsp } from 'node:fs';
import { LocalFileError, SourceChangedError } from '../errors.js';

/** What identifies the source a session started with (BG_E_LOCAL_FILE_CHANGED). */
export interface SourceIdentity {
  size: number;
  mtimeMs: number;
}

function describeErrno(e: unknown): string {
  const code = (e as NodeJS.ErrnoException).code;
  switch (code) {
    case 'ENOENT':
      return 'no such file';
    case 'EACCES':
    case 'EPERM':
      return 'permission denied';
    case 'ENOTDIR':
      return 'a part of the path is not a folder';
    case 'ELOOP':
      return 'too many symbolic links';
    case 'ENAMETOOLONG':
      return 'the name is too long';
    default:
      return (e as Error).message;
  }
}

/** A LocalFileError (exit 3) for a failed open/read/stat of the source. */
export function sourceFileError(file: string, e: unknown): LocalFileError {
  return new LocalFileError(`${file}: ${describeErrno(e)}`, file, { cause: e });
}

/** Stats the source: a regular file, or LocalFileError (exit 3) with one clear line. */
export async function statSourceFile(file: string): Promise<SourceIdentity> {
  let st;
  try {
    st = await fsp.stat(file);
  } catch (e) {
    throw sourceFileError(file, e);
  }
  if (st.isDirectory()) throw new LocalFileError(`${file}: is a folder, not a file`, file);
  if (!st.isFile()) throw new LocalFileError(`${file}: not a regular file`, file);
  return { size: st.size, mtimeMs: st.mtimeMs };
}

/**
 * Throws SourceChangedError (exit 9) when the source is gone or differs from
 * `expected`: a session must never mix bytes of two versions of a file.
 * `advice` ends the message (e.g. "cancel the job (bits cancel k3v9qa) and upload again").
 */
export async function assertSourceUnchanged(file: string, expected: SourceIdentity, advice = 'cancel the job and upload again'): Promise<void> {
  let st;
  try {
    st = await fsp.stat(file);
  } catch {
    throw new SourceChangedError(`${file} no longer exists; ${advice}`, 'local');
  }
  if (st.size !== expected.size || st.mtimeMs !== expected.mtimeMs) {
    const what = st.size !== expected.size ? `size ${expected.size} -> ${st.size}` : 'modified';
    throw new SourceChangedError(`${file} changed since the upload began (${what}); ${advice}`, 'local');
  }
}
