/**
 * Server refusals map to the right typed error, exit code and ONE line naming
 * the HTTP status, the HRESULT in hex and its Windows name (§3.1.5.2.1), both
 * from uploadFile and through `bits upload` (in process).
 */
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import { startServer, type RunningServer } from '../../src/server/index.js';
import { uploadFile } from '../../src/client/upload.js';
import { BitsError, ExitCode, formatErrorLine, ProtocolError, ServerError } from '../../src/errors.js';
import { startPeer } from './peers.js';
import { makeRandomFile, makeTempDir, sha256File } from '../helpers/files.js';

let tmp: { dir: string; cleanup: () => Promise<void> };
let root: string;
let file: string;
let server: RunningServer;

beforeAll(async () => {
  tmp = await makeTempDir('bits-upload-errors-');
  root = join(tmp.dir, 'root');
  await fsp.mkdir(join(root, 'up', 'adir'), { recursive: true });
  await fsp.mkdir(join(root, 'off'), { recursive: true });
  await fsp.mkdir(join(root, 'small'), { recursive: true });
  await fsp.mkdir(join(root, 'keep'), { recursive: true });
  await fsp.writeFile(join(root, 'keep', 'exists.bin'), 'old');
  file = join(tmp.dir, 'five-k.bin');
  await makeRandomFile(file, 5000);
  server = await startServer({
    root,
    port: 0,
    directories: {
      '/off': { uploadsEnabled: false },
      '/small': { maxUploadSize: 1000 },
      '/keep': { allowOverwrites: false },
    },
  });
});
afterAll(async () => {
  await server?.close();
  await tmp?.cleanup();
});

async function failure(path: string): Promise<BitsError> {
  try {
    await uploadFile({ file, url: `${server.url}${path}`, noProgressTimeoutMs: 5000, retryBaseMs: 10 });
  } catch (e) {
    return e as BitsError;
  }
  throw new Error(`upload to ${path} succeeded`);
}

describe('server refusals', () => {
  it.each([
    ['403 E_ACCESSDENIED (destination exists, overwrite not allowed)', '/keep/exists.bin', 403, 0x80070005, 'E_ACCESSDENIED'],
    ['501 E_ACCESSDENIED (uploads disabled)', '/off/x.bin', 501, 0x80070005, 'E_ACCESSDENIED'],
    ['BG_E_TOO_LARGE (maxUploadSize)', '/small/x.bin', 500, 0x80200020, 'BG_E_TOO_LARGE'],
    ['E_INVALIDARG (destination is a directory)', '/up/adir', 400, 0x80070057, 'E_INVALIDARG'],
  ])('%s', async (_label, path, status, hr, name) => {
    const e = await failure(path);
    expect(e).toBeInstanceOf(ServerError);
    expect(e.exitCode).toBe(ExitCode.SERVER);
    expect(e.httpStatus).toBe(status);
    expect(e.hresult).toBe(hr);
    const line = formatErrorLine(e);
    expect(line).not.toMatch(/\n/);
    expect(line).toContain(`HTTP ${status}`);
    expect(line).toContain(`0x${hr.toString(16).toUpperCase()}`);
    expect(line).toContain(name);
    expect(e.toJSON()).toMatchObject({ httpStatus: status, hresultName: name, context: 'server' });
  });

  it('the overwrite refusal left the existing file alone', async () => {
    expect(await fsp.readFile(join(root, 'keep', 'exists.bin'), 'utf8')).toBe('old');
  });

  it('node:http, which answers BITS_POST itself with 400, is a refusal: ServerError, exit 5, no retry', async () => {
    const { createServer } = await import('node:http');
    const plain = createServer((_q, s) => s.end('hello'));
    await new Promise<void>((r) => plain.listen(0, '127.0.0.1', () => r()));
    try {
      const port = (plain.address() as { port: number }).port;
      const events: string[] = [];
      const err = (await uploadFile({ file, url: `http://127.0.0.1:${port}/x.bin`, noProgressTimeoutMs: 5000, onEvent: (e) => events.push(e.type) }).catch((e) => e)) as BitsError;
      expect(err).toBeInstanceOf(ServerError);
      expect(err.exitCode).toBe(ExitCode.SERVER);
      expect(err.httpStatus).toBe(400);
      expect(events).not.toContain('retry');
    } finally {
      plain.close();
    }
  });

  it('a 200 without BITS-Packet-Type: Ack (a plain web server) is a ProtocolError, exit 7, never a success', async () => {
    const p = await startPeer({ override: () => ({ status: 200, body: '<html>hello</html>' }) });
    try {
      const err = (await uploadFile({ file, url: `${p.url}/x.bin`, noProgressTimeoutMs: 5000 }).catch((e) => e)) as BitsError;
      expect(err).toBeInstanceOf(ProtocolError);
      expect(err.exitCode).toBe(ExitCode.PROTOCOL);
      expect(err.message).toMatch(/no BITS-Packet-Type: Ack/);
    } finally {
      await p.close();
    }
  });
});

