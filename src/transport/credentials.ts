/**
 * Credentials for server and proxy authentication. The secret lives only in memory:
 * what can be stored (job store, --json, logs) is a CredentialSource — where the
 * password came from and the user name — and `resolveCredentials` asks for the
 * password again when a job resumes. Every password seen is registered so that
 * `redactSecrets` can scrub it from any message before it is printed.
 */
import { inspect } from 'node:util';
import { InterruptedError, UsageError } from '../errors.js';

export interface CredentialSource {
  /**
   * flag: `--user name:password`; env: BITS_USER/BITS_PASSWORD (for a proxy:
   * BITS_PROXY_USER/BITS_PROXY_PASSWORD); prompt: asked on the terminal.
   */
  kind: 'flag' | 'env' | 'prompt';
  /** May carry a domain: `DOMAIN\user`. */
  user: string;
}

const secrets = new Set<string>();

/** Remembers a secret so that redactSecrets() removes it from messages. */
export function registerSecret(secret: string): void {
  if (secret.length > 0) secrets.add(secret);
}

/**
 * Removes every registered secret and every `user:password@` URL userinfo from a
 * text. Very short passwords (under 3 characters) are not searched for, since that
 * would mangle ordinary words; they are still never put into a message by us.
 */
export function redactSecrets(text: string): string {
  let out = text.replace(/([a-z][a-z0-9+.-]*:\/\/[^/\s:@]*):[^@\s/]*@/gi, '$1:***@');
  for (const s of secrets) {
    if (s.length >= 3) out = out.split(s).join('***');
  }
  return out;
}

/** Headers that carry a credential by their name (RFC 7235, RFC 6265, GitLab, AWS, common API keys). */
const CREDENTIAL_HEADERS = new Set([
  'authorization',
  'proxy-authorization',
  'cookie',
  'private-token',
  'job-token',
  'x-api-key',
  'api-key',
  'x-auth-token',
  'x-amz-security-token',
  'x-csrf-token',
  'x-xsrf-token',
]);

/**
 * Whether a header given with -H is a credential: the names above, and any name
 * with a word such as token, secret, key, auth, password, session or signature
 * in it (X-Secret-Token, X-Goog-Api-Key, X-Session-Id). Such headers go only to
 * the origin they were given for (src/transport/http.ts).
 */
export function isCredentialHeader(name: string): boolean {
  const n = name.trim().toLowerCase();
  return CREDENTIAL_HEADERS.has(n) || /(^|[-_])(token|secret|api-?key|key|auth|authorization|password|passwd|session|signature|credentials?)($|[-_])/.test(n);
}

/** The URL without user:password, for messages and storage. */
export function stripUrlCredentials(url: string | URL): string {
  try {
    const u = new URL(String(url));
    u.username = '';
    u.password = '';
    return u.toString();
  } catch {
    return redactSecrets(String(url));
  }
}

export class Credentials {
  readonly user: string;
  readonly #password: string;

  constructor(user: string, password: string) {
    this.user = user;
    this.#password = password;
    registerSecret(password);
  }

  get password(): string {
    return this.#password;
  }

  /** Never the password: these objects end up in logs by accident. */
  toJSON(): { user: string } {
    return { user: this.user };
  }

  toString(): string {
    return `Credentials(${this.user})`;
  }

  [inspect.custom](): string {
    return this.toString();
  }
}

/** Asked when a server or proxy first challenges; memoised, so asked at most once per run. */
export type CredentialProvider = () => Promise<Credentials>;

/** `name[:password]` as given to --user / --proxy-user (split at the first colon, like curl). */
export function parseUserOption(value: string, flag = '--user'): { user: string; password?: string } {
  const i = value.indexOf(':');
  const user = i < 0 ? value : value.slice(0, i);
  if (!user) throw new UsageError(`${flag} needs a user name (${flag} NAME[:PASSWORD])`);
  if (i < 0) return { user };
  const password = value.slice(i + 1);
  registerSecret(password);
  return { user, password };
}

export interface PromptIO {
  input?: NodeJS.ReadableStream & { isTTY?: boolean; setRawMode?: (on: boolean) => unknown };
  output?: NodeJS.WritableStream;
  env?: NodeJS.ProcessEnv;
}

