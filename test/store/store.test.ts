import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { openJobStore, InvalidTransitionError, type Job, type JobStore } from '../../src/store/index.js';
import { StoreError, UsageError } from '../../src/errors.js';

let home: string;
let file: string;

beforeEach(() => {
  home = fs.mkdtempSync(path.join(os.tmpdir(), 'bits-store-'));
  file = path.join(home, 'jobs.json');
});
afterEach(() => {
  fs.rmSync(home, { recursive: true, force: true });
});

const upload = (n = 0) => ({ kind: 'upload' as const, source: `/data/file-${n}.iso`, destination: `https://127.0.0.1/up/file-${n}.iso`, totalBytes: 1000 });

/** A pid that certainly belongs to no process: one that just exited. */
function deadPid(): number {
  const r = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'], { encoding: 'utf8' });
  return Number(r.stdout);
}

async function expectStoreError(p: Promise<unknown>): Promise<StoreError> {
  const err = await p.then(() => undefined, (e: unknown) => e);
  expect(err).toBeInstanceOf(StoreError);
  const e = err as StoreError;
  expect(e.exitCode).toBe(8);
  expect(e.message).not.toContain('\n');
  expect(e.message).toContain(file);
  return e;
}

describe('job store: records', () => {
  it('creates jobs with short typeable unique ids, defaults and timestamps, and reads them back', async () => {
    const store = await openJobStore({ home });
    expect(store.path).toBe(file);
    expect(fs.existsSync(file)).toBe(false); // nothing written until the first mutation
    const a = await store.create(upload(1));
    expect(a.id).toMatch(/^[0-9a-hjkmnp-tv-z]{6}$/);
    expect(a).toMatchObject({ kind: 'upload', state: 'queued', bytesDone: 0, totalBytes: 1000 });
    expect(Date.parse(a.createdAt)).not.toBeNaN();
    expect(a.updatedAt).toBe(a.createdAt);
    const ids = new Set([a.id]);
    for (let i = 0; i < 30; i++) ids.add((await store.create(upload(i))).id);
    expect(ids.size).toBe(31);
    // A second handle (another process would do the same) sees everything.
    const again = await openJobStore({ home });
    expect((await again.list()).map((j) => j.id).sort()).toEqual([...ids].sort());
    expect(await again.get(a.id)).toEqual(a);
    const text = fs.readFileSync(file, 'utf8');
    expect(JSON.parse(text).schemaVersion).toBe(1);
    expect(text.endsWith('\n')).toBe(true);
    if (process.platform !== 'win32') expect(fs.statSync(file).mode & 0o777).toBe(0o600);
  });

  it('list() is oldest first', async () => {
    const store = await openJobStore({ home });
    const made: Job[] = [];
    for (let i = 0; i < 5; i++) made.push(await store.create(upload(i)));
    expect((await store.list()).map((j) => j.source)).toEqual(made.map((j) => j.source));
  });

  it('get() takes a unique prefix of 3+ characters, case-insensitively; unknown, short and ambiguous ids are usage errors (exit 2)', async () => {
    const now = new Date().toISOString();
    const job = (id: string) => ({ id, kind: 'download', source: 'https://127.0.0.1/f', destination: '/tmp/f', state: 'queued', bytesDone: 0, createdAt: now, updatedAt: now });
    fs.writeFileSync(file, JSON.stringify({ schemaVersion: 1, jobs: { abc123: job('abc123'), abc456: job('abc456'), xyz789: job('xyz789') } }));
    const store = await openJobStore({ home });
    expect((await store.get('xyz')).id).toBe('xyz789');
    expect((await store.get('XYZ7')).id).toBe('xyz789');
    expect((await store.get(' abc123 ')).id).toBe('abc123');
    const fail = async (id: string) => {
      const e = await store.get(id).then(() => undefined, (x: unknown) => x);
      expect(e).toBeInstanceOf(UsageError);
      expect((e as UsageError).exitCode).toBe(2);
      expect((e as Error).message).not.toContain('\n');
      return (e as Error).message;
    };
    expect(await fail('abc')).toMatch(/ambiguous.*abc123, abc456/);
    expect(await fail('xy')).toMatch(/too short/);
    expect(await fail('qqqqqq')).toMatch(/no job "qqqqqq"/);
    expect(await fail('')).toMatch(/required/);
  });

  it('update() patches (undefined deletes a field), accepts a function, bumps updatedAt, keeps id/kind/createdAt', async () => {
    const store = await openJobStore({ home });
    const a = await store.create({ ...upload(), lastError: { code: 'TransportError', exitCode: 4, message: 'reset', resumable: true } });
    await new Promise((r) => setTimeout(r, 5));
    const b = await store.update(a.id.slice(0, 4), { state: 'transferring', bytesDone: 10, lastError: undefined, upload: { sessionId: '{1}', confirmedOffset: 10 } });
    expect(b).toMatchObject({ id: a.id, state: 'transferring', bytesDone: 10, upload: { sessionId: '{1}', confirmedOffset: 10 } });
    expect(b.lastError).toBeUndefined();
    expect(b.updatedAt > a.updatedAt).toBe(true);
    expect(b.createdAt).toBe(a.createdAt);
    const c = await store.update(a.id, (j) => ({ ...j, bytesDone: j.bytesDone * 3, upload: { ...j.upload, confirmedOffset: 30 } }));
    expect(c).toMatchObject({ bytesDone: 30, upload: { sessionId: '{1}', confirmedOffset: 30 } });
    expect(await store.get(a.id)).toEqual(c);
    await expect(store.update(a.id, (j) => ({ ...j, kind: 'download' }))).rejects.toThrow(/cannot change/);
    // A record the validator would reject is never written.
    await expect(store.update(a.id, { bytesDone: -1 })).rejects.toThrow(/bytesDone/);
    expect(await store.get(a.id)).toEqual(c);
  });

  it('enforces the lifecycle: complete and cancelled are terminal', async () => {
    const store = await openJobStore({ home });
    const a = await store.create(upload());
    await store.update(a.id, { state: 'transferring' });
    await store.update(a.id, { state: 'error' });
    await store.update(a.id, { state: 'transferring' });
    await store.update(a.id, { state: 'cancelled' });
    const err = await store.update(a.id, { state: 'transferring' }).then(() => undefined, (e: unknown) => e);
    expect(err).toBeInstanceOf(InvalidTransitionError);
    expect((err as InvalidTransitionError).exitCode).toBe(2);
    expect((err as Error).message).toBe(`job ${a.id} is cancelled; it cannot become transferring`);
    expect((await store.update(a.id, { state: 'cancelled' })).state).toBe('cancelled'); // idempotent
  });

  it('remove() and removeWhere()', async () => {
    const store = await openJobStore({ home });
    const jobs = [];
    for (let i = 0; i < 4; i++) jobs.push(await store.create(upload(i)));
    expect((await store.remove(jobs[0]!.id)).id).toBe(jobs[0]!.id);
    await expect(store.get(jobs[0]!.id)).rejects.toBeInstanceOf(UsageError);
    await expect(store.remove(jobs[0]!.id)).rejects.toBeInstanceOf(UsageError);
    const gone = await store.removeWhere((j) => j.source.endsWith('-2.iso') || j.source.endsWith('-3.iso'));
    // Jobs created within one millisecond are ordered by id, not by the loop: compare as sets.
    expect(gone.map((j) => j.id).sort()).toEqual([jobs[2]!.id, jobs[3]!.id].sort());
    expect((await store.list()).map((j) => j.id)).toEqual([jobs[1]!.id]);
  });

  it('never persists secrets: secret headers and URL passwords are dropped, credentials only by source', async () => {
    const store = await openJobStore({ home });
    const a = await store.create({
      kind: 'upload',
      source: '/data/x',
      destination: 'https://alice:s3cr3t-pw@127.0.0.1/up/x',
      options: { fragmentSize: 1 << 20, headers: { Authorization: 'Basic czNjcjN0', 'proxy-authorization': 'Basic czNjcjN0', 'X-Trace': 'yes', Accept: 'text/plain' } },
      credentialSource: { kind: 'prompt', user: 'alice' },
      upload: { replyUrl: 'https://bob:s3cr3t-pw@127.0.0.1/reply' },
    });
    expect(a.destination).toBe('https://alice@127.0.0.1/up/x');
    // Only headers known to be harmless keep their values (src/store/secrets.ts).
    expect(a.options?.headers).toEqual({ Accept: 'text/plain' });
    await store.update(a.id, { options: { headers: { Cookie: 'session=s3cr3t-pw' } } });
    const text = fs.readFileSync(file, 'utf8');
    expect(text).not.toContain('s3cr3t');
    expect(text).not.toContain('czNjcjN0');
    expect(text).toContain('"user": "alice"');
  });

  it('BITS_HOME selects the folder when no home is given', async () => {
    const saved = process.env.BITS_HOME;
    process.env.BITS_HOME = home;
    try {
      const store = await openJobStore();
      expect(store.path).toBe(file);
    } finally {
      if (saved === undefined) delete process.env.BITS_HOME;
      else process.env.BITS_HOME = saved;
    }
  });
});

