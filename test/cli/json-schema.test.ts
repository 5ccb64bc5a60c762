/**
 * schema/events.schema.json documents every line `--json` prints; the shared
 * runner (test/helpers/cli.ts) checks every --json run of the suite against
 * it. This file makes sure every event type really occurs in a run of the
 * built bits (so each is checked at least once), that the state words are
 * the store's, and that the validator does reject what the schema forbids.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startServer, type RunningServer } from '../../src/server/index.js';
import { ensureBuilt, runBits, startBits } from '../helpers/cli.js';
import { checkJsonLines, loadEventsSchema, validate } from '../helpers/json-schema.js';

const work = mkdtempSync(path.join(tmpdir(), 'bits-json-schema-'));
const env = { BITS_HOME: path.join(work, 'home') };
let server: RunningServer;
const seen = new Set<string>();

function objects(stdout: string): Array<Record<string, unknown>> {
  const lines = stdout.trim().split('\n').filter(Boolean);
  const objs = lines.map((l) => JSON.parse(l) as Record<string, unknown>);
  for (const o of objs) seen.add(String(o.type));
  return objs;
}

beforeAll(async () => {
  ensureBuilt();
  mkdirSync(path.join(work, 'root', 'up'), { recursive: true });
  writeFileSync(path.join(work, 'root', 'small.bin'), Buffer.alloc(200_000, 7));
  server = await startServer({ root: path.join(work, 'root') });
});

afterAll(async () => {
  await server.close();
  rmSync(work, { recursive: true, force: true });
});

describe('--json lines match schema/events.schema.json', () => {
  it('a transfer with segments, a retry, a resync, info and a warning: every event type, each valid', async () => {
    const r = await runBits(['__demo-progress', '--json', '--retry', '--segments', '3', '--steps', '6', '--step-ms', '0'], { env });
    expect(r.code).toBe(0);
    const objs = objects(r.stdout);
    for (const t of ['start', 'phase', 'progress', 'retry', 'resync', 'info', 'warning', 'complete']) expect(objs.map((o) => o.type)).toContain(t);
    expect(objs.find((o) => o.type === 'progress' && Array.isArray(o.segments))).toBeDefined();
    expect(objs.at(-1)).toMatchObject({ type: 'complete', state: 'complete', error: null });
  });

  it('a 404: the final object says error (the store\'s word), and no suspended phase comes before it', async () => {
    const r = await runBits(['download', `${server.url}/missing.bin`, '-o', path.join(work, 'm.bin'), '--json'], { env });
    expect(r.code).toBe(5);
    const objs = objects(r.stdout);
    expect(objs.filter((o) => o.type === 'phase').map((o) => o.phase)).not.toContain('suspended');
    const last = objs.at(-1)!;
    expect(last).toMatchObject({ type: 'error', state: 'error', error: { httpStatus: 404, exitCode: 5 } });
    const status = await runBits(['status', String(last.jobId), '--json'], { env });
    expect(objects(status.stdout)[0]).toMatchObject({ type: 'job', state: last.state });
  });

  it('Ctrl-C: a suspended final object, after a suspended phase', async () => {
    const run = startBits(['__demo-progress', '--json', '--wait', '--steps', '4'], { env });
    await run.waitFor(/"type":"progress"/, 'stdout');
    run.child.kill('SIGINT');
    const r = await run.done;
    expect(r.code).toBe(10);
    const objs = objects(r.stdout);
    expect(objs.at(-2)).toMatchObject({ type: 'phase', phase: 'suspended' });
    expect(objs.at(-1)).toMatchObject({ type: 'error', state: 'suspended', error: { code: 'InterruptedError' } });
  });

  it.each([
    [['download', '--json', '--bogus']],
    [['download', '--json']],
    [['upload', '--json', '/nonexistent/file', 'http://127.0.0.1:1/x']],
    [['status', 'zzzzzz', '--json']],
  ])('a usage or lookup error under --json is one final JSON object on stdout: %j', async (args) => {
    const r = await runBits(args, { env });
    expect(r.code).not.toBe(0);
    const objs = objects(r.stdout);
    expect(objs).toHaveLength(1);
    expect(objs[0]).toMatchObject({ type: 'error', state: 'error', jobId: null, error: { exitCode: r.code } });
  });

  it('numbers are numbers: the stored transport of a job, as status --json shows it', async () => {
    const r = await runBits(['upload', path.join(work, 'root', 'small.bin'), `${server.url}/up/s.bin`, '--json', '--connect-timeout', '30', '--request-timeout', '60'], { env });
    expect(r.code, r.stderr).toBe(0);
    const id = String(objects(r.stdout).at(-1)!.jobId);
    const job = objects((await runBits(['status', id, '--json'], { env })).stdout)[0]!;
    expect(job.transport).toMatchObject({ connectTimeoutMs: 30_000, requestTimeoutMs: 60_000 });
    // list, clean and config print their own objects; the runner validates them too.
    for (const args of [['list', '--all', '--json'], ['config', 'list', '--json'], ['config', 'get', 'fragment-size', '--json'], ['clean', '--json']]) {
      const out = await runBits(args, { env });
      expect(out.code, out.stderr).toBe(0);
      expect(objects(out.stdout).length).toBeGreaterThan(0);
    }
  });

  it('the validator rejects what the schema forbids (so the runner\'s check can fail)', () => {
    const schema = loadEventsSchema();
    const final = { type: 'error', time: new Date().toISOString(), jobId: 'abc123', state: 'error', bytes: 0, error: null };
    expect(validate(schema, final)).toEqual([]);
    expect(validate(schema, { ...final, state: 'failed' })).not.toEqual([]);
    expect(validate(schema, { ...final, bytes: '0' })).not.toEqual([]);
    expect(validate(schema, { ...final, extra: 1 })).not.toEqual([]);
    expect(validate(schema, { type: 'progress', time: final.time, bytesDone: 1.5, bytesPerSecond: 0 })).not.toEqual([]);
    expect(validate(schema, { type: 'nonsense', time: final.time })).not.toEqual([]);
    const job = { type: 'job', id: 'abc123', kind: 'upload', state: 'queued', bytesDone: 0, source: 'a', destination: 'b', createdAt: final.time, updatedAt: final.time, running: false, resumable: true };
    expect(validate(schema, { ...job, transport: { connectTimeoutMs: 30_000 } })).toEqual([]);
    expect(validate(schema, { ...job, transport: { connectTimeoutMs: '30' } })).not.toEqual([]);
    expect(checkJsonLines('{"type":"info"}\nnot json\n')).toHaveLength(2);
  });

  it('every event type a transfer emits occurred above', () => {
    for (const t of ['start', 'phase', 'progress', 'retry', 'resync', 'info', 'warning', 'complete', 'error', 'job', 'summary']) expect([...seen]).toContain(t);
  });
});
