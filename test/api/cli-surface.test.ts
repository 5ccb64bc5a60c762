/**
 * The API calls the CLI is a thin client of (bits suspend, resume, wait, the
 * background queue, download -o -, serve): each against a real server on
 * 127.0.0.1, real files, sha256 of what arrived. A job run by another
 * process is a real `bits upload` child; the agent is the real `bits agent`.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createHash } from 'node:crypto';
import { writeFile, mkdir } from 'node:fs/promises';
import path from 'node:path';
import { Writable } from 'node:stream';
import { AuthError, InterruptedError, ServerError, UsageError, createUpload, downloadToStream, jobs, loadServeConfig, serve, upload, type Server, type TransferEvent } from '../../src/api.js';
import { makeRandomFile, makeTempDir, sha256File } from '../helpers/files.js';
import { ensureBuilt, startBits } from '../helpers/cli.js';
import { stopAgent } from '../agent/helpers.js';

let tmp: { dir: string; cleanup: () => Promise<void> };
let server: Server;
let root: string;
let home: string;

beforeAll(async () => {
  ensureBuilt();
  tmp = await makeTempDir('bits-api-cli-');
  root = path.join(tmp.dir, 'root');
  home = path.join(tmp.dir, 'home');
  await mkdir(root);
  server = await serve({ root });
});

afterAll(async () => {
  await stopAgent(home);
  await server?.close();
  await tmp?.cleanup();
});

/** A Writable that hashes what it is given, as a pipe to sha256sum would. */
function hashSink(): { stream: Writable; digest(): string; bytes(): number } {
  const h = createHash('sha256');
  let n = 0;
  const stream = new Writable({
    write(chunk: Buffer, _enc, cb) {
      h.update(chunk);
      n += chunk.length;
      cb();
    },
  });
  return { stream, digest: () => h.digest('hex'), bytes: () => n };
}

describe('downloadToStream (bits download -o -)', () => {
  it('writes the bytes in order to a Writable: the same sha256 as the file, verified with sha256, no job stored', async () => {
    const src = await makeRandomFile(path.join(root, 's.bin'), 3 * 1024 * 1024 + 17, 21);
    const want = await sha256File(src);
    const sink = hashSink();
    const events: TransferEvent[] = [];
    const before = (await jobs.list({ home })).length;
    const r = await downloadToStream({ url: `${server.url}/s.bin`, to: sink.stream, sha256: want, fragmentSize: 1024 * 1024, onEvent: (e) => events.push(e) });
    expect(r.bytes).toBe(3 * 1024 * 1024 + 17);
    expect(r.sha256).toBe(want);
    expect(sink.bytes()).toBe(r.bytes);
    expect(sink.digest()).toBe(want);
    expect(events.at(-1)?.type).toBe('complete');
    expect((await jobs.list({ home })).length).toBe(before);
    // A missing file is the server's refusal, typed.
    await expect(downloadToStream({ url: `${server.url}/none.bin`, to: hashSink().stream })).rejects.toBeInstanceOf(ServerError);
  });
});

