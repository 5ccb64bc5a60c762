/** What counts as a secret in a stored job: header names, URL passwords. */

/** Header names whose values are secrets; never persisted. */
const SECRET_HEADERS = new Set(['authorization', 'proxy-authorization', 'cookie', 'set-cookie', 'x-api-key', 'x-auth-token']);

export function isSecretHeader(name: string): boolean {
  return SECRET_HEADERS.has(name.trim().toLowerCase());
}

/** Removes the password from a URL's user info; anything that is not a URL is returned unchanged. */
export function redactUrl(value: string): string {
  if (!/^[a-z][a-z0-9+.-]*:\/\//i.test(value)) return value;
  try {
    const u = new URL(value);
    if (!u.password) return value;
    u.password = '';
    return u.toString();
  } catch {
    return value;
  }
}