describe('bits upload (in process)', () => {
  let out: string[];
  let err: string[];
  beforeAll(() => {
    out = [];
    err = [];
  });
  afterEach(() => {
    vi.restoreAllMocks();
    process.exitCode = undefined;
    out = [];
    err = [];
  });

  async function run(...args: string[]): Promise<number> {
    vi.spyOn(process.stdout, 'write').mockImplementation((c: string | Uint8Array) => (out.push(String(c)), true));
    vi.spyOn(process.stderr, 'write').mockImplementation((c: string | Uint8Array) => (err.push(String(c)), true));
    const { buildProgram } = await import('../../src/cli/program.js');
    const program = await buildProgram();
    await program.parseAsync(['node', 'bits', 'upload', ...args]);
    vi.restoreAllMocks();
    const code = Number(process.exitCode ?? 0);
    process.exitCode = undefined;
    return code;
  }

  it('uploads and says where the file went', async () => {
    const code = await run(file, `${server.url}/up/cli.bin`, '--fragment-size', '8K');
    expect(code).toBe(0);
    expect(await sha256File(join(root, 'up', 'cli.bin'))).toBe(await sha256File(file));
    expect(err.join('')).toMatch(/uploaded .* -> http:\/\/127\.0\.0\.1:\d+\/up\/cli\.bin/);
  });

  it('a missing FILE is a LocalFileError: exit 3, one line', async () => {
    const code = await run(join(tmp.dir, 'nope.bin'), `${server.url}/up/x.bin`);
    expect(code).toBe(ExitCode.LOCAL_FILE);
    const text = err.join('');
    expect(text.trim().split('\n')).toHaveLength(1);
    expect(text).toContain('nope.bin');
  });

  it('a directory as FILE is a LocalFileError', async () => {
    expect(await run(tmp.dir, `${server.url}/up/x.bin`)).toBe(ExitCode.LOCAL_FILE);
  });

  it('a bad URL is a UsageError: exit 2', async () => {
    expect(await run(file, 'ftp://127.0.0.1/x')).toBe(ExitCode.USAGE);
    expect(await run(file, 'not a url')).toBe(ExitCode.USAGE);
  });

  it('a fragment size outside 5K..1G is a UsageError', async () => {
    expect(await run(file, `${server.url}/up/x.bin`, '--fragment-size', '1K')).toBe(ExitCode.USAGE);
  });

  it('a server refusal exits 5 with status, HRESULT and name on one line', async () => {
    const code = await run(file, `${server.url}/off/x.bin`);
    expect(code).toBe(ExitCode.SERVER);
    const text = err.join('');
    expect(text).toContain('HTTP 501');
    expect(text).toContain('0x80070005');
    expect(text).toContain('E_ACCESSDENIED');
  });
});
