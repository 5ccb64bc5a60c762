/**
 * The password prompt on a real terminal: `script` gives the child a pty, we type
 * the password after the prompt appears, and check the terminal never showed it
 * (raw mode, no echo). The child runs the built dist/ (npm test builds first).
 */
import { spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, beforeAll, expect, it } from 'vitest';

const haveScript = spawnSync('script', ['--version']).status === 0;
let dir: string;

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'bits-prompt-'));
  writeFileSync(join(dir, 'package.json'), '{"type":"module"}');
  writeFileSync(
    join(dir, 'driver.js'),
    `import { createHash } from 'node:crypto';
import { resolveCredentials } from ${JSON.stringify(pathToFileURL(resolve('dist/transport/credentials.js')).href)};
try {
  const c = await resolveCredentials({ kind: 'prompt', user: 'CORP\\\\alice' }, { env: {} });
  process.stdout.write('RESULT ' + c.user + ' ' + createHash('sha256').update(c.password).digest('hex') + '\\n');
} catch (e) {
  process.stdout.write('ERROR ' + e.name + '\\n');
}
process.exit(0);
`,
  );
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function runWithPty(keys: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn('script', ['-qec', `node ${join(dir, 'driver.js')}`, '/dev/null'], { stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    let typed = false;
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`timed out; output so far: ${JSON.stringify(out)}`));
    }, 15_000);
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      // Type only once the prompt is up, i.e. raw mode is on: typing earlier would be echoed by the tty.
      if (!typed && out.includes('Password for')) {
        typed = true;
        setTimeout(() => child.stdin.write(keys), 50);
      }
    });
    child.on('close', () => {
      clearTimeout(timer);
      resolve(out);
    });
  });
}

it.skipIf(!haveScript)('reads the password without echo; backspace edits; the prompt names the user', async () => {
  const out = await runWithPty('hunter2x\x7f-secret\r');
  const want = createHash('sha256').update('hunter2-secret').digest('hex');
  expect(out).toContain('Password for CORP\\alice: ');
  expect(out).toContain(`RESULT CORP\\alice ${want}`);
  expect(out).not.toContain('hunter2');
});

it.skipIf(!haveScript)('Ctrl-C at the prompt interrupts', async () => {
  const out = await runWithPty('abc\x03');
  expect(out).toContain('ERROR InterruptedError');
  expect(out).not.toContain('abc');
});
