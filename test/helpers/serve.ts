/**
 * A real `bits serve` (the built executable) on a loopback port, for tests
 * that drive the command line against it.
 */
import { startBits, type RunningBits } from './cli.js';

export interface Served {
  /** http://127.0.0.1:PORT/ */
  url: string;
  port: number;
  bits: RunningBits;
  stop(): Promise<void>;
}

/** `bits serve --json --port 0 --root ROOT …`, resolved once it listens. */
export async function startServe(root: string, extra: string[] = []): Promise<Served> {
  const bits = startBits(['serve', '--json', '--quiet', '--port', '0', '--root', root, ...extra], { timeoutMs: 300_000 });
  await bits.waitFor(/\n/, 'stdout', 15_000);
  const first = JSON.parse(bits.stdout.split('\n')[0]!) as { type: string; url: string };
  if (first.type !== 'listening') throw new Error(`bits serve said ${bits.stdout}`);
  const url = first.url.endsWith('/') ? first.url : `${first.url}/`;
  return {
    url,
    port: Number(new URL(url).port),
    bits,
    async stop() {
      if (bits.child.exitCode === null && bits.child.signalCode === null) bits.child.kill('SIGTERM');
      await bits.done;
    },
  };
}
