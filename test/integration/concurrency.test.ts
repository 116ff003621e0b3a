// Issue 10: several calls in one worker (`concurrency`), a persistent event loop per worker, and
// pipelining for serial workers. Every test drives real python3 workers through the public API.
import { describe, expect, it } from 'vitest';
import {
  CallTimeoutError,
  InvalidOptionError,
  type Pool,
  type PoolOptions,
  WorkerCrashedError,
} from '../../src/index.js';
import { fixture, isAlive, nextEvent, pids, started, testPool, until } from '../helpers.js';

const AIO = fixture('aio.py');

function aioPool(options: Partial<PoolOptions> = {}): Pool {
  return testPool({ script: AIO, concurrency: 64, ...options });
}

/** Resolves once every `started <tag>` line for `tags` was written. */
function allStarted(pool: Pool, tags: string[]): Promise<void> {
  const left = new Set(tags);
  return new Promise((resolve) => {
    const listener = (e: { line: string }) => {
      if (!e.line.startsWith('started ')) return;
      left.delete(e.line.slice('started '.length));
      if (left.size === 0) {
        pool.off('worker.stderr', listener);
        resolve();
      }
    };
    pool.on('worker.stderr', listener);
  });
}

/** Resolves with the first stderr line `line`. */
function saw(pool: Pool, line: string): Promise<number | null> {
  return nextEvent(pool, 'worker.stderr', (e) => e.line === line).then((e) => e.pid);
}

describe('the concurrency option', () => {
  it('is an integer from 1 to 10000; pipeline is a boolean', () => {
    for (const concurrency of [0, -1, 1.5, 10_001, Number.NaN, '4' as unknown as number]) {
      expect(() => testPool({ concurrency })).toThrow(InvalidOptionError);
    }
    expect(() => testPool({ pipeline: 'yes' as unknown as boolean })).toThrow(InvalidOptionError);
    const error = (() => {
      try {
        testPool({ concurrency: 0 });
      } catch (e) {
        return e as InvalidOptionError;
      }
    })();
    expect(error?.code).toBe('ERR_INVALID_OPTION');
    expect(error?.message).toContain('concurrency');
  });
});

describe('async handlers side by side in one worker', () => {
  it('runs 50 async calls at once on one worker, each with its own current_call()', async () => {
    const pool = aioPool({ size: 1 });
    await pool.ready();
    const tags = Array.from({ length: 50 }, (_, i) => `w${i}`);
    const running = allStarted(pool, tags);
    const calls = tags.map((tag) => pool.call('whoami', ['g1', tag]));
    await running;
    // All 50 are running in the one process at the same time.
    const [worker] = pool.stats().workers;
    expect(worker!.inFlight).toBe(50);
    expect(worker!.state).toBe('busy');
    await pool.call('release', ['g1']);
    const results = (await Promise.all(calls)) as {
      id: number;
      same: boolean;
      fn: string;
      tag: string;
    }[];
    // Each task saw its own call, before and after awaiting.
    expect(new Set(results.map((r) => r.id)).size).toBe(50);
    expect(results.every((r) => r.same && r.fn === 'whoami')).toBe(true);
    expect(results.map((r) => r.tag)).toEqual(tags);
    await until(pool, () => pool.stats().workers[0]!.state === 'ready');
    expect(pool.stats().workers[0]!.inFlight).toBe(0);
  });

  it('an async @on_init builds a client on the same loop that every later call uses', async () => {
    const pool = aioPool({ size: 1 });
    const results = (await Promise.all(
      Array.from({ length: 20 }, (_, i) => pool.call('fetch', [`f${i}`])),
    )) as { conn: number; alive: boolean }[];
    expect(results.every((r) => r.alive && r.conn >= 0 && r.conn < 4)).toBe(true);
  });

  it('a call beyond concurrency waits in the queue until a place is free', async () => {
    const pool = aioPool({ size: 1, concurrency: 2 });
    await pool.ready();
    const running = allStarted(pool, ['q1', 'q2']);
    const controller = new AbortController();
    const a = pool.call('whoami', ['g2', 'q1'], { signal: controller.signal }).catch((e) => e);
    const b = pool.call('whoami', ['g2', 'q2']);
    await running;
    const c = pool.call('nap', [0, 'q3']);
    expect(pool.stats().queued).toBe(1);
    expect(pool.stats().workers[0]!.inFlight).toBe(2);
    // Cancelling `a` frees its place (its task is cancelled in Python): `c` runs.
    controller.abort();
    expect((await a) as Error).toHaveProperty('name', 'AbortError');
    expect(await c).toBe(0);
    expect(pool.stats().queued).toBe(0);
    await pool.call('release', ['g2']);
    expect(await b).toMatchObject({ tag: 'q2' });
  });
});

