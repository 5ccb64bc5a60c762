/**
 * Controlling background jobs with the BUILT bits: `bits list` shows
 * priority, queue position and owner; `bits suspend` stops a job the agent
 * runs and `bits resume` queues it again; `bits agent install` writes a unit
 * that systemd-analyze accepts (a plist that plutil / plistlib parses).
 */
import { describe, expect, it } from 'vitest';
import fs from 'node:fs';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { startServer, type RunningServer } from '../../src/server/index.js';
import { makeRandomFile, sha256File } from '../helpers/files.js';
import { agentFixture, agentLog, agentPid, bits, job, jsonLines, queuedId, until } from './helpers.js';

const fx = agentFixture('bits-agent-ctl-');

function has(tool: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${tool}`]).status === 0;
}

describe('background job control', () => {
  it('list shows priority, queue position and owner; suspend stops the agent\'s run, resume re-queues it, wait sees it complete', async () => {
    const home = fx.home('home-ctl');
    expect((await bits(home, ['config', 'set', 'agent.concurrency', '1'])).code).toBe(0);
    const file = path.join(fx.dir, 'ctl.bin');
    await makeRandomFile(file, 1024 * 1024, 7);
    const sha = await sha256File(file);
    const small = path.join(fx.dir, 'small.bin');
    await makeRandomFile(small, 50_000, 8);
    const a = queuedId(await bits(home, ['upload', '--background', '--json', '--fragment-size', '64K', '--limit-rate', '100K', file, `${fx.server.url}/up/ctl.bin`]));
    await until('job a to run', () => job(home, a), (j) => j.running && j.bytesDone > 0);
    const b = queuedId(await bits(home, ['upload', '--priority', 'low', '--json', small, `${fx.server.url}/up/small.bin`]));

    const list = await bits(home, ['list', '--json']);
    const rows = jsonLines(list.stdout).filter((o) => o.type === 'job');
    const ra = rows.find((r) => r.id === a)!;
    const rb = rows.find((r) => r.id === b)!;
    expect(ra.priority).toBe('normal');
    expect(ra.owner).toEqual({ pid: agentPid(home), host: expect.any(String), agent: true });
    expect(rb.priority).toBe('low');
    expect(rb.queuePosition).toBe(1);
    const table = (await bits(home, ['list'])).stdout;
    expect(table).toMatch(new RegExp(`${a}\\s+normal\\s+-\\s+agent pid \\d+`));
    expect(table).toMatch(new RegExp(`${b}\\s+low\\s+#1`));

    const s = await bits(home, ['suspend', a]);
    expect(s.code, s.stderr).toBe(0);
    expect(s.stderr).toMatch(/suspended/);
    const suspended = await job(home, a);
    expect(suspended.state).toBe('suspended');
    expect(suspended.running).toBe(false);
    expect(agentLog(home)).toMatch(new RegExp(`job ${a}: suspended on request`));

    const r = await bits(home, ['resume', '--json', a]);
    expect(r.code, r.stderr).toBe(0);
    expect(jsonLines(r.stdout).find((o) => o.type === 'queued')?.jobId).toBe(a);
    const w = await bits(home, ['wait', a, b], { timeoutMs: 60_000 });
    expect(w.code, w.stderr).toBe(0);
    expect(await sha256File(path.join(fx.root, 'up', 'ctl.bin'))).toBe(sha);
    expect((await job(home, b)).state).toBe('complete');
  }, 90_000);

  it('bits cancel --force of a job the agent runs cancels that job only; the queued one still completes', async () => {
    const home = fx.home('home-cancel');
    expect((await bits(home, ['config', 'set', 'agent.concurrency', '1'])).code).toBe(0);
    const big = path.join(fx.dir, 'cancel-big.bin');
    const other = path.join(fx.dir, 'cancel-other.bin');
    await makeRandomFile(big, 1024 * 1024, 11);
    await makeRandomFile(other, 40_000, 12);
    const a = queuedId(await bits(home, ['upload', '--background', '--json', '--fragment-size', '64K', '--limit-rate', '100K', big, `${fx.server.url}/up/cancel-big.bin`]));
    await until('job a to run', () => job(home, a), (j) => j.running && j.bytesDone > 0);
    const b = queuedId(await bits(home, ['upload', '--background', '--json', other, `${fx.server.url}/up/cancel-other.bin`]));
    const c = await bits(home, ['cancel', '--force', a], { timeoutMs: 30_000 });
    expect(c.code, c.stderr).toBe(0);
    expect((await job(home, a)).state).toBe('cancelled');
    const w = await bits(home, ['wait', b], { timeoutMs: 30_000 });
    expect(w.code, w.stderr).toBe(0);
    expect(await sha256File(path.join(fx.root, 'up', 'cancel-other.bin'))).toBe(await sha256File(other));
  }, 60_000);

  it('bits wait exits with the job\'s own exit code (5: the server refused)', async () => {
    const home = fx.home('home-refused');
    const q = await bits(home, ['download', '--background', '--json', '-o', path.join(fx.dir, 'nothing.bin'), `${fx.server.url}/no/such/file.bin`]);
    const id = queuedId(q);
    const w = await bits(home, ['wait', '--json', id], { timeoutMs: 30_000 });
    expect(w.code, w.stderr).toBe(5);
    expect((await job(home, id)).lastError?.code).toBe('ServerError');
  }, 60_000);

  it('agent install: a systemd user unit systemd-analyze verifies, and a launchd plist that parses', async () => {
    const userHome = path.join(fx.dir, 'user');
    const bitsHome = path.join(fx.dir, 'home-install');
    const w = await bits(bitsHome, ['agent', 'install', '--write', '--platform', 'linux'], { env: { HOME: userHome } });
    expect(w.code, w.stderr).toBe(0);
    const unit = path.join(userHome, '.config', 'systemd', 'user', 'bits-agent.service');
    const text = fs.readFileSync(unit, 'utf8');
    expect(text).toMatch(new RegExp(`^ExecStart=${process.execPath.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} \\S+/bin/bits agent$`, 'm'));
    expect(text).toContain(`Environment=BITS_HOME=${bitsHome}`);
    expect(text).toMatch(/^WantedBy=default\.target$/m);
    if (has('systemd-analyze')) {
      const ok = spawnSync('systemd-analyze', ['verify', unit], { encoding: 'utf8', timeout: 20_000 });
      expect(ok.status, ok.stderr).toBe(0);
      // The tool does reject a broken unit here, so the pass above means something.
      const bad = path.join(fx.dir, 'bad-agent.service');
      fs.writeFileSync(bad, text.replace(/^ExecStart=.*$/m, 'ExecStart=relative/bits agent'));
      expect(spawnSync('systemd-analyze', ['verify', bad], { encoding: 'utf8', timeout: 20_000 }).status).not.toBe(0);
    }
    const plist = await bits(bitsHome, ['agent', 'install', '--platform', 'darwin']);
    expect(plist.code, plist.stderr).toBe(0);
    const pfile = path.join(fx.dir, 'org.bits.agent.plist');
    fs.writeFileSync(pfile, plist.stdout);
    if (has('plutil')) {
      expect(spawnSync('plutil', ['-lint', pfile]).status).toBe(0);
    } else if (has('python3')) {
      const p = spawnSync('python3', ['-c', 'import plistlib,sys,json; print(json.dumps(plistlib.load(open(sys.argv[1],"rb"))))', pfile], { encoding: 'utf8', timeout: 20_000 });
      expect(p.status, p.stderr).toBe(0);
      const v = JSON.parse(p.stdout) as Record<string, unknown>;
      expect(v.Label).toBe('org.bits.agent');
      expect((v.ProgramArguments as string[]).slice(-1)).toEqual(['agent']);
      expect(v.ProgramArguments as string[]).toContain(process.execPath);
      expect(v.EnvironmentVariables).toEqual({ BITS_HOME: bitsHome });
      expect(v.RunAtLoad).toBe(true);
    } else {
      expect(plist.stdout).toMatch(/<key>Label<\/key>\s*<string>org\.bits\.agent<\/string>/);
    }
  }, 60_000);
});
