import type { Pool, PoolEvents } from '../../../src/index.js';

type Payload<K extends keyof PoolEvents> = Parameters<PoolEvents[K]>[0];

/**
 * Resolves with the first event `name` for which `match` holds; rejects after `timeout` ms (a
 * generous bound that turns a hang into a failure, not a synchronisation delay).
 */
export function nextEvent<K extends keyof PoolEvents>(
  pool: Pool,
  name: K,
  match: (event: Payload<K>) => boolean = () => true,
  timeout = 30_000,
): Promise<Payload<K>> {
  return new Promise((resolve, reject) => {
    const listener = (event: Payload<K>) => {
      if (!match(event)) return;
      cleanup();
      resolve(event);
    };
    const timer = setTimeout(() => {
      cleanup();
      reject(new Error(`no '${String(name)}' event within ${timeout} ms`));
    }, timeout);
    const cleanup = () => {
      clearTimeout(timer);
      pool.off(name, listener as never);
    };
    pool.on(name, listener as never);
  });
}

/**
 * Resolves once `check()` holds, re-checking on every pool event that can change it; rejects
 * after `timeout` ms.
 */
export function until(pool: Pool, check: () => boolean, timeout = 30_000): Promise<void> {
  if (check()) return Promise.resolve();
  const events = [
    'worker.state',
    'worker.exit',
    'worker.restart',
    'pool.ready',
    'circuit.change',
  ] as const;
  return new Promise((resolve, reject) => {
    const listener = () => {
      if (!check()) return;
      cleanup();
      resolve();
    };
    const timer = setTimeout(() => {
      cleanup();
      reject(new Error(`condition not met within ${timeout} ms: ${check.toString()}`));
    }, timeout);
    const cleanup = () => {
      clearTimeout(timer);
      for (const e of events) pool.off(e, listener);
    };
    for (const e of events) pool.on(e, listener);
  });
}