describe('cancel, timeout and death with several calls in flight', () => {
  it('a timeout cancels the task (CancelledError, finally runs); the other calls carry on on the same process', async () => {
    const pool = aioPool({ size: 1 });
    await pool.ready();
    const [pid] = pids(pool);
    const running = allStarted(pool, ['slow', 'o1', 'o2']);
    const cancelled = saw(pool, 'cancelled slow');
    const cleaned = saw(pool, 'finally slow');
    const slow = pool.call('guarded_nap', [60, 'slow'], { timeout: 300 });
    const others = [pool.call('whoami', ['g3', 'o1']), pool.call('whoami', ['g3', 'o2'])];
    await running;
    await expect(slow).rejects.toThrow(CallTimeoutError);
    await cancelled;
    await cleaned;
    await pool.call('release', ['g3']);
    expect(await Promise.all(others)).toMatchObject([{ tag: 'o1' }, { tag: 'o2' }]);
    expect(pids(pool)).toEqual([pid]);
  });

  it('a task that ignores its cancel for cancelGrace: the worker is replaced, the other calls in flight fail and say why, queued calls do not', async () => {
    const pool = aioPool({ size: 1, concurrency: 3, cancelGrace: 300 });
    await pool.ready();
    const [pid] = pids(pool);
    const running = allStarted(pool, ['stub', 'v1', 'v2']);
    const controller = new AbortController();
    const stubborn = pool.call('stubborn', ['stub'], { signal: controller.signal }).catch((e) => e);
    const victims = ['v1', 'v2'].map((tag) =>
      pool.call('whoami', ['g4', tag]).catch((e: unknown) => e),
    );
    await running;
    // Beyond concurrency: waits in the pool's queue, and runs on the replacement.
    const queued = pool.call('pid');
    expect(pool.stats().queued).toBe(1);
    const exit = nextEvent(pool, 'worker.exit', (e) => e.pid === pid);
    controller.abort();
    expect(((await stubborn) as Error).name).toBe('AbortError');
    const errors = (await Promise.all(victims)) as WorkerCrashedError[];
    for (const error of errors) {
      expect(error).toBeInstanceOf(WorkerCrashedError);
      expect(error.code).toBe('ERR_WORKER_CRASHED');
      expect(error.message).toMatch(/did not stop within 300 ms of its cancel/);
    }
    expect((await exit).reason).toBe('killed');
    const newPid = (await queued) as number;
    expect(newPid).not.toBe(pid);
    expect(isAlive(pid!)).toBe(false);
  });

  it('a worker that dies with several calls in flight fails each of them; queued calls run on the replacement', async () => {
    const pool = aioPool({ size: 1, concurrency: 3 });
    await pool.ready();
    const [pid] = pids(pool);
    const running = allStarted(pool, ['d1', 'd2']);
    const inFlight = ['d1', 'd2'].map((tag) =>
      pool.call('whoami', ['g5', tag]).catch((e: unknown) => e),
    );
    await running;
    const dying = pool.call('die', [7, 'd3']).catch((e: unknown) => e);
    const queued = pool.call('pid');
    const errors = [...(await Promise.all(inFlight)), await dying] as WorkerCrashedError[];
    for (const error of errors) {
      expect(error).toBeInstanceOf(WorkerCrashedError);
      expect(error.exitCode).toBe(7);
    }
    expect(await queued).not.toBe(pid);
  });

  it('leaving a stream early over an async generator closes it (its finally runs in Python)', async () => {
    const pool = aioPool({ size: 1 });
    const closed = saw(pool, 'closed t1');
    const items: number[] = [];
    for await (const x of pool.stream<number>('ticker', [1_000_000, 't1'])) {
      items.push(x);
      if (items.length === 3) break;
    }
    expect(items).toEqual([0, 1, 2]);
    await closed;
    // Two async streams side by side, each with its own flow control.
    const [a, b] = await Promise.all(
      [10, 20].map(async (n) => {
        const got: number[] = [];
        for await (const x of pool.stream<number>('ticker', [n])) got.push(x);
        return got;
      }),
    );
    expect(a).toHaveLength(10);
    expect(b).toHaveLength(20);
  });

  it('plain handlers work in a concurrent pool; blocking code in asyncio.to_thread does not block the others', async () => {
    const pool = aioPool({ size: 1 });
    expect(await pool.call('block', [0])).toBe(0);
    const running = allStarted(pool, ['t1']);
    const waiting = pool.call('whoami', ['g6', 't1']);
    await running;
    // A sleep in a thread while the loop serves the release and the waiting call.
    const offloaded = pool.call('offload', [0.3]);
    await pool.call('release', ['g6']);
    expect(await waiting).toMatchObject({ tag: 't1' });
    expect(await offloaded).toBe(0.3);
  });
});

