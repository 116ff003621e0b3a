// Elastic size: `min` workers at once, more while calls wait (up to `max`), idle ones stop.
import { describe, expect, it } from 'vitest';
import type { Pool } from '../../src/index.js';
import { nextEvent, started, testPool } from '../helpers.js';

function collect<E extends 'worker.added' | 'worker.removed'>(pool: Pool, name: E) {
  const seen: { workerId: number; size: number; why: string }[] = [];
  pool.on(name, (e) => seen.push(e));
  return seen;
}

describe('size: { min, max }', () => {
  it('starts min, grows one worker per waiting call up to max, shrinks back after idleTimeout (never a crash)', async () => {
    const pool = testPool({
      size: { min: 1, max: 3 },
      idleTimeout: 300,
      // Shrinking is never a crash: one would fail this pool for good.
      restart: { maxRestarts: 0, coolDown: Number.POSITIVE_INFINITY },
    });
    await pool.ready();
    expect(pool.stats().workers).toHaveLength(1);
    const added = collect(pool, 'worker.added');
    const removed = collect(pool, 'worker.removed');
    // Three calls that all run at once: each needs a worker of its own.
    const running = ['a', 'b', 'c'].map((tag) => started(pool, tag));
    const calls = ['a', 'b', 'c'].map((tag) => pool.call('sleep', [1.5, tag]));
    const pids = await Promise.all(running);
    expect(new Set(pids).size).toBe(3);
    expect(added.map((e) => e.why)).toEqual(['demand', 'demand']);
    expect(added.map((e) => e.size)).toEqual([2, 3]);
    expect(pool.stats().workers).toHaveLength(3);
    await Promise.all(calls);
    // Idle for idleTimeout: back down to min, gracefully.
    const first = nextEvent(pool, 'worker.removed');
    await first;
    const second = removed.length >= 2 ? null : nextEvent(pool, 'worker.removed');
    await second;
    expect(removed.map((e) => e.why)).toEqual(['idle', 'idle']);
    expect(removed.at(-1)!.size).toBe(1);
    expect(pool.stats().workers).toHaveLength(1);
    expect(pool.stats().state).toBe('running');
    await pool.ready(); // the slots that stopped are not waited for
    expect(await pool.call('add', [1, 2])).toBe(3);
    await pool.close();
  });

  it('never starts more workers than calls wait, nor more than max', async () => {
    const pool = testPool({ size: { min: 1, max: 2 }, pipeline: false });
    await pool.ready();
    const added = collect(pool, 'worker.added');
    const busy = started(pool, 'busy');
    const first = pool.call('sleep', [1, 'busy']);
    await busy;
    // One call waits: one worker starts for it.
    const second = pool.call('add', [1, 1]);
    expect(await second).toBe(2);
    expect(added).toHaveLength(1);
    // At max: calls wait for a free worker instead.
    const more = await Promise.all([1, 2, 3, 4].map((i) => pool.call('add', [i, 0])));
    expect(more).toEqual([1, 2, 3, 4]);
    await first;
    expect(added).toHaveLength(1);
    expect(pool.stats().workers.length).toBeLessThanOrEqual(2);
    await pool.close();
  });

  it('rejects a size whose max is below its min', () => {
    expect(() => testPool({ size: { min: 3, max: 2 } })).toThrow(
      expect.objectContaining({ code: 'ERR_INVALID_OPTION', option: 'size.max' }),
    );
  });
});
