import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  CircuitOpenError,
  PoolClosedError,
  PoolFailedError,
  WorkerInitError,
} from '../../src/index.js';
import {
  allGone,
  fixture,
  isAlive,
  nextEvent,
  pids,
  started,
  testPool,
  until,
} from '../helpers.js';

const scriptable = fixture('scriptable.py');

function initFile(content: string): string {
  const dir = mkdtempSync(join(tmpdir(), 'pyvisor-test-'));
  const file = join(dir, 'init');
  writeFileSync(file, content);
  return file;
}

describe('start failures and the circuit breaker', () => {
  it('opens after `threshold` start failures: ready() rejects with the init traceback as cause', async () => {
    const pool = testPool({
      script: scriptable,
      size: 2,
      env: { ...process.env, PYVISOR_TEST_INIT: 'fail' },
      restart: { minDelay: 10, maxDelay: 20 },
      circuit: { threshold: 3, resetTimeout: 60_000 },
    });
    const error = (await pool.ready().catch((e: unknown) => e)) as CircuitOpenError;
    expect(error).toBeInstanceOf(CircuitOpenError);
    expect(error.code).toBe('ERR_CIRCUIT_OPEN');
    const cause = error.cause as WorkerInitError;
    expect(cause).toBeInstanceOf(WorkerInitError);
    expect(cause.code).toBe('ERR_WORKER_INIT');
    expect(cause.pythonType).toBe('RuntimeError');
    expect(cause.pythonTraceback).toContain('Traceback');
    expect(cause.message).toContain('scriptable.py');
    expect(pool.stats().circuit).toBe('open');
    // Calls fail fast while no worker is ready: they do not wait for the probe after
    // resetTimeout (60 s). The bound is generous for a loaded machine, not a latency figure.
    const t0 = performance.now();
    await expect(pool.call('add', [1, 2])).rejects.toThrow(CircuitOpenError);
    expect(performance.now() - t0).toBeLessThan(10_000);
    expect(pool.stats().circuit).toBe('open');
  });

  it('a syntax error in the script reports the Python traceback', async () => {
    const pool = testPool({
      script: fixture('syntax-error.py'),
      restart: { minDelay: 10, maxDelay: 20 },
      circuit: { threshold: 2 },
    });
    const error = (await pool.ready().catch((e: unknown) => e)) as CircuitOpenError;
    const cause = error.cause as WorkerInitError;
    expect(cause.pythonType).toBe('SyntaxError');
    expect(cause.message).toContain('syntax-error.py');
  });

  it('stops spawning while open, probes once after resetTimeout and recovers when fixed', async () => {
    const file = initFile('crash');
    // One slot, so no other start can be under way when the breaker opens.
    const pool = testPool({
      script: scriptable,
      size: 1,
      env: { ...process.env, PYVISOR_TEST_INIT_FILE: file },
      restart: { minDelay: 10, maxDelay: 20 },
      circuit: { threshold: 2, resetTimeout: 400 },
    });
    let spawns = 0;
    pool.on('worker.state', (e) => {
      if (e.to === 'starting') spawns++;
    });
    const opened = nextEvent(pool, 'circuit.change', (e) => e.state === 'open');
    await expect(pool.ready()).rejects.toThrow(CircuitOpenError);
    await opened;
    expect(spawns).toBe(2);
    expect(pool.stats().workers[0]!.state).toBe('restarting');
    // Fix the script: the probe (half-open) succeeds and closes the breaker.
    writeFileSync(file, 'ok');
    const halfOpen = nextEvent(pool, 'circuit.change', (e) => e.state === 'halfOpen');
    const closed = nextEvent(pool, 'circuit.change', (e) => e.state === 'closed');
    await halfOpen;
    expect(spawns).toBe(3); // nothing spawned while open, then exactly one probe
    await closed;
    await pool.ready();
    expect(spawns).toBe(3);
    expect(pool.stats().circuit).toBe('closed');
    expect(await pool.call('add', [1, 2])).toBe(3);
  });

  it('after the probe succeeds every parked slot starts', async () => {
    const file = initFile('fail');
    const pool = testPool({
      script: scriptable,
      size: 3,
      env: { ...process.env, PYVISOR_TEST_INIT_FILE: file },
      restart: { minDelay: 5, maxDelay: 10 },
      circuit: { threshold: 3, resetTimeout: 300 },
    });
    await expect(pool.ready()).rejects.toThrow(CircuitOpenError);
    writeFileSync(file, 'ok');
    await nextEvent(pool, 'circuit.change', (e) => e.state === 'closed');
    await pool.ready();
    expect(pool.stats().workers.map((w) => w.state)).toEqual(['ready', 'ready', 'ready']);
  });

  it('an init that takes longer than initTimeout is killed and retried', async () => {
    const pool = testPool({
      script: scriptable,
      env: { ...process.env, PYVISOR_TEST_INIT: 'hang' },
      initTimeout: 300,
      restart: { minDelay: 10, maxDelay: 20 },
      circuit: { threshold: 2, resetTimeout: 60_000 },
    });
    const timedOut: number[] = [];
    pool.on('worker.exit', (e) => {
      if (e.reason === 'initTimedOut' && e.pid !== null) timedOut.push(e.pid);
    });
    const error = (await pool.ready().catch((e: unknown) => e)) as CircuitOpenError;
    expect(error).toBeInstanceOf(CircuitOpenError);
    expect((error.cause as WorkerInitError).reason).toBe('timeout');
    // Killed, retried once, killed again: then the breaker (threshold 2) stops the retries.
    await until(pool, () => timedOut.length >= 2);
    expect(timedOut).toHaveLength(2);
    expect(new Set(timedOut).size).toBe(2);
    await allGone(timedOut);
  });

  it('fails the pool when workers crash more than maxRestarts within period', async () => {
    const pool = testPool({
      size: 1,
      restart: { minDelay: 1, maxDelay: 5, maxRestarts: 2, period: 60_000 },
    });
    await pool.ready();
    const failed = nextEvent(pool, 'pool.failed');
    for (let i = 0; i < 3; i++) {
      await pool.call('crash', [1]).catch(() => {});
      if (i < 2) await pool.ready();
    }
    const { error } = await failed;
    expect(error).toBeInstanceOf(PoolFailedError);
    expect(pool.stats().state).toBe('failed');
    await expect(pool.call('add', [1, 2])).rejects.toMatchObject({ code: 'ERR_POOL_FAILED' });
    await expect(pool.ready()).rejects.toMatchObject({ code: 'ERR_POOL_FAILED' });
  });

  it('after a cool-down the pool starts its workers again by itself (pool.recovered) and serves calls', async () => {
    const pool = testPool({
      size: 2,
      restart: { minDelay: 1, maxDelay: 5, maxRestarts: 2, period: 60_000, coolDown: 300 },
    });
    await pool.ready();
    const oldPids = pids(pool);
    const failed = nextEvent(pool, 'pool.failed');
    const recovered = nextEvent(pool, 'pool.recovered');
    // Bad input from one client: every call makes its worker exit.
    const crashes = [0, 1, 2].map(() => pool.call('crash', [3]).catch((e: unknown) => e));
    const { error } = await failed;
    expect(error).toBeInstanceOf(PoolFailedError);
    expect(error.message).toContain('starts its workers again in 300 ms (restart.coolDown)');
    const retryAt = (error as PoolFailedError).retryAt!;
    expect(retryAt).toBeGreaterThan(Date.now() - 1000);
    // Calls fail fast while it cools down.
    const refused = await pool.call('add', [1, 2]).catch((e: unknown) => e);
    expect(refused).toMatchObject({ code: 'ERR_POOL_FAILED', retryAt });
    const back = await recovered;
    expect(back).toMatchObject({ name: pool.name, trips: 1 });
    expect(back.downMs).toBeGreaterThanOrEqual(300);
    await pool.ready();
    expect(pool.stats().state).toBe('running');
    expect(await pool.call('add', [1, 2])).toBe(3);
    // The old processes are gone; the new ones are new.
    await allGone(oldPids);
    expect(pids(pool).some((pid) => oldPids.includes(pid))).toBe(false);
    for (const outcome of await Promise.all(crashes)) {
      expect(['ERR_WORKER_CRASHED', 'ERR_POOL_FAILED']).toContain(
        (outcome as { code?: string }).code,
      );
    }
    await pool.close();
  });

  it('planned replacements never count as crashes: recycling, cancel-grace kills, health-check kills', async () => {
    // maxRestarts 0: one crash would fail the pool for good.
    const pool = testPool({
      size: 1,
      restart: { maxRestarts: 0, coolDown: Number.POSITIVE_INFINITY },
      recycle: { maxCalls: 2 },
      cancelGrace: 50,
      healthCheck: { interval: 100, timeout: 300 },
    });
    await pool.ready();
    const exits: string[] = [];
    pool.on('worker.exit', (e) => exits.push(e.reason));
    for (let i = 0; i < 4; i++) expect(await pool.call('add', [i, 1])).toBe(i + 1); // 2 recycles
    // A handler that ignores its cancel is killed after cancelGrace.
    const running = started(pool, 'g');
    const abort = new AbortController();
    const swallowed = pool.call('swallow', [30, 'g'], { signal: abort.signal });
    await running;
    abort.abort();
    await expect(swallowed).rejects.toMatchObject({ name: 'AbortError' });
    await until(pool, () => exits.includes('killed'));
    expect(await pool.call('add', [1, 1])).toBe(2);
    // A worker stuck in C code holding the GIL answers no health check: it is killed.
    const stuck = await pool.call('hang_c').catch((e: unknown) => e);
    expect(stuck).toMatchObject({ code: 'ERR_WORKER_CRASHED' });
    await until(pool, () => exits.includes('unresponsive'));
    expect(await pool.call('add', [2, 2])).toBe(4);
    expect(pool.state).toBe('running');
    expect(exits.filter((r) => r === 'stopped').length).toBeGreaterThanOrEqual(2);
    await pool.close();
  });

  it('a missing interpreter fails the pool with a clear cause', async () => {
    const pool = testPool({ python: '/nonexistent/python3' });
    const error = (await pool.ready().catch((e: unknown) => e)) as PoolFailedError;
    expect(error.code).toBe('ERR_POOL_FAILED');
    expect((error.cause as { code: string }).code).toBe('ERR_PYTHON_NOT_FOUND');
    expect(error.message).toContain('/nonexistent/python3');
    await expect(pool.call('add', [1, 2])).rejects.toMatchObject({ code: 'ERR_POOL_FAILED' });
  });
});

