/**
 * `bits upload FILE URL`: one file to a BITS upload URL (MC-BUP §3.1), with
 * upload-reply (§1.3.3) via --reply / --reply-file, run as a persistent job
 * (src/jobs/runner.ts). The protocol client is imported only when the command runs.
 */
import { Option, type Command } from 'commander';
import { runAction } from '../run.js';
import { addTransportOptions, noProgressTimeoutOption, settingsFromFlags, withConfigDefaults } from '../transport-options.js';
import { UsageError } from '../../errors.js';
import { addBackgroundOptions, backgroundRequest, queueBackgroundJob } from '../background.js';
import { secretHeaderNote } from '../../store/secrets.js';

/** §6 note 10: Windows sends fragments of 5 KB to 13 MB. */
const MIN_FRAGMENT = 5 * 1024;
const WINDOWS_MAX_FRAGMENT = 13 * 1024 * 1024;
/** Beyond this a single FRAGMENT risks proxy and server body limits for no speed gain. */
const MAX_FRAGMENT = 1024 * 1024 * 1024;
/** The client's defaults (src/client/upload.ts), repeated here so `--help` does not load the client. */
const DEFAULT_FRAGMENT = 8 * 1024 * 1024;
const DEFAULT_NO_PROGRESS_S = 300;

export function register(program: Command): void {
  const cmd = program
    .command('upload')
    .description('upload FILE to a BITS (IIS) upload URL, resumably')
    .argument('<file>', 'local file to upload')
    .argument('<url>', 'destination URL, e.g. https://server/uploads/name.bin')
    .argument('[more...]', 'more files, then a folder URL ending in / (each file keeps its name)')
    // No .default(): an absent flag must fall through to `bits config set fragment-size …`.
    .option(
      '--fragment-size <size>',
      'bytes per FRAGMENT request (5K..13M like Windows; larger is allowed but some servers refuse it with 413) (default: config fragment-size, else 8M)',
    )
    .option('--reply', 'upload-reply mode: the server must send a reply (written to stdout unless --reply-file)')
    .option('--reply-file <path>', 'save the server reply here (`-` = stdout); implies --reply')
    .option('--method-override', 'send BITS messages as POST with X-Http-Method-Override: BITS_POST (through proxies and firewalls that refuse unknown methods)')
    .addOption(noProgressTimeoutOption('give up (resumably) after this long without an acknowledged byte'))
    .option('--json', 'one JSON object per line on stdout')
    .option('-q, --quiet', 'print errors only');
  addTransportOptions(cmd);
  addBackgroundOptions(cmd);
  cmd.addHelpText(
    'after',
    `
The file is sent in FRAGMENTs; interrupted transfers resume where the server
says it stopped. Transient network or server errors are retried with backoff
until --no-progress-timeout passes without progress.

Every upload is a job, saved before the first request and after every
acknowledged fragment: after Ctrl-C, a crash or kill -9, \`bits resume <id>\`
continues it (the id is in the last line, and in every --json object).
Ctrl-C once suspends the job (exit 10); twice within 2 s cancels it (exit 11).
Passwords are never saved: resume asks again (or reads BITS_PASSWORD).

Examples:
  bits upload ./backup.tar http://server/uploads/backup.tar
  bits upload --fragment-size 1M ./big.iso https://server/uploads/big.iso
  bits upload --reply-file reply.bin ./request.xml http://server/app/request.xml`,
  );
  cmd.action((file: string, url: string, more: string[], opts: Record<string, unknown>, command: Command) =>
    runAction({ json: opts.json === true, quiet: opts.quiet === true }, async (session) => {
      const { uploadTargets } = await import('../multi.js');
      const targets = more.length > 0 ? uploadTargets([file, url, ...more]) : undefined;
      if (targets) url = targets[0]!.url;
      // Validate everything before touching the network or the job store.
      const { parseDestinationUrl } = await import('../../protocol/urls.js');
      let dest: URL;
      try {
        dest = parseDestinationUrl(url);
      } catch (e) {
        throw new UsageError((e as Error).message);
      }
      const { resolveCommandOption } = await import('../user-config.js');
      const fragmentSize = await resolveCommandOption(command, 'fragmentSize', 'fragment-size', DEFAULT_FRAGMENT);
      if (fragmentSize < MIN_FRAGMENT || fragmentSize > MAX_FRAGMENT) {
        throw new UsageError(`--fragment-size must be between 5K and 1G (Windows uses 5K..13M), got ${opts.fragmentSize ?? fragmentSize}`);
      }
      const noProgressTimeoutMs = (await resolveCommandOption(command, 'noProgressTimeout', 'no-progress-timeout', DEFAULT_NO_PROGRESS_S)) * 1000;
      const replyFile = typeof opts.replyFile === 'string' ? opts.replyFile : opts.reply === true ? '-' : undefined;
      if (replyFile === '-' && opts.json === true) {
        throw new UsageError('the reply cannot go to stdout with --json; use --reply-file PATH');
      }
      const background = backgroundRequest(opts);
      opts = await withConfigDefaults(command, opts);
      const { settings, secrets, droppedHeaders } = settingsFromFlags(opts);
      const { prepareTransport } = await import('../../api/options.js');
      const prepared = prepareTransport(settings, secrets);
      const { createUpload } = await import('../../api/transfer.js');
      if (targets) {
        if (replyFile !== undefined) throw new UsageError('--reply and --reply-file take one file; upload several without them');
        for (const t of targets) await checkReadableFile(t.file);
        const { runJobs } = await import('../multi.js');
        const jobs = [];
        for (const t of targets) jobs.push(await createUpload({ file: t.file, url: t.url, fragmentSize, noProgressTimeoutMs, prepared }));
        return runJobs(jobs, { json: opts.json === true, quiet: opts.quiet === true, prepared, ...(background ? { background } : {}) });
      }
      await checkReadableFile(file);
      await prepared.askPasswords();

      const { executeJob } = await import('../foreground.js');
      const job = await createUpload({
        file,
        url: dest.href,
        fragmentSize,
        noProgressTimeoutMs,
        ...(replyFile !== undefined ? { replyFile } : {}),
        ...(opts.methodOverride === true ? { methodOverride: true } : {}),
        prepared,
      });
      if (background) return queueBackgroundJob(job, background, { json: opts.json === true, quiet: opts.quiet === true });
      await executeJob(job, {
        json: opts.json === true,
        quiet: opts.quiet === true,
        session,
        prepared,
        beforeStart: (reporter) => {
          if (fragmentSize > WINDOWS_MAX_FRAGMENT) {
            reporter.listener({ type: 'warning', message: `--fragment-size above 13M is larger than Windows sends; IIS may refuse it (413), bits then halves it` });
          }
          for (const h of droppedHeaders) {
            reporter.listener({ type: 'info', message: secretHeaderNote(h, job.id) });
          }
        },
      });
    }),
  );
}

/** FILE must exist, be a regular file and be readable: LocalFileError (exit 3) otherwise, worded as every source check is. */
async function checkReadableFile(file: string): Promise<void> {
  const { promises: fsp, constants } = await import('node:fs');
  const { sourceFileError, statSourceFile } = await import('../../io/source-file.js');
  await statSourceFile(file);
  await fsp.access(file, constants.R_OK).catch((e: unknown) => {
    throw sourceFileError(file, e);
  });
}
