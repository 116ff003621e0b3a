/**
 * Suite 7, soak: mixed load for SOAK_SECONDS (default 30; 600 for the published figures) with
 * random cancels, timeouts, early-abandoned streams, handler errors, sessions and SIGKILLs.
 *
 * Invariants: every call settles with an outcome its kind allows; Node's RSS (after GC) and its
 * number of open fds and active timers are flat between the start of the measured period and
 * its end, taken at the same point (load paused, every worker ready); a long-lived AbortSignal
 * shared by many calls keeps no listeners; close() leaves no process; and the script exits by
 * itself after close() (runMain fails it if a leaked handle keeps it alive; the fast test runs
 * it as a child process that must exit on its own).
 *
 *   node --expose-gc --import tsx scripts/reliability/soak.ts
 *   SOAK_SECONDS=30 SOAK_SIZE=4 SOAK_CONCURRENCY=8 SOAK_KILL_EVERY=2000
 */
import { getEventListeners } from 'node:events';
import { setTimeout as sleep } from 'node:timers/promises';
import { createPool, type Pool } from '../../src/index.js';
import { CHAOS_SCRIPT } from './lib/fixtures.js';
import { fdCount, fdKinds, mib, rssBytes, workersOfParent } from './lib/procs.js';
import {
  Checker,
  envInt,
  errorCode,
  loopDelay,
  round,
  runMain,
  type SuiteResult,
  tally,
} from './lib/suite.js';
import { PoolWatch } from './lib/watch.js';

export interface SoakParams {
  seconds: number;
  size: number;
  concurrency: number;
  /** ms between SIGKILLs of a random worker (0: none). */
  killEvery: number;
  /** RSS growth allowed between the two measuring points, MiB. */
  rssBudget: number;
  /** Heap (after GC) growth allowed between the two measuring points, MiB. */
  heapBudget: number;
  /** recycle.maxCalls: planned replacements on top of the kills. */
  recycleCalls: number;
  /** Part of the run before the first measuring point (warm-up), 0..1. */
  warmup: number;
}

export const SOAK_DEFAULTS: SoakParams = {
  seconds: 30,
  size: 4,
  concurrency: 8,
  killEvery: 2000,
  rssBudget: 32,
  heapBudget: 8,
  recycleCalls: 2000,
  warmup: 0.2,
};

type Kind =
  | 'plain'
  | 'cancel'
  | 'timeout'
  | 'stream'
  | 'break'
  | 'error'
  | 'session'
  | 'shared'
  | 'log';

/** Outcomes each kind of call may end with, besides a worker killed under it. */
const ALLOWED: Record<Kind, string[]> = {
  plain: ['ok'],
  cancel: ['ok', 'AbortError'],
  timeout: ['ERR_CALL_TIMEOUT'],
  stream: ['ok'],
  break: ['ok'],
  error: ['ERR_PYTHON'],
  session: ['ok'],
  shared: ['ok'],
  log: ['ok'],
};
const KINDS = Object.keys(ALLOWED) as Kind[];

async function oneCall(pool: Pool, kind: Kind, i: number, shared: AbortSignal): Promise<string> {
  // A generous deadline on everything: a hang shows up as ERR_CALL_TIMEOUT, which only
  // 'timeout' calls allow.
  const timeout = 30_000;
  switch (kind) {
    case 'plain':
      return (await pool.call('add', [i, 1], { timeout })) === i + 1 ? 'ok' : 'wrong';
    case 'cancel': {
      const controller = new AbortController();
      const call = pool.call('sleep_ms', [20 + (i % 50)], { timeout, signal: controller.signal });
      call.catch(() => {});
      // Abort while queued or just dispatched, or a little later (mid-call).
      if (i % 2) setImmediate(() => controller.abort());
      else {
        await sleep(i % 30);
        controller.abort();
      }
      await call;
      return 'ok';
    }
    case 'timeout':
      await pool.call(i % 2 ? 'sleep_ms' : 'spin_ms', [5000], { timeout: 20 + (i % 80) });
      return 'ok';
    case 'stream': {
      let n = 0;
      for await (const _ of pool.stream('count', [100], { timeout })) n++;
      return n === 100 ? 'ok' : 'wrong';
    }
    case 'break': {
      let n = 0;
      for await (const _ of pool.stream('count', [1_000_000], { timeout })) if (++n === 10) break;
      return 'ok';
    }
    case 'error':
      await pool.call('fail', ['expected'], { timeout });
      return 'ok';
    case 'session':
      await pool.call('session_set', ['k', i], { session: `s${i % 5}`, timeout });
      return 'ok';
    case 'log':
      // 16 stderr lines of 255 characters: workers have something in their stderr tail.
      await pool.call('flood', ['stderr', 4096, 255], { timeout });
      return 'ok';
    case 'shared':
      await pool.call('echo', [{ i, s: 'x'.repeat(i % 1000) }], { timeout, signal: shared });
      return 'ok';
  }
}

