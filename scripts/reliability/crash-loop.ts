/**
 * Suite 2, crash loop: every start fails until the script is "fixed".
 *
 * Invariants: the breaker opens after `threshold` start failures; nothing is spawned while it is
 * open; calls fail fast with ERR_CIRCUIT_OPEN carrying the start failure; each half-open phase
 * (after `resetTimeout`) spawns exactly one probe; once the file is fixed the next probe closes
 * the breaker, every slot starts and calls succeed — in the same Node process; no process of a
 * failed start is left.
 *
 *   node --import tsx scripts/reliability/crash-loop.ts
 *   LOOP_FAILURE=fail|crash|hang LOOP_SIZE=4 LOOP_THRESHOLD=3 LOOP_RESET=1000 LOOP_PROBES=3
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createPool } from '../../src/index.js';
import { nextEvent } from './lib/events.js';
import { chaosFixture } from './lib/fixtures.js';
import { workersOfParent } from './lib/procs.js';
import {
  Checker,
  envInt,
  errorCode,
  loopDelay,
  percentile,
  round,
  runMain,
  type SuiteResult,
  tally,
} from './lib/suite.js';
import { PoolWatch } from './lib/watch.js';

export interface CrashLoopParams {
  failure: 'fail' | 'crash' | 'hang';
  size: number;
  threshold: number;
  resetTimeout: number;
  /** Failed probes before the file is fixed. */
  probes: number;
  /** Calls made while the breaker is open (each must fail fast). */
  fastCalls: number;
  /**
   * A call rejected by an open breaker must settle within this, ms (a latency figure: the tests
   * pass a generous one; that it settles before the breaker moves on is checked either way).
   */
  fastBudget: number;
  /** The half-open phase may start this much later than resetTimeout, ms (likewise). */
  lateBudget: number;
  initTimeout: number;
}

export const CRASH_LOOP_DEFAULTS: CrashLoopParams = {
  failure: 'fail',
  size: 4,
  threshold: 3,
  resetTimeout: 1000,
  probes: 3,
  fastCalls: 50,
  fastBudget: 250,
  lateBudget: 1000,
  initTimeout: 10_000,
};

const SCRIPT = chaosFixture('scripted_init.py');

