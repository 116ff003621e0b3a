import { describe, expect, it } from 'vitest';
import { backoffDelay } from '../../src/supervisor/backoff.js';
import { CheckoutQueue } from '../../src/supervisor/checkout-queue.js';
import { RestartIntensity } from '../../src/supervisor/restart-intensity.js';
import { SessionTable } from '../../src/supervisor/sessions.js';

const call = (name: string) => ({ name, seq: 0, queued: false, settled: false });

describe('CheckoutQueue', () => {
  it('serves the oldest of the shared and the pinned heads', () => {
    const q = new CheckoutQueue<ReturnType<typeof call>>(2);
    const a = call('a');
    const b = call('b');
    const c = call('c');
    q.push(a);
    q.push(b, 1);
    q.push(c);
    expect(q.size).toBe(3);
    expect(q.next(0)?.name).toBe('a');
    expect(q.next(0)?.name).toBe('c'); // b is pinned to slot 1
    expect(q.next(1)?.name).toBe('b');
    expect(q.next(1)).toBeUndefined();
    expect(q.size).toBe(0);
  });

  it('skips dropped and settled calls and counts each once', () => {
    const q = new CheckoutQueue<ReturnType<typeof call>>(1);
    const a = call('a');
    const b = call('b');
    const c = call('c');
    q.push(a);
    q.push(b);
    q.push(c);
    q.dropped(a);
    q.dropped(a);
    expect(q.size).toBe(2);
    b.settled = true;
    expect(q.next(0)?.name).toBe('c');
    q.dropped(b);
    expect(q.size).toBe(0);
  });

  it('moves pinned calls back in order when their worker dies', () => {
    const q = new CheckoutQueue<ReturnType<typeof call>>(2);
    const [a, b, c] = [call('a'), call('b'), call('c')];
    q.push(a, 1);
    q.push(b);
    q.push(c, 1);
    q.unpin(1);
    expect([q.next(0)?.name, q.next(0)?.name, q.next(0)?.name]).toEqual(['a', 'b', 'c']);
  });
});

describe('backoffDelay', () => {
  it('grows exponentially with jitter and stays under maxDelay', () => {
    const opts = { minDelay: 100, maxDelay: 1000 };
    expect(backoffDelay(0, opts, () => 0)).toBe(50);
    expect(backoffDelay(0, opts, () => 1)).toBe(100);
    expect(backoffDelay(3, opts, () => 1)).toBe(800);
    expect(backoffDelay(10, opts, () => 1)).toBe(1000);
    expect(backoffDelay(10, opts, () => 0)).toBe(500);
  });
});

describe('RestartIntensity', () => {
  it('trips after maxRestarts within the period only', () => {
    const r = new RestartIntensity(2, 1000);
    expect(r.record(0)).toBe(false);
    expect(r.record(10)).toBe(false);
    expect(r.wouldExceed(20)).toBe(true);
    expect(r.wouldExceed(1500)).toBe(false);
    expect(r.record(20)).toBe(true);
  });
});

describe('SessionTable', () => {
  it('expires idle sessions and reports moves', () => {
    const t = new SessionTable(100);
    expect(t.bind('s', 0, 1, 0)).toBeUndefined();
    expect(t.get('s', 50)?.slot).toBe(0);
    expect(t.bind('s', 1, 1, 60)).toMatchObject({ slot: 0, generation: 1 });
    expect(t.get('s', 500)).toBeUndefined();
    t.bind('x', 0, 1, 0);
    t.sweep(1000);
    expect(t.size).toBe(0);
  });
});
