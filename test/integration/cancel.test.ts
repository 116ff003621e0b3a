import { describe, expect, it } from 'vitest';
import { CallTimeoutError, CheckoutTimeoutError, QueueFullError } from '../../src/index.js';
import { nextEvent, started, testPool } from '../helpers.js';

describe('cancel and timeout', () => {
  it('a timed-out call settles at once; Python stops the handler; the same worker serves on', async () => {
    const pool = testPool({});
    const pid = await pool.call('pid');
    const t0 = performance.now();
    const error = await pool.call('sleep', [60], { timeout: 200 }).catch((e: unknown) => e);
    const elapsed = performance.now() - t0;
    expect(error).toBeInstanceOf(CallTimeoutError);
    expect((error as CallTimeoutError).code).toBe('ERR_CALL_TIMEOUT');
    // Not a latency bound (a loaded machine may be slow): far below the handler's 60 s.
    expect(elapsed).toBeLessThan(20_000);
    // The interrupt stopped time.sleep: the worker answers the next call, same process.
    expect(await pool.call('add', [1, 2])).toBe(3);
    expect(await pool.call('pid')).toBe(pid);
  });

  it('interrupts pure-Python loops too', async () => {
    const pool = testPool({});
    const pid = await pool.call('pid');
    await expect(pool.call('spin', [30], { timeout: 200 })).rejects.toThrow(CallTimeoutError);
    expect(await pool.call('pid')).toBe(pid);
  });

  it('cancels with an AbortSignal: rejects with the signal reason', async () => {
    const pool = testPool({});
    const pid = await pool.call('pid');
    const controller = new AbortController();
    // Aborted once the handler runs, so the cancel reaches Python (not just the queue).
    const running = started(pool, 'abort');
    const call = pool.call('sleep', [30, 'abort'], { signal: controller.signal });
    await running;
    controller.abort();
    const error = await call.catch((e: unknown) => e);
    expect((error as DOMException).name).toBe('AbortError');
    const reason = new Error('mine');
    const c2 = new AbortController();
    const p2 = pool.call('sleep', [30], { signal: c2.signal });
    c2.abort(reason);
    await expect(p2).rejects.toBe(reason);
    // Aborting twice is harmless.
    c2.abort();
    controller.abort();
    expect(await pool.call('add', [1, 2])).toBe(3);
    // The interrupt stopped the handlers: the same process serves on.
    expect(await pool.call('pid')).toBe(pid);
  });

  it('an already-aborted signal rejects without running anything', async () => {
    const pool = testPool({});
    await pool.ready();
    await expect(pool.call('add', [1, 2], { signal: AbortSignal.abort() })).rejects.toMatchObject({
      name: 'AbortError',
    });
    expect(pool.stats().workers[0]!.calls).toBe(0);
  });

  it('a handler that swallows the interrupt is killed after cancelGrace and replaced', async () => {
    const pool = testPool({ cancelGrace: 300 });
    const pid = await pool.call('pid');
    const exited = nextEvent(pool, 'worker.exit');
    // Cancelled once it runs: a cancel that reaches Python with its call is honoured before the
    // handler starts, and nothing would be swallowed.
    const controller = new AbortController();
    const running = started(pool, 'swallow');
    const call = pool.call('swallow', [60, 'swallow'], { signal: controller.signal });
    await running;
    controller.abort();
    await expect(call).rejects.toMatchObject({ name: 'AbortError' });
    const exit = await exited;
    expect(exit.pid).toBe(pid);
    expect(exit.reason).toBe('killed');
    const newPid = await pool.call('pid');
    expect(newPid).not.toBe(pid);
  });

  it('a late result after a cancel never reaches another caller', async () => {
    const pool = testPool({ cancelGrace: 20_000 });
    const pid = await pool.call('pid');
    // swallow(0.3) ignores the interrupt and returns "late" 300 ms after it started; it is
    // cancelled once it runs, so Python does send that late result.
    const controller = new AbortController();
    const running = started(pool, 'late');
    const call = pool.call('swallow', [0.3, 'late'], { signal: controller.signal });
    await running;
    controller.abort();
    await expect(call).rejects.toMatchObject({ name: 'AbortError' });
    // This call waits for the worker; it must get its own answer, not "late".
    expect(await pool.call('echo', ['mine'])).toBe('mine');
    // The worker was freed by the late result, not killed after cancelGrace.
    expect(await pool.call('pid')).toBe(pid);
  });

  it('a call cancelled while queued is removed and never runs', async () => {
    const pool = testPool({});
    await pool.call('session_set', ['ran', false]);
    const blocker = pool.call('sleep', [0.5]);
    const controller = new AbortController();
    const queued = pool.call('session_set', ['ran', true], { signal: controller.signal });
    expect(pool.stats().queued).toBe(1);
    controller.abort();
    await expect(queued).rejects.toMatchObject({ name: 'AbortError' });
    expect(pool.stats().queued).toBe(0);
    await blocker;
    expect(await pool.call('session_get', ['ran'])).toBe(false);
  });

  it('a call timeout counts the queue wait', async () => {
    const pool = testPool({});
    await pool.ready();
    // The blocker holds the only worker until it is aborted, however slow the machine.
    const controller = new AbortController();
    const blocker = pool.call('sleep', [60], { signal: controller.signal }).catch(() => {});
    await expect(pool.call('add', [1, 2], { timeout: 100 })).rejects.toThrow(CallTimeoutError);
    expect(pool.stats().queued).toBe(0);
    controller.abort();
    await blocker;
    await pool.ready();
    // Only the blocker ever reached the worker.
    expect(pool.stats().workers[0]!.calls).toBe(1);
  });

  it('checkoutTimeout and maxQueue bound the wait for a worker', async () => {
    const pool = testPool({ checkoutTimeout: 100, maxQueue: 1 });
    await pool.ready();
    const controller = new AbortController();
    const blocker = pool.call('sleep', [60], { signal: controller.signal }).catch(() => {});
    const waiting = pool.call('add', [1, 2]);
    await expect(pool.call('add', [1, 2])).rejects.toThrow(QueueFullError);
    const error = await waiting.catch((e: unknown) => e);
    expect(error).toBeInstanceOf(CheckoutTimeoutError);
    expect((error as CheckoutTimeoutError).code).toBe('ERR_CHECKOUT_TIMEOUT');
    controller.abort();
    await blocker;
    await pool.ready();
    expect(pool.stats().workers[0]!.calls).toBe(1);
  });
});

describe('a cancel that arrives together with its call', () => {
  it('is honoured even when both frames come in one read (worker was stopped)', async () => {
    const pool = testPool({ cancelGrace: 10_000 });
    const pid = (await pool.call('pid')) as number;
    const stderr: string[] = [];
    pool.on('worker.stderr', (e) => stderr.push(e.line));
    // Stopped, the worker cannot read: the call frame and the cancel frame pile up in the pipe.
    process.kill(pid, 'SIGSTOP');
    const timedOut = pool.call('sleep', [600, 'piled'], { timeout: 100 }).catch((e: unknown) => e);
    expect(await timedOut).toBeInstanceOf(CallTimeoutError);
    process.kill(pid, 'SIGCONT');
    // Without the cancel the handler would sleep 600 s, and the worker would be killed after
    // cancelGrace: the same process answering proves the cancel was honoured.
    expect(await pool.call('pid')).toBe(pid);
    // Honoured before the handler ran at all.
    expect(stderr).not.toContain('started piled');
  });
});
