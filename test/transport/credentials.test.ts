/**
 * Credentials: sources, CLI options, and that the password never shows up in
 * anything printed or stored (messages, --json error objects, inspect output,
 * persisted options, warnings).
 */
import { inspect } from 'node:util';
import { PassThrough } from 'node:stream';
import { Command } from 'commander';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BitsError, formatErrorLine, UsageError } from '../../src/errors.js';
import { addTransportOptions, settingsFromFlags, transportOptionsFrom } from '../../src/cli/transport-options.js';
import { Credentials, credentialSourceFrom, parseUserOption, redactSecrets, resolveCredentials, stripUrlCredentials } from '../../src/transport/credentials.js';
import { HttpTransport } from '../../src/transport/http.js';
import { basicAuth, digestAuth, ntlmAuth, startRawServer, type RawServer } from '../helpers/auth-servers.js';

const PASSWORD = 'Tr0ub4dor&3-secret';
const noTty = { input: Object.assign(new PassThrough(), { isTTY: false }) };

function parse(args: string[]): Record<string, unknown> {
  const cmd = addTransportOptions(new Command('x').exitOverride());
  cmd.parse(args, { from: 'user' });
  return cmd.opts();
}

describe('credential sources', () => {
  it('--user name:password splits at the first colon; DOMAIN\\user is kept whole', () => {
    expect(parseUserOption('CORP\\alice:pa:ss')).toEqual({ user: 'CORP\\alice', password: 'pa:ss' });
    expect(parseUserOption('bob')).toEqual({ user: 'bob' });
    expect(() => parseUserOption(':x')).toThrow(UsageError);
  });

  it('flag, env and prompt kinds; --user wins over BITS_USER', () => {
    expect(credentialSourceFrom('a:b', { BITS_USER: 'z', BITS_PASSWORD: 'y' })).toEqual({ source: { kind: 'flag', user: 'a' }, password: 'b' });
    expect(credentialSourceFrom('a', { BITS_PASSWORD: 'y' })).toEqual({ source: { kind: 'env', user: 'a' }, password: 'y' });
    expect(credentialSourceFrom('a', {})).toEqual({ source: { kind: 'prompt', user: 'a' } });
    expect(credentialSourceFrom(undefined, { BITS_USER: 'z', BITS_PASSWORD: 'y' })).toEqual({ source: { kind: 'env', user: 'z' }, password: 'y' });
    expect(credentialSourceFrom(undefined, { BITS_USER: 'z' })).toEqual({ source: { kind: 'prompt', user: 'z' } });
    expect(credentialSourceFrom(undefined, {})).toBeUndefined();
  });

  it('resume: a stored source gets its password again from BITS_PASSWORD, or fails clearly without a terminal', async () => {
    const c = await resolveCredentials({ kind: 'flag', user: 'a' }, { env: { BITS_PASSWORD: 'again' }, ...noTty });
    expect([c.user, c.password]).toEqual(['a', 'again']);
    await expect(resolveCredentials({ kind: 'prompt', user: 'a' }, { env: {}, ...noTty })).rejects.toThrow(/no terminal/);
  });

  it('--user without a password, no terminal, no BITS_PASSWORD -> UsageError at once', () => {
    expect(() => transportOptionsFrom(parse(['--user', 'alice']), { env: {}, ...noTty })).toThrow(/no password and there is no terminal/);
    expect(() => transportOptionsFrom(parse(['--proxy-user', 'p']), { env: {}, ...noTty })).toThrow(/--proxy-user/);
    const o = transportOptionsFrom(parse(['--user', 'alice']), { env: { BITS_PASSWORD: PASSWORD }, ...noTty });
    expect(o.credentialSource).toEqual({ kind: 'env', user: 'alice' });
  });
});