/** Signals that end a waiting prompt: in raw mode Ctrl-C is a key, but `kill`, `timeout` and a closed terminal send these. */
const PROMPT_SIGNALS = ['SIGTERM', 'SIGINT', 'SIGHUP'] as const;

/**
 * Reads a password from the terminal without echo (raw mode, so no line discipline
 * echoes it). Ctrl-C interrupts; Backspace edits. SIGTERM, SIGINT or SIGHUP while
 * it waits end it too (InterruptedError, exit 10), with the terminal back out of
 * raw mode: a prompt must never outlive `timeout 6 bits …`.
 */
export function promptPassword(prompt: string, io: PromptIO = {}): Promise<string> {
  const input = io.input ?? process.stdin;
  const output = io.output ?? process.stderr;
  if (!input.isTTY || typeof input.setRawMode !== 'function') {
    return Promise.reject(new UsageError('a password is needed but there is no terminal to ask on: give it with --user NAME:PASSWORD or BITS_PASSWORD'));
  }
  return new Promise<string>((resolve, reject) => {
    let pw = '';
    const onSignal = (sig: NodeJS.Signals) => done(new InterruptedError(`password prompt interrupted by ${sig}`));
    const done = (err?: Error) => {
      for (const sig of PROMPT_SIGNALS) process.off(sig, onSignal);
      input.removeListener('data', onData);
      input.setRawMode!(false);
      input.pause();
      output.write('\n');
      if (err) reject(err);
      else resolve(pw);
    };
    const onData = (chunk: Buffer | string) => {
      for (const ch of String(chunk)) {
        if (ch === '\r' || ch === '\n' || ch === '\u0004') return done();
        if (ch === '\u0003') return done(new InterruptedError('password prompt interrupted'));
        if (ch === '\u007f' || ch === '\b') pw = pw.slice(0, -1);
        else if (ch >= ' ') pw += ch;
      }
    };
    // Raw mode and the signal listeners first, the prompt last: a key typed the moment the
    // prompt shows must not meet the cooked terminal, which would echo it or turn Ctrl-C
    // into a SIGINT racing the listeners (the process died of it, exit 130).
    for (const sig of PROMPT_SIGNALS) process.on(sig, onSignal);
    input.setRawMode!(true);
    output.write(prompt);
    input.on('data', onData);
    input.resume();
  });
}

/** Where a script puts the proxy's user name and password: never BITS_USER/BITS_PASSWORD, which are the server's. */
export const PROXY_USER_VARIABLE = 'BITS_PROXY_USER';
export const PROXY_PASSWORD_VARIABLE = 'BITS_PROXY_PASSWORD';

/** Whose password: the server's (BITS_PASSWORD) or the proxy's (BITS_PROXY_PASSWORD). */
export type CredentialTarget = 'server' | 'proxy';

function passwordVariable(target: CredentialTarget | undefined): string {
  return target === 'proxy' ? PROXY_PASSWORD_VARIABLE : 'BITS_PASSWORD';
}

/**
 * The password for a stored source: for `flag` and `prompt`, the password variable
 * if set (a resumed job has no command-line password any more), else asked on the
 * terminal; for `env`, the variable, else asked. No terminal and no password ->
 * UsageError. The variable is BITS_PASSWORD, or BITS_PROXY_PASSWORD when
 * `target: 'proxy'`.
 */
export async function resolveCredentials(
  source: CredentialSource,
  io: PromptIO & { password?: string; what?: string; target?: CredentialTarget } = {},
): Promise<Credentials> {
  const env = io.env ?? process.env;
  if (io.password !== undefined) return new Credentials(source.user, io.password);
  const fromEnv = env[passwordVariable(io.target)];
  if (fromEnv !== undefined && fromEnv !== '') return new Credentials(source.user, fromEnv);
  const pw = await promptPassword(`${io.what ?? (io.target === 'proxy' ? 'Proxy password' : 'Password')} for ${source.user}: `, io).catch((e: unknown) => {
    if (io.target === 'proxy' && e instanceof UsageError) {
      throw new UsageError(`the proxy password for ${source.user} is needed but there is no terminal to ask on: give it with --proxy-user NAME:PASSWORD or ${PROXY_PASSWORD_VARIABLE}`);
    }
    throw e;
  });
  return new Credentials(source.user, pw);
}

