/**
 * Entry point of the `bits` executable. Start-up matters for scripts that call
 * bits in loops: `--version` answers before anything else loads, and each
 * command's implementation is imported only when that command runs.
 */
import { VERSION } from '../version.js';

const argv = process.argv.slice(2);
if (argv.length === 1 && (argv[0] === '--version' || argv[0] === '-V')) {
  process.stdout.write(`${VERSION}\n`);
} else {
  // undici's HTTP parser (llhttp) is WebAssembly. V8 recompiling it with its optimising
  // tier once it is hot holds ~30 MB of compiler memory (peak RSS of a 100 MiB upload
  // 125 -> 98 MB without it) and buys nothing measurable: it parses response heads and
  // only frames bodies. The baseline compiler's code is kept instead.
  const { setFlagsFromString } = await import('node:v8');
  setFlagsFromString('--liftoff-only');
  const { buildProgram } = await import('./program.js');
  const program = await buildProgram();
  await program.parseAsync(process.argv);
}
