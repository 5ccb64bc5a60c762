/**
 * Presentation of transfer events. STUB with a minimal behaviour; the CLI helper
 * replaces the internals (progress bars on a TTY, periodic status lines in CI
 * logs, `--json` events on stdout) without changing this interface.
 */
import type { TransferEvent, TransferListener } from '../../client/events.js';

export interface ReporterOptions {
  /** One JSON object per line on stdout. */
  json?: boolean;
  /** No progress or status output on stderr (errors still print). */
  quiet?: boolean;
}

export interface Reporter {
  listener: TransferListener;
  /** Stop timers and bars; call before printing the final line or exiting. */
  finish(): void;
}

export function createReporter(opts: ReporterOptions = {}): Reporter {
  const listener = (e: TransferEvent) => {
    if (opts.json) {
      process.stdout.write(JSON.stringify(e) + '\n');
      return;
    }
    if (opts.quiet) return;
    if (e.type === 'complete') process.stderr.write(`bits: done: ${e.bytes} bytes -> ${e.destination}\n`);
    else if (e.type === 'retry') process.stderr.write(`bits: retrying in ${Math.round(e.delayMs / 1000)} s: ${e.reason}\n`);
    else if (e.type === 'warning') process.stderr.write(`bits: warning: ${e.message}\n`);
  };
  return { listener, finish: () => {} };
}
