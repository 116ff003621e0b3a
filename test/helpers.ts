import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { afterEach } from 'vitest';
import {
  createPool,
  type Pool,
  type PoolEvents,
  type PoolInternals,
  type PoolOptions,
} from '../src/index.js';

/** Absolute path of a file in test/fixtures. */
export function fixture(name: string): string {
  return fileURLToPath(new URL(`./fixtures/${name}`, import.meta.url));
}

const open = new Set<Pool>();

/** A pool that is closed after the test, whatever happens. */
export function testPool(options: Partial<PoolOptions> & PoolInternals): Pool {
  const pool = createPool({ size: 1, script: fixture('handlers.py'), ...options } as PoolOptions);
  open.add(pool);
  return pool;
}

afterEach(async () => {
  const pools = [...open];
  open.clear();
  await Promise.all(pools.map((p) => p.close({ timeout: 1000 }).catch(() => {})));
});

/** True while a process with that pid exists (and is not a zombie). */
export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Field 3 is the state; Z is a zombie (dead, not yet reaped).
    return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z';
  } catch {
    return false;
  }
}

/** Resolves with the first event `name` for which `match` holds. */
export function nextEvent<K extends keyof PoolEvents>(
  pool: Pool,
  name: K,
  match: (event: Parameters<PoolEvents[K]>[0]) => boolean = () => true,
): Promise<Parameters<PoolEvents[K]>[0]> {
  return new Promise((resolve) => {
    const listener = (event: Parameters<PoolEvents[K]>[0]) => {
      if (!match(event)) return;
      pool.off(name, listener as never);
      resolve(event);
    };
    pool.on(name, listener as never);
  });
}

/**
 * Resolves with the pid of the worker once a handler called with `tag` (sleep, spin, swallow,
 * hang_c in test/fixtures/_common.py) is running: it writes the line `started <tag>` to stderr.
 * Call it before making the call, so the line cannot be missed.
 */
export function started(pool: Pool, tag: string): Promise<number | null> {
  return nextEvent(pool, 'worker.stderr', (e) => e.line === `started ${tag}`).then((e) => e.pid);
}

/**
 * Waits until `check` holds, re-checking on every pool event that could change it. Rejects after
 * `timeout` ms (a generous bound, not a synchronisation delay).
 */
export function until(pool: Pool, check: () => boolean, timeout = 10_000): Promise<void> {
  if (check()) return Promise.resolve();
  return new Promise((resolve, reject) => {
    const events = ['worker.state', 'worker.exit', 'worker.restart', 'pool.ready'] as const;
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

/**
 * Waits until no process in `pids` is alive, polling /proc (a process that is not our child gives
 * no event); rejects after `timeout` ms, a generous bound for a loaded machine.
 */
export async function allGone(pids: number[], timeout = 10_000): Promise<void> {
  const deadline = Date.now() + timeout;
  for (;;) {
    const alive = pids.filter(isAlive);
    if (alive.length === 0) return;
    if (Date.now() > deadline) throw new Error(`processes still alive: ${alive.join(', ')}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** Pids of the pool's current processes. */
export function pids(pool: Pool): number[] {
  return pool
    .stats()
    .workers.map((w) => w.pid)
    .filter((p): p is number => p !== null);
}
