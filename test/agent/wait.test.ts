/**
 * `bits wait` and the agent's own commands with the BUILT bits: wait's
 * progress objects, Ctrl-C on wait leaving the job running, agent status /
 * stop / log, and `bits resume --priority foreground` taking a background job
 * back into the calling process.
 */
import { describe, expect, it } from 'vitest';
import path from 'node:path';
import { startBits } from '../helpers/cli.js';
import { makeRandomFile, sha256File } from '../helpers/files.js';
import { agentFixture, agentPid, bits, job, jsonLines, queuedId, until } from './helpers.js';

const fx = agentFixture('bits-agent-wait-');

describe('bits wait and bits agent', () => {
  it('wait shows progress; Ctrl-C stops waiting only; agent stop re-queues; resume --priority foreground finishes it here', async () => {
    const home = fx.home('home-wait');
    const file = path.join(fx.dir, 'wait.bin');
    await makeRandomFile(file, 1024 * 1024, 3);
    const id = queuedId(await bits(home, ['upload', '--background', '--json', '--fragment-size', '64K', '--limit-rate', '100K', file, `${fx.server.url}/up/wait.bin`]));

    const w = startBits(['wait', '--json', id], { env: { BITS_HOME: home }, timeoutMs: 30_000 });
    await w.waitFor(/"type":"progress".*"bytesDone":[1-9]/, 'stdout', 15_000);
    w.child.kill('SIGINT');
    const r = await w.done;
    expect(r.code, r.stderr).toBe(10);
    expect(r.stderr).toMatch(new RegExp(`stopped waiting; job ${id} continues`));
    expect(jsonLines(r.stdout).some((o) => o.type === 'progress' && o.jobId === id)).toBe(true);
    const still = await job(home, id);
    expect(still.running).toBe(true);

    const st = await bits(home, ['agent', 'status', '--json']);
    expect(st.code).toBe(0);
    expect(jsonLines(st.stdout)[0]).toMatchObject({ type: 'agent', running: true, pid: agentPid(home), transferring: 1 });
    const stop = await bits(home, ['agent', 'stop']);
    expect(stop.code, stop.stderr).toBe(0);
    expect(agentPid(home)).toBeUndefined();
    const queued = await job(home, id);
    expect(queued.state).toBe('queued');
    expect(queued.bytesDone).toBeGreaterThan(0);
    expect((await bits(home, ['agent', 'status'])).code).toBe(1);
    const log = await bits(home, ['agent', 'log', '-n', '2']);
    expect(log.stdout.trim().split('\n')).toHaveLength(2);
    expect(log.stdout).toMatch(/stopped/);

    const fg = await bits(home, ['resume', '--priority', 'foreground', id], { timeoutMs: 40_000 });
    expect(fg.code, fg.stderr).toBe(0);
    expect(fg.stderr).toMatch(/uploaded/);
    expect(agentPid(home)).toBeUndefined();
    const done = await until('complete', () => job(home, id), (j) => j.state === 'complete', 5000);
    expect(done.priority).toBe('foreground');
    expect(await sha256File(path.join(fx.root, 'up', 'wait.bin'))).toBe(await sha256File(file));
  }, 90_000);
});
