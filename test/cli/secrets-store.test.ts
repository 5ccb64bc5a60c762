/**
 * jobs.json never holds a custom header's value unless the header is known to
 * be harmless, nor a credential-like query parameter: after real runs of the
 * built bits with Private-Token, X-Amz-Security-Token, X-Secret-Token headers
 * and a ?token= URL, the file has none of the values; the resume reads them
 * from BITS_HEADER_<NAME> and BITS_URL (the server checks every request), and
 * without them it is refused with one line naming the variable.
 */
import { createReadStream, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import http from 'node:http';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startServer, type RunningServer } from '../../src/server/index.js';
import { ensureBuilt, runBits, startBits } from '../helpers/cli.js';
import { makeRandomFile, sha256File } from '../helpers/files.js';

const MiB = 1024 * 1024;
const SECRETS = {
  'Private-Token': 'glpat-PRIVATE-1a2b3c',
  'X-Amz-Security-Token': 'AMZ-SESSION-4d5e6f',
  'X-Secret-Token': 'SECRET-7g8h9i',
};
const QUERY_TOKEN = 'QUERYTOKEN-0j1k2l';
const work = mkdtempSync(path.join(tmpdir(), 'bits-secrets-'));
const home = path.join(work, 'home');
let source: string;
let bitsServer: RunningServer;
let gate: http.Server;
let gateUrl = '';
/** Requests the gate refused for a missing or wrong secret. */
const refused: string[] = [];
let served = 0;

/** Serves source with ranges, only to requests carrying every secret; the first full GET is slowed so a run can be interrupted. */
function startGate(file: string): Promise<void> {
  gate = http.createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://x');
    const bad = Object.entries(SECRETS).filter(([k, v]) => req.headers[k.toLowerCase()] !== v).map(([k]) => k);
    if (url.searchParams.get('token') !== QUERY_TOKEN) bad.push('token');
    if (req.headers.accept !== 'application/octet-stream') bad.push('Accept');
    if (bad.length) {
      refused.push(`${req.method} ${bad.join(',')}`);
      res.writeHead(403).end('forbidden');
      return;
    }
    const size = statSync(file).size;
    const m = /^bytes=(\d+)-(\d*)$/.exec(req.headers.range ?? '');
    const start = m ? Number(m[1]) : 0;
    const end = m && m[2] ? Number(m[2]) : size - 1;
    const headers = { 'Content-Length': String(end - start + 1), 'Accept-Ranges': 'bytes', ETag: '"v1"', 'Last-Modified': new Date(0).toUTCString() };
    if (m) res.writeHead(206, { ...headers, 'Content-Range': `bytes ${start}-${end}/${size}` });
    else res.writeHead(200, headers);
    if (req.method === 'HEAD') return void res.end();
    served++;
    createReadStream(file, { start, end }).pipe(res);
  });
  return new Promise((resolve) => gate.listen(0, '127.0.0.1', () => {
    gateUrl = `http://127.0.0.1:${(gate.address() as { port: number }).port}`;
    resolve();
  }));
}

const headerArgs = [...Object.entries(SECRETS).flatMap(([k, v]) => ['-H', `${k}: ${v}`]), '-H', 'Accept: application/octet-stream'];
const env = { BITS_HOME: home };

function storeText(): string {
  return readFileSync(path.join(home, 'jobs.json'), 'utf8');
}

function expectNoSecrets(text: string): void {
  for (const v of [...Object.values(SECRETS), QUERY_TOKEN]) expect(text).not.toContain(v);
}

beforeAll(async () => {
  ensureBuilt();
  mkdirSync(path.join(work, 'root', 'up'), { recursive: true });
  source = await makeRandomFile(path.join(work, 'src.bin'), 4 * MiB, 15);
  bitsServer = await startServer({ root: path.join(work, 'root') });
  await startGate(source);
});

afterAll(async () => {
  await bitsServer.close();
  await new Promise((r) => gate.close(r));
  rmSync(work, { recursive: true, force: true });
});

describe('secrets never reach jobs.json', () => {
  it('upload with Private-Token, X-Amz-Security-Token, X-Secret-Token and ?token=: names only, values nowhere', async () => {
    const r = await runBits(['upload', source, `${bitsServer.url}/up/a.bin?token=${QUERY_TOKEN}`, ...headerArgs, '--json'], { env });
    expect(r.code, r.stderr).toBe(0);
    expect(await sha256File(path.join(work, 'root', 'up', 'a.bin'))).toBe(await sha256File(source));
    const text = storeText();
    expectNoSecrets(text);
    const job = (JSON.parse(text) as { jobs: Record<string, { transport: { headers?: object; secretHeaders?: string[] }; destination: string }> }).jobs;
    const stored = Object.values(job)[0]!;
    expect(stored.transport.headers).toEqual({ Accept: 'application/octet-stream' });
    expect(stored.transport.secretHeaders?.sort()).toEqual(Object.keys(SECRETS).sort());
    expect(stored.destination).toBe(`${bitsServer.url}/up/a.bin?token=REDACTED`);
    // The run says so, naming the variable resume reads.
    expect(r.stderr).toContain('BITS_HEADER_PRIVATE_TOKEN');
  });

  it('an interrupted download resumes only with BITS_HEADER_* and BITS_URL set; without them one line names the variable (exit 2)', async () => {
    const out = path.join(work, 'dl.bin');
    const url = `${gateUrl}/f.bin?token=${QUERY_TOKEN}`;
    const run = startBits(['download', url, '-o', out, ...headerArgs, '--limit-rate', '1M', '--json'], { env });
    await run.waitFor(/"type":"progress"/, 'stdout', 15_000);
    run.child.kill('SIGINT');
    const first = await run.done;
    expect(first.code, first.stderr).toBe(10);
    const text = storeText();
    expectNoSecrets(text);
    const id = (JSON.parse(first.stdout.trim().split('\n').pop()!) as { jobId: string }).jobId;

    // Nothing to read the header from: refused before any request, the job left as it was.
    const before = refused.length;
    const noHeader = await runBits(['resume', id], { env: { ...env, BITS_URL: url } });
    expect(noHeader.code).toBe(2);
    expect(noHeader.stderr.trim().split('\n')).toHaveLength(1);
    expect(noHeader.stderr).toMatch(/BITS_HEADER_(PRIVATE_TOKEN|X_AMZ_SECURITY_TOKEN|X_SECRET_TOKEN)/);
    const headerEnv = Object.fromEntries(Object.entries(SECRETS).map(([k, v]) => [`BITS_HEADER_${k.toUpperCase().replace(/-/g, '_')}`, v]));
    const noUrl = await runBits(['resume', id, '--json'], { env: { ...env, ...headerEnv } });
    expect(noUrl.code).toBe(2);
    expect(noUrl.stderr).toContain('BITS_URL');
    expect(refused.length).toBe(before);

    const servedBefore = served;
    const ok = await runBits(['resume', id, '--json', '--limit-rate', '0'], { env: { ...env, ...headerEnv, BITS_URL: url } });
    expect(ok.code, ok.stderr).toBe(0);
    expect(served).toBeGreaterThan(servedBefore);
    expect(refused).toEqual([]);
    expect(await sha256File(out)).toBe(await sha256File(source));
    expectNoSecrets(storeText());
  });
});