describe('transport options from the command line', () => {
  it('parses every flag, with defaults', () => {
    const o = transportOptionsFrom(parse(['--limit-rate', '500K', '--connect-timeout', '5', '--proxy', 'proxy.local:3128', '--insecure']), { env: {}, ...noTty });
    expect(o.limitRateBytesPerSec).toBe(512_000);
    expect(o.connectTimeoutMs).toBe(5000);
    expect(o.requestTimeoutMs).toBe(120_000);
    expect(o.responseTimeoutMs).toBe(300_000);
    expect(o.proxy).toBe('http://proxy.local:3128/');
    expect(o.tls?.insecure).toBe(true);
    expect(transportOptionsFrom(parse(['--proxy', '']), { env: {}, ...noTty }).proxy).toBe(false);
    expect(transportOptionsFrom(parse([]), { env: {}, ...noTty }).limitRateBytesPerSec).toBeUndefined();
    expect(() => transportOptionsFrom(parse(['--limit-rate', 'lots']), { env: {}, ...noTty })).toThrow(UsageError);
    expect(() => transportOptionsFrom(parse(['--proxy', 'socks5://p:1']), { env: {}, ...noTty })).toThrow(/socks5/);
    expect(() => transportOptionsFrom(parse(['--user', 'a:b', '-H', 'Authorization: Basic x']), { env: {}, ...noTty })).toThrow(/cannot be combined/);
  });

  it('help shows the defaults', () => {
    const help = addTransportOptions(new Command('x')).helpInformation().replace(/\s+/g, ' ');
    expect(help).toMatch(/--limit-rate <rate>.*\(default: config limit-rate, else 0\)/s);
    expect(help).toMatch(/--request-timeout <seconds>.*\(default: config request-timeout, else 120\)/s);
    // Numbers, not commander's quoted strings.
    expect(help).toMatch(/--connect-timeout <seconds>.*\(default: 30\)/s);
    expect(help).not.toMatch(/default: "/);
    expect(help).toMatch(/--user <name\[:password\]>/);
  });
});

describe('the password is never printed or stored', () => {
  let basic: RawServer;
  let digest: RawServer;
  let ntlm: RawServer;
  beforeAll(async () => {
    basic = await startRawServer(basicAuth({ user: 'alice', password: 'the real one' }));
    digest = await startRawServer(digestAuth({ user: 'alice', password: 'the real one' }));
    ntlm = await startRawServer(ntlmAuth({ user: 'alice', password: 'the real one' }));
  });
  afterAll(async () => {
    await Promise.all([basic.close(), digest.close(), ntlm.close()]);
  });

  it('in errors (message, --json object, inspect), options, persisted options and warnings', async () => {
    const captured: string[] = [];
    const warn = (m: string) => captured.push(m);
    const cliOpts = parse(['--user', `alice:${PASSWORD}`, '--proxy-user', `pu:${PASSWORD}`, '--insecure']);
    const options = transportOptionsFrom(cliOpts, { env: {}, ...noTty });
    captured.push(JSON.stringify(options), inspect(options, { depth: 5 }), JSON.stringify(settingsFromFlags(cliOpts, { env: {} }).settings));
    captured.push(inspect(new Credentials('alice', PASSWORD)), JSON.stringify({ c: new Credentials('alice', PASSWORD) }));

    const record = (e: unknown) => {
      expect(e).toBeInstanceOf(BitsError);
      const b = e as BitsError;
      captured.push(formatErrorLine(b), JSON.stringify(b.toJSON()), inspect(b), String(b.stack));
    };
    // Wrong password against each scheme (direct; proxy options dropped).
    for (const s of [basic, digest, ntlm]) {
      const t = new HttpTransport({ ...options, proxy: false, warn });
      await t.request({ method: 'GET', url: new URL(`${s.url}/x`) }).then(() => expect.fail('should fail'), record);
      await t.destroy();
    }
    // A proxy URL with credentials that cannot be reached.
    const t2 = new HttpTransport({ proxy: `http://pu:${encodeURIComponent(PASSWORD)}@127.0.0.1:1`, env: {}, warn });
    await t2.request({ method: 'GET', url: new URL(`${basic.url}/x`) }).then(() => expect.fail('should fail'), record);
    await t2.destroy();
    // A target URL carrying credentials is refused without echoing them.
    const t3 = new HttpTransport({ env: {} });
    await t3.request({ method: 'GET', url: new URL(`http://alice:${PASSWORD}@127.0.0.1:1/`) }).then(() => expect.fail('should fail'), record);
    await t3.destroy();

    const all = captured.join('\n');
    expect(all.length).toBeGreaterThan(1000);
    expect(all).not.toContain(PASSWORD);
    expect(all).not.toContain(encodeURIComponent(PASSWORD));
    expect(all).not.toContain(Buffer.from(`alice:${PASSWORD}`).toString('base64'));
    expect(all).toContain('rejected the credentials');
  });

  it('redactSecrets scrubs registered passwords and URL userinfo from any text', () => {
    new Credentials('x', PASSWORD);
    expect(redactSecrets(`oops ${PASSWORD} and http://u:p4ss@h/ too`)).toBe('oops *** and http://u:***@h/ too');
    expect(stripUrlCredentials('http://u:p@h:1/x')).toBe('http://h:1/x');
  });
});