describe('health checks reach busy workers', () => {
  it('a frozen worker that holds calls (no timeout) is killed and replaced; its calls fail with ERR_WORKER_CRASHED', async () => {
    const pool = aioPool({ size: 1, healthCheck: { interval: 100, timeout: 500 } });
    await pool.ready();
    const [pid] = pids(pool);
    const running = allStarted(pool, ['h1', 'h2']);
    const calls = ['h1', 'h2'].map((tag) =>
      pool.call('whoami', ['g7', tag]).catch((e: unknown) => e),
    );
    await running;
    const failed = nextEvent(pool, 'health.failed', (e) => e.pid === pid);
    process.kill(pid!, 'SIGSTOP');
    for (const error of (await Promise.all(calls)) as WorkerCrashedError[]) {
      expect(error).toBeInstanceOf(WorkerCrashedError);
      expect(error.message).toMatch(/did not answer a health check within 500 ms/);
    }
    await failed;
    await pool.ready();
    expect(pids(pool)[0]).not.toBe(pid);
  });

  it('a worker busy in a plain handler still answers health checks (the pong does not wait for the handler)', async () => {
    const pool = aioPool({ size: 1, healthCheck: { interval: 20, timeout: 2000 } });
    await pool.ready();
    const [pid] = pids(pool);
    let failures = 0;
    pool.on('health.failed', () => failures++);
    // Half a second in time.sleep on the loop's thread: a ping every 20 ms meanwhile.
    expect(await pool.call('block', [0.5])).toBe(0.5);
    const serial = testPool({ healthCheck: { interval: 20, timeout: 2000 } });
    serial.on('health.failed', () => failures++);
    expect(await serial.call('sleep', [0.5])).toBe(0.5);
    expect(failures).toBe(0);
    expect(pids(pool)).toEqual([pid]);
  });
});

