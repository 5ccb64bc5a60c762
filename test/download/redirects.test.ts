/**
 * Issue 18.1/18.2/18.10 with the built `bits download` against servers of our own
 * on 127.0.0.1: redirects (301/302/307/308, relative Location, a chain, a loop,
 * https→http under each policy, `refuse`), credentials that must not follow a
 * redirect to another origin even when it answers 401, resuming from the final
 * URL and re-following when it is gone, and a server that gzips anyway.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createHash, randomBytes } from 'node:crypto';
import * as fsp from 'node:fs/promises';
import * as http from 'node:http';
import * as https from 'node:https';
import * as path from 'node:path';
import { gzipSync } from 'node:zlib';
import { ensureBuilt, runBits, startBits } from '../helpers/cli.js';
import { makeTestPki, type TestPki } from '../helpers/tls.js';
import { tempDir } from './helpers.js';

interface Seen {
  method: string;
  url: string;
  headers: http.IncomingHttpHeaders;
}

type Route = (req: http.IncomingMessage, res: http.ServerResponse) => boolean;

interface TestServer {
  url: string;
  seen: Seen[];
  routes: Route[];
  close(): Promise<void>;
}

const DATA = randomBytes(700_000);
const DATA_SHA = createHash('sha256').update(DATA).digest('hex');

/** Serves DATA with HEAD and one Range, at any path `files` accepts. */
function serveData(req: http.IncomingMessage, res: http.ServerResponse, opts: { rate?: number } = {}): void {
  const headers: Record<string, string | number> = { 'accept-ranges': 'bytes', etag: '"v1"', 'content-type': 'application/octet-stream' };
  if (req.method === 'HEAD') {
    res.writeHead(200, { ...headers, 'content-length': DATA.length });
    res.end();
    return;
  }
  let body = DATA;
  let status = 200;
  const m = /^bytes=(\d+)-(\d*)$/.exec(req.headers.range ?? '');
  if (m && (req.headers['if-range'] === undefined || req.headers['if-range'] === '"v1"')) {
    const first = Number(m[1]);
    const last = m[2] ? Math.min(Number(m[2]), DATA.length - 1) : DATA.length - 1;
    body = DATA.subarray(first, last + 1);
    status = 206;
    headers['content-range'] = `bytes ${first}-${last}/${DATA.length}`;
  }
  res.writeHead(status, { ...headers, 'content-length': body.length });
  if (!opts.rate) {
    res.end(body);
    return;
  }
  // Slowly, so that a run can be interrupted half-way.
  let off = 0;
  const tick = setInterval(() => {
    if (res.destroyed || off >= body.length) {
      clearInterval(tick);
      res.end();
      return;
    }
    res.write(body.subarray(off, off + opts.rate!));
    off += opts.rate!;
  }, 50);
  res.on('close', () => clearInterval(tick));
}

async function start(tls?: TestPki): Promise<TestServer> {
  const seen: Seen[] = [];
  const routes: Route[] = [];
  const handler = (req: http.IncomingMessage, res: http.ServerResponse) => {
    seen.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers });
    req.resume();
    for (const r of routes) if (r(req, res)) return;
    res.writeHead(404, { 'content-length': 0 });
    res.end();
  };
  const server = tls ? https.createServer({ cert: tls.server.cert, key: tls.server.key }, handler) : http.createServer(handler);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const port = (server.address() as { port: number }).port;
  return {
    url: `${tls ? 'https' : 'http'}://127.0.0.1:${port}`,
    seen,
    routes,
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}

function redirect(from: string, status: number, location: string): Route {
  return (req, res) => {
    if (req.url !== from) return false;
    res.writeHead(status, { location, 'content-length': 0 });
    res.end();
    return true;
  };
}

function file(at: string | RegExp, opts: { rate?: number } = {}): Route {
  return (req, res) => {
    if (typeof at === 'string' ? req.url !== at : !at.test(req.url ?? '')) return false;
    serveData(req, res, opts);
    return true;
  };
}

let dir: string;
let home: string;
let plain: TestServer;
let other: TestServer;
let secure: TestServer;
let pki: TestPki;

async function sha(p: string): Promise<string> {
  return createHash('sha256').update(await fsp.readFile(p)).digest('hex');
}

function download(args: string[]) {
  return runBits(['download', ...args], { cwd: dir, env: { BITS_HOME: home, NO_COLOR: '1' }, timeoutMs: 30_000 });
}

