// Regression tests for issue 9's defects: every promise pyvisor returns settles when an actor
// fails, a transport throws at any stage, or the pool fails or closes; concurrent next() on a
// stream; a lazy pool closed before it started.
import { describe, expect, it } from 'vitest';
import { createPool, type Pool, type PoolOptions, type PyvisorError } from '../../src/index.js';
import type { SpawnTransport, WorkerTransport } from '../../src/machines/index.js';
import { PoolTelemetry } from '../../src/observe/telemetry.js';
import { spawnChildProcess } from '../../src/transport/child-process.js';
import { allGone, fixture, nextEvent, testPool } from '../helpers.js';

/** Settles or says it is still pending after `ms` (a generous bound that detects a hang). */
function outcome(promise: Promise<unknown>, ms = 15_000): Promise<unknown> {
  let timer: NodeJS.Timeout;
  const pending = new Promise((resolve) => {
    timer = setTimeout(() => resolve('still pending'), ms);
  });
  return Promise.race([
    promise.then(
      (value) => ({ value }),
      (error: unknown) => error,
    ),
    pending,
  ]).finally(() => clearTimeout(timer));
}

const code = (value: unknown) => (value as PyvisorError).code;

/** The real transport, with a throw injected at one stage. */
function faulty(stage: 'spawn' | 'send' | 'kill', armed: { on: boolean }): SpawnTransport {
  return (spec, handlers) => {
    if (stage === 'spawn' && armed.on) throw new Error('injected: spawn failed');
    const real = spawnChildProcess(spec, handlers);
    const transport: WorkerTransport = {
      get pid() {
        return real.pid;
      },
      send(frame) {
        if (stage === 'send' && armed.on) throw new Error('injected: send failed');
        real.send(frame);
      },
      kill(signal) {
        if (stage === 'kill' && armed.on) {
          // The process still goes (so nothing is left behind), but the call throws.
          real.kill('SIGKILL');
          throw new Error('injected: kill failed');
        }
        real.kill(signal);
      },
      outputTail: () => real.outputTail(),
    };
    return transport;
  };
}

describe('options that cannot reach a process are rejected up front', () => {
  it.each([
    [{ env: { BAD: 'a\0b' } }, 'env.BAD'],
    [{ env: { 'A=B': '1' } }, 'env'],
    [{ env: { '': '1' } }, 'env'],
    [{ env: { X: {} as unknown as string } }, 'env.X'],
    [{ python: 'python3\0' }, 'python'],
    [{ cwd: '/tmp\0x' }, 'cwd'],
  ])('%o -> ERR_INVALID_OPTION naming %s', (options, option) => {
    let error: unknown;
    try {
      createPool({ script: fixture('handlers.py'), size: 1, ...options } as PoolOptions);
    } catch (e) {
      error = e;
    }
    expect(code(error)).toBe('ERR_INVALID_OPTION');
    expect((error as { option: string }).option).toBe(option);
  });
});

describe('a throwing transport never leaves a promise pending', () => {
  it('at spawn: every start fails, the breaker opens, ready() and calls reject, close() resolves', async () => {
    const pool = testPool({
      size: 2,
      spawn: faulty('spawn', { on: true }),
      circuit: { threshold: 2, resetTimeout: 60_000 },
    });
    const ready = outcome(pool.ready());
    const call = outcome(pool.call('add', [1, 2]));
    expect(code(await ready)).toBe('ERR_CIRCUIT_OPEN');
    expect(code(await call)).toBe('ERR_CIRCUIT_OPEN');
    const cause = (await ready) as { cause?: { code?: string; reason?: string } };
    expect(cause.cause?.code).toBe('ERR_WORKER_INIT');
    expect(await outcome(pool.close())).toEqual({ value: undefined });
  });

  it('at send: the call fails with ERR_WORKER_CRASHED, the worker is replaced and serves again (real python3)', async () => {
    const armed = { on: false };
    const pool = testPool({ size: 1, spawn: faulty('send', armed) });
    await pool.ready();
    const pid = await pool.call<number>('pid');
    armed.on = true;
    const failed = await outcome(pool.call('add', [1, 2]));
    armed.on = false;
    expect(code(failed)).toBe('ERR_WORKER_CRASHED');
    expect(String((failed as Error & { cause?: Error }).cause?.message)).toContain('send failed');
    await nextEvent(pool, 'pool.ready');
    const next = await outcome(pool.call<number>('pid'));
    expect((next as { value: number }).value).not.toBe(pid);
    await allGone([pid]);
  });

  it('at kill: close() still resolves and no process is left (real python3)', async () => {
    const armed = { on: true };
    const pool = testPool({ size: 2, spawn: faulty('kill', armed), stopTimeout: 200 });
    await pool.ready();
    const pids = pool.stats().workers.map((w) => w.pid!);
    // A call that ignores the shutdown message, so close() has to escalate to signals.
    const busy = outcome(pool.call('sleep', [30]));
    expect(await outcome(pool.close({ timeout: 100 }))).toEqual({ value: undefined });
    expect(code(await busy)).toBe('ERR_POOL_CLOSED');
    // A kill that threw leaves the pool no exit to wait for: the processes (SIGKILLed by the
    // faulty transport) go soon after, not necessarily before close() resolves.
    await allGone(pids);
  });
});

