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
  const { buildProgram } = await import('./program.js');
  const program = await buildProgram();
  await program.parseAsync(process.argv);
}
