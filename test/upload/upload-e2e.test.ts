/**
 * End to end against the real `bits serve` (startServer) on loopback: the
 * uploaded file on the server is byte-identical (sha256) to the source.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { promises as fsp } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import { startServer, type RunningServer } from '../../src/server/index.js';
import { cancelUpload, DEFAULT_FRAGMENT_SIZE, uploadFile, type UploadCheckpoint } from '../../src/client/upload.js';
import { ExitCode, InterruptedError, ProtocolError, SourceChangedError } from '../../src/errors.js';
import type { TransferEvent } from '../../src/client/events.js';
import { makeRandomFile, makeTempDir, sha256File } from '../helpers/files.js';

const FRAG = 64 * 1024;

let tmp: { dir: string; cleanup: () => Promise<void> };
let root: string;
let src: string;
let server: RunningServer;

beforeAll(async () => {
  tmp = await makeTempDir('bits-upload-e2e-');
  root = join(tmp.dir, 'root');
  src = join(tmp.dir, 'src');
  await fsp.mkdir(join(root, 'up'), { recursive: true });
  await fsp.mkdir(src);
  server = await startServer({ root, port: 0 });
});

afterAll(async () => {
  await server?.close();
  await tmp?.cleanup();
});

async function roundTrip(name: string, size: number, urlPath: string, serverPath: string, fragmentSize: number | null = FRAG) {
  const file = join(src, name);
  await makeRandomFile(file, size);
  const events: TransferEvent[] = [];
  const cps: UploadCheckpoint[] = [];
  const r = await uploadFile({
    file,
    url: `${server.url}${urlPath}`,
    ...(fragmentSize !== null ? { fragmentSize } : {}),
    onEvent: (e) => events.push(e),
    onCheckpoint: (cp) => {
      cps.push(cp);
    },
  });
  expect(r.bytes).toBe(size);
  expect(await sha256File(join(root, serverPath))).toBe(await sha256File(file));
  expect(events.at(-1)).toMatchObject({ type: 'complete', bytes: size });
  return { r, events, cps };
}

describe('upload to bits serve', () => {
  it.each([
    ['empty', 0],
    ['one byte', 1],
    ['fragment - 1', FRAG - 1],
    ['fragment', FRAG],
    ['fragment + 1', FRAG + 1],
  ])('%s (%i bytes)', async (label, size) => {
    const name = `f-${size}.bin`;
    const { cps } = await roundTrip(name, size, `/up/${name}`, `up/${name}`);
    // One checkpoint after CREATE-SESSION, one per acknowledged fragment.
    expect(cps.length).toBe(1 + Math.ceil(size / FRAG));
    expect(cps.at(-1)!.bytesTransferred).toBe(size);
    void label;
  });

  it('~20 MiB random file with the default fragment size', async () => {
    const size = 20 * 1024 * 1024 + 12345;
    const { cps } = await roundTrip('big.bin', size, '/up/big.bin', 'up/big.bin', null);
    // No fragment size given: the client's default, one checkpoint per fragment of that size.
    expect(DEFAULT_FRAGMENT_SIZE).toBe(8 * 1024 * 1024);
    expect(cps.every((c) => c.fragmentSize === DEFAULT_FRAGMENT_SIZE)).toBe(true);
    expect(cps.map((c) => c.bytesTransferred)).toEqual([0, DEFAULT_FRAGMENT_SIZE, 2 * DEFAULT_FRAGMENT_SIZE, size]);
  });

  it('a name with spaces and non-ASCII characters', async () => {
    const name = 'résumé data.bin';
    await roundTrip(name, 100_000, `/up/${encodeURIComponent(name)}`, `up/${name}`);
  });

  it('a URL with percent-encoding', async () => {
    await roundTrip('pct.bin', 70_000, '/up/a%20b%25c.bin', 'up/a b%c.bin');
  });
});

describe('IPv6 loopback', () => {
  it('uploads over [::1] when available', async (ctx) => {
    const ok = await new Promise<boolean>((resolve) => {
      const s = net.createServer();
      s.once('error', () => resolve(false));
      s.listen(0, '::1', () => s.close(() => resolve(true)));
    });
    if (!ok) ctx.skip();
    const v6 = await startServer({ root, host: '::1', port: 0 });
    try {
      const file = join(src, 'v6.bin');
      await makeRandomFile(file, 150_000);
      await uploadFile({ file, url: `${v6.url}/up/v6.bin`, fragmentSize: FRAG });
      expect(await sha256File(join(root, 'up/v6.bin'))).toBe(await sha256File(file));
    } finally {
      await v6.close();
    }
  });
});

describe('suspend, resume, cancel, source changes', () => {
  it('abort = suspend (InterruptedError); resume from the checkpoint finishes the same session', async () => {
    const file = join(src, 'resume.bin');
    await makeRandomFile(file, 10 * FRAG + 3);
    const ac = new AbortController();
    const cps: UploadCheckpoint[] = [];
    const err = await uploadFile({
      file,
      url: `${server.url}/up/resume.bin`,
      fragmentSize: FRAG,
      signal: ac.signal,
      onCheckpoint: (cp) => {
        cps.push(cp);
        if (cp.bytesTransferred >= 3 * FRAG) ac.abort();
      },
    }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(InterruptedError);
    expect((err as InterruptedError).exitCode).toBe(ExitCode.INTERRUPTED);
    const cp = cps.at(-1)!;
    expect(cp.bytesTransferred).toBe(3 * FRAG);
    expect(cp.bitsSessionId).toMatch(/^\{[0-9A-F-]{36}\}$/);

    const events: TransferEvent[] = [];
    const after: UploadCheckpoint[] = [];
    await uploadFile({ file, url: `${server.url}/up/resume.bin`, resume: cp, onEvent: (e) => events.push(e), onCheckpoint: (c) => void after.push(c) });
    expect(events[0]).toMatchObject({ type: 'start', resumedAt: 3 * FRAG });
    expect(after.every((c) => c.bitsSessionId === cp.bitsSessionId)).toBe(true);
    expect(after[0]!.bytesTransferred).toBe(4 * FRAG);
    expect(await sha256File(join(root, 'up/resume.bin'))).toBe(await sha256File(file));
  });

  it('a source file that changes during the upload is SourceChangedError, never mixed data', async () => {
    const file = join(src, 'changing.bin');
    await makeRandomFile(file, 6 * FRAG);
    const err = await uploadFile({
      file,
      url: `${server.url}/up/changing.bin`,
      fragmentSize: FRAG,
      onCheckpoint: async (cp) => {
        if (cp.bytesTransferred === 2 * FRAG) await fsp.appendFile(file, 'x');
      },
    }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(SourceChangedError);
    expect((err as SourceChangedError).exitCode).toBe(ExitCode.SOURCE_CHANGED);
    await expect(fsp.stat(join(root, 'up/changing.bin'))).rejects.toThrow();
  });

  it('resuming with a changed source is refused', async () => {
    const file = join(src, 'changed2.bin');
    await makeRandomFile(file, 4 * FRAG);
    const ac = new AbortController();
    let cp: UploadCheckpoint | undefined;
    await uploadFile({
      file,
      url: `${server.url}/up/changed2.bin`,
      fragmentSize: FRAG,
      signal: ac.signal,
      onCheckpoint: (c) => {
        cp = c;
        if (c.bytesTransferred > 0) ac.abort();
      },
    }).catch(() => undefined);
    await fsp.appendFile(file, 'more');
    await expect(uploadFile({ file, url: `${server.url}/up/changed2.bin`, resume: cp! })).rejects.toBeInstanceOf(SourceChangedError);
  });

  it('cancelUpload sends CANCEL-SESSION; cancelling again is not an error (§3.1.5.2.1)', async () => {
    const file = join(src, 'cancel.bin');
    await makeRandomFile(file, 4 * FRAG);
    const ac = new AbortController();
    let cp: UploadCheckpoint | undefined;
    await uploadFile({
      file,
      url: `${server.url}/up/cancel.bin`,
      fragmentSize: FRAG,
      signal: ac.signal,
      onCheckpoint: (c) => {
        cp = c;
        if (c.bytesTransferred > 0) ac.abort();
      },
    }).catch(() => undefined);
    const sessionDir = join(root, 'up', 'BITS-Sessions', 'Requests', cp!.bitsSessionId!);
    expect((await fsp.stat(sessionDir)).isDirectory()).toBe(true);
    await cancelUpload(`${server.url}/up/cancel.bin`, cp!);
    await expect(fsp.stat(sessionDir)).rejects.toThrow();
    await cancelUpload(`${server.url}/up/cancel.bin`, cp!);
    // The cancelled session cannot be resumed: the client starts over with a new one.
    const r = await uploadFile({ file, url: `${server.url}/up/cancel.bin`, resume: cp! });
    expect(r.sessionId).not.toBe(cp!.bitsSessionId);
    expect(await sha256File(join(root, 'up/cancel.bin'))).toBe(await sha256File(file));
  });

  it('--reply against a plain upload directory: the missing BITS-Reply-URL is an error (§3.1.5.2.4)', async () => {
    const file = join(src, 'noreply.bin');
    await makeRandomFile(file, 1000);
    const err = await uploadFile({ file, url: `${server.url}/up/noreply.bin`, requireReply: true }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ProtocolError);
    expect((err as Error).message).toMatch(/BITS-Reply-URL/);
  });
});
