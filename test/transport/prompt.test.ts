/**
 * The password prompt on a real terminal: `script` gives the child a pty, we type
 * the password after the prompt appears, and check the terminal never showed it
 * (raw mode, no echo). The child runs our TypeScript transpiled on the fly.
 */
import { spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import ts from 'typescript';
import { afterAll, beforeAll, expect, it } from 'vitest';

const haveScript = spawnSync('script', ['--version']).status === 0;
let dir: string;

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'bits-prompt-'));
  for (const f of ['src/errors.ts', 'src/protocol/hresult.ts', 'src/transport/credentials.ts']) {
    const out = ts.transpileModule(readFileSync(f, 'utf8'), { compilerOptions: { module: ts.ModuleKind.ES2022, target: ts.ScriptTarget.ES2022 } }).outputText;
    const dest = join(dir, f.replace(/\.ts$/, '.js'));
    mkdirSync(dirname(dest), { recursive: true });
    writeFileSync(dest, out);
  }
  writeFileSync(join(dir, 'package.json'), '{"type":"module"}');
  writeFileSync(
    join(dir, 'driver.js'),
    `import { createHash } from 'node:crypto';
import { resolveCredentials } from './src/transport/credentials.js';
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