beforeAll(async () => {
  ensureBuilt();
  dir = await tempDir('bits-redirect-');
  home = path.join(dir, 'home');
  pki = makeTestPki();
  plain = await start();
  other = await start();
  secure = await start(pki);
  plain.routes.push(
    file('/file.bin'),
    file('/dir/sub/file.bin'),
    redirect('/r/301', 301, `${plain.url}/file.bin`),
    redirect('/r/302', 302, '/file.bin'),
    redirect('/r/303', 303, `${plain.url}/file.bin`),
    redirect('/r/307', 307, '../file.bin'),
    redirect('/r/308', 308, '../dir/sub/file.bin'),
    redirect('/chain/1', 302, '/chain/2'),
    redirect('/chain/2', 301, `${plain.url}/chain/3`),
    redirect('/chain/3', 307, '4'),
    redirect('/chain/4', 308, '/dir/sub/file.bin'),
    redirect('/loop', 302, '/loop'),
    redirect('/to-other', 302, `${other.url}/private.bin`),
    redirect('/to-other-ok', 302, `${other.url}/open.bin`),
  );
  other.routes.push(
    (req, res) => {
      if (req.url !== '/private.bin') return false;
      res.writeHead(401, { 'www-authenticate': 'Basic realm="other"', 'content-length': 0 });
      res.end();
      return true;
    },
    file('/open.bin'),
  );
  secure.routes.push(redirect('/down', 302, `${plain.url}/file.bin`), file('/file.bin'), redirect('/same', 301, '/file.bin'));
});

afterAll(async () => {
  await Promise.all([plain?.close(), other?.close(), secure?.close()]);
  pki?.cleanup();
  await fsp.rm(dir, { recursive: true, force: true });
});

describe('bits download follows redirects (issue 18.1)', () => {
  it.each([
    ['301 to an absolute URL', '/r/301'],
    ['302 to an absolute path', '/r/302'],
    ['303 (HEAD stays HEAD, GET stays GET)', '/r/303'],
    ['307 to a relative path', '/r/307'],
    ['308 to a relative path with ..', '/r/308'],
    ['a chain of four (302, 301, 307, 308)', '/chain/1'],
  ])('%s: exit 0, sha256-identical, the final URL printed', async (_name, start) => {
    const out = path.join(dir, `out-${start.replace(/\W/g, '_')}.bin`);
    const r = await download([`${plain.url}${start}`, '-o', out]);
    expect(r.stderr).not.toMatch(/error/i);
    expect(r.code).toBe(0);
    expect(await sha(out)).toBe(DATA_SHA);
    expect(r.stderr).toMatch(new RegExp(`redirects to ${plain.url.replace(/[.:/]/g, '\\$&')}/(dir/sub/)?file\\.bin`));
  });

  it('--json: the final URL is an info event', async () => {
    const out = path.join(dir, 'json.bin');
    const r = await download([`${plain.url}/chain/1`, '-o', out, '--json']);
    expect(r.code).toBe(0);
    const info = r.stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { type?: string; event?: string; message?: string })
      .filter((e) => (e.type ?? e.event) === 'info' && /redirects to/.test(e.message ?? ''));
    expect(info.length).toBe(1);
    expect(info[0]!.message).toContain(`${plain.url}/dir/sub/file.bin`);
  });

  it('a redirect loop ends in exit 7 "too many redirects", no file', async () => {
    const out = path.join(dir, 'loop.bin');
    const r = await download([`${plain.url}/loop`, '-o', out]);
    expect(r.code).toBe(7);
    expect(r.stderr).toMatch(/too many redirects/);
    await expect(fsp.stat(out)).rejects.toThrow();
    // 1 request and 10 followed hops, then it stops (no retrying of a loop).
    expect(plain.seen.filter((s) => s.url === '/loop').length).toBe(11);
  });

  it('--redirects refuse: exit 5 naming the Location', async () => {
    const out = path.join(dir, 'refused.bin');
    const r = await download([`${plain.url}/r/302`, '-o', out, '--redirects', 'refuse']);
    expect(r.code).toBe(5);
    expect(r.stderr).toMatch(/HTTP 302/);
    expect(r.stderr).toContain(`${plain.url}/file.bin`);
    expect(r.stderr).toMatch(/--redirects refuse/);
  });

  it('--redirects report: followed, the final URL as a warning', async () => {
    const out = path.join(dir, 'report.bin');
    const r = await download([`${plain.url}/r/301`, '-o', out, '--redirects', 'report']);
    expect(r.code).toBe(0);
    expect(await sha(out)).toBe(DATA_SHA);
    expect(r.stderr).toMatch(/warning.*redirects to .*file\.bin \(--redirects report\)/i);
  });

  it('https to http is refused (exit 7) unless --redirects allow-https-to-http', async () => {
    const out = path.join(dir, 'down.bin');
    const before = plain.seen.length;
    const r = await download([`${secure.url}/down`, '-o', out, '--cacert', pki.caFile]);
    expect(r.code).toBe(7);
    expect(r.stderr).toMatch(/refusing to go from https to http/);
    expect(r.stderr).toMatch(/allow-https-to-http/);
    expect(plain.seen.length).toBe(before); // nothing was sent over http
    await expect(fsp.stat(out)).rejects.toThrow();

    const ok = await download([`${secure.url}/down`, '-o', out, '--cacert', pki.caFile, '--redirects', 'allow-https-to-http']);
    expect(ok.stderr).not.toMatch(/error/i);
    expect(ok.code).toBe(0);
    expect(await sha(out)).toBe(DATA_SHA);
  });

  it('https to https on the same server is followed', async () => {
    const out = path.join(dir, 'same.bin');
    const r = await download([`${secure.url}/same`, '-o', out, '--cacert', pki.caFile]);
    expect(r.code).toBe(0);
    expect(await sha(out)).toBe(DATA_SHA);
  });
});