describe('an error inside the supervisor fails the pool instead of hanging it', () => {
  it('ready(), queued and in-flight calls reject with ERR_POOL_FAILED carrying the cause', async () => {
    let broken = false;
    const pool = testPool({
      size: 1,
      // The supervisor reads its clock inside its transitions (a restart, a recycle, a ready).
      now: () => {
        if (broken) throw new Error('injected: clock failed');
        return performance.now();
      },
    });
    await pool.ready();
    const pid = pool.stats().workers[0]!.pid!;
    const inflight = outcome(pool.call('sleep', [30]));
    const queued = outcome(pool.call('add', [1, 2]));
    broken = true;
    // The worker dies; handling its exit needs the clock, which throws.
    process.kill(pid, 'SIGKILL');
    const failed = await inflight;
    expect(['ERR_WORKER_CRASHED', 'ERR_POOL_FAILED']).toContain(code(failed));
    const q = await queued;
    expect(code(q)).toBe('ERR_POOL_FAILED');
    expect(String((q as Error & { cause?: Error }).cause?.message)).toContain('clock failed');
    expect(pool.state).toBe('failed');
    expect(code(await outcome(pool.ready()))).toBe('ERR_POOL_FAILED');
    expect(code(await outcome(pool.call('add', [1, 2])))).toBe('ERR_POOL_FAILED');
    expect(await outcome(pool.close())).toEqual({ value: undefined });
    await allGone([pid]);
  });

  it('a listener that throws does not break the pool', async () => {
    const pool = testPool({ size: 1 });
    const thrown: unknown[] = [];
    const onError = (error: unknown) => thrown.push(error);
    process.on('uncaughtException', onError);
    try {
      pool.on('worker.ready', () => {
        throw new Error('listener bug');
      });
      await pool.ready();
      expect(await pool.call('add', [1, 2])).toBe(3);
      await new Promise((resolve) => setImmediate(resolve));
    } finally {
      process.off('uncaughtException', onError);
    }
    expect(thrown.map((e) => (e as Error).message)).toEqual(['listener bug']);
  });
});

describe('streams', () => {
  it('next() called several times without awaiting gets every item in order', async () => {
    const pool = testPool({ size: 1 });
    const it = pool.stream<number>('count', [3]);
    const results = await Promise.all([it.next(), it.next(), it.next(), it.next(), it.next()]);
    expect(results).toEqual([
      { done: false, value: 0 },
      { done: false, value: 1 },
      { done: false, value: 2 },
      { done: true, value: undefined },
      { done: true, value: undefined },
    ]);
  });

  it('concurrent next() on a failing stream: the oldest waiter gets the error, the rest the end', async () => {
    const pool = testPool({ size: 1 });
    const it = pool.stream('no_such_handler');
    const [a, b] = await Promise.all([outcome(it.next()), outcome(it.next())]);
    expect(code(a)).toBe('ERR_UNKNOWN_HANDLER');
    expect(b).toEqual({ value: { done: true, value: undefined } });
  });
});

describe('a lazy pool closed before it started', () => {
  it('closes its telemetry (gauges unregistered, nothing keeps the pool reachable)', async () => {
    const closed: PoolTelemetry[] = [];
    const original = PoolTelemetry.prototype.close;
    PoolTelemetry.prototype.close = function (this: PoolTelemetry) {
      closed.push(this);
      original.call(this);
    };
    let pool: Pool;
    try {
      pool = createPool({ script: fixture('handlers.py'), size: 1, lazy: true });
      await pool.close();
    } finally {
      PoolTelemetry.prototype.close = original;
    }
    expect(closed).toHaveLength(1);
    expect(pool.state).toBe('closed');
  });
});