describe('interpreter resolution', () => {
  // A slow wrapper script (a pyenv shim takes ~1 s here) is resolved with `python -c`; a pool
  // closed before that answers must not leave the probe running (or keep Node alive for it).
  it('close() during resolution ends the probe process', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'pyvisor-shim-'));
    const shim = join(dir, 'python');
    const pidFile = join(dir, 'pid');
    writeFileSync(shim, `#!/bin/sh\necho $$ > "${pidFile}"\nexec sleep 30\n`, { mode: 0o755 });
    const pool = testPool({ python: shim });
    const ready = pool.ready().catch((e: unknown) => e);
    const deadline = Date.now() + 10_000;
    while (!existsSync(pidFile) || readFileSync(pidFile, 'utf8').trim() === '') {
      if (Date.now() > deadline) throw new Error('the probe never started');
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    const probe = Number(readFileSync(pidFile, 'utf8'));
    expect(isAlive(probe)).toBe(true);
    const started = performance.now();
    await pool.close();
    // close() does not wait for the probe, which would answer after 30 s (generous bound).
    expect(performance.now() - started).toBeLessThan(15_000);
    expect(((await ready) as { code?: string }).code).toBe('ERR_POOL_CLOSED');
    await allGone([probe]);
  });
});

describe('recycling and sessions', () => {
  it('recycles a worker after maxCalls, gracefully between calls', async () => {
    const pool = testPool({ recycle: { maxCalls: 3 } });
    const first = await pool.call('pid');
    await pool.call('pid');
    const recycled = nextEvent(pool, 'worker.restart', (e) => e.reason === 'recycled');
    expect(await pool.call('pid')).toBe(first);
    await recycled;
    const next = await pool.call('pid');
    expect(next).not.toBe(first);
    await allGone([first as number]);
  });

  it('recycles idle workers after maxAge', async () => {
    const pool = testPool({ recycle: { maxAge: 300 } });
    // No call: the age counts from the spawn, and on a loaded machine a start can take longer
    // than maxAge, so that a worker is due as soon as it is ready.
    const first = (await nextEvent(pool, 'worker.ready')).pid!;
    const replaced = nextEvent(pool, 'worker.ready', (e) => e.pid !== first);
    expect(await nextEvent(pool, 'worker.recycle')).toMatchObject({ why: 'maxAge', pid: first });
    expect((await replaced).workerId).toBe(0);
    await allGone([first]);
  });

  it('pins a session to one worker and moves it when that worker dies', async () => {
    const pool = testPool({ size: 3 });
    await pool.ready();
    const pid = await pool.call('pid', [], { session: 's1' });
    await pool.call('session_set', ['k', 42], { session: 's1' });
    for (let i = 0; i < 5; i++) {
      expect(await pool.call('pid', [], { session: 's1' })).toBe(pid);
      expect(await pool.call('session_get', ['k'], { session: 's1' })).toBe(42);
    }
    const moved = nextEvent(pool, 'session.moved');
    process.kill(pid as number, 'SIGKILL');
    await until(pool, () => !pids(pool).includes(pid as number));
    const newPid = await pool.call('pid', [], { session: 's1' });
    expect(newPid).not.toBe(pid);
    expect((await moved).session).toBe('s1');
    expect(await pool.call('session_get', ['k'], { session: 's1' })).toBeNull();
  });

  it('forgets sessions after sessionTtl', async () => {
    const pool = testPool({ size: 2, sessionTtl: 1500 });
    await pool.ready();
    await pool.call('pid', [], { session: 'x' });
    expect(pool.stats().sessions).toBe(1);
    expect((await nextEvent(pool, 'session.expired')).session).toBe('x');
    expect(pool.stats().sessions).toBe(0);
  });
});