export async function runCrashLoop(overrides: Partial<CrashLoopParams> = {}): Promise<SuiteResult> {
  const p: CrashLoopParams = { ...CRASH_LOOP_DEFAULTS, ...overrides };
  const c = new Checker();
  const t0 = performance.now();
  const dir = mkdtempSync(join(tmpdir(), 'pyvisor-crash-loop-'));
  const file = join(dir, 'init');
  writeFileSync(file, p.failure);

  const pool = createPool({
    script: SCRIPT,
    size: p.size,
    env: { ...process.env, CHAOS_INIT_FILE: file },
    // A hanging init fails by initTimeout; the others must not hit it on a loaded machine.
    initTimeout: p.failure === 'hang' ? Math.min(p.initTimeout, 1500) : p.initTimeout,
    restart: { minDelay: 10, maxDelay: 50 },
    circuit: { threshold: p.threshold, resetTimeout: p.resetTimeout },
  });
  const watch = new PoolWatch(pool, SCRIPT);
  const spawnsIn: Record<string, number> = { closed: 0, open: 0, halfOpen: 0 };
  let spawns = 0;
  const phases: { state: string; at: number; halfOpenSpawns: number }[] = [];
  pool.on('worker.state', (e) => {
    if (e.to !== 'starting') return;
    spawns++;
    // The breaker's state as the supervisor sees it when it spawns. (Not the last
    // circuit.change event: the pool emits a probe's 'starting' before the 'halfOpen' that
    // caused it; see test/reliability/regressions.test.ts.)
    tally(spawnsIn, pool.stats().circuit);
  });
  pool.on('circuit.change', (e) => {
    phases.push({ state: e.state, at: performance.now(), halfOpenSpawns: spawnsIn.halfOpen ?? 0 });
  });
  const lag = loopDelay();

  // 1. Start: every start fails, the breaker opens, ready() rejects with the cause.
  const readyError = await pool.ready().then(
    () => null,
    (e: unknown) => e,
  );
  c.check(
    errorCode(readyError) === 'ERR_CIRCUIT_OPEN',
    `ready() gave ${errorCode(readyError)}, expected ERR_CIRCUIT_OPEN`,
  );
  const cause = (readyError as { cause?: { code?: string; reason?: string; message?: string } })
    ?.cause;
  c.check(cause?.code === 'ERR_WORKER_INIT', `the cause is ${cause?.code}, not ERR_WORKER_INIT`);
  const expectedReason = { fail: 'error', crash: 'crash', hang: 'timeout' }[p.failure];
  c.check(
    cause?.reason === expectedReason,
    `init failure reason ${cause?.reason}, expected ${expectedReason}`,
  );
  if (p.failure === 'fail') {
    c.check(
      Boolean(cause?.message?.includes('scripted init failure')),
      'the error does not carry the Python message',
    );
  }
  const spawnsBeforeOpen = spawnsIn.closed ?? 0;
  c.check(
    spawnsBeforeOpen >= p.threshold && spawnsBeforeOpen <= p.size + p.threshold,
    `${spawnsBeforeOpen} spawns before the breaker opened (threshold ${p.threshold}, size ${p.size})`,
  );

  // 2. Calls fail fast while it is open.
  const fastMs: number[] = [];
  const fastCodes: Record<string, number> = {};
  let waitedForBreaker = 0;
  for (let i = 0; i < p.fastCalls; i++) {
    const s = performance.now();
    const phasesBefore = phases.length;
    const e = await pool.call('add', [1, 2]).then(
      () => null,
      (error: unknown) => error,
    );
    fastMs.push(performance.now() - s);
    tally(fastCodes, errorCode(e));
    // Fast means without waiting for the breaker's next move (half-open after resetTimeout).
    if (phases.length !== phasesBefore) waitedForBreaker++;
  }
  c.check(
    (fastCodes.ERR_CIRCUIT_OPEN ?? 0) === p.fastCalls,
    `calls while open: ${JSON.stringify(fastCodes)}`,
  );
  c.check(
    waitedForBreaker === 0,
    `${waitedForBreaker} calls while open settled only after the breaker changed state`,
  );
  const fastMax = Math.max(...fastMs);
  c.check(
    fastMax <= p.fastBudget,
    `a call took ${round(fastMax)} ms to fail while open (budget ${p.fastBudget})`,
  );

  // 3. Failed probes: after each resetTimeout exactly one spawn, then open again.
  // Waits for a breaker transition give up after this (a hang), well past the late budget.
  const hangGuard = p.resetTimeout + p.lateBudget + 10_000;
  const probeDelays: number[] = [];
  const probeSpawns: number[] = [];
  for (let i = 0; i < p.probes; i++) {
    const opened = phases.at(-1)!;
    const halfOpened = await nextEvent(
      pool,
      'circuit.change',
      (e) => e.state === 'halfOpen',
      hangGuard,
    ).then(() => phases.at(-1)!);
    probeDelays.push(halfOpened.at - opened.at);
    await nextEvent(pool, 'circuit.change', (e) => e.state === 'open', p.initTimeout + 10_000);
    probeSpawns.push(phases.at(-1)!.halfOpenSpawns - opened.halfOpenSpawns);
  }
  c.check(
    probeSpawns.every((n) => n === 1),
    `spawns per half-open phase: ${probeSpawns.join(',')} (expected 1 each)`,
  );
  c.check(
    probeDelays.every((d) => d >= p.resetTimeout - 50 && d <= p.resetTimeout + p.lateBudget),
    `half-open after ${probeDelays.map((d) => Math.round(d)).join(',')} ms (resetTimeout ${p.resetTimeout})`,
  );
  c.check(spawnsIn.open === 0, `${spawnsIn.open} spawns while the breaker was open`);

  // 4. Fix the file: the next probe closes the breaker and the pool recovers.
  writeFileSync(file, 'ok');
  const fixedAt = performance.now();
  const halfOpen = nextEvent(pool, 'circuit.change', (e) => e.state === 'halfOpen', hangGuard);
  const closed = nextEvent(
    pool,
    'circuit.change',
    (e) => e.state === 'closed',
    hangGuard + p.initTimeout,
  );
  const halfOpenBefore = spawnsIn.halfOpen ?? 0;
  const closedBefore = spawnsIn.closed ?? 0;
  await halfOpen;
  await closed;
  const closedAt = performance.now();
  await pool.ready();
  const readyAt = performance.now();
  const probeSpawnsOk = (spawnsIn.halfOpen ?? 0) - halfOpenBefore;
  const spawnsAfterClose = (spawnsIn.closed ?? 0) - closedBefore;
  c.check(probeSpawnsOk === 1, `${probeSpawnsOk} spawns in the successful half-open phase`);
  c.check(
    spawnsAfterClose === p.size - 1,
    `${spawnsAfterClose} spawns after the breaker closed (expected ${p.size - 1})`,
  );
  const value = await pool.call('add', [20, 22]).catch((e: unknown) => errorCode(e));
  c.check(value === 42, `a call after recovery gave ${String(value)}`);
  const stats = pool.stats();
  c.check(
    stats.circuit === 'closed' && stats.workers.every((w) => w.state === 'ready'),
    `after recovery: circuit ${stats.circuit}, workers ${stats.workers.map((w) => w.state).join(',')}`,
  );

  // 5. No process of a failed start is left; close leaves none.
  const current = new Set(stats.workers.map((w) => w.pid));
  const strays = watch.stillAlive().filter((pid) => !current.has(pid));
  c.check(strays.length === 0, `processes of failed starts still alive: ${strays.join(',')}`);
  c.check(watch.overLimit.length === 0, `too many live workers: ${watch.overLimit[0]}`);
  await pool.close();
  watch.stop();
  const loopStats = lag.stop();
  const left = workersOfParent();
  c.check(left.length === 0, `processes left after close(): ${left.join(',')}`);
  rmSync(dir, { recursive: true, force: true });

  const exitReasons: Record<string, number> = {};
  for (const e of watch.exits) tally(exitReasons, e.reason);
  return {
    suite: 'crash-loop',
    params: { ...p },
    figures: {
      spawnsTotal: spawns,
      spawnsBeforeFirstOpen: spawnsBeforeOpen,
      spawnsWhileOpen: spawnsIn.open,
      spawnsPerFailedProbe: probeSpawns,
      halfOpenAfterMs: probeDelays.map((d) => Math.round(d)),
      fastFailCalls: fastCodes,
      fastFailMs: { p50: round(percentile(fastMs, 50) ?? 0, 2), max: round(fastMax, 2) },
      fixToClosedMs: Math.round(closedAt - fixedAt),
      closedToAllReadyMs: Math.round(readyAt - closedAt),
      spawnsAfterClosed: spawnsAfterClose,
      exitReasons,
      maxLiveWorkers: watch.maxLive,
      processesLeftAfterClose: left.length,
      eventLoopDelayMs: loopStats,
    },
    violations: c.violations,
    durationMs: Math.round(performance.now() - t0),
  };
}

runMain(import.meta.url, () => {
  const failure = process.env.LOOP_FAILURE;
  return runCrashLoop({
    failure: failure === 'crash' || failure === 'hang' ? failure : 'fail',
    size: envInt('LOOP_SIZE', CRASH_LOOP_DEFAULTS.size),
    threshold: envInt('LOOP_THRESHOLD', CRASH_LOOP_DEFAULTS.threshold),
    resetTimeout: envInt('LOOP_RESET', CRASH_LOOP_DEFAULTS.resetTimeout),
    probes: envInt('LOOP_PROBES', CRASH_LOOP_DEFAULTS.probes),
  });
});
