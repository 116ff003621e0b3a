import { describe, expect, it } from 'vitest';
import { ProtocolError, WorkerCrashedError } from '../../src/index.js';
import { allGone, isAlive, nextEvent, pids, started, testPool } from '../helpers.js';

describe('crashes and frozen workers', () => {
  it('a worker that exits mid-call fails only that call and is restarted', async () => {
    const pool = testPool({ size: 2 });
    await pool.ready();
    const before = pids(pool);
    const error = await pool.call('crash', [7]).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(WorkerCrashedError);
    const crash = error as WorkerCrashedError;
    expect(crash.code).toBe('ERR_WORKER_CRASHED');
    expect(crash.exitCode).toBe(7);
    expect(crash.signal).toBeNull();
    await pool.ready();
    const after = pids(pool);
    expect(after).toHaveLength(2);
    expect(after.filter((p) => !before.includes(p))).toHaveLength(1);
    expect(await pool.call('add', [1, 2])).toBe(3);
  });

  it.each(['SIGKILL', 'SIGTERM', 'SIGSEGV'] as const)(
    'a worker killed by %s mid-call rejects with its signal and the stderr tail',
    async (signal) => {
      const pool = testPool({});
      await pool.ready();
      const pid = pids(pool)[0]!;
      // The handler says on stderr that it runs: that line must be in the error's stderr tail.
      const running = started(pool, signal);
      const call = pool.call('sleep', [30, signal]);
      expect(await running).toBe(pid);
      process.kill(pid, signal);
      const error = (await call.catch((e: unknown) => e)) as WorkerCrashedError;
      expect(error).toBeInstanceOf(WorkerCrashedError);
      expect(error.signal).toBe(signal);
      expect(error.pid).toBe(pid);
      expect(error.stderr).toContain(`started ${signal}`);
      expect(error.message).toContain(`started ${signal}`);
      await pool.ready();
      expect(pids(pool)[0]).not.toBe(pid);
      expect(isAlive(pid)).toBe(false);
    },
  );

  it('an idle worker that dies is replaced and the pool returns to full size', async () => {
    const pool = testPool({ size: 3 });
    await pool.ready();
    const victim = pids(pool)[1]!;
    const restarted = nextEvent(pool, 'worker.restart');
    process.kill(victim, 'SIGKILL');
    expect((await restarted).reason).toBe('crashed');
    await pool.ready();
    expect(pids(pool)).toHaveLength(3);
    expect(pids(pool)).not.toContain(victim);
    expect(pool.stats().workers[1]!.restarts).toBe(1);
  });

  it('a frozen idle worker (SIGSTOP) is found by the health check and replaced', async () => {
    const pool = testPool({ healthCheck: { interval: 100, timeout: 300 } });
    await pool.ready();
    const pid = pids(pool)[0]!;
    const failed = nextEvent(pool, 'health.failed');
    process.kill(pid, 'SIGSTOP');
    expect((await failed).pid).toBe(pid);
    await pool.ready();
    expect(pids(pool)[0]).not.toBe(pid);
    await allGone([pid]);
    expect(await pool.call('add', [1, 2])).toBe(3);
  });

  it.each(['bytes', 'huge_header', 'bad_utf8', 'unknown_id', 'not_object', 'truncated'])(
    'garbage from Python (%s) fails that call with ERR_PROTOCOL and replaces the worker',
    async (kind) => {
      const pool = testPool({ size: 2 });
      await pool.ready();
      const error = await pool.call('garbage', [kind]).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(ProtocolError);
      expect((error as ProtocolError).code).toBe('ERR_PROTOCOL');
      await pool.ready();
      expect(await pool.call('add', [1, 2])).toBe(3);
    },
  );

  it('a handler that closes the reply pipe or dup2s over the protocol fds cannot break it', async () => {
    const pool = testPool({});
    // The runtime moved its pipes away from fds 3/4, so this is harmless.
    expect(await pool.call('garbage', ['dup2'])).toBe('ok');
    expect(await pool.call('add', [1, 2])).toBe(3);
    const error = await pool
      .call('garbage', ['close_out'], { timeout: 5000 })
      .catch((e: unknown) => e);
    expect((error as { code?: string }).code).toMatch(/ERR_PROTOCOL|ERR_WORKER_CRASHED/);
    expect(await pool.call('add', [1, 2])).toBe(3);
  });
});
