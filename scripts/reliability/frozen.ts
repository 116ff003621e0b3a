/**
 * Suite 6, frozen and slow workers: SIGSTOP during a call and while idle, handlers that ignore
 * the interrupt, and an init that is slower than initTimeout only sometimes.
 *
 * Invariants: a call with a timeout on a frozen worker settles with ERR_CALL_TIMEOUT on time and
 * the frozen worker is killed and replaced within timeout + cancelGrace (or sooner, by the health
 * check); a call *without* a timeout on a frozen worker fails with ERR_WORKER_CRASHED once the
 * health check (which reaches busy workers too) finds the worker frozen, and the worker is
 * replaced; a frozen idle worker is found by the health check and replaced, and calls sent
 * meanwhile settle; a worker stopped and continued before any deadline is kept; a handler that
 * ignores the interrupt is killed after cancelGrace without disturbing the other workers; a flaky
 * slow init never fails a call. Figures: the time each of these takes.
 *
 *   node --import tsx scripts/reliability/frozen.ts
 *   FROZEN_FLAKY_CALLS=400 FROZEN_FLAKY_SLOW_PCT=30
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createPool, type Pool } from '../../src/index.js';
import { nextEvent, until } from './lib/events.js';
import { CHAOS_SCRIPT, chaosFixture } from './lib/fixtures.js';
import { isLive, workersOfParent } from './lib/procs.js';
import {
  Checker,
  envInt,
  errorCode,
  round,
  runMain,
  type SuiteResult,
  tally,
  within,
} from './lib/suite.js';
import { PoolWatch } from './lib/watch.js';

export interface FrozenParams {
  callTimeout: number;
  cancelGrace: number;
  health: { interval: number; timeout: number };
  /** Slack on every deadline, ms (a loaded 2-core machine). */
  slack: number;
  flakyCalls: number;
  /** Percentage of starts that are slower than initTimeout. */
  flakySlowPct: number;
  flakyInitTimeout: number;
  /**
   * Replace workers every `flakyRecycle` calls (recycle.maxCalls), so the flaky start is hit
   * again and again; 0: no recycling (only the first starts and their retries are flaky).
   */
  flakyRecycle: number;
  /** Start behaviours, comma-separated (see scripted_init.py); empty: random from `seed`. */
  flakyPattern: string;
  seed: number;
}

export const FROZEN_DEFAULTS: FrozenParams = {
  callTimeout: 500,
  cancelGrace: 500,
  health: { interval: 300, timeout: 300 },
  slack: 1500,
  flakyCalls: 400,
  flakySlowPct: 30,
  flakyInitTimeout: 1500,
  flakyRecycle: 10,
  flakyPattern: '',
  seed: 42,
};

function pidOf(pool: Pool, slot: number): number {
  return pool.stats().workers[slot]!.pid!;
}

/** Waits until `slot` runs a process other than `pid` that is ready. */
function replaced(pool: Pool, slot: number, pid: number, timeout: number): Promise<void> {
  return until(
    pool,
    () => {
      const w = pool.stats().workers[slot]!;
      return w.pid !== null && w.pid !== pid && w.state === 'ready';
    },
    timeout,
  );
}

