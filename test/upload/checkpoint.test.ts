/**
 * The one upload checkpoint (src/protocol/uploader.ts UploadCheckpoint): the
 * uploader's snapshot is what the client reports and what the store keeps, and
 * a record written by the previous release (sessionId, confirmedOffset, …) is
 * still read (upgradeUploadCheckpoint).
 */
import { describe, expect, it } from 'vitest';
import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import { upgradeUploadCheckpoint, validateJob, type Job, type UploadCheckpoint } from '../../src/store/index.js';
import { newUploadCheckpoint, uploadFile } from '../../src/client/upload.js';
import { startServer } from '../../src/server/index.js';
import { makeRandomFile, makeTempDir, sha256File } from '../helpers/files.js';

const NOW = '2026-01-02T03:04:05.000Z';
const cp: UploadCheckpoint = {
  bitsSessionId: '{0A1B2C3D-0000-4000-8000-000000000001}',
  bytesTransferred: 196_608,
  highWaterMark: 262_144,
  bitsHostId: null,
  bitsHostIdFallbackTimeout: 0xffffffff,
  hostIdFallbackDeadline: null,
  fragmentSize: 65_536,
  replyUrl: null,
  sourceEntityName: 'a.bin',
  sourceEntitySize: 1_000_000,
  sourceMtimeMs: 1_700_000_000_123.456,
};
const job = (upload: unknown): Job =>
  ({ id: 'abc234', kind: 'upload', source: '/x', destination: 'http://127.0.0.1:8080/up/a.bin', state: 'transferring', bytesDone: 0, createdAt: NOW, updatedAt: NOW, upload }) as Job;

describe('UploadCheckpoint in the store', () => {
  it('is stored as is: passes the validator and reads back identical', () => {
    const back = validateJob(JSON.parse(JSON.stringify(job(cp))));
    expect(back.upload).toEqual(cp);
    expect(upgradeUploadCheckpoint(back.upload)).toEqual(cp);
  });

  it('host id, fallback deadline and reply URL survive', () => {
    const withHost = { ...cp, bitsHostId: '127.0.0.2', bitsHostIdFallbackTimeout: 60, hostIdFallbackDeadline: 1_800_000_000_000, replyUrl: 'http://127.0.0.1/r' };
    expect(() => validateJob(JSON.parse(JSON.stringify(job(withHost))))).not.toThrow();
    expect(upgradeUploadCheckpoint(JSON.parse(JSON.stringify(withHost)))).toEqual(withHost);
  });

  it('reads a record of the previous release (sessionId, confirmedOffset, hostIdFallbackDeadlineMs, contentName)', () => {
    const old = {
      sourceSize: 1_000_000,
      sourceMtimeMs: 1_700_000_000_123.456,
      confirmedOffset: 196_608,
      fragmentSize: 65_536,
      contentName: 'a.bin',
      hostIdFallbackTimeout: 60,
      sessionId: '{0A1B2C3D-0000-4000-8000-000000000001}',
      hostId: '127.0.0.2',
      hostIdFallbackDeadlineMs: 1_800_000_000_000,
      replyFile: '/tmp/reply.bin',
    };
    expect(() => validateJob(job(old))).not.toThrow();
    expect(upgradeUploadCheckpoint(old)).toEqual({
      ...cp,
      highWaterMark: 196_608,
      bitsHostId: '127.0.0.2',
      bitsHostIdFallbackTimeout: 60,
      hostIdFallbackDeadline: 1_800_000_000_000,
    });
  });

  it('a record from before CREATE-SESSION was saved has no session; one without a source identity is nothing', () => {
    expect(upgradeUploadCheckpoint({ sourceSize: 10, sourceMtimeMs: 1, fragmentSize: 65536 })).toMatchObject({ bitsSessionId: null, bytesTransferred: 0, sourceEntitySize: 10 });
    expect(upgradeUploadCheckpoint({ sessionId: '{x}' })).toBeUndefined();
    expect(upgradeUploadCheckpoint(undefined)).toBeUndefined();
  });

  it('a previous-release record resumes the same session against bits serve and ends sha256-identical', async () => {
    const tmp = await makeTempDir('bits-cp-');
    const root = join(tmp.dir, 'root');
    await fsp.mkdir(join(root, 'up'), { recursive: true });
    const server = await startServer({ root, port: 0 });
    try {
      const file = join(tmp.dir, 'legacy.bin');
      await makeRandomFile(file, 5 * 65_536 + 9);
      const ac = new AbortController();
      let saved: UploadCheckpoint | undefined;
      await uploadFile({
        file, url: `${server.url}/up/legacy.bin`, fragmentSize: 65_536, signal: ac.signal,
        onCheckpoint: (c) => {
          saved = c;
          if (c.bytesTransferred >= 2 * 65_536) ac.abort();
        },
      }).catch(() => undefined);
      // The same state under the previous release's names.
      const legacy = {
        sourceSize: saved!.sourceEntitySize, sourceMtimeMs: saved!.sourceMtimeMs, confirmedOffset: saved!.bytesTransferred,
        fragmentSize: saved!.fragmentSize, contentName: saved!.sourceEntityName, hostIdFallbackTimeout: 0xffffffff, sessionId: saved!.bitsSessionId,
      };
      const seen: UploadCheckpoint[] = [];
      await uploadFile({ file, url: `${server.url}/up/legacy.bin`, resume: legacy as unknown as UploadCheckpoint, onCheckpoint: (c) => void seen.push(c) });
      expect(seen.every((c) => c.bitsSessionId === saved!.bitsSessionId)).toBe(true);
      expect(await sha256File(join(root, 'up', 'legacy.bin'))).toBe(await sha256File(file));
      // What a job store writes before the first request: no session, the source identity.
      expect(await newUploadCheckpoint(file, 65_536)).toMatchObject({ bitsSessionId: null, sourceEntityName: 'legacy.bin', sourceEntitySize: 5 * 65_536 + 9 });
    } finally {
      await server.close();
      await tmp.cleanup();
    }
  });
});
