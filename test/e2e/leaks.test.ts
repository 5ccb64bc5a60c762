/**
 * No credential leaks: passwords given by flag and by environment, on success and on
 * failure paths, must appear nowhere a user, a script or a log collector can see —
 * stdout, stderr, every --json line, the job store under BITS_HOME, and the server's
 * request log — neither as text nor in the encodings HTTP puts them in (base64 of the
 * password and of user:password, URL-encoded).
 */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startAuthGateway, type AuthGateway } from '../helpers/auth-gateway.js';
import type { RunResult } from '../helpers/cli.js';
import { ensureBuilt, expectOk, jsonEvents, makeRandomFile, sandbox, serve, sha256File, type Sandbox, type Served } from './e2e.js';

const USER = 'leaker';
const PASSWORD = 'S3cr3t-pässw0rd';
const WRONG = 'Wr0ng-pässw0rd-9';
const PROXY_PASSWORD = 'Pr0xy-pässw0rd-7';

/** The password and the forms HTTP and URLs carry it in. */
function forms(pw: string, user = USER): string[] {
  const out = new Set<string>([pw, encodeURIComponent(pw), JSON.stringify(pw).slice(1, -1)]);
  for (const enc of ['utf8', 'latin1'] as const) {
    out.add(Buffer.from(pw, enc).toString('base64'));
    out.add(Buffer.from(`${user}:${pw}`, enc).toString('base64'));
    // base64 without its padding, as it appears inside longer encodings
    out.add(Buffer.from(`${user}:${pw}`, enc).toString('base64').replace(/=+$/, ''));
  }
  return [...out];
}
const SECRETS = [...forms(PASSWORD), ...forms(WRONG), ...forms(PROXY_PASSWORD, 'pu')];

function filesUnder(dir: string): string[] {
  const out: string[] = [];
  for (const name of readdirSync(dir)) {
    const p = path.join(dir, name);
    if (statSync(p).isDirectory()) out.push(...filesUnder(p));
    else out.push(p);
  }
  return out;
}

function findLeaks(where: string, text: string): string[] {
  return SECRETS.filter((s) => text.includes(s)).map((s) => `${where} contains ${JSON.stringify(s)}`);
}

let box: Sandbox;
let srv: Served;
let digest: AuthGateway;
let src: string;
const outputs: Array<{ what: string; r: RunResult }> = [];

async function run(what: string, args: string[], env?: Record<string, string>): Promise<RunResult> {
  const r = await box.bits(args, env);
  outputs.push({ what, r });
  return r;
}

beforeAll(async () => {
  ensureBuilt();
  box = await sandbox('bits-e2e-leaks-');
  src = await makeRandomFile(box.file('secret-data.bin'), 1024 * 1024 + 3);
  srv = await serve(path.join(box.dir, 'root'), ['--basic-auth', `${USER}:${PASSWORD}`]);
  const plain = await serve(path.join(box.dir, 'digest-root'));
  digest = await startAuthGateway({ upstream: { port: plain.port }, scheme: 'digest-sha256', user: USER, password: PASSWORD });
  cleanup.push(() => plain.stop(), () => digest.close());
});
const cleanup: Array<() => Promise<void>> = [];
afterAll(async () => {
  for (const c of cleanup) await c();
  await srv?.stop();
  await box?.cleanup();
});