/** A tiny deterministic PRNG (mulberry32), so a flaky-init run can be replayed. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export async function runFrozen(overrides: Partial<FrozenParams> = {}): Promise<SuiteResult> {
  const p: FrozenParams = { ...FROZEN_DEFAULTS, ...overrides };
  const c = new Checker();
  const t0 = performance.now();
  const figures: Record<string, unknown> = {};
  const pool = createPool({
    script: CHAOS_SCRIPT,
    size: 2,
    cancelGrace: p.cancelGrace,
    healthCheck: p.health,
    restart: { maxRestarts: 1000 },
  });
  const watch = new PoolWatch(pool, CHAOS_SCRIPT);
  const exitReasons: Record<string, number> = {};
  pool.on('worker.exit', (e) => tally(exitReasons, e.reason));
  await pool.ready();

  // A. SIGSTOP during a call that has a timeout.
  {
    const s = performance.now();
    const call = pool
      .call('sleep_ms', [30_000], { session: 'frozen-a', timeout: p.callTimeout })
      .catch((e: unknown) => e);
    const slot = await until(pool, () => pool.stats().workers.some((w) => w.state === 'busy')).then(
      () => pool.stats().workers.findIndex((w) => w.state === 'busy'),
    );
    const victim = pidOf(pool, slot);
    process.kill(victim, 'SIGSTOP');
    const exit = nextEvent(
      pool,
      'worker.exit',
      (e) => e.pid === victim,
      p.callTimeout + p.cancelGrace + p.slack * 4,
    );
    const error = await call;
    const settledMs = performance.now() - s;
    const other = await pool.call('add', [1, 2]);
    const ended = await exit.catch(() => null);
    const replacedMs = performance.now() - s;
    await pool.ready();
    c.check(
      errorCode(error) === 'ERR_CALL_TIMEOUT',
      `A: a call on a frozen worker gave ${errorCode(error)}`,
    );
    c.check(
      settledMs <= p.callTimeout + p.slack,
      `A: it settled after ${round(settledMs)} ms (timeout ${p.callTimeout})`,
    );
    c.check(other === 3, 'A: the other worker did not serve');
    // Killed after cancelGrace, or sooner by the health check (busy workers are pinged too).
    c.check(
      ended?.reason === 'killed' || ended?.reason === 'unresponsive',
      `A: the frozen worker ended as ${ended?.reason}, expected killed or unresponsive`,
    );
    c.check(
      replacedMs <= p.callTimeout + p.cancelGrace + p.slack * 2,
      `A: frozen worker replaced ${round(replacedMs)} ms after the call (timeout + cancelGrace = ${p.callTimeout + p.cancelGrace})`,
    );
    c.check(!isLive(victim), `A: the frozen process ${victim} is still alive`);
    figures.stopDuringCallWithTimeout = {
      callSettledMs: round(settledMs),
      workerGoneMs: round(replacedMs),
      exitReason: ended?.reason ?? null,
    };
  }

  // B. SIGSTOP during a call without a timeout: the health check reaches the busy worker, which
  // is killed and replaced; its call fails with ERR_WORKER_CRASHED instead of hanging.
  {
    await pool.ready();
    const s = performance.now();
    const call = pool.call('sleep_ms', [30_000], { session: 'frozen-b' }).then(
      (v) => v,
      (e: unknown) => e,
    );
    await until(pool, () => pool.stats().workers.some((w) => w.state === 'busy'));
    const slot = pool.stats().workers.findIndex((w) => w.state === 'busy');
    const victim = pidOf(pool, slot);
    const exit = nextEvent(
      pool,
      'worker.exit',
      (e) => e.pid === victim,
      p.health.interval * 2 + p.health.timeout + p.slack * 4,
    ).catch(() => null);
    process.kill(victim, 'SIGSTOP');
    const outcome = await within(
      call,
      p.health.interval * 2 + p.health.timeout + p.slack * 2,
      () => 'HANG',
    );
    const settledMs = performance.now() - s;
    const ended = await exit;
    if (isLive(victim)) process.kill(victim, 'SIGCONT');
    figures.stopDuringCallWithoutTimeout = {
      call: errorCode(outcome),
      exitReason: ended?.reason ?? null,
      settledMs: round(settledMs),
    };
    c.check(
      errorCode(outcome) === 'ERR_WORKER_CRASHED',
      `B: a call without timeout on a frozen worker gave ${String(errorCode(outcome))}`,
    );
    c.check(
      ended?.reason === 'unresponsive',
      `B: the frozen busy worker ended as ${ended?.reason}, expected unresponsive`,
    );
    c.check(!isLive(victim), `B: the frozen process ${victim} is still alive`);
  }

  // C. SIGSTOP while idle, and calls sent before the health check notices.
  {
    await pool.ready();
    const slot = 1;
    const victim = pidOf(pool, slot);
    const s = performance.now();
    const guard = 10_000 + p.slack * 2;
    const health = nextEvent(pool, 'health.failed', (e) => e.pid === victim, guard).then(
      () => performance.now() - s,
      () => null,
    );
    // Listened for before the kill: a call that lands on the frozen worker may end it early.
    const exited = nextEvent(pool, 'worker.exit', (e) => e.pid === victim, guard).catch(() => null);
    process.kill(victim, 'SIGSTOP');
    const outcomes: Record<string, number> = {};
    const latencies: number[] = [];
    await Promise.all(
      Array.from({ length: 20 }, async (_, i) => {
        const cs = performance.now();
        const r = await pool.call('add', [i, 1], { timeout: p.callTimeout * 2 }).then(
          (v) => (v === i + 1 ? 'ok' : 'wrong'),
          (e: unknown) => errorCode(e),
        );
        latencies.push(performance.now() - cs);
        tally(outcomes, r);
      }),
    );
    const exit = await exited;
    const healthMs = await within(health, 1, () => null);
    await replaced(pool, slot, victim, guard);
    const replacedMs = performance.now() - s;
    // A call that reached the frozen worker times out, or fails when the health check kills it.
    const unexpected = Object.keys(outcomes).filter(
      (k) => k !== 'ok' && k !== 'ERR_CALL_TIMEOUT' && k !== 'ERR_WORKER_CRASHED',
    );
    c.check(
      unexpected.length === 0,
      `C: calls while a worker was frozen gave ${JSON.stringify(outcomes)}`,
    );
    c.check(
      replacedMs <=
        p.health.interval + p.health.timeout + p.callTimeout * 2 + p.cancelGrace + p.slack * 2,
      `C: the frozen idle worker was replaced after ${round(replacedMs)} ms`,
    );
    c.check(!isLive(victim), `C: the frozen process ${victim} is still alive`);
    figures.stopWhileIdle = {
      calls: outcomes,
      detectedBy: exit?.reason ?? null,
      healthFailedAfterMs: healthMs === null ? null : round(healthMs),
      replacedAfterMs: round(replacedMs),
      maxCallMs: round(Math.max(...latencies)),
    };
  }

  // D. SIGSTOP + SIGCONT before any deadline: the worker is kept.
  {
    await pool.ready();
    const victim = pidOf(pool, 0);
    const call = pool.call('sleep_ms', [100], { session: 'frozen-d', timeout: 5000 });
    await until(pool, () => pool.stats().workers.some((w) => w.state === 'busy'));
    const slot = pool.stats().workers.findIndex((w) => w.state === 'busy');
    const busyPid = pidOf(pool, slot);
    process.kill(busyPid, 'SIGSTOP');
    process.kill(busyPid, 'SIGCONT');
    const value = await call.catch((e: unknown) => errorCode(e));
    process.kill(victim, 'SIGSTOP');
    process.kill(victim, 'SIGCONT');
    const after = await pool.call('add', [1, 1]);
    c.check(value === 100 && after === 2, `D: stop+continue gave ${String(value)}, ${after}`);
    c.check(isLive(busyPid) && isLive(victim), 'D: a stopped-and-continued worker was killed');
    figures.stopThenContinue = { call: value, kept: isLive(busyPid) && isLive(victim) };
  }

  // E. Handlers that ignore the interrupt. The call is cancelled (aborted) once the handler runs
  // (it says so on stderr), not by a timeout counted from the call: a cancel that reaches Python
  // before the handler starts is honoured there, and nothing would be ignored.
  const ignoring: Record<string, unknown> = {};
  for (const fn of ['swallow', 'swallow_spin'] as const) {
    await pool.ready();
    const controller = new AbortController();
    const entered = nextEvent(
      pool,
      'worker.stderr',
      (e) => e.line === `entered ${fn}`,
      p.slack * 4 + 10_000,
    );
    const call = pool.call(fn, [null], { signal: controller.signal }).catch((e: unknown) => e);
    const victim = (await entered).pid!;
    const s = performance.now();
    controller.abort();
    const exit = nextEvent(
      pool,
      'worker.exit',
      (e) => e.pid === victim,
      p.cancelGrace + p.slack * 4,
    );
    // Meanwhile the other worker serves.
    const others = await Promise.all(
      Array.from({ length: 10 }, (_, i) => pool.call('add', [i, i])),
    );
    const error = await call;
    const settledMs = performance.now() - s;
    const ended = await exit.catch(() => null);
    const killedMs = performance.now() - s;
    c.check(errorCode(error) === 'AbortError', `E ${fn}: gave ${errorCode(error)}`);
    c.check(settledMs <= p.slack, `E ${fn}: settled ${round(settledMs)} ms after the abort`);
    c.check(ended?.reason === 'killed', `E ${fn}: the worker ended as ${ended?.reason}`);
    c.check(
      killedMs <= p.cancelGrace + p.slack * 2,
      `E ${fn}: killed ${round(killedMs)} ms after the abort (cancelGrace ${p.cancelGrace})`,
    );
    c.check(
      others.every((v, i) => v === 2 * i),
      `E ${fn}: other calls failed`,
    );
    ignoring[fn] = {
      callSettledMs: round(settledMs),
      killedAfterMs: round(killedMs),
      exitReason: ended?.reason ?? null,
    };
  }
  {
    // A generator that catches Cancelled at its yield and yields again is closed by the runtime:
    // the worker is kept.
    await pool.ready();
    const before = new Set(pool.stats().workers.map((w) => w.pid));
    const seen: number[] = [];
    for await (const x of pool.stream<number>('stubborn_stream', [])) {
      seen.push(x);
      if (seen.length === 3) break;
    }
    const after = await pool.call('add', [2, 2]);
    const same = pool.stats().workers.every((w) => before.has(w.pid));
    c.check(after === 4 && same, 'E stubborn_stream: the worker was not kept');
    ignoring.stubborn_stream = { items: seen.length, workerKept: same };
  }
  {
    // close() while a handler ignores the interrupt and has no timeout. (Another script, which
    // serves the same handlers, so the watch of the main pool does not count this process.)
    const p2 = createPool({ script: chaosFixture('scripted_init.py'), size: 1 });
    await p2.ready();
    const pid = pidOf(p2, 0);
    const call = p2.call('swallow', [null]).catch((e: unknown) => e);
    await until(p2, () => p2.stats().workers[0]!.state === 'busy');
    const s = performance.now();
    await p2.close({ timeout: 300 });
    const closeMs = performance.now() - s;
    const error = await call;
    c.check(errorCode(error) === 'ERR_POOL_CLOSED', `E close: the call gave ${errorCode(error)}`);
    c.check(closeMs <= 300 + p.slack, `E close: close() took ${round(closeMs)} ms (timeout 300)`);
    c.check(!isLive(pid), 'E close: the process survived close()');
    ignoring.closeWhileIgnoring = { closeMs: round(closeMs), call: errorCode(error) };
  }
  figures.ignoresInterrupt = ignoring;
  await pool.close();
  watch.stop();

  // F. An init slower than initTimeout, only sometimes.
  {
    const dir = mkdtempSync(join(tmpdir(), 'pyvisor-flaky-'));
    const file = join(dir, 'init');
    const counter = join(dir, 'count');
    const random = rng(p.seed);
    const slow = `slow:${p.flakyInitTimeout * 3}`;
    const pattern = p.flakyPattern
      ? p.flakyPattern.replaceAll('slow', slow).split(',')
      : Array.from({ length: 997 }, (_, i) =>
          i > 0 && random() * 100 < p.flakySlowPct ? slow : 'ok',
        );
    writeFileSync(file, pattern.join(','));
    const flaky = createPool({
      script: chaosFixture('scripted_init.py'),
      size: 4,
      env: { ...process.env, CHAOS_INIT_FILE: file, CHAOS_INIT_COUNTER: counter },
      initTimeout: p.flakyInitTimeout,
      ...(p.flakyRecycle > 0 ? { recycle: { maxCalls: p.flakyRecycle } } : {}),
      restart: { minDelay: 10, maxDelay: 200, maxRestarts: 1000 },
    });
    const fw = new PoolWatch(flaky, chaosFixture('scripted_init.py'));
    const reasons: Record<string, number> = {};
    let circuitOpened = 0;
    flaky.on('worker.exit', (e) => tally(reasons, e.reason));
    flaky.on('circuit.change', (e) => {
      if (e.state === 'open') circuitOpened++;
    });
    const s = performance.now();
    const outcomes: Record<string, number> = {};
    let next = 0;
    await Promise.all(
      Array.from({ length: 8 }, async () => {
        for (;;) {
          const i = next++;
          if (i >= p.flakyCalls) return;
          const r = await flaky.call('add', [i, 1], { timeout: 60_000 }).then(
            (v) => (v === i + 1 ? 'ok' : 'wrong'),
            (e: unknown) => errorCode(e),
          );
          tally(outcomes, r);
        }
      }),
    );
    const ms = performance.now() - s;
    // Slow starts still being retried count too (unless the breaker is open: then it rejects).
    await flaky.ready().catch(() => {});
    await flaky.close();
    fw.stop();
    const stray = fw.stillAlive();
    c.check(
      (outcomes.ok ?? 0) === p.flakyCalls,
      `F: with a flaky slow init, calls gave ${JSON.stringify(outcomes)}`,
    );
    c.check(
      (reasons.initTimedOut ?? 0) > 0,
      'F: no start ever timed out (the pattern did not bite)',
    );
    c.check(stray.length === 0, `F: processes left: ${stray.join(',')}`);
    figures.flakySlowInit = {
      calls: outcomes,
      starts: fw.started.size,
      exitReasons: reasons,
      circuitOpened,
      ms: round(ms),
    };
    rmSync(dir, { recursive: true, force: true });
  }

  const left = workersOfParent();
  c.check(left.length === 0, `processes left after close(): ${left.join(',')}`);
  c.check(watch.overLimit.length === 0, `too many live workers: ${watch.overLimit[0]}`);
  figures.exitReasons = exitReasons;
  figures.processesLeftAfterClose = left.length;
  return {
    suite: 'frozen',
    params: { ...p },
    figures,
    violations: c.violations,
    durationMs: Math.round(performance.now() - t0),
  };
}

runMain(import.meta.url, () =>
  runFrozen({
    flakyCalls: envInt('FROZEN_FLAKY_CALLS', FROZEN_DEFAULTS.flakyCalls),
    flakySlowPct: envInt('FROZEN_FLAKY_SLOW_PCT', FROZEN_DEFAULTS.flakySlowPct),
    flakyRecycle: envInt('FROZEN_FLAKY_RECYCLE', FROZEN_DEFAULTS.flakyRecycle),
    flakyPattern: process.env.FROZEN_FLAKY_PATTERN ?? '',
  }),
);