describe('serve with the options bits serve passes', () => {
  it('a --config file (loadServeConfig), Basic auth, limits and ack durability: uploads with the password arrive sha256-identical, without it AuthError, a read-only folder refuses', async () => {
    const cfgFile = path.join(tmp.dir, 'serve.json');
    await writeFile(cfgFile, JSON.stringify({ directories: { '/ro': { uploadsEnabled: false } }, limits: { maxSessions: 50 } }));
    const cfg = await loadServeConfig(cfgFile);
    expect(cfg.directories?.['/ro']?.uploadsEnabled).toBe(false);
    await expect(loadServeConfig(path.join(tmp.dir, 'none.json'))).rejects.toThrow(/none\.json/);
    const r2 = path.join(tmp.dir, 'root2');
    await mkdir(r2);
    const lines: string[] = [];
    const s = await serve({ ...cfg, root: r2, host: '127.0.0.1', port: 0, limits: { ...cfg.limits, maxFragmentBytes: 256 * 1024 }, durability: { mode: 'ack' }, basicAuth: { user: 'alice', password: 'pw:1' }, log: (l) => lines.push(l) });
    try {
      expect(s.url).toBe(`http://127.0.0.1:${s.port}`);
      const src = await makeRandomFile(path.join(tmp.dir, 'auth.bin'), 700 * 1024, 22);
      const ok = await upload({ file: src, url: `${s.url}/in/auth.bin`, fragmentSize: 128 * 1024, home, transport: { user: 'alice' }, secrets: { password: 'pw:1' } });
      expect(ok.job.state).toBe('complete');
      expect(await sha256File(path.join(r2, 'in', 'auth.bin'))).toBe(await sha256File(src));
      expect(lines.length).toBeGreaterThan(0);
      await expect(upload({ file: src, url: `${s.url}/in/noauth.bin`, home })).rejects.toBeInstanceOf(AuthError);
      await expect(upload({ file: src, url: `${s.url}/ro/x.bin`, home, transport: { user: 'alice' }, secrets: { password: 'pw:1' } })).rejects.toBeInstanceOf(ServerError);
    } finally {
      await s.close();
    }
    // Closed means closed: the port no longer answers.
    await expect(fetch(`${s.url}/`, { signal: AbortSignal.timeout(5000) })).rejects.toThrow();
  });
});

