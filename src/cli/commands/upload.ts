/**
 * `bits upload FILE URL`: one file to a BITS upload URL (MC-BUP §3.1), with
 * upload-reply (§1.3.3) via --reply / --reply-file. The protocol client is
 * imported only when the command runs.
 */
import { Option, type Command } from 'commander';
import { runAction, onInterrupt, printFinal } from '../run.js';
import { addTransportOptions, parseSeconds, transportOptionsFrom } from '../transport-options.js';
import { LocalFileError, UsageError } from '../../errors.js';
import { parseSize } from '../parse.js';

/** §6 note 10: Windows sends fragments of 5 KB to 13 MB. */
const MIN_FRAGMENT = 5 * 1024;
const WINDOWS_MAX_FRAGMENT = 13 * 1024 * 1024;
/** Beyond this a single FRAGMENT risks proxy and server body limits for no speed gain. */
const MAX_FRAGMENT = 1024 * 1024 * 1024;

export function register(program: Command): void {
  const cmd = program
    .command('upload')
    .description('upload FILE to a BITS (IIS) upload URL, resumably')
    .argument('<file>', 'local file to upload')
    .argument('<url>', 'destination URL, e.g. https://server/uploads/name.bin')
    .addOption(
      new Option(
        '--fragment-size <size>',
        'bytes per FRAGMENT request (5K..13M like Windows; larger is allowed but some servers refuse it with 413)',
      ).default('8M'),
    )
    .option('--reply', 'upload-reply mode: the server must send a reply (written to stdout unless --reply-file)')
    .option('--reply-file <path>', 'save the server reply here (`-` = stdout); implies --reply')
    .addOption(new Option('--no-progress-timeout <seconds>', 'give up (resumably) after this long without an acknowledged byte').default('300'))
    .option('--json', 'one JSON object per line on stdout')
    .option('-q, --quiet', 'print errors only');
  addTransportOptions(cmd);
  cmd.addHelpText(
    'after',
    `
The file is sent in FRAGMENTs; interrupted transfers resume where the server
says it stopped. Transient network or server errors are retried with backoff
until --no-progress-timeout passes without progress.

Examples:
  bits upload ./backup.tar http://server/uploads/backup.tar
  bits upload --fragment-size 1M ./big.iso https://server/uploads/big.iso
  bits upload --reply-file reply.bin ./request.xml http://server/app/request.xml`,
  );
  cmd.action((file: string, url: string, opts: Record<string, unknown>) =>
    runAction({ json: opts.json === true, quiet: opts.quiet === true }, async () => {
      // Validate everything before touching the network.
      const { parseDestinationUrl } = await import('../../protocol/urls.js');
      let dest: URL;
      try {
        dest = parseDestinationUrl(url);
      } catch (e) {
        throw new UsageError((e as Error).message);
      }
      const fragmentSize = parseSize(String(opts.fragmentSize), '--fragment-size');
      if (fragmentSize < MIN_FRAGMENT || fragmentSize > MAX_FRAGMENT) {
        throw new UsageError(`--fragment-size must be between 5K and 1G (Windows uses 5K..13M), got ${opts.fragmentSize}`);
      }
      // commander maps --no-progress-timeout to `progressTimeout` (it reads --no-* as a negation).
      const npt = opts.progressTimeout ?? opts.noProgressTimeout ?? '300';
      const noProgressTimeoutMs = parseSeconds('--no-progress-timeout', npt) * 1000;
      const replyFile = typeof opts.replyFile === 'string' ? opts.replyFile : opts.reply === true ? '-' : undefined;
      if (replyFile === '-' && opts.json === true) {
        throw new UsageError('the reply cannot go to stdout with --json; use --reply-file PATH');
      }
      const transport = transportOptionsFrom(opts);
      await checkReadableFile(file);

      const { uploadFile } = await import('../../client/upload.js');
      const { createReporter } = await import('../output/reporter.js');
      const reporter = createReporter({ json: opts.json === true, quiet: opts.quiet === true, kind: 'upload' });
      const interrupt = onInterrupt();
      const started = Date.now();
      try {
        if (fragmentSize > WINDOWS_MAX_FRAGMENT) {
          reporter.listener({ type: 'warning', message: `--fragment-size above 13M is larger than Windows sends; IIS may refuse it (413), bits then halves it` });
        }
        const result = await uploadFile({
          file,
          url: dest,
          fragmentSize,
          replyFile,
          requireReply: replyFile !== undefined,
          noProgressTimeoutMs,
          transport,
          onEvent: reporter.listener,
          signal: interrupt.signal,
        });
        reporter.finish();
        printFinal(
          { json: opts.json === true, quiet: opts.quiet === true },
          {
            state: 'complete',
            kind: 'upload',
            bytes: result.bytes,
            totalBytes: result.bytes,
            source: file,
            destination: result.destination,
            elapsedMs: Date.now() - started,
            ...(result.replyFile && result.replyFile !== '-' ? { replyFile: result.replyFile } : {}),
          },
        );
      } finally {
        reporter.finish();
        interrupt.dispose();
      }
    }),
  );
}

/** FILE must exist, be a regular file and be readable: LocalFileError (exit 3) otherwise. */
async function checkReadableFile(file: string): Promise<void> {
  const { promises: fsp, constants } = await import('node:fs');
  let st;
  try {
    st = await fsp.stat(file);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new LocalFileError(code === 'ENOENT' ? `${file}: no such file` : `${file}: ${(e as Error).message}`, file, { cause: e });
  }
  if (!st.isFile()) throw new LocalFileError(`${file}: not a regular file`, file);
  try {
    await fsp.access(file, constants.R_OK);
  } catch (e) {
    throw new LocalFileError(`${file}: permission denied`, file, { cause: e });
  }
}
