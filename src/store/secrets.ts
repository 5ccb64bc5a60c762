/**
 * What counts as a secret in a stored job: header values and URL parts that
 * may carry a credential. A name not known to be harmless is treated as a
 * secret: a job store that leaks one token (Private-Token, X-Amz-Security-Token,
 * ?sig=…) is worse than asking for it again on resume.
 */
import { UsageError } from '../errors.js';

/**
 * Headers whose values are known to be harmless: stored with a job as given.
 * Every other header keeps only its name; resume reads its value from
 * BITS_HEADER_<NAME> (headerVariable).
 */
const HARMLESS_HEADERS = new Set([
  'accept',
  'accept-charset',
  'accept-language',
  'cache-control',
  'content-language',
  'content-type',
  'dnt',
  'origin',
  'pragma',
  'referer',
  'user-agent',
  'x-requested-with',
]);

export function isSecretHeader(name: string): boolean {
  return !HARMLESS_HEADERS.has(name.trim().toLowerCase());
}

/** `Private-Token` -> `BITS_HEADER_PRIVATE_TOKEN`: where resume reads a header value that was not stored. */
export function headerVariable(name: string): string {
  return `BITS_HEADER_${name.trim().toUpperCase().replace(/[^A-Z0-9]/g, '_')}`;
}

/** The line telling a user that a header was not stored and how resume gets it back. */
export function secretHeaderNote(name: string, jobId: string): string {
  return `header ${name} may be a secret: job ${jobId} stores its name only; bits resume reads its value from ${headerVariable(name)}`;
}

/**
 * The values of the headers a job stored by name only, for a resume: from this
 * run's own headers (`bits resume -H`), else from BITS_HEADER_<NAME>; a
 * missing one is a UsageError (exit 2) naming the variable, before anything is sent.
 */
export function secretHeaderValues(names: readonly string[], given: { [name: string]: string }, env: NodeJS.ProcessEnv): { [name: string]: string } {
  const out: { [name: string]: string } = {};
  const have = new Set(Object.keys(given).map((k) => k.toLowerCase()));
  for (const name of names) {
    if (have.has(name.toLowerCase())) continue;
    const v = env[headerVariable(name)];
    if (v === undefined || v === '') throw new UsageError(`header ${name} was not stored with the job: set ${headerVariable(name)} to its value (or give -H '${name}: VALUE')`);
    out[name] = v;
  }
  return out;
}

/**
 * Query parameters that carry credentials in the wild: OAuth/GitLab/GitHub
 * tokens, S3 (X-Amz-*), Google Cloud Storage (X-Goog-*), Azure SAS (sig), generic signatures and keys.
 */
const SECRET_QUERY = /^(?:access[_-]?token|token|auth|authorization|api[_-]?key|apikey|key|password|passwd|pwd|secret|sig|signature|session|sessionid|code|private[_-]?token|x-amz-signature|x-amz-security-token|x-amz-credential|x-goog-signature|x-goog-credential|x-goog-security-token|awsaccesskeyid|googleaccessid|policy|hmac|jwt)$/i;

/** What a redacted query value is replaced by in jobs.json. */
export const REDACTED = 'REDACTED';

/** Full URLs this process redacted, by their redacted form: a job created here runs with the real one. */
const fullUrls = new Map<string, string>();

export function isSecretQueryParameter(name: string): boolean {
  return SECRET_QUERY.test(name);
}

/**
 * The URL as a job stores it: no password in its user info, and the value of
 * every query parameter that may be a credential replaced by REDACTED (the
 * full URL is remembered for this process only; see unredactUrl). Anything that
 * is not a URL is returned unchanged.
 */
export function redactUrl(value: string): string {
  if (!/^[a-z][a-z0-9+.-]*:\/\//i.test(value)) return value;
  try {
    const u = new URL(value);
    let changed = false;
    if (u.password) {
      u.password = '';
      changed = true;
    }
    if (u.search) {
      const params = new URLSearchParams(u.search);
      for (const [k, v] of [...params]) {
        if (isSecretQueryParameter(k) && v !== REDACTED) {
          params.set(k, REDACTED);
          changed = true;
        }
      }
      // The original text stays where nothing was redacted (no re-encoding of harmless parameters).
      if (changed) u.search = params.toString();
    }
    if (!changed) return value;
    const redacted = u.toString();
    // Only secrets of the query are restored from memory; a URL password is asked for as --user is.
    if (u.search !== new URL(value).search) fullUrls.set(redacted, value);
    return redacted;
  } catch {
    return value;
  }
}

/** Whether a stored URL lost a query value to redaction (it cannot be fetched as it is). */
export function hasRedactedQuery(url: string): boolean {
  try {
    return [...new URL(url).searchParams].some(([k, v]) => v === REDACTED && isSecretQueryParameter(k));
  } catch {
    return false;
  }
}

/** The variable `bits resume` reads the full URL of a job from when its stored URL was redacted. */
export const FULL_URL_VARIABLE = 'BITS_URL';

/**
 * A stored URL back to the one to send: itself when nothing was redacted; the
 * full URL this process redacted; or $BITS_URL when it is the same URL with the
 * secrets filled in. Otherwise a UsageError (exit 2) that says what to set.
 */
export function unredactUrl(stored: string, env: NodeJS.ProcessEnv = process.env): string {
  if (!hasRedactedQuery(stored)) return stored;
  const known = fullUrls.get(stored);
  if (known !== undefined) return known;
  const given = env[FULL_URL_VARIABLE];
  if (given && redactUrl(given) === stored) return given;
  const what = given ? `${FULL_URL_VARIABLE} is set but is not this URL` : `set ${FULL_URL_VARIABLE} to the full URL`;
  throw new UsageError(`the URL ${stored} carried a secret in its query, which is not stored with the job: ${what}`);
}