/** Counts calls in flight and lets the measurements wait, without polling, for none. */
class Load {
  inFlight = 0;
  paused = false;
  #idle: (() => void)[] = [];
  #resume: (() => void)[] = [];

  begin(): void {
    this.inFlight++;
  }

  end(): void {
    this.inFlight--;
    if (this.inFlight === 0) for (const f of this.#idle.splice(0)) f();
  }

  /** Stops new calls; resolves when none is in flight. */
  pause(): Promise<void> {
    this.paused = true;
    if (this.inFlight === 0) return Promise.resolve();
    return new Promise((resolve) => this.#idle.push(resolve));
  }

  resume(): void {
    this.paused = false;
    for (const f of this.#resume.splice(0)) f();
  }

  /** Resolves at once unless paused; then when resumed. */
  gate(): Promise<void> {
    if (!this.paused) return Promise.resolve();
    return new Promise((resolve) => this.#resume.push(resolve));
  }
}

function timers(): number {
  return process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length;
}

export async function runSoak(overrides: Partial<SoakParams> = {}): Promise<SuiteResult> {
  const p: SoakParams = { ...SOAK_DEFAULTS, ...overrides };
  const c = new Checker();
  const t0 = performance.now();
  const fdsBeforePool = fdCount();
  const pool = createPool({
    script: CHAOS_SCRIPT,
    size: p.size,
    cancelGrace: 500,
    restart: { maxRestarts: 100_000 },
    recycle: { maxCalls: p.recycleCalls },
    healthCheck: { interval: 1000, timeout: 2000 },
  });
  const watch = new PoolWatch(pool, CHAOS_SCRIPT, 50);
  const lag = loopDelay();
  const shared = new AbortController();
  await pool.ready();

  let issuing = true;
  const load = new Load();
  let calls = 0;
  const byKind: Record<string, Record<string, number>> = {};
  const unexpected: string[] = [];
  const killedPids = new Set<number>();
  let i = 0;
  const runners = Array.from({ length: p.concurrency }, async () => {
    while (issuing) {
      await load.gate();
      if (!issuing) return;
      const n = i++;
      const kind = KINDS[n % KINDS.length]!;
      load.begin();
      let outcome: string;
      let pid: number | undefined;
      try {
        outcome = await oneCall(pool, kind, n, shared.signal);
      } catch (error) {
        outcome = errorCode(error);
        pid = (error as { pid?: number }).pid;
      }
      load.end();
      calls++;
      byKind[kind] ??= {};
      tally(byKind[kind], outcome);
      const killed = outcome === 'ERR_WORKER_CRASHED' && pid !== undefined && killedPids.has(pid);
      if (!ALLOWED[kind].includes(outcome) && !killed && unexpected.length < 20) {
        unexpected.push(`${kind}: ${outcome}`);
      }
    }
  });

  const killer = (async () => {
    if (p.killEvery <= 0) return;
    while (issuing) {
      await sleep(p.killEvery);
      if (!issuing || load.paused) continue;
      const live = pool
        .stats()
        .workers.filter((w) => w.pid !== null && (w.state === 'ready' || w.state === 'busy'));
      const w = live[Math.floor(Math.random() * live.length)];
      if (!w?.pid) continue;
      killedPids.add(w.pid);
      try {
        process.kill(w.pid, 'SIGKILL');
      } catch {
        // Gone already.
      }
    }
  })();

  const measure = async () => {
    await load.pause();
    // Every worker ready again (killed ones replaced), no call in flight, garbage collected.
    await pool.ready();
    global.gc?.();
    const m = {
      rss: rssBytes(),
      heap: process.memoryUsage().heapUsed,
      fds: fdCount(),
      fdKinds: fdKinds(),
      timers: timers(),
      sharedListeners: getEventListeners(shared.signal, 'abort').length,
      poolListeners: pool.eventNames().reduce((n, e) => n + pool.listenerCount(e), 0),
      at: performance.now() - t0,
      calls,
      restarts: watch.started.size,
    };
    load.resume();
    return m;
  };

  const total = p.seconds * 1000;
  const rssSeries: { t: number; mib: number }[] = [];
  const sampler = setInterval(
    () => rssSeries.push({ t: Math.round(performance.now() - t0), mib: mib(rssBytes()) }),
    1000,
  );
  await sleep(total * p.warmup);
  const start = await measure();
  await sleep(total * (1 - p.warmup));
  const end = await measure();
  issuing = false;
  load.resume();
  clearInterval(sampler);
  await Promise.all(runners);
  await killer;
  const closeStart = performance.now();
  await pool.close();
  const closeMs = performance.now() - closeStart;
  watch.stop();
  const loop = lag.stop();
  global.gc?.();
  // Handles of exited processes close in the close phase of the loop: two turns.
  await new Promise((resolve) => setImmediate(resolve));
  await new Promise((resolve) => setImmediate(resolve));
  const activeResourcesAfterClose = process
    .getActiveResourcesInfo()
    .filter((r) => r !== 'TTYWrap' && r !== 'PipeWrap');
  const fdsAfterClose = fdCount();
  const left = workersOfParent();

  const rssGrowth = mib(end.rss - start.rss);
  c.check(unexpected.length === 0, `unexpected outcomes: ${unexpected.slice(0, 5).join('; ')}`);
  c.check(rssGrowth <= p.rssBudget, `RSS grew by ${rssGrowth} MiB (budget ${p.rssBudget} MiB)`);
  const heapGrowth = mib(end.heap - start.heap);
  c.check(
    heapGrowth <= p.heapBudget,
    `the heap (after GC) grew by ${heapGrowth} MiB over ${end.restarts - start.restarts} worker replacements (budget ${p.heapBudget} MiB)`,
  );
  c.check(
    end.fds === start.fds,
    `open fds went from ${start.fds} to ${end.fds}: ${JSON.stringify(start.fdKinds)} -> ${JSON.stringify(end.fdKinds)}`,
  );
  // A health check in flight holds a timer for its timeout: allow one per worker.
  c.check(
    end.timers <= start.timers + p.size,
    `active timers went from ${start.timers} to ${end.timers}`,
  );
  c.check(
    end.sharedListeners === 0,
    `${end.sharedListeners} listeners left on a shared AbortSignal`,
  );
  c.check(
    end.poolListeners === start.poolListeners,
    `pool listeners went from ${start.poolListeners} to ${end.poolListeners}`,
  );
  c.check(
    fdsAfterClose <= fdsBeforePool,
    `fds after close(): ${fdsAfterClose}, before the pool: ${fdsBeforePool}`,
  );
  c.check(left.length === 0, `processes left after close(): ${left.join(',')}`);
  c.check(watch.overLimit.length === 0, `too many live workers: ${watch.overLimit[0]}`);
  const calls2 = end.calls - start.calls;
  const exitReasons: Record<string, number> = {};
  for (const e of watch.exits) tally(exitReasons, e.reason);
  const outcomes: Record<string, number> = {};
  for (const perKind of Object.values(byKind))
    for (const [k, v] of Object.entries(perKind)) tally(outcomes, k, v);
  return {
    suite: 'soak',
    params: { ...p },
    figures: {
      calls,
      callsPerSecond: round(calls / p.seconds),
      outcomes,
      byKind,
      kills: killedPids.size,
      workerProcessesStarted: watch.started.size,
      exitReasons,
      measured: {
        fromSecond: round(start.at / 1000),
        toSecond: round(end.at / 1000),
        calls: calls2,
      },
      rssMiB: {
        start: mib(start.rss),
        end: mib(end.rss),
        growth: rssGrowth,
        max: Math.max(...rssSeries.map((s) => s.mib)),
      },
      heapMiB: { start: mib(start.heap), end: mib(end.heap), growth: heapGrowth },
      replacementsMeasured: end.restarts - start.restarts,
      fds: { beforePool: fdsBeforePool, start: start.fds, end: end.fds, afterClose: fdsAfterClose },
      activeTimers: { start: start.timers, end: end.timers },
      sharedSignalListeners: end.sharedListeners,
      maxLiveWorkers: watch.maxLive,
      liveSamples: watch.samples,
      eventLoopDelayMs: loop,
      closeMs: round(closeMs),
      processesLeftAfterClose: left.length,
      activeResourcesAfterClose,
      rssSeriesMiB: rssSeries.filter(
        (_, k) => k % Math.max(1, Math.floor(rssSeries.length / 20)) === 0,
      ),
    },
    violations: c.violations,
    durationMs: Math.round(performance.now() - t0),
  };
}

runMain(import.meta.url, () =>
  runSoak({
    seconds: envInt('SOAK_SECONDS', SOAK_DEFAULTS.seconds),
    size: envInt('SOAK_SIZE', SOAK_DEFAULTS.size),
    concurrency: envInt('SOAK_CONCURRENCY', SOAK_DEFAULTS.concurrency),
    killEvery: envInt('SOAK_KILL_EVERY', SOAK_DEFAULTS.killEvery),
    recycleCalls: envInt('SOAK_RECYCLE_CALLS', SOAK_DEFAULTS.recycleCalls),
  }),
);
