/**
 * The programmatic API (src/api.ts) against its own embedded serve(): real
 * files, real sockets on loopback, sha256 of what arrived, a real 503 from a
 * fault proxy for the retry event, a real abort and resume.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { existsSync } from 'node:fs';
import { upload, download, createUpload, createDownload, prepareTransport, serve, jobs, BitsError, CancelledError, InterruptedError, LocalFileError, ServerError, type Server, type TransferEvent } from '../../src/api.js';
import { makeRandomFile, makeTempDir, sha256File } from '../helpers/files.js';
import { startFaultProxy, type FaultProxy } from '../helpers/fault-proxy.js';
import { ensureBuilt, ROOT } from '../helpers/cli.js';

let tmp: { dir: string; cleanup: () => Promise<void> };
let server: Server;
let root: string;
let home: string;

beforeAll(async () => {
  tmp = await makeTempDir('bits-api-');
  root = path.join(tmp.dir, 'root');
  home = path.join(tmp.dir, 'home');
  const { mkdir } = await import('node:fs/promises');
  await mkdir(root);
  server = await serve({ root });
});

afterAll(async () => {
  await server?.close();
  await tmp?.cleanup();
});

describe('upload / download / serve', () => {
  it('uploads and downloads through serve(), sha256-identical, with start/phase/progress/retry/complete events', async () => {
    const src = await makeRandomFile(path.join(tmp.dir, 'a.bin'), 2 * 1024 * 1024 + 5, 7);
    const u = new URL(server.url);
    // The second request (the first FRAGMENT) gets a bare 503: a transient failure the client retries.
    const proxy: FaultProxy = await startFaultProxy({ target: { host: u.hostname, port: Number(u.port) }, decide: (r) => (r.index === 1 ? { type: 'status', status: 503 } : undefined) });
    try {
      const events: TransferEvent[] = [];
      const up = await upload({ file: src, url: `http://127.0.0.1:${proxy.port}/up/a.bin`, fragmentSize: 512 * 1024, home, onEvent: (e) => events.push(e) });
      expect(up.job.state).toBe('complete');
      expect(up.bytes).toBe(2 * 1024 * 1024 + 5);
      const types = new Set(events.map((e) => e.type));
      for (const t of ['start', 'phase', 'progress', 'retry', 'complete']) expect(types, t).toContain(t);
      expect(events.at(-1)?.type).toBe('complete');
      const retry = events.find((e) => e.type === 'retry');
      expect(retry && retry.type === 'retry' && retry.reason).toMatch(/503/);
      // Progress never goes back and never passes the size.
      const done = events.flatMap((e) => (e.type === 'progress' ? [e.bytesDone] : []));
      expect(done).toEqual([...done].sort((a, b) => a - b));
      expect(Math.max(...done)).toBe(up.bytes);

      const devents: TransferEvent[] = [];
      const out = path.join(tmp.dir, 'a.copy');
      const d = await download({ url: `${server.url}/up/a.bin`, output: out, home, onEvent: (e) => devents.push(e) });
      expect(d.destination).toBe(out);
      expect(await sha256File(out)).toBe(await sha256File(src));
      expect(devents.map((e) => e.type)).toContain('start');
      expect(devents.at(-1)?.type).toBe('complete');
      const listed = await jobs.list({ home });
      expect(listed.map((j) => j.id)).toEqual(expect.arrayContaining([up.job.id, d.job.id]));
    } finally {
      await proxy.close();
    }
  });

  it('an AbortSignal suspends the job; jobs.resume continues it from the checkpoint; jobs.wait sees it complete', async () => {
    const src = await makeRandomFile(path.join(tmp.dir, 'b.bin'), 1024 * 1024, 8);
    const ctl = new AbortController();
    let id = '';
    const err = await upload({
      file: src,
      url: `${server.url}/up/b.bin`,
      fragmentSize: 64 * 1024,
      home,
      transport: { limitRateBytesPerSec: 256 * 1024 },
      onJob: (j) => (id = j.id),
      onEvent: (e) => {
        if (e.type === 'progress' && e.bytesDone >= 128 * 1024) ctl.abort();
      },
      signal: ctl.signal,
    }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(InterruptedError);
    const stopped = await jobs.get(id, { home });
    expect(stopped.effectiveState).toBe('suspended');
    // The checkpoint written before the stop: at least one acknowledged fragment, not the whole file.
    expect(stopped.bytesDone).toBeGreaterThanOrEqual(64 * 1024);
    expect(stopped.bytesDone).toBeLessThan(1024 * 1024);

    let resumedAt: number | undefined;
    const done = await jobs.resume(id.slice(0, 4), { home, onEvent: (e) => void (e.type === 'start' && (resumedAt = e.resumedAt)) });
    expect(done.state).toBe('complete');
    expect(resumedAt).toBe(stopped.bytesDone);
    expect(await sha256File(path.join(root, 'up', 'b.bin'))).toBe(await sha256File(src));
    expect((await jobs.wait(id, { home, timeoutMs: 5000 })).state).toBe('complete');
  });

  it('jobs.cancel removes a suspended upload; errors are typed BitsErrors', async () => {
    const src = await makeRandomFile(path.join(tmp.dir, 'c.bin'), 256 * 1024, 9);
    const ctl = new AbortController();
    ctl.abort();
    let id = '';
    await expect(upload({ file: src, url: `${server.url}/up/c.bin`, home, onJob: (j) => (id = j.id), signal: ctl.signal })).rejects.toBeInstanceOf(InterruptedError);
    const r = await jobs.cancel(id, { home });
    expect(r.job.state).toBe('cancelled');
    await expect(jobs.resume(id, { home })).rejects.toThrow(/cancelled/);

    const missing = await upload({ file: path.join(tmp.dir, 'nope.bin'), url: `${server.url}/up/x`, home }).catch((e: unknown) => e);
    expect(missing).toBeInstanceOf(LocalFileError);
    expect((missing as BitsError).exitCode).toBe(3);
    const notFound = await download({ url: `${server.url}/absent.bin`, output: path.join(tmp.dir, 'absent'), home }).catch((e: unknown) => e);
    expect(notFound).toBeInstanceOf(ServerError);
    expect((notFound as ServerError).httpStatus).toBe(404);
    expect((notFound as BitsError).disposition).toBe('fail');
  });
});

describe('stored jobs run later (what the CLI is built on)', () => {
  it('createUpload stores a queued job; jobs.run runs it, an abort suspends it, run again finishes it; clean forgets it', async () => {
    const src = await makeRandomFile(path.join(tmp.dir, 'd.bin'), 1024 * 1024, 10);
    // One transport for both calls: its passwords (none here) asked once.
    const prepared = prepareTransport({ limitRateBytesPerSec: 256 * 1024 });
    await prepared.askPasswords();
    const job = await createUpload({ file: src, url: `${server.url}/up/d.bin`, fragmentSize: 64 * 1024, home, prepared });
    expect((await jobs.get(job.id, { home })).state).toBe('queued');
    // Stored with the job, so a resume in another process reaches the server the same way.
    expect(job.transport).toEqual({ limitRateBytesPerSec: 256 * 1024 });
    expect(existsSync(path.join(root, 'up', 'd.bin'))).toBe(false);

    const ctl = new AbortController();
    const err = await jobs
      .run(job.id, { home, prepared, signal: ctl.signal, onEvent: (e) => void (e.type === 'progress' && e.bytesDone >= 128 * 1024 && ctl.abort()) })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(InterruptedError);
    expect((await jobs.get(job.id, { home })).effectiveState).toBe('suspended');

    const types: string[] = [];
    const done = await jobs.run(job.id, { home, onEvent: (e) => types.push(e.type) });
    expect(done.state).toBe('complete');
    expect(types.at(-1)).toBe('complete');
    expect(await sha256File(path.join(root, 'up', 'd.bin'))).toBe(await sha256File(src));

    const removed = await jobs.clean({ home });
    expect(removed.map((j) => j.id)).toContain(job.id);
    await expect(jobs.get(job.id, { home })).rejects.toThrow(/no job/i);
  });

  it('jobs.cancelNow after an aborted download: CancelledError, the job cancelled, the partial file removed', async () => {
    await makeRandomFile(path.join(root, 'e.bin'), 1024 * 1024, 11);
    const out = path.join(tmp.dir, 'e.copy');
    const job = await createDownload({ url: `${server.url}/e.bin`, output: out, home, transport: { limitRateBytesPerSec: 256 * 1024 } });
    expect(job.state).toBe('queued');
    const ctl = new AbortController();
    await expect(
      jobs.run(job.id, { home, signal: ctl.signal, onEvent: (e) => void (e.type === 'progress' && e.bytesDone >= 64 * 1024 && ctl.abort()) }),
    ).rejects.toBeInstanceOf(InterruptedError);
    const e = await jobs.cancelNow(job.id, { home });
    expect(e).toBeInstanceOf(CancelledError);
    expect((await jobs.get(job.id, { home })).state).toBe('cancelled');
    expect(existsSync(out)).toBe(false);
  });
});

describe('examples/', () => {
  beforeAll(() => ensureBuilt());
  // The examples import 'bits-transfer' by name: the package's self-reference through its exports map, built dist/.
  it.each(['upload-download.mjs', 'abort-resume.mjs'])('%s runs and reports identical files', (name) => {
    const file = path.join(ROOT, 'examples', name);
    expect(existsSync(file)).toBe(true);
    const r = spawnSync(process.execPath, [file], { cwd: ROOT, encoding: 'utf8', timeout: 30_000 });
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    const out = JSON.parse(r.stdout.trim().split('\n').at(-1)!);
    if (name === 'upload-download.mjs') {
      expect(out.copy).toBe(out.source);
      expect(out.events).toEqual(expect.arrayContaining(['start', 'progress', 'complete']));
    } else {
      expect(out).toMatchObject({ afterAbort: 'suspended', final: 'complete', identical: true });
      expect(out.resumedAt).toBe(out.bytesAtAbort);
    }
  });
});