describe('pipelining (concurrency 1)', () => {
  type Stamp = { start: number; end: number; pid: number };

  it('a call handed early waits in the busy worker and starts only when the running one ends', async () => {
    const pool = testPool({ script: AIO });
    await pool.ready();
    const first = started(pool, 'p1');
    const a = pool.call('stamp', [0.3, 'p1']) as Promise<Stamp>;
    await first;
    const b = pool.call('stamp', [0, 'p2']) as Promise<Stamp>;
    // Handed to the busy worker (nothing else could run it), still waiting to start.
    expect(pool.stats().queued).toBe(1);
    expect(pool.stats().workers[0]!.inFlight).toBe(1);
    const [ra, rb] = await Promise.all([a, b]);
    expect(rb.pid).toBe(ra.pid);
    expect(rb.start).toBeGreaterThanOrEqual(ra.end);
    // Counted as a call of the worker once it started.
    expect(pool.stats().workers[0]!.calls).toBe(2);
  });

  it('if the worker dies first, the early call runs on another worker instead of failing', async () => {
    const pool = testPool({ script: AIO });
    await pool.ready();
    const [pid] = pids(pool);
    const first = started(pool, 'k1');
    const running = pool.call('stamp', [60, 'k1']).catch((e: unknown) => e);
    await first;
    const early = pool.call('pid');
    expect(pool.stats().queued).toBe(1);
    process.kill(pid!, 'SIGKILL');
    expect(await running).toBeInstanceOf(WorkerCrashedError);
    const ranOn = (await early) as number;
    expect(ranOn).not.toBe(pid);
  });

  it('an early call cancelled or timed out before it starts never runs in Python, and the worker is kept', async () => {
    // cancelGrace is short: had Python waited for the running call before answering the cancel
    // of the early one, the worker would have been killed and the running call failed.
    const pool = testPool({ script: AIO, cancelGrace: 300 });
    await pool.ready();
    const [pid] = pids(pool);
    const lines: string[] = [];
    pool.on('worker.stderr', (e) => lines.push(e.line));
    const first = started(pool, 'c1');
    const running = pool.call('stamp', [1, 'c1']);
    await first;
    const controller = new AbortController();
    const aborted = pool
      .call('stamp', [0, 'c2'], { signal: controller.signal })
      .catch((e: unknown) => e);
    const timedOut = pool.call('stamp', [0, 'c3'], { timeout: 50 }).catch((e: unknown) => e);
    expect(pool.stats().queued).toBe(2);
    controller.abort();
    expect(((await aborted) as Error).name).toBe('AbortError');
    expect(await timedOut).toBeInstanceOf(CallTimeoutError);
    expect(pool.stats().queued).toBe(0);
    expect(await running).toMatchObject({ pid });
    // A call after them on the same process: the pipe is in order, so they would have run by now.
    expect(await pool.call('pid')).toBe(pid);
    expect(lines).not.toContain('started c2');
    expect(lines).not.toContain('started c3');
    expect(pool.stats().workers[0]!.calls).toBe(2);
  });

  it('recycle.maxCalls and session pins keep their meaning', async () => {
    const pool = testPool({ script: AIO, size: 2, recycle: { maxCalls: 3 } });
    await pool.ready();
    const recycled: number[] = [];
    pool.on('worker.recycle', (e) => recycled.push(e.pid!));
    const results = (await Promise.all(
      Array.from({ length: 12 }, (_, i) => pool.call('stamp', [0.01, `r${i}`])),
    )) as Stamp[];
    const perProcess = new Map<number, number>();
    for (const r of results) perProcess.set(r.pid, (perProcess.get(r.pid) ?? 0) + 1);
    expect([...perProcess.values()].every((n) => n <= 3)).toBe(true);
    expect(recycled.length).toBeGreaterThanOrEqual(2);

    const pinned = testPool({ script: AIO, size: 2 });
    await pinned.ready();
    const session = (await Promise.all(
      Array.from({ length: 8 }, () => pinned.call('stamp', [0.01], { session: 's' })),
    )) as Stamp[];
    expect(new Set(session.map((r) => r.pid)).size).toBe(1);
  });

  it('pipeline: false keeps every waiting call in the pool queue', async () => {
    const pool = testPool({ script: AIO, pipeline: false });
    await pool.ready();
    const first = started(pool, 'n1');
    const a = pool.call('stamp', [0.2, 'n1']);
    await first;
    const b = pool.call('pid');
    expect(pool.stats().queued).toBe(1);
    expect(pool.stats().workers[0]!.inFlight).toBe(1);
    await Promise.all([a, b]);
  });
});
