import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { defineConfig } from 'vitest/config';

// Every test (and every `bits` child process, which inherits the environment) gets a
// throwaway job store and user config unless a test sets its own: the suite must never
// read or write the developer's real ~/.config/bits.
const home = process.env.BITS_TEST_HOME ?? mkdtempSync(path.join(tmpdir(), 'bits-test-home-'));

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    // Integration tests bind loopback ports and spawn `bits` processes, and much of their time
    // is waiting (rate limits, retry delays, servers stopped on purpose): three workers on two
    // cores took the suite from 402 s to 299 s with every test passing, two left a core idle.
    maxWorkers: 3,
    env: { BITS_HOME: home },
  },
});