describe('job store: damage is reported, never silently reset', () => {
  const valid = () => {
    const now = new Date().toISOString();
    return { schemaVersion: 1, jobs: { abc123: { id: 'abc123', kind: 'upload', source: '/a', destination: 'https://127.0.0.1/a', state: 'queued', bytesDone: 0, createdAt: now, updatedAt: now } } };
  };

  it('truncated JSON: StoreError naming the file, the position and the fix; the file is left as it was', async () => {
    const text = JSON.stringify(valid(), null, 2);
    const broken = text.slice(0, 120);
    fs.writeFileSync(file, broken);
    const e = await expectStoreError(openJobStore({ home }));
    expect(e.message).toMatch(/^job store .* is corrupt \(.*JSON.*\); move it aside to start afresh: mv /);
    expect(e.message).toContain(`${file}.bad`);
    expect(fs.readFileSync(file, 'utf8')).toBe(broken);
  });

  it('a store that goes bad after opening fails reads and updates the same way, without rewriting it', async () => {
    const store = await openJobStore({ home });
    const a = await store.create(upload());
    fs.writeFileSync(file, '{"schemaVersion":1,"jobs":{"x');
    await expectStoreError(store.list());
    await expectStoreError(store.get(a.id));
    await expectStoreError(store.update(a.id, { bytesDone: 1 }));
    await expectStoreError(store.create(upload()));
    expect(fs.readFileSync(file, 'utf8')).toBe('{"schemaVersion":1,"jobs":{"x');
    expect(fs.existsSync(`${file}.lock`)).toBe(false); // the failed mutation released its lock
  });

  it('a valid-JSON change by another writer after our own write is validated again, not taken from what we wrote', async () => {
    const store = await openJobStore({ home });
    const a = await store.create(upload());
    await store.get(a.id); // the text this store wrote: read without validating it again
    const data = JSON.parse(fs.readFileSync(file, 'utf8'));
    data.jobs[a.id].state = 'paused';
    fs.writeFileSync(file, JSON.stringify(data, null, '\t') + '\n');
    const e = await expectStoreError(store.get(a.id));
    expect(e.message).toMatch(/"state" is "paused"/);
    await expectStoreError(store.update(a.id, { bytesDone: 1 }));
  });

  it('empty file, non-object, wrong field types and unknown states fail schema validation with a precise reason', async () => {
    const cases: Array<[unknown, RegExp]> = [
      ['', /is corrupt \(the file is empty\)/],
      [[], /not valid \(the top level is an array, expected an object\)/],
      [{ jobs: {} }, /"schemaVersion" is missing/],
      [{ schemaVersion: 1, jobs: [] }, /"jobs" is an array/],
      [{ ...valid(), jobs: { abc123: { ...valid().jobs.abc123, state: 'paused' } } }, /job "abc123": "state" is "paused", expected one of queued\|transferring/],
      [{ ...valid(), jobs: { abc123: { ...valid().jobs.abc123, bytesDone: '12' } } }, /"bytesDone" is "12", expected a non-negative integer/],
      [{ ...valid(), jobs: { abc123: { ...valid().jobs.abc123, upload: [1] } } }, /"upload" is an array, expected a JSON object/],
      [{ ...valid(), jobs: { abc123: { ...valid().jobs.abc123, id: 'zzz999' } } }, /its "id" is "zzz999"/],
    ];
    for (const [content, re] of cases) {
      const text = typeof content === 'string' ? content : JSON.stringify(content);
      fs.writeFileSync(file, text);
      const e = await expectStoreError(openJobStore({ home }));
      expect(e.message).toMatch(re);
      expect(e.message).toMatch(/move it aside/);
      expect(fs.readFileSync(file, 'utf8')).toBe(text);
    }
  });

  it('a store from a newer bits asks for an upgrade', async () => {
    fs.writeFileSync(file, JSON.stringify({ schemaVersion: 2, jobs: {} }));
    const e = await expectStoreError(openJobStore({ home }));
    expect(e.message).toMatch(/written by a newer bits \(schema version 2; this bits reads version 1\); upgrade bits, or move it aside/);
  });

  it('an unreadable store (jobs.json is a directory) is a StoreError, not a crash', async () => {
    fs.mkdirSync(file);
    const e = await expectStoreError(openJobStore({ home }));
    expect(e.message).toMatch(/cannot be read \(EISDIR/);
    expect(fs.statSync(file).isDirectory()).toBe(true);
  });

  it('a BITS_HOME that cannot be a folder (below a file) is a StoreError', async () => {
    const blocker = path.join(home, 'plain-file');
    fs.writeFileSync(blocker, 'not a folder');
    const e = await openJobStore({ home: path.join(blocker, 'deeper') }).then(() => undefined, (x: unknown) => x);
    expect(e).toBeInstanceOf(StoreError);
    expect((e as StoreError).exitCode).toBe(8);
    expect((e as Error).message).toMatch(/^job store .*plain-file.* cannot be read \(ENOTDIR/);
    expect((e as Error).message).not.toContain('\n');
  });
});

describe('job store: lock and leftovers of killed processes', () => {
  const lockFile = () => `${file}.lock`;

  it('a lock left by a dead process is taken over at once', async () => {
    const store = await openJobStore({ home, lock: { timeoutMs: 2000 } });
    const a = await store.create(upload());
    fs.writeFileSync(lockFile(), JSON.stringify({ pid: deadPid(), host: os.hostname(), token: 'dead', acquiredAt: Date.now() }));
    expect((await store.update(a.id, { bytesDone: 5 })).bytesDone).toBe(5);
    expect(fs.existsSync(lockFile())).toBe(false);
  });

  it('a garbled lock (killed between create and write) is taken over once it is old', async () => {
    const store = await openJobStore({ home, lock: { timeoutMs: 5000 } });
    const a = await store.create(upload());
    fs.writeFileSync(lockFile(), '');
    const old = (Date.now() - 10_000) / 1000;
    fs.utimesSync(lockFile(), old, old);
    expect((await store.update(a.id, { bytesDone: 6 })).bytesDone).toBe(6);
  });

  it('a live holder makes others wait, then fail with a StoreError naming the lock; a too-old lock is stale even if its pid lives', async () => {
    const store = await openJobStore({ home, lock: { timeoutMs: 300, staleMs: 60_000 } });
    const a = await store.create(upload());
    fs.writeFileSync(lockFile(), JSON.stringify({ pid: process.pid, host: os.hostname(), token: 'live', acquiredAt: Date.now() }));
    const e = await expectStoreError(store.update(a.id, { bytesDone: 1 }));
    expect(e.message).toMatch(new RegExp(`is locked by pid ${process.pid} on .*; if no bits process is running, remove .*jobs\\.json\\.lock$`));
    expect((await store.get(a.id)).bytesDone).toBe(0); // reads need no lock
    const patient = await openJobStore({ home, lock: { timeoutMs: 5000, staleMs: 500 } });
    fs.writeFileSync(lockFile(), JSON.stringify({ pid: process.pid, host: os.hostname(), token: 'hung', acquiredAt: Date.now() - 1000 }));
    expect((await patient.update(a.id, { bytesDone: 2 })).bytesDone).toBe(2);
  });

  it('a waiter gets the lock as soon as the holder releases it', async () => {
    const store = await openJobStore({ home, lock: { timeoutMs: 5000 } });
    const a = await store.create(upload());
    fs.writeFileSync(lockFile(), JSON.stringify({ pid: process.pid, host: os.hostname(), token: 'brief', acquiredAt: Date.now() }));
    setTimeout(() => fs.rmSync(lockFile()), 150);
    expect((await store.update(a.id, { bytesDone: 3 })).bytesDone).toBe(3);
  });

  it('concurrent updates from one process are serialized (no lost update)', async () => {
    const store: JobStore = await openJobStore({ home });
    const a = await store.create(upload());
    await Promise.all(Array.from({ length: 40 }, () => store.update(a.id, (j) => ({ ...j, bytesDone: j.bytesDone + 1 }))));
    expect((await store.get(a.id)).bytesDone).toBe(40);
  });

  it('old temporary files of killed writers are removed on open; fresh ones are left alone', async () => {
    const store = await openJobStore({ home });
    await store.create(upload());
    const stale = `${file}.tmp-12345-deadbeef`;
    const fresh = `${file}.tmp-12346-deadbeef`;
    fs.writeFileSync(stale, '{"half');
    fs.writeFileSync(fresh, '{"half');
    const old = (Date.now() - 3600_000) / 1000;
    fs.utimesSync(stale, old, old);
    await openJobStore({ home });
    expect(fs.existsSync(stale)).toBe(false);
    expect(fs.existsSync(fresh)).toBe(true);
  });
});
