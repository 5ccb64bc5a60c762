/**
 * URL rules of the upload protocol: BITS-Host-Id substitution (§1.3.4.2,
 * §2.2.3.2) and BITS-Reply-URL resolution (§2.2.7.2, §4.2). Pure: no I/O.
 */

/** Only these schemes make sense for BITS (§2.1: HTTP and HTTPS). */
export function isHttpUrl(u: URL): boolean {
  return u.protocol === 'http:' || u.protocol === 'https:';
}

/**
 * Parses a URL a user gave (an upload destination, a download source, a
 * mirror): the one check and the one wording for every such URL. Throws
 * TypeError with a one-line message (callers make it a usage error, exit 2)
 * for anything but an absolute http(s) URL with a host, and for a URL that
 * carries a user name or password: those would end up in the job store and in
 * messages, and credentials go with --user instead.
 */
export function parseUserUrl(input: string, what = 'URL'): URL {
  let u: URL | undefined;
  try {
    u = new URL(input);
  } catch {
    u = undefined;
  }
  if (!u || !isHttpUrl(u) || !u.hostname) throw new TypeError(`${what} must be an http:// or https:// URL with a host, got ${JSON.stringify(input)}`);
  if (u.username || u.password) {
    u.username = '';
    u.password = '';
    throw new TypeError(`${what} must not carry a user name or password (${u.href}): give them with --user NAME (the password is asked for, or read from BITS_PASSWORD)`);
  }
  return u;
}

/** An upload destination: see parseUserUrl. */
export function parseDestinationUrl(input: string): URL {
  return parseUserUrl(input);
}

const IPV6_RE = /^[0-9a-fA-F:.]+(%[\w.-]+)?$/;

/**
 * BITS-Host-Id: "The client MUST replace the host portion of the destination URL
 * with the value" — scheme, port, path and query stay. The value is a host name,
 * an IPv4 address or an IPv6 address (RFC 2373 App. B, written without brackets).
 * Returns undefined when the value is not a usable host.
 */
export function applyHostId(destination: URL, hostId: string): URL | undefined {
  const v = hostId.trim();
  if (v === '' || /[\s/\\?#@]/.test(v)) return undefined;
  let host: string;
  if (v.startsWith('[') && v.endsWith(']')) host = v;
  else if (v.includes(':') && IPV6_RE.test(v)) host = `[${v}]`;
  else if (v.includes(':')) return undefined; // host:port is not a host (RFC 1738 §5)
  else host = v;
  const u = new URL(destination.href);
  try {
    u.hostname = host;
  } catch {
    return undefined;
  }
  // URL silently ignores an invalid hostname assignment; detect that.
  const want = host.toLowerCase();
  if (u.hostname.toLowerCase() !== want && u.hostname.toLowerCase() !== want.replace(/^\[|\]$/g, '')) {
    // IPv6 addresses are normalised by URL ([::1] stays [::1]); hostnames are lower-cased.
    if (!(host.startsWith('[') && u.hostname.startsWith('['))) return undefined;
  }
  return u;
}

/**
 * Resolves a BITS-Reply-URL against the destination URL. IIS sends a relative
 * path with backslashes (§4.2: `BITS-Sessions\Replies\{GUID}\responsefile.bin`),
 * which a Windows client resolves against the destination's folder and
 * percent-encodes (`{` → `%7B`): §4.2-19 requests
 * `/upload-ref-isapi-WebFarm/BITS-Sessions/Replies/%7BGUID%7D/responsefile.bin`.
 * Absolute http(s) URLs are taken as they are. Throws TypeError on anything else.
 */
export function resolveReplyUrl(destination: URL | string, replyUrl: string): URL {
  const base = typeof destination === 'string' ? new URL(destination) : destination;
  const raw = replyUrl.trim();
  if (raw === '') throw new TypeError('empty BITS-Reply-URL');
  if (/[\r\n\0]/.test(raw)) throw new TypeError('BITS-Reply-URL contains control characters');
  if (/^[a-zA-Z][a-zA-Z0-9+.-]*:/.test(raw) && !/^[a-zA-Z]:[\\/]/.test(raw)) {
    const abs = new URL(raw);
    if (!isHttpUrl(abs)) throw new TypeError(`BITS-Reply-URL has unsupported scheme: ${abs.protocol}`);
    return abs;
  }
  // Relative: backslashes are path separators; encode each segment ourselves so the
  // result does not depend on how a URL parser treats `\`, `{`, `}` or spaces.
  const path = raw.replace(/\\/g, '/');
  const encoded = path
    .split('/')
    .map((seg) => encodePathSegment(seg))
    .join('/');
  return new URL(encoded, base);
}

/** Percent-encodes a path segment, keeping existing %XX escapes and RFC 3986 pchar. */
export function encodePathSegment(seg: string): string {
  let out = '';
  for (const ch of seg) {
    if (/[A-Za-z0-9\-._~!$&'()*+,;=:@]/.test(ch)) out += ch;
    else if (ch === '%') out += '%';
    else out += Buffer.from(ch, 'utf8').reduce((s, b) => s + '%' + b.toString(16).toUpperCase().padStart(2, '0'), '');
  }
  // A lone % that does not start an escape must itself be escaped.
  return out.replace(/%(?![0-9A-Fa-f]{2})/g, '%25');
}
