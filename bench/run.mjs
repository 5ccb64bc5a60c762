#!/usr/bin/env node
// `npm run bench`: bits side by side with curl, wget, aria2c and nginx on loopback.
// Method and the last results: bench/README.md. Nothing is installed: missing tools
// are reported with their Debian package and their rows are skipped.
import { promises as fsp, existsSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { ensureDataFile, findExecutable, measure, MiB, parseSize, runCapture, sha256File, sizeLabel, syncDisks } from './lib/util.mjs';
import { peakRssKiB, startBitsServe, startNginx } from './lib/servers.mjs';
import { evaluateTargets, markdownTable, startupTable, summarise, targetsMarkdown } from './lib/report.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const REPO = path.resolve(HERE, '..');
const BITS = path.join(REPO, 'bin', 'bits');
const NODE = process.execPath;

const USAGE = `usage: node bench/run.mjs [--sizes 100M,1G] [--runs 3] [--only upload|download|small|startup[,...]]
                         [--startup-runs 20] [--data-dir DIR] [--keep]
  --sizes         test file sizes (random data, kept in --data-dir between runs)
  --runs          measured runs per tool and size (median, min and max are reported; at least 3 advised)
  --startup-runs  runs of each command in the small (1 MiB end to end) and startup parts
  --only          run only these parts
  --data-dir      where the test files live (default: $TMPDIR/bits-bench-data)
  --keep          keep the work folder (servers' files, outputs) for inspection`;

function parseCli() {
  const { values } = parseArgs({
    options: {
      sizes: { type: 'string', default: '100M,1G' },
      runs: { type: 'string', default: '3' },
      only: { type: 'string' },
      'startup-runs': { type: 'string', default: '20' },
      'data-dir': { type: 'string' },
      keep: { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false },
    },
    allowPositionals: false,
  });
  if (values.help) {
    console.log(USAGE);
    process.exit(0);
  }
  const sizes = values.sizes.split(',').map((s) => parseSize(s)).sort((a, b) => a - b);
  const runs = Number(values.runs);
  const startupRuns = Number(values['startup-runs']);
  if (!Number.isInteger(runs) || runs < 1 || runs > 100) throw new Error('--runs: expected 1..100');
  if (!Number.isInteger(startupRuns) || startupRuns < 1 || startupRuns > 1000) throw new Error('--startup-runs: expected 1..1000');
  const parts = new Set((values.only ?? 'upload,download,small,startup').split(',').map((s) => s.trim()));
  for (const p of parts) if (!['upload', 'download', 'small', 'startup'].includes(p)) throw new Error(`--only: unknown part ${p}`);
  const dataDir = path.resolve(values['data-dir'] ?? path.join(os.tmpdir(), 'bits-bench-data'));
  return { sizes, runs, startupRuns, parts, dataDir, keep: values.keep };
}

const log = (s) => process.stderr.write(`${s}\n`);

/** Checks each external tool; prints what is missing and the Debian package that provides it. */
async function detectTools() {
  const sbin = ['/usr/sbin', '/usr/local/sbin', '/sbin'];
  const tools = {
    nginx: { bin: findExecutable('nginx', sbin), pkg: 'nginx' },
    curl: { bin: findExecutable('curl'), pkg: 'curl' },
    wget: { bin: findExecutable('wget'), pkg: 'wget' },
    aria2c: { bin: findExecutable('aria2c'), pkg: 'aria2' },
    time: { bin: existsSync('/usr/bin/time') ? '/usr/bin/time' : undefined, pkg: 'time' },
  };
  if (tools.time.bin) {
    // Only GNU time knows -f; a BSD time would not report peak RSS this way.
    const r = await runCapture(tools.time.bin, ['-f', '%M', 'true']);
    if (r.code !== 0 || !/^\d+\s*$/.test(r.stderr.trim().split('\n').pop() ?? '')) tools.time.bin = undefined;
  }
  for (const [name, t] of Object.entries(tools)) {
    if (!t.bin) {
      log(`missing: ${name === 'time' ? 'GNU time (/usr/bin/time)' : name} — install the Debian package '${t.pkg}' (apt-get install ${t.pkg}); skipping what needs it`);
    }
  }
  return tools;
}

async function toolVersion(bin, args, re) {
  if (!bin) return undefined;
  const r = await runCapture(bin, args).catch(() => undefined);
  if (!r) return undefined;
  const m = re.exec(r.stdout + r.stderr);
  return m ? m[0].trim() : undefined;
}

async function machineInfo(tools) {
  const cpus = os.cpus();
  return {
    date: new Date().toISOString(),
    host: os.hostname(),
    platform: `${os.type()} ${os.release()} ${os.arch()}`,
    cpu: `${cpus.length} × ${cpus[0]?.model ?? 'unknown'}`,
    cores: cpus.length,
    memoryGiB: Math.round((os.totalmem() / 1024 ** 3) * 10) / 10,
    node: process.version,
    /** Other processes compete for the same cores: a busy machine makes every number noisy. */
    loadAverageAtStart: os.loadavg().map((v) => Math.round(v * 100) / 100),
    bits: (await runCapture(NODE, [BITS, '--version'])).stdout.trim(),
    nginx: await toolVersion(tools.nginx.bin, ['-v'], /nginx\/\S+/),
    curl: await toolVersion(tools.curl.bin, ['--version'], /curl \S+/),
    wget: await toolVersion(tools.wget.bin, ['--version'], /Wget \S+/),
    aria2c: await toolVersion(tools.aria2c.bin, ['--version'], /aria2 version \S+/),
  };
}

/** Whether `bits download` is implemented in this build (it may land after the benchmark). */
async function bitsDownloadReady(env) {
  const r = await runCapture(NODE, [BITS, 'download', '--help'], { env });
  return r.code === 0 && !/not implemented/i.test(r.stdout + r.stderr) && /--segments/.test(r.stdout);
}

async function rmf(...files) {
  for (const f of files) await fsp.rm(f, { force: true, recursive: true });
}

async function main() {
  // `npm run bench -- load`: the load benchmark (bench/load.mjs) on its own.
  if (process.argv[2] === 'load') {
    await import('./load.mjs');
    return new Promise(() => {}); // load.mjs exits the process itself
  }
  const opts = parseCli();
  if (!existsSync(path.join(REPO, 'dist', 'cli', 'main.js'))) throw new Error('dist/ is missing: run `npm run bench` (it builds first) or `npm run build`');
  const tools = await detectTools();
  const work = mkdtempSync(path.join(os.tmpdir(), 'bits-bench-'));
  const env = { ...process.env, BITS_HOME: path.join(work, 'bits-home'), NO_COLOR: '1' };
  delete env.FORCE_COLOR;
  const cleanups = [];
  let cleaned = false;
  const cleanup = async () => {
    if (cleaned) return;
    cleaned = true;
    for (const c of cleanups.reverse()) await c().catch(() => undefined);
    if (!opts.keep) rmSync(work, { recursive: true, force: true });
    else log(`work folder kept: ${work}`);
  };
  const onSignal = (sig) => {
    log(`\n${sig}: stopping servers and cleaning up`);
    cleanup().finally(() => process.exit(130));
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);

  try {
    return await bench(opts, tools, work, env, cleanups);
  } finally {
    await cleanup();
  }
}

async function bench(opts, tools, work, env, cleanups) {
  const meta = await machineInfo(tools);
  log(`bits ${meta.bits} on ${meta.cpu}, ${meta.memoryGiB} GiB RAM, node ${meta.node}`);
  const timeFile = path.join(work, 'time.out');
  const timeBin = tools.time.bin;
  const rows = [];
  const startup = [];
  const small = [];
  const servers = { bitsServePeakRssKiB: {} };
  const notes = [];

  const needTransfers = opts.parts.has('upload') || opts.parts.has('download') || opts.parts.has('small');
  const data = [];
  if (needTransfers) {
    for (const size of opts.sizes) {
      const t0 = Date.now();
      const d = await ensureDataFile(opts.dataDir, size);
      log(`${d.reused ? 'reusing' : 'created'} ${d.file} (${sizeLabel(size)}, sha256 ${d.sha256.slice(0, 12)}…)${d.reused ? '' : ` in ${((Date.now() - t0) / 1000).toFixed(1)} s`}`);
      data.push(d);
    }
  }

  let nginx;
  if (needTransfers && tools.nginx.bin) {
    nginx = await startNginx({ bin: tools.nginx.bin, prefix: path.join(work, 'nginx'), filesDir: opts.dataDir, davDir: path.join(work, 'dav') });
    cleanups.push(() => nginx.stop());
    log(`nginx on ${nginx.url}`);
  } else if (needTransfers) notes.push('nginx missing: curl PUT and every download row skipped');

  let bitsServe;
  if (opts.parts.has('upload') || opts.parts.has('small')) {
    bitsServe = await startBitsServe({ node: NODE, bin: BITS, root: path.join(work, 'bits-root'), env });
    cleanups.push(() => bitsServe.stop());
    log(`bits serve on ${bitsServe.url}`);
  }

  let downloadReady = false;
  if (opts.parts.has('download') || opts.parts.has('small')) {
    downloadReady = await bitsDownloadReady(env);
    if (!downloadReady) notes.push('`bits download` is not implemented in this build: its rows are skipped');
  }

  /**
   * One tool in one scenario: `argv(run)` builds the command, `output` is the file it
   * produces (checked against the source's sha256 once), `clean` runs before each run.
   */
  const tool = (scenario, name, isRef, available, argv, output) => ({ scenario, name, isRef, available, argv, output });

  const outDir = path.join(work, 'out');
  await fsp.mkdir(outDir, { recursive: true });

  for (const d of data) {
    const groups = [];
    if (opts.parts.has('upload')) {
      const bitsDest = path.join(work, 'bits-root', 'up', d.name);
      const davDest = path.join(work, 'dav', d.name);
      groups.push([
        tool('upload', 'bits upload', false, true, () => [NODE, BITS, 'upload', '--quiet', d.file, `${bitsServe.url}/up/${d.name}`], bitsDest),
        tool('upload', 'curl PUT (nginx)', true, Boolean(tools.curl.bin && nginx), () => [tools.curl.bin, '-sS', '-f', '-T', d.file, `${nginx.url}/dav/${d.name}`], davDest),
        // Not the reference: what nginx's answer costs once the file is on disk, as bits serve's last Ack promises.
        tool('upload', 'curl PUT, then sync -d', false, Boolean(tools.curl.bin && nginx), () => ['sh', '-c', 'curl -sS -f -T "$1" "$2" && sync -d "$3"', 'sh', d.file, `${nginx.url}/dav/${d.name}`, davDest], davDest),
      ]);
    }
    if (opts.parts.has('download') && nginx) {
      const url = `${nginx.url}/files/${d.name}`;
      const out = (n) => path.join(outDir, `${n}-${d.name}`);
      const aria = (n, x) => [tools.aria2c.bin, '-q', `-x${x}`, `-s${x}`, '--allow-overwrite=true', '--auto-file-renaming=false', '-d', outDir, '-o', path.basename(out(n)), url];
      groups.push([
        tool('download', 'bits download', false, downloadReady, () => [NODE, BITS, 'download', '--quiet', '--force', url, '-o', out('bits')], out('bits')),
        tool('download', 'curl', true, Boolean(tools.curl.bin), () => [tools.curl.bin, '-sS', '-f', '-o', out('curl'), url], out('curl')),
        // Not the reference: curl plus the fdatasync bits makes before it renames the finished file.
        tool('download', 'curl, then sync -d', false, Boolean(tools.curl.bin), () => ['sh', '-c', 'curl -sS -f -o "$1" "$2" && sync -d "$1"', 'sh', out('curls'), url], out('curls')),
        tool('download', 'wget', false, Boolean(tools.wget.bin), () => [tools.wget.bin, '-q', '-O', out('wget'), url], out('wget')),
        tool('download', 'aria2c -x1 -s1', false, Boolean(tools.aria2c.bin), () => aria('aria1', 1), out('aria1')),
      ]);
      groups.push([
        tool('segments', 'bits download --segments 4', false, downloadReady, () => [NODE, BITS, 'download', '--quiet', '--force', '--segments', '4', url, '-o', out('bits4')], out('bits4')),
        tool('segments', 'aria2c -x4 -s4', true, Boolean(tools.aria2c.bin), () => aria('aria4', 4), out('aria4')),
      ]);
    }

    for (const group of groups) {
      const active = group.filter((t) => t.available);
      const rowOf = new Map();
      for (const t of active) {
        const row = { scenario: t.scenario, size: d.size, tool: t.name, isRef: t.isRef, runs: [], verified: undefined };
        rows.push(row);
        rowOf.set(t, row);
      }
      for (let run = 0; run < opts.runs; run++) {
        // Alternate: every tool once per round, the starting tool rotating, so drift hits all alike.
        const order = active.map((_, i) => active[(i + run) % active.length]);
        for (const t of order) {
          const row = rowOf.get(t);
          await rmf(t.output, `${t.output}.aria2`, `${t.output}.bits-partial`);
          await syncDisks();
          const m = await measure(t.argv(run), { timeBin, env, timeFile });
          const ok = m.code === 0;
          row.runs.push({ wall: m.wall, rssKiB: m.rssKiB, cpu: m.cpu, ok, ...(ok ? {} : { error: `exit ${m.code ?? m.signal}: ${m.stderr.slice(-300)}` }) });
          log(
            `${t.scenario} ${sizeLabel(d.size)} run ${run + 1}/${opts.runs} ${t.name}: ` +
              (ok
                ? `${m.wall.toFixed(2)} s, ${(d.size / MiB / m.wall).toFixed(1)} MiB/s${m.rssKiB ? `, ${(m.rssKiB / 1024).toFixed(0)} MiB RSS` : ''}${m.cpu !== undefined ? `, ${m.cpu.toFixed(2)} s CPU` : ''}`
                : `FAILED (${m.stderr.split('\n').pop()})`),
          );
          if (ok && row.verified === undefined) {
            // A fast result that is wrong is a failure: check the bytes once per tool and size.
            const got = await sha256File(t.output).catch(() => 'missing');
            row.verified = got === d.sha256;
            if (!row.verified) log(`  ${t.name}: WRONG OUTPUT (sha256 ${got.slice(0, 12)}…, expected ${d.sha256.slice(0, 12)}…)`);
          }
          await rmf(t.output, `${t.output}.aria2`, `${t.output}.bits-partial`);
        }
      }
    }
    if (bitsServe) servers.bitsServePeakRssKiB[d.size] = peakRssKiB(bitsServe.pid);
  }

  if (opts.parts.has('small') && bitsServe && nginx && downloadReady) {
    // A 1 MiB transfer end to end: what a script that moves many small files waits for.
    const d = await ensureDataFile(opts.dataDir, MiB);
    const out = path.join(outDir, 'small-bits');
    const up = path.join(work, 'bits-root', 'up', 'small.bin');
    const cmds = [
      { tool: 'bits download (1 MiB)', kind: 'download', isRef: false, argv: [NODE, BITS, 'download', '--quiet', '--force', `${nginx.url}/files/${d.name}`, '-o', out], output: out, ms: [] },
      { tool: 'bits upload (1 MiB)', kind: 'upload', isRef: false, argv: [NODE, BITS, 'upload', '--quiet', d.file, `${bitsServe.url}/up/small.bin`], output: up, ms: [] },
      { tool: 'node -e 0', kind: 'ref', isRef: true, argv: [NODE, '-e', '0'], ms: [] },
    ];
    for (const c of cmds) {
      await rmf(c.output ?? '');
      await measure(c.argv, { env }); // warms the page cache and the servers
    }
    for (let i = 0; i < opts.startupRuns; i++) {
      for (const c of i % 2 ? [...cmds].reverse() : cmds) {
        if (c.output) await rmf(c.output);
        const m = await measure(c.argv, { env });
        if (m.code !== 0) throw new Error(`${c.tool} failed: ${m.stderr}`);
        c.ms.push(m.wall * 1000);
        if (c.output && i === 0 && (await sha256File(c.output)) !== d.sha256) throw new Error(`${c.tool}: WRONG OUTPUT`);
      }
    }
    small.push(...cmds.map(({ tool, kind, isRef, ms }) => ({ tool, kind, isRef, ms })));
    log(`1 MiB end to end: ${cmds.map((c) => `${c.tool} median ${[...c.ms].sort((a, b) => a - b)[Math.floor(c.ms.length / 2)].toFixed(1)} ms`).join(', ')}`);
  }

  if (opts.parts.has('startup')) {
    const cmds = [
      { tool: 'bits --version', isRef: false, argv: [NODE, BITS, '--version'], ms: [] },
      { tool: 'node -e 0', isRef: true, argv: [NODE, '-e', '0'], ms: [] },
    ];
    // One unmeasured round warms the page cache for both.
    for (const c of cmds) await measure(c.argv, { env });
    for (let i = 0; i < opts.startupRuns; i++) {
      for (const c of i % 2 ? [...cmds].reverse() : cmds) {
        const m = await measure(c.argv, { env });
        if (m.code !== 0) throw new Error(`${c.tool} failed: ${m.stderr}`);
        c.ms.push(m.wall * 1000);
      }
    }
    startup.push(...cmds.map(({ tool, isRef, ms }) => ({ tool, isRef, ms })));
    log(`start-up: ${cmds.map((c) => `${c.tool} median ${[...c.ms].sort((a, b) => a - b)[Math.floor(c.ms.length / 2)].toFixed(1)} ms`).join(', ')}`);
  }

  meta.loadAverageAtEnd = os.loadavg().map((v) => Math.round(v * 100) / 100);
  const targets = evaluateTargets(rows, small, data.map((d) => d.size), servers.bitsServePeakRssKiB);
  const lines = [];
  lines.push(`### Results — ${meta.date.slice(0, 16).replace('T', ' ')} UTC`);
  lines.push('');
  lines.push(`bits ${meta.bits}, node ${meta.node}; ${meta.cpu}, ${meta.memoryGiB} GiB RAM; ${meta.platform}.`);
  lines.push(`${[meta.nginx, meta.curl, meta.wget, meta.aria2c].filter(Boolean).join(', ')}. ${opts.runs} runs per tool (alternating), median; loopback.`);
  lines.push(`Load average (1/5/15 min) at start ${meta.loadAverageAtStart.join(' / ')}, at end ${meta.loadAverageAtEnd.join(' / ')} on ${meta.cores} cores.`);
  lines.push('');
  if (rows.length) {
    lines.push(markdownTable(rows));
    lines.push('');
    const srv = Object.entries(servers.bitsServePeakRssKiB).filter(([, v]) => v !== undefined);
    if (srv.length) {
      lines.push(`\`bits serve\` peak RSS (whole process life, after each size): ${srv.map(([s, v]) => `${sizeLabel(Number(s))}: ${(v / 1024).toFixed(1)} MiB`).join(', ')}.`);
      lines.push('');
    }
  }
  if (small.length) {
    lines.push('A 1 MiB transfer, end to end:');
    lines.push('');
    lines.push(startupTable(small));
    lines.push('');
  }
  if (startup.length) {
    lines.push(startupTable(startup));
    lines.push('');
  }
  for (const n of notes) lines.push(`Note: ${n}`);
  if (notes.length) lines.push('');
  lines.push('#### Targets');
  lines.push('');
  lines.push(targetsMarkdown(targets));
  const markdown = lines.join('\n');
  process.stdout.write(`\n${markdown}\n`);

  const stamp = meta.date.replace(/[:.]/g, '-');
  const resultsDir = path.join(HERE, 'results');
  await fsp.mkdir(resultsDir, { recursive: true });
  const file = path.join(resultsDir, `${stamp}.json`);
  const summary = rows.map((r) => ({ scenario: r.scenario, size: r.size, tool: r.tool, ...summarise(r) }));
  await fsp.writeFile(file, JSON.stringify({ meta, options: { sizes: opts.sizes, runs: opts.runs, startupRuns: opts.startupRuns }, rows, summary, small, startup, servers, targets, notes, markdown }, null, 2) + '\n');
  log(`\nraw results: ${path.relative(process.cwd(), file)}`);
  const failed = rows.some((r) => !summarise(r).ok);
  return failed ? 1 : 0;
}

main().then(
  (code) => process.exit(code),
  (err) => {
    log(`bench: ${err instanceof Error ? err.message : String(err)}`);
    process.exit(1);
  },
);