describe('no credential leaks', () => {
  it('upload, download, list, status, failures: the password appears nowhere', async () => {
    const url = `${srv.url}/in/data.bin`;
    // Success with the password on the command line and in the environment.
    const up = await run('upload --user', ['upload', src, url, '--user', `${USER}:${PASSWORD}`, '--json']);
    expectOk(up, 'upload');
    const upId = jsonEvents(up.stdout).find((e) => typeof e.jobId === 'string')?.jobId as string | undefined;
    const down = await run('download env', ['download', url, '-o', box.file('d1.bin'), '--json'], { BITS_USER: USER, BITS_PASSWORD: PASSWORD });
    expectOk(down, 'download');
    expect(await sha256File(box.file('d1.bin'))).toBe(await sha256File(src));
    const up2 = await run('upload env', ['upload', src, `${srv.url}/in/data2.bin`], { BITS_USER: USER, BITS_PASSWORD: PASSWORD });
    expectOk(up2, 'upload env');
    const dg = await run('download digest', ['download', `${digest.url}/x.bin`, '-o', box.file('404.bin'), '--user', `${USER}:${PASSWORD}`, '--json']);
    expect(dg.code).not.toBe(0); // nothing there: a 404 after authenticating, with messages that could quote anything

    // Failures: a wrong password, credentials in a URL, a proxy URL with a password.
    const wrong = await run('upload wrong', ['upload', src, `${srv.url}/in/wrong.bin`, '--user', `${USER}:${WRONG}`, '--json']);
    expect(wrong.code).toBe(6);
    const wrongEnv = await run('download wrong env', ['download', url, '-o', box.file('w.bin'), '--json'], { BITS_USER: USER, BITS_PASSWORD: WRONG });
    expect(wrongEnv.code).toBe(6);
    const inUrl = await run('url credentials', ['download', `http://${USER}:${encodeURIComponent(PASSWORD)}@127.0.0.1:${srv.port}/in/data.bin`, '-o', box.file('u.bin'), '--json']);
    expect(inUrl.code).not.toBe(0);
    const inUrlUp = await run('url credentials upload', ['upload', src, `http://${USER}:${encodeURIComponent(PASSWORD)}@127.0.0.1:${srv.port}/in/u.bin`]);
    expect(inUrlUp.code).not.toBe(0);
    const proxy = await run('proxy url password', ['download', url, '-o', box.file('p.bin'), '--proxy', `http://pu:${encodeURIComponent(PROXY_PASSWORD)}@127.0.0.1:1`, '--json', '--connect-timeout', '5', '--no-progress-timeout', '1']);
    expect(proxy.code).not.toBe(0);
    const proxyUser = await run('proxy user password', ['upload', src, `${srv.url}/in/p.bin`, '--proxy', 'http://127.0.0.1:1', '--proxy-user', `pu:${PROXY_PASSWORD}`, '--json', '--connect-timeout', '5', '--no-progress-timeout', '1']);
    expect(proxyUser.code).not.toBe(0);

    // What the job store says about all of that.
    const list = await run('list --json', ['list', '--all', '--json']);
    expectOk(list, 'list');
    await run('list', ['list', '--all']);
    if (upId) {
      expectOk(await run('status --json', ['status', upId, '--json']), 'status');
      await run('status', ['status', upId]);
    }

    const leaks: string[] = [];
    for (const { what, r } of outputs) {
      leaks.push(...findLeaks(`${what}: stdout`, r.stdout), ...findLeaks(`${what}: stderr`, r.stderr));
      // Every stdout line of a --json run is JSON (and is covered by the stdout check above).
      if (r.stdout.trim().startsWith('{')) jsonEvents(r.stdout);
    }
    for (const f of filesUnder(box.home)) leaks.push(...findLeaks(`BITS_HOME ${path.relative(box.home, f)}`, readFileSync(f, 'latin1')), ...findLeaks(`BITS_HOME ${f}`, readFileSync(f, 'utf8')));
    leaks.push(...findLeaks('bits serve log', srv.log), ...findLeaks('bits serve stdout', srv.stdout));
    expect(leaks).toEqual([]);
    // …and would have seen one: the Basic header's encoding of these credentials is among the forms.
    expect(findLeaks('control', `Authorization: Basic ${Buffer.from(`${USER}:${PASSWORD}`).toString('base64')}`)).not.toEqual([]);
    // The checks ran on real output: the store holds the jobs, the user name is there, the password is not.
    expect(filesUnder(box.home).length).toBeGreaterThan(0);
    expect(outputs.some(({ r }) => r.stdout.includes(USER) || r.stderr.includes(USER))).toBe(true);
  });
});