describe('credentials stay with their origin (issue 18.2)', () => {
  const secretHeaders = ['-H', 'X-Api-Key: key-123', '-H', 'Private-Token: tok-456', '-H', 'Cookie: session=789', '-H', 'X-Auth-Token: at-1', '-H', 'X-Secret-Token: st-2', '-H', 'X-Trace: public'];

  it('a redirect target on another origin answering 401 gets no Authorization and no secret header: exit 6', async () => {
    const out = path.join(dir, 'other.bin');
    const before = other.seen.length;
    const r = await download([`${plain.url}/to-other`, '-o', out, '--user', 'alice:s3cret-pw', ...secretHeaders]);
    expect(r.code).toBe(6);
    expect(r.stderr).toMatch(/not sent to another origin/);
    expect(r.stderr).not.toContain('s3cret-pw');
    const got = other.seen.slice(before);
    expect(got.length).toBeGreaterThan(0);
    for (const s of got) {
      expect(s.headers.authorization).toBeUndefined();
      expect(s.headers['x-api-key']).toBeUndefined();
      expect(s.headers['private-token']).toBeUndefined();
      expect(s.headers.cookie).toBeUndefined();
      expect(s.headers['x-auth-token']).toBeUndefined();
      expect(s.headers['x-secret-token']).toBeUndefined();
      expect(s.headers['x-trace']).toBe('public');
    }
    // The origin they were given for did get them.
    const mine = plain.seen.filter((s) => s.url === '/to-other');
    expect(mine.at(-1)!.headers['x-api-key']).toBe('key-123');
    expect(mine.at(-1)!.headers['private-token']).toBe('tok-456');
  });

  it('a redirect target on another origin that asks for nothing serves the file without the secrets', async () => {
    const out = path.join(dir, 'other-ok.bin');
    const before = other.seen.length;
    const r = await download([`${plain.url}/to-other-ok`, '-o', out, '--user', 'alice:s3cret-pw', ...secretHeaders, '--segments', '2']);
    expect(r.code).toBe(0);
    expect(await sha(out)).toBe(DATA_SHA);
    const got = other.seen.slice(before);
    expect(got.length).toBeGreaterThan(1);
    for (const s of got) {
      expect(s.headers.authorization).toBeUndefined();
      expect(s.headers['x-api-key']).toBeUndefined();
      expect(s.headers.cookie).toBeUndefined();
    }
  });
});