/** Memoised lazy provider: nothing is asked unless a server actually challenges. */
export function credentialProvider(source: CredentialSource, io: PromptIO & { password?: string; what?: string; target?: CredentialTarget } = {}): CredentialProvider {
  let p: Promise<Credentials> | undefined;
  return () => {
    p ??= resolveCredentials(source, io).catch((e: unknown) => {
      p = undefined;
      throw e;
    });
    return p;
  };
}

/**
 * Where the server credentials come from: --user wins over BITS_USER. The returned
 * password (if any) is for this run only; persist `source` alone.
 */
export function credentialSourceFrom(userOption: string | undefined, env: NodeJS.ProcessEnv = process.env): { source: CredentialSource; password?: string } | undefined {
  if (userOption !== undefined) {
    const { user, password } = parseUserOption(userOption);
    if (password !== undefined) return { source: { kind: 'flag', user }, password };
    if (env['BITS_PASSWORD']) return { source: { kind: 'env', user }, password: env['BITS_PASSWORD'] };
    return { source: { kind: 'prompt', user } };
  }
  const user = env['BITS_USER'];
  if (user) {
    const password = env['BITS_PASSWORD'];
    if (password) registerSecret(password);
    return { source: { kind: password ? 'env' : 'prompt', user }, password: password || undefined };
  }
  return undefined;
}

/**
 * Where the proxy credentials come from, for scripts as well as people: --proxy-user
 * wins; its password is the flag's, else BITS_PROXY_PASSWORD, else a prompt. Without
 * the flag, BITS_PROXY_USER (with BITS_PROXY_PASSWORD, else a prompt). BITS_PASSWORD
 * is never the proxy's. Persist `source` alone (kind 'env' = read the variables again).
 */
export function proxyCredentialSourceFrom(
  proxyUserOption: string | undefined,
  env: NodeJS.ProcessEnv = process.env,
): { source: CredentialSource; password?: string } | undefined {
  const fromEnv = env[PROXY_PASSWORD_VARIABLE] || undefined;
  if (fromEnv) registerSecret(fromEnv);
  if (proxyUserOption !== undefined) {
    const { user, password } = parseUserOption(proxyUserOption, '--proxy-user');
    if (password !== undefined) return { source: { kind: 'flag', user }, password };
    if (fromEnv) return { source: { kind: 'env', user }, password: fromEnv };
    return { source: { kind: 'prompt', user } };
  }
  const user = env[PROXY_USER_VARIABLE];
  if (!user) return undefined;
  return { source: { kind: fromEnv ? 'env' : 'prompt', user }, password: fromEnv };
}

/**
 * The proxy credentials and their storable source for one run (what the CLI puts in
 * TransportOptions.proxyCredentials / proxyCredentialSource). Without a password and
 * without a terminal -> UsageError naming BITS_PROXY_PASSWORD.
 */
export function proxyCredentialsOption(
  proxyUserOption: string | undefined,
  io: PromptIO = {},
): { source: CredentialSource; provider: CredentialProvider } | undefined {
  const env = io.env ?? process.env;
  const found = proxyCredentialSourceFrom(proxyUserOption, env);
  if (!found) return undefined;
  const input = io.input ?? process.stdin;
  if (found.password === undefined && !input.isTTY) {
    throw new UsageError(
      `proxy user ${found.source.user} has no password and there is no terminal to ask on: use --proxy-user NAME:PASSWORD or set ${PROXY_PASSWORD_VARIABLE}`,
    );
  }
  return { source: found.source, provider: credentialProvider(found.source, { ...io, env, password: found.password, target: 'proxy' }) };
}

/**
 * BITS_PROXY_USER / BITS_PROXY_PASSWORD as fixed credentials, for a transport given
 * no proxy credentials at all (a script, a resumed job): undefined unless both are set.
 */
export function proxyCredentialsFromEnv(env: NodeJS.ProcessEnv = process.env): Credentials | undefined {
  const user = env[PROXY_USER_VARIABLE];
  const password = env[PROXY_PASSWORD_VARIABLE];
  if (!user || password === undefined || password === '') return undefined;
  return new Credentials(user, password);
}
