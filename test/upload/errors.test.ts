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
import { BitsError, ExitCode, formatErrorLine, ServerError } from '../../src/errors.js';
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

  it('a plain HTTP server (no BITS Ack) is a ProtocolError, not a success', async () => {
    const { createServer } = await import('node:http');
    // node:http rejects BITS_POST with 400 itself: exactly what a non-BITS server does.
    const plain = createServer((_q, s) => s.end('hello'));
    await new Promise<void>((r) => plain.listen(0, '127.0.0.1', () => r()));
    try {
      const port = (plain.address() as { port: number }).port;
      let err: BitsError | undefined;
      await uploadFile({ file, url: `http://127.0.0.1:${port}/x.bin`, noProgressTimeoutMs: 2000 }).catch((e) => (err = e));
      expect(err).toBeDefined();
      expect(err!.exitCode === ExitCode.SERVER || err!.exitCode === ExitCode.PROTOCOL).toBe(true);
    } finally {
      plain.close();
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