describe('resume from the final URL, re-follow when it is gone (issue 18.1)', () => {
  it('an interrupted job resumes at the final URL; when that answers 404 the original is followed again', async () => {
    const srv = await start();
    try {
      let version = 'v1';
      srv.routes.push(
        (req, res) => {
          if (req.url !== '/latest') return false;
          res.writeHead(302, { location: `/${version}/file.bin`, 'content-length': 0 });
          res.end();
          return true;
        },
        (req, res) => {
          if (req.url !== `/${version}/file.bin`) return false;
          serveData(req, res, { rate: version === 'v1' ? 16 * 1024 : undefined });
          return true;
        },
      );
      const out = path.join(dir, 'resumed.bin');
      const run = startBits(['download', `${srv.url}/latest`, '-o', out, '--json'], { cwd: dir, env: { BITS_HOME: home } });
      await run.waitFor(/"bytesDone":\s*[1-9]/, 'stdout', 20_000);
      run.child.kill('SIGINT');
      const first = await run.done;
      expect(first.code).toBe(10);
      const jobId = /"jobId":\s*"([^"]+)"/.exec(first.stdout)?.[1];
      expect(jobId).toBeTruthy();

      // The final URL is now gone; /latest points somewhere else serving the same bytes.
      version = 'v2';
      const mark = srv.seen.length;
      const r = await runBits(['resume', jobId!], { cwd: dir, env: { BITS_HOME: home, NO_COLOR: '1' }, timeoutMs: 30_000 });
      expect(r.stderr).not.toMatch(/error/i);
      expect(r.code).toBe(0);
      expect(await sha(out)).toBe(DATA_SHA);
      const urls = srv.seen.slice(mark).map((s) => s.url);
      // Straight to the final URL first, then the original again, then its new target.
      expect(urls[0]).toBe('/v1/file.bin');
      expect(urls).toContain('/latest');
      expect(urls.at(-1)).toBe('/v2/file.bin');
      expect(r.stderr).toMatch(/v1\/file\.bin answers HTTP 404: following .*\/latest again/);
      // A ranged request resumed the bytes already held: not everything again.
      const ranged = srv.seen.slice(mark).filter((s) => s.url === '/v2/file.bin' && s.method === 'GET');
      expect(ranged.some((s) => /^bytes=[1-9]/.test(s.headers.range ?? ''))).toBe(true);
    } finally {
      await srv.close();
    }
  });
});

describe('compressed answers (issue 18.10)', () => {
  it('Accept-Encoding: identity is sent; a gzip answer is exit 7 and never saved as the file', async () => {
    const srv = await start();
    try {
      const gz = gzipSync(DATA);
      srv.routes.push((req, res) => {
        if (req.url !== '/gz.bin') return false;
        const h = { 'content-encoding': 'gzip', 'content-length': gz.length, 'accept-ranges': 'bytes', etag: '"gz"' };
        res.writeHead(200, h);
        res.end(req.method === 'HEAD' ? undefined : gz);
        return true;
      });
      const out = path.join(dir, 'gz.bin');
      const r = await download([`${srv.url}/gz.bin`, '-o', out]);
      expect(r.code).toBe(7);
      expect(r.stderr).toMatch(/Content-Encoding: gzip/);
      expect(r.stderr.trim().split('\n').filter((l) => /error/i.test(l))).toHaveLength(1);
      await expect(fsp.stat(out)).rejects.toThrow();
      const dl = await fsp.readdir(dir);
      expect(dl.filter((n) => n.startsWith('gz.bin'))).toEqual([]);
      expect(srv.seen.length).toBeGreaterThan(0);
      for (const s of srv.seen) expect(s.headers['accept-encoding']).toBe('identity');
    } finally {
      await srv.close();
    }
  });

  it('a server that gzips only the GET (not the HEAD) is caught there too', async () => {
    const srv = await start();
    try {
      srv.routes.push((req, res) => {
        if (req.url !== '/late.bin') return false;
        if (req.method === 'HEAD') {
          res.writeHead(200, { 'content-length': DATA.length, 'accept-ranges': 'bytes' });
          res.end();
          return true;
        }
        const gz = gzipSync(DATA);
        res.writeHead(200, { 'content-encoding': 'gzip', 'content-length': gz.length });
        res.end(gz);
        return true;
      });
      const out = path.join(dir, 'late.bin');
      const r = await download([`${srv.url}/late.bin`, '-o', out]);
      expect(r.code).toBe(7);
      expect(r.stderr).toMatch(/Content-Encoding: gzip/);
      await expect(fsp.stat(out)).rejects.toThrow();
    } finally {
      await srv.close();
    }
  });
});