describe('close', () => {
  it('rejects queued calls, lets in-flight calls finish and ends every process', async () => {
    const pool = testPool({ size: 1 });
    await pool.ready();
    const ids = pids(pool);
    const inflight = pool.call('sleep', [0.3]);
    const queued = pool.call('add', [1, 2]);
    await until(pool, () => pool.stats().workers[0]!.state === 'busy');
    const closing = pool.close();
    expect(await queued.catch((e: unknown) => e)).toBeInstanceOf(PoolClosedError);
    await expect(inflight).resolves.toBe(0.3);
    await closing;
    expect(pool.stats().state).toBe('closed');
    for (const pid of ids) expect(isAlive(pid)).toBe(false);
    await expect(pool.call('add', [1, 2])).rejects.toMatchObject({ code: 'ERR_POOL_CLOSED' });
    // Closing twice is fine and returns the same promise.
    expect(pool.close()).toBe(closing);
  });

  it('kills calls still running at the close timeout', async () => {
    const pool = testPool({ size: 1 });
    await pool.ready();
    const ids = pids(pool);
    const inflight = pool.call('sleep', [30]).catch((e: unknown) => e);
    await until(pool, () => pool.stats().workers[0]!.state === 'busy');
    await pool.close({ timeout: 100 });
    expect(await inflight).toBeInstanceOf(PoolClosedError);
    for (const pid of ids) expect(isAlive(pid)).toBe(false);
  });

  it('ends workers that are still starting at once, and ready() rejects', async () => {
    const pool = testPool({
      script: scriptable,
      size: 2,
      env: { ...process.env, PYVISOR_TEST_INIT: 'hang' },
    });
    await until(pool, () => pids(pool).length === 2);
    const ids = pids(pool);
    const ready = pool.ready().catch((e: unknown) => e);
    const t0 = performance.now();
    // Were starting workers waited for, close() would take its whole timeout (30 s); the bound
    // is generous for a loaded machine.
    await pool.close({ timeout: 30_000 });
    expect(performance.now() - t0).toBeLessThan(15_000);
    expect(await ready).toBeInstanceOf(PoolClosedError);
    for (const pid of ids) expect(isAlive(pid)).toBe(false);
  });

  it('supports await using', async () => {
    let ids: number[] = [];
    {
      await using pool = testPool({ size: 2 });
      await pool.ready();
      ids = pids(pool);
    }
    for (const pid of ids) expect(isAlive(pid)).toBe(false);
  });
});
