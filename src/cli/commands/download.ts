/**
 * `bits download URL`: a resumable range download (MC-BUP §3.5/§3.6) with
 * application ranges, parallel segments, mirrors and sha256 verification. The
 * client is imported only when the command runs.
 */
import { Option, type Command } from 'commander';
import { onInterrupt, printError, printFinal, runAction, type OutputOptions, type OutputSession } from '../run.js';
import { addTransportOptions, noProgressTimeoutOption, settingsFromFlags, withConfigDefaults } from '../transport-options.js';
import { LocalFileError, UsageError } from '../../errors.js';
import { addBackgroundOptions, backgroundRequest, queueBackgroundJob } from '../background.js';
import { parseInteger, parseSize } from '../parse.js';
import { parseRangeList } from '../../protocol/content-range.js';
import { parseUserUrl } from '../../protocol/urls.js';
import { secretHeaderNote } from '../../store/secrets.js';
import type { TransferEvent } from '../../api.js';

const MAX_SEGMENTS = 64;

function collect(value: string, previous: string[]): string[] {
  return [...previous, value];
}

function checkUrl(u: string, what: string): void {
  try {
    parseUserUrl(u, what);
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
}

export function register(program: Command): void {
  const cmd = program
    .command('download')
    .description('download URL to a file, resumably; ranges, parallel segments, mirrors, sha256')
    .argument('[urls...]', 'http or https URL to download, optionally followed by OUTPUT (the same as -o); several URLs: one job each, see -d and -i')
    .option('-o, --output <path>', 'output file; a folder or a path ending in /: the server\'s file name in it; `-` = stdout (no resume) (default: the server\'s file name, in the current folder)')
    .option('-d, --output-dir <dir>', 'folder for the output (created if missing); a relative -o is taken from it (wget -P, aria2c -d); with several URLs or -i each file goes in it under its own name')
    .option('-i, --input-file <file>', 'download every URL in FILE (one per line, optionally followed by an output name; # comments)')
    .option('-f, --force', 'overwrite an existing output file')
    .option('--output-tty', 'with -o -: write the bytes even when stdout is a terminal')
    .option('--range <list>', 'download only these bytes, concatenated in order: 0-99,1000-1099,-500 (last 500),5000- (to the end)')
    .option('--segments <n>', `download in N parallel segments over separate connections (1..${MAX_SEGMENTS}; default 1, or one per source with --mirror)`)
    .addOption(new Option('--mirror <url>', 'another URL serving the same content (repeatable); checked with HEAD').argParser(collect).default([]))
    .option('--sha256 <hex>', 'verify the result; on a mismatch nothing is written to the output')
    .option('--fragment-size <size>', 'most bytes per GET, e.g. 8M (default: the whole remaining range in one GET, checkpointed every 4 MiB)')
    .addOption(noProgressTimeoutOption('give up (resumably) after this long without a byte received'))
    .addOption(
      new Option('--redirects <policy>', 'on a 301/302/303/307/308: follow (up to 10, never https to http), report (follow, warn with the final URL), refuse (exit 5), allow-https-to-http')
        .choices(['follow', 'report', 'refuse', 'allow-https-to-http'])
        .default('follow'),
    )
    .option('--json', 'one JSON object per line on stdout')
    .option('-q, --quiet', 'print errors only');
  addTransportOptions(cmd);
  addBackgroundOptions(cmd);
  cmd.addHelpText(
    'after',
    `
Data goes to OUTPUT.bits-partial, renamed to OUTPUT only when complete (and
verified with --sha256). Every resumed request carries If-Range: if the file
changed on the server, the download starts again and the result is the new
content. Servers that ignore Range or mishandle multi-range requests are
detected and handled. With -o - the data streams to stdout in order: nothing
can be taken back there, so it cannot resume or use segments.

With -o - and stdout a terminal, bits refuses (exit 2) unless --output-tty:
binary data would garble the terminal. If the reader of -o - goes away before
the end (\`| head -c 10\`), the download stops with exit 3, not 0.

Examples:
  bits download https://example.com/big.iso
  bits download https://example.com/big.iso ./x.bin
  bits download -d ./downloads https://example.com/big.iso
  bits download -o - https://example.com/big.iso | sha256sum
  bits download --segments 4 --sha256 <hex> -o big.iso https://example.com/big.iso
  bits download --mirror https://mirror2/big.iso --mirror https://mirror3/big.iso https://mirror1/big.iso
  bits download --range 0-1023,-1024 -o ends.bin https://example.com/big.iso`,
  );
  cmd.action((args: string[], opts: Record<string, unknown>, command: Command) =>
    runAction({ json: opts.json === true, quiet: opts.quiet === true }, async (session) => {
      // `bits download URL OUTPUT` (the output, like wget's -O) or `bits download URL URL…` (one job each).
      const { isMultiDownload, splitOutputArgument } = await import('../multi.js');
      const { urls, positional } = splitOutputArgument(args);
      const multi = isMultiDownload(urls, opts);
      if (!multi && urls.length === 0) throw new UsageError('which URL? give one or more, or -i FILE');
      const url = urls[0] ?? '';
      // Validate everything before touching the network: UsageError, exit 2.
      urls.forEach((u) => checkUrl(u, 'URL'));
      const mirrors = (opts.mirror as string[] | undefined) ?? [];
      mirrors.forEach((m) => checkUrl(m, '--mirror'));
      const place = await outputPlace(typeof opts.output === 'string' ? opts.output : undefined, positional, typeof opts.outputDir === 'string' ? opts.outputDir : undefined);
      const output = place.output;
      const segments = opts.segments !== undefined ? parseInteger(String(opts.segments), '--segments', 1, MAX_SEGMENTS) : undefined;
      const ranges = typeof opts.range === 'string' ? opts.range : undefined;
      if (ranges !== undefined && !parseRangeList(ranges)) {
        throw new UsageError(`--range: expected a list like 0-99,1000-1099,-500,5000-, got ${JSON.stringify(ranges)}`);
      }
      const sha256 = typeof opts.sha256 === 'string' ? opts.sha256.trim().toLowerCase() : undefined;
      if (sha256 !== undefined && !/^[0-9a-f]{64}$/.test(sha256)) throw new UsageError('--sha256: expected 64 hexadecimal digits');
      const fragmentSize = opts.fragmentSize !== undefined ? parseSize(String(opts.fragmentSize), '--fragment-size') : undefined;
      if (fragmentSize !== undefined && fragmentSize < 1) throw new UsageError('--fragment-size must be at least 1 byte');
      const { resolveCommandOption } = await import('../user-config.js');
      const noProgressTimeoutMs = (await resolveCommandOption(command, 'noProgressTimeout', 'no-progress-timeout', 300)) * 1000;
      if (output === '-') {
        if (segments !== undefined && segments > 1) throw new UsageError('--segments cannot be used with -o - (stdout takes bytes in order only)');
        if (opts.json === true) throw new UsageError('-o - cannot be combined with --json (both use stdout)');
        if (process.stdout.isTTY === true && opts.outputTty !== true) {
          throw new UsageError('-o - would write binary data to the terminal; redirect stdout (> FILE or | COMMAND), or add --output-tty to write it anyway');
        }
      }
      const background = backgroundRequest(opts);
      if (background && output === '-') throw new UsageError('-o - cannot run in the background (stdout belongs to this process)');
      opts = await withConfigDefaults(command, opts);
      const { settings, secrets, droppedHeaders } = settingsFromFlags(opts);
      if (opts.redirects !== undefined && opts.redirects !== 'follow') settings.redirects = opts.redirects as NonNullable<typeof settings.redirects>;
      const { prepareTransport } = await import('../../api/options.js');
      const prepared = prepareTransport(settings, secrets);
      const outOpts = { json: opts.json === true, quiet: opts.quiet === true, session };
      if (multi) return downloadMany(urls, opts, { segments, mirrors, fragmentSize, noProgressTimeoutMs, prepared, background });

      if (output !== '-') await makeOutputFolder(place.cwd);
      if (output !== undefined && output !== '-' && opts.force !== true) {
        // Refuse before a job exists: a job that can only ever fail helps nobody.
        const { existsSync } = await import('node:fs');
        const { resolve } = await import('node:path');
        const target = resolve(place.cwd, output);
        if (existsSync(target)) throw new LocalFileError(`${target} already exists; use --force to overwrite it`, target);
      }
      await prepared.askPasswords();
      if (output !== '-') {
        // A persistent job, written before the first request: Ctrl-C, a crash or kill -9 leave it resumable.
        const { createDownload } = await import('../../api/transfer.js');
        const { executeJob } = await import('../foreground.js');
        const job = await createDownload(
          {
            url,
            ...(output !== undefined ? { output } : {}),
            cwd: place.cwd,
            force: opts.force === true,
            ...(ranges !== undefined ? { ranges } : {}),
            ...(segments !== undefined ? { segments } : {}),
            mirrors,
            ...(sha256 !== undefined ? { sha256 } : {}),
            ...(fragmentSize !== undefined ? { fragmentSize } : {}),
            noProgressTimeoutMs,
            prepared,
          },
        );
        if (background) return queueBackgroundJob(job, background, outOpts);
        await executeJob(job, {
          ...outOpts,
          prepared,
          beforeStart: (reporter) => {
            for (const h of droppedHeaders) {
              reporter.listener({ type: 'info', message: secretHeaderNote(h, job.id) });
            }
          },
        });
        return;
      }

      // -o -: bytes go to stdout in order and cannot be taken back, so there is nothing to resume: no job.
      const { downloadToStream } = await import('../../api/transfer.js');
      const { createReporter } = await import('../output/reporter.js');
      const reporter = createReporter({ ...outOpts, kind: 'download' });
      const interrupt = onInterrupt(undefined, { session });
      const started = Date.now();
      const unwatchPipe = watchClosedStdout(outOpts);
      let completed: TransferEvent | undefined;
      try {
        const result = await downloadToStream({
          url,
          to: process.stdout,
          ...(ranges !== undefined ? { ranges } : {}),
          mirrors,
          ...(sha256 !== undefined ? { sha256 } : {}),
          ...(fragmentSize !== undefined ? { fragmentSize } : {}),
          noProgressTimeoutMs,
          prepared,
          // 'complete' only once stdout took every byte: a reader gone at the end is no success either.
          onEvent: (e) => (e.type === 'complete' ? (completed = e) : reporter.listener(e)),
          signal: interrupt.signal,
        });
        await new Promise<void>((resolve) => process.stdout.write('', () => resolve()));
        if (completed) reporter.listener(completed);
        reporter.finish();
        printFinal(outOpts, {
          state: 'complete',
          kind: 'download',
          bytes: result.bytes,
          totalBytes: result.bytes,
          source: url,
          destination: '-',
          ...(result.sha256 ? { sha256: result.sha256 } : {}),
          elapsedMs: Date.now() - started,
        });
      } finally {
        reporter.finish();
        interrupt.dispose();
        unwatchPipe();
      }
    }),
  );
}

/** Several downloads (src/cli/multi.ts): one job per URL, each under its own name in -d DIR. */
async function downloadMany(
  urls: string[],
  opts: Record<string, unknown>,
  c: { segments?: number; mirrors: string[]; fragmentSize?: number; noProgressTimeoutMs: number; prepared: import('../../api/options.js').PreparedTransport; background?: import('../background.js').BackgroundRequest },
): Promise<number> {
  const { downloadTargets, runJobs } = await import('../multi.js');
  const targets = downloadTargets(urls, opts, process.cwd());
  targets.forEach((t) => checkUrl(t.url, 'URL'));
  const { mkdirSync } = await import('node:fs');
  mkdirSync(targets[0]!.dir, { recursive: true });
  const { createDownload } = await import('../../api/transfer.js');
  const jobs = [];
  for (const t of targets) {
    jobs.push(await createDownload({
      url: t.url,
      ...(t.output !== undefined ? { output: t.output } : {}),
      cwd: t.dir,
      force: opts.force === true,
      ...(c.segments !== undefined ? { segments: c.segments } : {}),
      mirrors: c.mirrors,
      ...(c.fragmentSize !== undefined ? { fragmentSize: c.fragmentSize } : {}),
      noProgressTimeoutMs: c.noProgressTimeoutMs,
      prepared: c.prepared,
    }));
  }
  return runJobs(jobs, { json: opts.json === true, quiet: opts.quiet === true, prepared: c.prepared, ...(c.background ? { background: c.background } : {}) });
}

/**
 * Where the file goes: `-o` or the second argument (not both), in the folder of
 * `-d` (created if missing). `-o` naming an existing folder, or ending in `/`,
 * is a folder too: the server's file name goes in it (wget -P, aria2c -d).
 */
async function outputPlace(flag: string | undefined, positional: string | undefined, dirFlag: string | undefined): Promise<{ output?: string; cwd: string }> {
  if (flag !== undefined && positional !== undefined) throw new UsageError(`the output is given twice (-o ${flag} and ${positional}); give one`);
  let output = flag ?? positional;
  if (output === '') throw new UsageError('--output must not be empty');
  if (dirFlag === '') throw new UsageError('--output-dir must not be empty');
  if (output === '-') {
    if (dirFlag !== undefined) throw new UsageError('--output-dir cannot be used with -o - (stdout)');
    return { output, cwd: process.cwd() };
  }
  const { statSync } = await import('node:fs');
  const path = await import('node:path');
  let dir = dirFlag !== undefined ? path.resolve(process.cwd(), dirFlag) : process.cwd();
  if (output !== undefined) {
    const target = path.resolve(dir, output);
    if (/[/\\]$/.test(output) || statSync(target, { throwIfNoEntry: false })?.isDirectory() === true) {
      dir = target;
      output = undefined;
    }
  }
  return { ...(output !== undefined ? { output } : {}), cwd: dir };
}

/** The output folder, created once every option is known to be valid (a mistyped flag leaves no folder behind). */
async function makeOutputFolder(dir: string): Promise<void> {
  if (dir === process.cwd()) return;
  const { mkdirSync } = await import('node:fs');
  try {
    mkdirSync(dir, { recursive: true });
  } catch (e) {
    throw new LocalFileError(`cannot use ${dir} as the output folder: ${(e as Error).message}`, dir, { cause: e });
  }
}

/**
 * `-o -` into a pipe whose reader went away (`| head -c 10`): the download did
 * not reach its reader, so it must not end as done (the program's EPIPE rule,
 * "a closed pipe is the reader's choice", is for listings). Exit 3, the local
 * output could not be written, as curl exits 23 on a write error.
 */
function watchClosedStdout(out: OutputOptions & { session: OutputSession }): () => void {
  const stdout = process.stdout;
  const others = stdout.rawListeners('error') as Array<(...args: unknown[]) => void>;
  for (const l of others) stdout.off('error', l);
  const onError = (err: NodeJS.ErrnoException) => {
    const e = new LocalFileError(
      err.code === 'EPIPE' ? 'stdout was closed by its reader before the download ended (broken pipe); nothing more can be written' : `cannot write to stdout: ${err.message}`,
      undefined,
      { cause: err },
    );
    out.session.stopAllDisplays();
    printError(out, e);
    process.exit(e.exitCode);
  };
  stdout.on('error', onError);
  return () => {
    stdout.off('error', onError);
    for (const l of others) stdout.on('error', l);
  };
}
