/**
 * WWW-Authenticate / Proxy-Authenticate parsing (RFC 7235 §2.1, §4.1). One header
 * may hold several challenges, and undici joins repeated headers with ", ", so the
 * parser must tell a comma between challenges from a comma between parameters.
 */
export interface Challenge {
  /** As sent; compare case-insensitively. */
  scheme: string;
  /** NTLM / Negotiate carry a base64 token instead of parameters. */
  token68?: string;
  /** Parameter names lower-cased. */
  params: Record<string, string>;
}

const TOKEN = /[!#$%&'*+\-.^_`|~0-9A-Za-z]+/y;
const TOKEN68 = /[A-Za-z0-9\-._~+/]+=*/y;

export function parseChallenges(header: string | undefined): Challenge[] {
  const out: Challenge[] = [];
  if (!header) return out;
  const s = header;
  let i = 0;
  const skipWs = () => {
    while (i < s.length && (s[i] === ' ' || s[i] === '\t')) i++;
  };
  const skipWsCommas = () => {
    while (i < s.length && (s[i] === ' ' || s[i] === '\t' || s[i] === ',')) i++;
  };
  const match = (re: RegExp): string | undefined => {
    re.lastIndex = i;
    const m = re.exec(s);
    if (!m) return undefined;
    i = re.lastIndex;
    return m[0];
  };
  const readValue = (): string => {
    if (s[i] === '"') {
      i++;
      let v = '';
      while (i < s.length && s[i] !== '"') {
        if (s[i] === '\\' && i + 1 < s.length) i++;
        v += s[i];
        i++;
      }
      i++; // closing quote
      return v;
    }
    return match(TOKEN) ?? '';
  };
  /** Whether a `name=` (an auth-param, not a new challenge) starts at i. */
  const paramAhead = (): boolean => {
    const save = i;
    const name = match(TOKEN);
    skipWs();
    const ok = name !== undefined && s[i] === '=' && s[i + 1] !== '=';
    i = save;
    return ok;
  };

  while (i < s.length) {
    skipWsCommas();
    const scheme = match(TOKEN);
    if (!scheme) break;
    const ch: Challenge = { scheme, params: {} };
    out.push(ch);
    skipWs();
    if (i >= s.length || s[i] === ',') continue;
    if (!paramAhead()) {
      const save = i;
      const t = match(TOKEN68);
      skipWs();
      if (t !== undefined && (i >= s.length || s[i] === ',')) {
        ch.token68 = t;
        continue;
      }
      i = save;
    }
    // auth-param list, until something that is not `name=value` follows a comma.
    for (;;) {
      skipWs();
      const name = match(TOKEN);
      if (!name) break;
      skipWs();
      if (s[i] !== '=') break;
      i++;
      skipWs();
      ch.params[name.toLowerCase()] = readValue();
      skipWs();
      if (s[i] !== ',') break;
      const save = i;
      skipWsCommas();
      if (!paramAhead()) {
        i = save;
        break;
      }
    }
  }
  return out;
}

/** Quotes a value for an auth-param (RFC 7230 quoted-string). */
export function quote(v: string): string {
  return `"${v.replace(/["\\]/g, (c) => '\\' + c)}"`;
}
