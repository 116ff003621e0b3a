// Errors of call() and stream() carry the stack of the code that made the call.
import { describe, expect, it } from 'vitest';
import { PythonError } from '../../src/index.js';
import { testPool } from '../helpers.js';

const THIS_FILE = 'call-site.test.ts';

describe('caller stacks (callSiteStacks)', () => {
  it("a rejected call() shows the user's line, keeps its class, code, message and Python traceback", async () => {
    const pool = testPool({ size: 1 });
    async function checkoutRoute() {
      return await pool.call('fail', ['bad input']);
    }
    const error = (await checkoutRoute().catch((e: unknown) => e)) as PythonError;
    expect(error).toBeInstanceOf(PythonError);
    expect(error.code).toBe('ERR_PYTHON');
    expect(error.stack).toMatch(/^PythonError: ValueError: bad input/);
    expect(error.stack).toMatch(
      /\n {4}at (async )?checkoutRoute \(.*call-site\.test\.ts:\d+:\d+\)/,
    );
    expect(error.stack).toContain('Python traceback:');
    expect(error.stack).toContain('raise ValueError(msg)');
    // pyvisor's and XState's own frames are gone.
    expect(error.stack).not.toMatch(/node_modules\/xstate/);
    await pool.close();
  });

  it('a failing stream() and a timed-out call show the line that iterated or awaited them', async () => {
    const pool = testPool({ size: 1 });
    async function streamRoute() {
      const out: unknown[] = [];
      for await (const x of pool.stream('fail', ['in a stream'])) out.push(x);
      return out;
    }
    const streamed = (await streamRoute().catch((e: unknown) => e)) as Error;
    expect(streamed).toMatchObject({ code: 'ERR_PYTHON' });
    expect(streamed.stack).toMatch(/at (async )?streamRoute \(.*call-site\.test\.ts/);
    async function slowRoute() {
      return await pool.call('sleep', [5], { timeout: 50 });
    }
    const timedOut = (await slowRoute().catch((e: unknown) => e)) as Error;
    expect(timedOut).toMatchObject({ code: 'ERR_CALL_TIMEOUT' });
    expect(timedOut.stack).toMatch(/at (async )?slowRoute \(.*call-site\.test\.ts/);
    await pool.close();
  });

  it('one error shared by many calls (a failed pool) gets each caller its own stack', async () => {
    const pool = testPool({
      size: 1,
      restart: { maxRestarts: 0, coolDown: Number.POSITIVE_INFINITY },
    });
    await pool.ready();
    await pool.call('crash', [3]).catch(() => {});
    async function firstRoute() {
      return await pool.call('add', [1, 2]);
    }
    async function secondRoute() {
      return await pool.call('add', [1, 2]);
    }
    const [a, b] = (await Promise.all([
      firstRoute().catch((e: unknown) => e),
      secondRoute().catch((e: unknown) => e),
    ])) as Error[];
    expect(a).toMatchObject({ code: 'ERR_POOL_FAILED' });
    expect(b).toMatchObject({ code: 'ERR_POOL_FAILED', message: a!.message });
    expect(b!.constructor).toBe(a!.constructor);
    expect(a!.stack).toMatch(/at (async )?firstRoute/);
    expect(a!.stack).not.toContain('secondRoute');
    expect(b!.stack).toMatch(/at (async )?secondRoute/);
    expect(b!.stack).not.toContain('firstRoute');
    await pool.close();
  });

  it("the caller's own abort reason comes back as it is (same object, same stack)", async () => {
    const pool = testPool({ size: 1 });
    const reason = new Error('the client went away');
    const stack = reason.stack;
    const abort = new AbortController();
    async function abortedRoute() {
      return await pool.call('sleep', [5], { signal: abort.signal });
    }
    const pending = abortedRoute().catch((e: unknown) => e);
    abort.abort(reason);
    const error = await pending;
    expect(error).toBe(reason);
    expect((error as Error).stack).toBe(stack);
    await pool.close();
  });

  it('callSiteStacks: false leaves errors as they are made', async () => {
    const pool = testPool({ size: 1, callSiteStacks: false });
    async function plainRoute() {
      return await pool.call('fail', ['x']);
    }
    const error = (await plainRoute().catch((e: unknown) => e)) as Error;
    expect(error).toMatchObject({ code: 'ERR_PYTHON' });
    expect(error.stack).not.toContain('plainRoute');
    expect(error.stack).not.toContain(THIS_FILE);
    expect(error.stack).toContain('Python traceback:');
    await pool.close();
  });
});