describe('jobs.suspend / resumable / prepareResume / queue / dequeue / waitAll', () => {
  it('suspends an upload another process (a real bits upload) is running; jobs.resume here finishes it sha256-identical', async () => {
    const src = await makeRandomFile(path.join(tmp.dir, 'susp.bin'), 2 * 1024 * 1024, 23);
    const child = startBits(['upload', '--json', '--fragment-size', '64K', '--limit-rate', '300K', src, `${server.url}/up/susp.bin`], { env: { BITS_HOME: home } });
    await child.waitFor(/"type":"progress"/, 'stdout', 20_000);
    const id = (JSON.parse(child.stdout.split('\n').find((l) => l.includes('"type":"start"'))!) as { jobId: string }).jobId;
    // Uploads checkpoint about once a second: wait for one, so the resume below has an offset to start at.
    let running = await jobs.get(id, { home });
    for (let i = 0; i < 200 && running.bytesDone === 0; i++) {
      await new Promise((r) => setTimeout(r, 100));
      running = await jobs.get(id, { home });
    }
    expect(running.bytesDone).toBeGreaterThan(0);
    expect(running.runnerAlive).toBe(true);
    // Another process runs it: resume refuses, and says why.
    await expect(jobs.resumable(id, { home })).rejects.toBeInstanceOf(UsageError);
    const r = await jobs.suspend(id, { home, timeoutMs: 15_000 });
    expect(r.stoppedPid).toBe(child.child.pid);
    expect(r.job.effectiveState).toBe('suspended');
    expect((await child.done).code).toBe(10);
    const stoppedAt = r.job.bytesDone;
    expect(stoppedAt).toBeLessThan(2 * 1024 * 1024);
    let resumedAt = -1;
    const done = await jobs.resume(id, { home, onEvent: (e) => e.type === 'start' && (resumedAt = e.resumedAt ?? 0) });
    expect(done.state).toBe('complete');
    expect(resumedAt).toBeGreaterThan(0);
    expect(await sha256File(path.join(root, 'up', 'susp.bin'))).toBe(await sha256File(src));
    // Finished: nothing to suspend, nothing to resume.
    await expect(jobs.suspend(id, { home })).rejects.toBeInstanceOf(UsageError);
    await expect(jobs.resumable(id, { home })).rejects.toThrow(/already complete/);
  });

  it('a job nobody runs is suspended at once; prepareResume stores a transport override; queue and dequeue change only its place in the agent queue', async () => {
    const src = await makeRandomFile(path.join(tmp.dir, 'q.bin'), 300 * 1024, 24);
    const job = await createUpload({ file: src, url: `${server.url}/up/q.bin`, home });
    const s = await jobs.suspend(job.id, { home });
    expect(s.stoppedPid).toBeUndefined();
    expect(s.job.state).toBe('suspended');
    expect((await jobs.list({ home, only: 'resumable' })).map((j) => j.id)).toContain(job.id);
    const q = await jobs.queue(job.id, { home, priority: 'low', notify: { onComplete: 'true' }, backgroundTimeoutMs: 60_000, transport: { connectTimeoutMs: 7000 }, startAgent: false });
    expect(q.agent).toBeUndefined();
    expect(q.job).toMatchObject({ state: 'queued', priority: 'low', notify: { onComplete: 'true' }, transport: { connectTimeoutMs: 7000 } });
    expect(jobs.backgroundTimeoutOf(q.job)).toBe(60_000);
    const d = await jobs.dequeue(job.id, { home });
    expect(d.priority).toBeUndefined();
    const { job: prepared, prepared: transport } = await jobs.prepareResume(job.id, { home, transport: { limitRateBytesPerSec: 10 * 1024 * 1024 } });
    expect(prepared.transport?.limitRateBytesPerSec).toBe(10 * 1024 * 1024);
    expect(prepared.transport?.connectTimeoutMs).toBe(7000);
    const done = await jobs.run(job.id, { home, prepared: transport });
    expect(done.state).toBe('complete');
    expect(await sha256File(path.join(root, 'up', 'q.bin'))).toBe(await sha256File(src));
    expect(jobs.exitCodeOf(done)).toBe(0);
    expect(jobs.worstExitCode([0, 5, 10])).toBe(10);
  });

  it('queue hands a job to a real bits agent; waitAll with agent: true reports start/progress/complete and ends it sha256-identical', async () => {
    const src = await makeRandomFile(path.join(tmp.dir, 'bg.bin'), 1024 * 1024, 25);
    const job = await createUpload({ file: src, url: `${server.url}/up/bg.bin`, fragmentSize: 64 * 1024, home, transport: { limitRateBytesPerSec: 1024 * 1024 } });
    const q = await jobs.queue(job.id, { home });
    expect(q.job.priority).toBe('normal');
    expect(q.agent?.pid).toBeGreaterThan(0);
    expect((await jobs.ensureAgent({ home })).started).toBe(false);
    const events: TransferEvent['type'][] = [];
    const ended: string[] = [];
    const [j] = await jobs.waitAll([job.id], { home, agent: true, timeoutMs: 30_000, pollMs: 50, onEvent: (e) => events.push(e.type), onEnd: (x) => ended.push(x.id) });
    expect(j!.state).toBe('complete');
    // The agent that ran it is still up (it exits once idle for 10 s) and holds the store's lock.
    expect(await jobs.agentPid({ home })).toBeGreaterThan(0);
    expect(ended).toEqual([job.id]);
    expect(events[0]).toBe('start');
    expect(events).toContain('progress');
    expect(events.at(-1)).toBe('complete');
    expect(await sha256File(path.join(root, 'up', 'bg.bin'))).toBe(await sha256File(src));
    expect((await jobs.list({ home, only: 'unfinished' })).map((x) => x.id)).not.toContain(job.id);
  });

  it('waitAll: a timeout is an InterruptedError and a signal stops only the waiting; the job is left as it was', async () => {
    const src = await makeRandomFile(path.join(tmp.dir, 'w.bin'), 64 * 1024, 26);
    const job = await createUpload({ file: src, url: `${server.url}/up/w.bin`, home });
    // Queued and nobody runs it: a plain wait waits for someone to.
    await expect(jobs.waitAll([job.id], { home, timeoutMs: 300, pollMs: 20 })).rejects.toBeInstanceOf(InterruptedError);
    const ctl = new AbortController();
    setTimeout(() => ctl.abort(new Error('enough')), 200);
    await expect(jobs.wait(job.id, { home, pollMs: 20, signal: ctl.signal })).rejects.toThrow('enough');
    expect((await jobs.get(job.id, { home })).state).toBe('queued');
    // As bits wait: a foreground job no process runs ends the wait at once.
    expect((await jobs.wait(job.id, { home, agent: true, timeoutMs: 5000 })).state).toBe('queued');
    await jobs.cancel(job.id, { home });
  });
});
