// A busy worker takes the next waiting call in the same machine event as the reply (no pass
// through ready.idle, no supervisor event): these drive that path against real Python workers.
import { describe, expect, it } from 'vitest';
import { nextEvent, started, testPool } from '../helpers.js';

describe('queued calls on a busy worker', () => {
  it('run back to back: the worker stays busy from the first call to the last', async () => {
    const pool = testPool({});
    await pool.ready();
    const states: string[] = [];
    pool.on('worker.state', (e) => states.push(`${e.from}->${e.to}`));
    const results = await Promise.all(
      Array.from({ length: 20 }, (_, i) => pool.call('add', [i, 1])),
    );
    expect(results).toEqual(Array.from({ length: 20 }, (_, i) => i + 1));
    expect(states).toEqual(['ready->busy', 'busy->ready']);
    expect(pool.stats().workers[0]!.calls).toBe(20);
  });

  it('a cancelled call hands its worker the next waiting call', async () => {
    const pool = testPool({});
    await pool.ready();
    const controller = new AbortController();
    const slow = pool.call('sleep', [30], { signal: controller.signal }).catch((e: unknown) => e);
    const queued = pool.call('add', [2, 3]);
    expect(pool.stats().queued).toBe(1);
    controller.abort();
    expect(((await slow) as Error).name).toBe('AbortError');
    expect(await queued).toBe(5);
    expect(pool.stats().workers[0]!.restarts).toBe(0);
  });

  it('recycle.maxCalls still retires a worker between queued calls', async () => {
    const pool = testPool({ recycle: { maxCalls: 3 } });
    await pool.ready();
    const pid = await pool.call<number>('pid');
    const recycled = nextEvent(pool, 'worker.restart', (e) => e.reason === 'recycled');
    const pids = await Promise.all(Array.from({ length: 8 }, () => pool.call<number>('pid')));
    await recycled;
    // Calls 1-3 on the first process, 4-6 on the second, 7-9 on the third.
    expect(pids.slice(0, 2)).toEqual([pid, pid]);
    expect(new Set(pids.slice(2, 5)).size).toBe(1);
    expect(pids[2]).not.toBe(pid);
    expect(new Set(pids.slice(5)).size).toBe(1);
    expect(pids[5]).not.toBe(pids[2]);
  });

  // A worker that never runs out of queued calls is never idle on the maintenance tick, so
  it('recycle.maxRss replaces a worker over the limit after its running call, never mid-call', async () => {
    const limit = 120 << 20;
    const pool = testPool({ size: 1, recycle: { maxRss: limit } });
    await pool.ready();
    const before = pool.stats().workers[0]!.pid;
    const recycled = nextEvent(pool, 'worker.recycle');
    const running = started(pool, 'hog');
    // Holds 200 MiB, then runs on for 3 s: the limit is noticed while the call still runs.
    const result = pool.call('hog', [200, 3, 'hog']);
    await running;
    const event = await recycled;
    expect(event).toMatchObject({ workerId: 0, pid: before, why: 'maxRss' });
    expect(event.rss).toBeGreaterThan(limit);
    // Sampled on the maintenance tick (at least once a second); the call is not cut short.
    const now = pool.stats().workers[0]!;
    expect(now.state).toBe('busy');
    expect(now.rss).toBeGreaterThan(limit);
    expect(await result).toBe(1);
    const restarted = await nextEvent(pool, 'worker.restart');
    expect(restarted.reason).toBe('recycled');
    await pool.ready();
    expect(pool.stats().workers[0]!.pid).not.toBe(before);
    expect(await pool.call('add', [1, 2])).toBe(3);
  });

  // maxAge has to take effect between calls, like maxCalls.
  it('recycle.maxAge retires a worker that is kept busy by queued calls', async () => {
    // Longer than a start-up under load, so the worker is busy, not idle, when it comes due.
    const pool = testPool({ recycle: { maxAge: 2000 } });
    await pool.ready();
    const first = pool.stats().workers[0]!.pid;
    let recycled: { why: string; pid: number | null; queued: number } | null = null;
    pool.on('worker.recycle', (e) => {
      // Calls still waiting: it was retired between queued calls, not idle on the tick.
      recycled ??= { ...e, queued: pool.stats().queued };
    });
    // Bounded (4 × 1000 calls of 5 ms): without the fix this ends, and fails.
    const outcomes: string[] = [];
    let replaced = false;
    pool.on('worker.ready', (e) => {
      if (e.pid !== first) replaced = true;
    });
    const caller = async () => {
      for (let i = 0; i < 1000 && !replaced; i++) {
        outcomes.push(
          await pool.call('sleep', [0.005]).then(
            () => 'ok',
            (e: { code?: string }) => e.code ?? 'error',
          ),
        );
      }
    };
    await Promise.all(Array.from({ length: 4 }, caller));
    expect(recycled).toMatchObject({ why: 'maxAge', pid: first });
    expect(recycled!.queued).toBeGreaterThan(0);
    expect(outcomes.length).toBeGreaterThan(4);
    expect(new Set(outcomes)).toEqual(new Set(['ok']));
  });

  it('a session pinned to a busy worker waits for it, not for another', async () => {
    const pool = testPool({ size: 2 });
    await pool.ready();
    const home = await pool.call<number>('pid', [], { session: 's' });
    // Busy until aborted, however slow the machine.
    const controller = new AbortController();
    const busy = pool
      .call('sleep', [60], { session: 's', signal: controller.signal })
      .catch((e: unknown) => e);
    // The other worker is free; pinned calls still queue behind the home worker.
    const pinned = Array.from({ length: 3 }, () => pool.call<number>('pid', [], { session: 's' }));
    expect(pool.stats().queued).toBe(3);
    const free = await pool.call<number>('pid');
    expect(free).not.toBe(home);
    expect(pool.stats().queued).toBe(3);
    controller.abort();
    expect(((await busy) as Error).name).toBe('AbortError');
    expect(await Promise.all(pinned)).toEqual([home, home, home]);
  });
});
