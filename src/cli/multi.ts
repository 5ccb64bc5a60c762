/**
 * Several files in one command: `bits download URL… [-d DIR]`, `-i FILE`,
 * `bits upload FILE… URL/`. One job per file; in the foreground they run one
 * after another under one combined progress line (output/combined.ts), each
 * with its own start and last line above it; with --background they are all
 * queued for the agent; the exit code is the worst.
 */
import fs from 'node:fs';
import path from 'node:path';
import { LocalFileError, UsageError, toBitsError, ExitCode } from '../errors.js';
import type { Job } from '../api.js';
import type { PreparedTransport } from '../api/options.js';
import type { BackgroundRequest } from './background.js';

export interface DownloadTarget {
  url: string;
  /** Absolute; undefined: the server's name, in `dir`. */
  output?: string;
  dir: string;
}

/**
 * An -i list: one URL per line, optionally followed by the output name
 * (the rest of the line); blank lines and lines starting with # are skipped.
 */
export function parseInputList(text: string, where: string): Array<{ url: string; name?: string }> {
  const out: Array<{ url: string; name?: string }> = [];
  text.split(/\r?\n/).forEach((raw, i) => {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) return;
    const m = /^(\S+)(?:\s+(.+))?$/.exec(line)!;
    const name = m[2]?.trim();
    if (name !== undefined && (name === '-' || name.includes('\0'))) throw new UsageError(`${where}:${i + 1}: invalid output name ${JSON.stringify(name)}`);
    out.push(name ? { url: m[1]!, name } : { url: m[1]! });
  });
  return out;
}

/** Whether a download command line asks for the several-files form. */
/** Several URLs or an -i list: one job per file. One URL (with or without -d) is the ordinary download. */
export function isMultiDownload(urls: string[], opts: Record<string, unknown>): boolean {
  return urls.length > 1 || typeof opts.inputFile === 'string';
}

/**
 * `bits download URL OUTPUT`: a second argument that is not a URL (no scheme) is
 * the output, as -o; anything else is a list of URLs.
 */
export function splitOutputArgument(args: string[]): { urls: string[]; positional?: string } {
  if (args.length === 2 && !/^[a-z][a-z0-9+.-]*:\/\//i.test(args[1]!)) return { urls: [args[0]!], positional: args[1]! };
  return { urls: args };
}

/** The downloads a command line asks for: its URLs, then the -i list's, into -d DIR (default: cwd). */
export function downloadTargets(urls: string[], opts: Record<string, unknown>, cwd: string): DownloadTarget[] {
  const dir = path.resolve(cwd, typeof opts.outputDir === 'string' ? opts.outputDir : '.');
  const list: Array<{ url: string; name?: string }> = urls.map((url) => ({ url }));
  if (list.length === 1 && typeof opts.output === 'string' && opts.output !== '-' && typeof opts.inputFile !== 'string') list[0]!.name = opts.output;
  if (typeof opts.inputFile === 'string') {
    let text: string;
    try {
      text = opts.inputFile === '-' ? fs.readFileSync(0, 'utf8') : fs.readFileSync(path.resolve(cwd, opts.inputFile), 'utf8');
    } catch (e) {
      throw new LocalFileError(`cannot read -i ${opts.inputFile}: ${(e as Error).message}`, String(opts.inputFile));
    }
    list.push(...parseInputList(text, opts.inputFile));
  }
  if (list.length === 0) throw new UsageError('no URLs: give URLs, or -i FILE with one URL per line');
  if (opts.output === '-') throw new UsageError('-o - takes one URL, without -d or -i');
  if (Array.isArray(opts.mirror) && opts.mirror.length > 0 && list.length > 1) throw new UsageError('--mirror serves one file; give several URLs without it');
  for (const k of ['output', 'sha256', 'range'] as const) {
    if (opts[k] !== undefined && list.length > 1) throw new UsageError(`--${k} names one file; with several URLs use -d DIR (and names in the -i list)`);
  }
  const outputs = new Set<string>();
  return list.map(({ url, name }) => {
    const t: DownloadTarget = { url, dir };
    if (name !== undefined) {
      t.output = path.resolve(dir, name);
      if (outputs.has(t.output)) throw new UsageError(`two downloads would write ${t.output}`);
      outputs.add(t.output);
      if (opts.force !== true && fs.existsSync(t.output)) throw new LocalFileError(`${t.output} already exists; use --force to overwrite it`, t.output);
    }
    return t;
  });
}

/** `bits upload FILE… URL/`: the files and the URL each one goes to (the URL's folder plus the file's name). */
export function uploadTargets(args: string[]): Array<{ file: string; url: string }> {
  const base = args[args.length - 1]!;
  const files = args.slice(0, -1);
  if (!base.endsWith('/')) throw new UsageError(`several files go to a folder URL ending in /, got ${JSON.stringify(base)}`);
  const names = new Set<string>();
  return files.map((file) => {
    const name = path.basename(file);
    if (names.has(name)) throw new UsageError(`two files are named ${name}; they would overwrite each other at ${base}`);
    names.add(name);
    return { file, url: new URL(encodeURIComponent(name), base).href };
  });
}

export interface ManyOptions {
  json: boolean;
  quiet: boolean;
  prepared: PreparedTransport;
  background?: BackgroundRequest;
}

/** Runs (or queues) the jobs; the worst exit code. A Ctrl-C stops this job and the rest. */
export async function runJobs(jobs: Job[], o: ManyOptions): Promise<number> {
  if (o.background) {
    const { queueBackgroundJob } = await import('./background.js');
    for (const j of jobs) await queueBackgroundJob(j, o.background, o);
    return 0;
  }
  const { executeJob } = await import('./foreground.js');
  const { OutputSession } = await import('./output/final.js');
  const { worstExitCode } = await import('../api/jobs.js');
  const { CombinedProgress } = await import('./output/combined.js');
  const { statusIntervalFromEnv } = await import('./output/reporter.js');
  const combined = jobs.length > 1 && !o.quiet ? new CombinedProgress(jobs, { statusIntervalMs: statusIntervalFromEnv() }) : undefined;
  const codes: number[] = [];
  try {
    for (const [i, j] of jobs.entries()) {
      combined?.beginJob(i);
      try {
        await executeJob(j, { json: o.json, quiet: o.quiet, session: new OutputSession(), prepared: o.prepared, ...(combined ? { combined } : {}) });
        combined?.endJob(true);
        codes.push(0);
      } catch (err) {
        combined?.endJob(false);
        const e = toBitsError(err);
        codes.push(e.exitCode);
        if (e.exitCode === ExitCode.INTERRUPTED || e.exitCode === ExitCode.CANCELLED) break;
      }
    }
  } finally {
    combined?.stop();
  }
  if (!o.quiet && !o.json && jobs.length > 1) {
    const ok = codes.filter((c) => c === 0).length;
    process.stderr.write(`bits: ${ok} of ${jobs.length} transfers complete${codes.length < jobs.length ? ` (${jobs.length - codes.length} not started)` : ''}\n`);
  }
  return worstExitCode(codes.length < jobs.length ? [...codes, ExitCode.INTERRUPTED] : codes);
}
