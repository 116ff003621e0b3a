// The supervisor's time-dependent logic under XState's SimulatedClock and an injected `now`:
// backoff before a restart, the breaker's reset timeout, maxAge and sessionTtl on the maintenance
// tick. Fake processes; no real waiting anywhere.
import { describe, expect, it } from 'vitest';
import { createActor, SimulatedClock } from 'xstate';
import type { TransportHandlers, WorkerTransport } from '../../src/machines/index.js';
import { PendingCall } from '../../src/pool/call.js';
import { normalizeOptions, type PoolOptions } from '../../src/pool/options.js';
import {
  type SupervisorEmitted,
  submitCall,
  supervisorMachine,
  viewOf,
} from '../../src/supervisor/supervisor.machine.js';
import { fixture } from '../helpers.js';

interface FakeProcess {
  handlers: TransportHandlers;
  pid: number;
  sent: number;
  exited: boolean;
}

function harness(options: Partial<PoolOptions>) {
  const clock = new SimulatedClock();
  const procs: FakeProcess[] = [];
  const emitted: SupervisorEmitted[] = [];
  let nextPid = 1000;
  const actor = createActor(supervisorMachine, {
    clock,
    input: {
      options: normalizeOptions({
        script: fixture('handlers.py'),
        size: 1,
        healthCheck: false,
        ...options,
      } as PoolOptions),
      spawn: (_spec, handlers) => {
        const proc: FakeProcess = { handlers, pid: nextPid++, sent: 0, exited: false };
        procs.push(proc);
        const transport: WorkerTransport = {
          pid: proc.pid,
          send: () => {
            proc.sent++;
          },
          kill: () => {
            if (proc.exited) return;
            proc.exited = true;
            handlers.exit({ exitCode: null, signal: 'SIGKILL' });
          },
          outputTail: () => '',
        };
        return transport;
      },
      resolvePython: async () => 'python3',
      onOutput: () => {},
      onWorkerSpawned: () => {},
      onRoutingEvent: (event) => emitted.push(event),
      now: () => clock.now(),
    },
  });
  actor.on('*', (event) => emitted.push(event as SupervisorEmitted));
  const ready = (proc: FakeProcess) =>
    proc.handlers.message({
      t: 'ready',
      pid: proc.pid,
      version: '3.x',
      executable: 'python3',
      handlers: [],
      initMs: 1,
    });
  const die = (proc: FakeProcess) => {
    proc.exited = true;
    proc.handlers.exit({ exitCode: 1, signal: null });
  };
  const settle = () => new Promise((resolve) => setImmediate(resolve));
  return { actor, clock, procs, emitted, ready, die, settle };
}

function call(id: number, session?: string) {
  return new PendingCall({
    id,
    fn: 'f',
    frame: Buffer.alloc(0),
    stream: false,
    session,
    timeout: undefined,
    checkoutTimeout: undefined,
    signal: undefined,
    owner: { abandon: () => {}, settled: () => {} },
    telemetry: null,
  });
}

describe('supervisor timing (simulated clock)', () => {
  it('restarts a crashed worker after its backoff delay, not before', async () => {
    const h = harness({ restart: { minDelay: 1000, maxDelay: 1000 } });
    h.actor.start();
    await h.settle(); // the interpreter lookup resolves
    expect(h.procs).toHaveLength(1);
    h.ready(h.procs[0]!);
    expect(viewOf(h.actor.getSnapshot()).phase).toBe('running');
    h.die(h.procs[0]!);
    const restart = h.emitted.find((e) => e.type === 'worker.restarting');
    expect(restart).toMatchObject({ reason: 'crashed' });
    const delay = (restart as { delay: number }).delay;
    // Equal jitter: between half of minDelay and minDelay.
    expect(delay).toBeGreaterThanOrEqual(500);
    expect(delay).toBeLessThanOrEqual(1000);
    h.clock.increment(delay - 1);
    expect(h.procs).toHaveLength(1);
    h.clock.increment(1);
    expect(h.procs).toHaveLength(2);
    h.actor.stop();
  });

  it('a restart-intensity trip fails the pool for a cool-down that doubles, then resets after a healthy period', async () => {
    const h = harness({
      restart: { minDelay: 10, maxDelay: 10, maxRestarts: 0, period: 5000, coolDown: 1000 },
    });
    h.actor.start();
    await h.settle();
    const phase = () => viewOf(h.actor.getSnapshot()).phase;
    const trip = (proc: FakeProcess, cooling: number) => {
      h.ready(proc);
      expect(phase()).toBe('running');
      const before = h.procs.length;
      h.die(proc);
      expect(phase()).toBe('failed');
      expect(h.actor.getSnapshot().matches({ failed: 'coolingDown' })).toBe(true);
      const failure = h.actor.getSnapshot().context.failure!;
      expect(failure.message).toContain(`again in ${cooling} ms (restart.coolDown)`);
      expect((failure as { retryAt?: number }).retryAt).toBeGreaterThan(Date.now());
      h.clock.increment(cooling - 1);
      expect(h.procs).toHaveLength(before);
      expect(h.emitted.filter((e) => e.type === 'pool.recovered')).toHaveLength(before - 1);
      h.clock.increment(1);
      expect(h.procs).toHaveLength(before + 1); // started again by itself
      expect(phase()).toBe('starting');
      expect(h.emitted.at(-1)).toMatchObject({ type: 'pool.recovered', downMs: cooling });
    };
    trip(h.procs[0]!, 1000);
    h.clock.increment(100);
    trip(h.procs[1]!, 2000); // again within a period of recovering: twice as long
    h.clock.increment(100);
    trip(h.procs[2]!, 4000);
    h.clock.increment(5000); // a healthy period: back to the first delay
    trip(h.procs[3]!, 1000);
    h.ready(h.procs[4]!);
    expect(phase()).toBe('running');
    h.actor.stop();
  });

  it('restart.coolDown: Infinity keeps the pool failed until it is closed', async () => {
    const h = harness({ restart: { maxRestarts: 0, coolDown: Number.POSITIVE_INFINITY } });
    h.actor.start();
    await h.settle();
    h.ready(h.procs[0]!);
    h.die(h.procs[0]!);
    expect(h.actor.getSnapshot().matches({ failed: 'forGood' })).toBe(true);
    expect((h.actor.getSnapshot().context.failure as { retryAt?: number }).retryAt).toBeUndefined();
    h.clock.increment(3_600_000);
    expect(h.procs).toHaveLength(1);
    h.actor.stop();
  });

  it('opens the breaker after threshold start failures and probes once per resetTimeout', async () => {
    const h = harness({
      restart: { minDelay: 10, maxDelay: 10 },
      circuit: { threshold: 2, resetTimeout: 5000 },
    });
    h.actor.start();
    await h.settle();
    h.die(h.procs[0]!);
    h.clock.increment(10);
    h.die(h.procs[1]!);
    expect(viewOf(h.actor.getSnapshot()).circuit).toBe('open');
    h.clock.increment(4999);
    expect(h.procs).toHaveLength(2);
    h.clock.increment(1); // half-open: exactly one probe
    expect(h.procs).toHaveLength(3);
    expect(viewOf(h.actor.getSnapshot()).circuit).toBe('halfOpen');
    h.ready(h.procs[2]!);
    expect(viewOf(h.actor.getSnapshot()).circuit).toBe('closed');
    h.actor.stop();
  });

  it('retires an idle worker past recycle.maxAge on the maintenance tick, and forgets sessions', async () => {
    const h = harness({ recycle: { maxAge: 60_000 }, sessionTtl: 30_000 });
    h.actor.start();
    await h.settle();
    h.ready(h.procs[0]!);
    const c = call(1, 's');
    submitCall(h.actor, c);
    expect(h.procs[0]!.sent).toBe(1);
    h.procs[0]!.handlers.message({ t: 'ok', id: 1, v: null });
    expect(await c.promise).toBe(null);
    expect(viewOf(h.actor.getSnapshot()).sessions).toBe(1);
    h.clock.set(29_999);
    h.actor.send({ type: 'maintenance.tick' });
    expect(viewOf(h.actor.getSnapshot()).sessions).toBe(1);
    h.clock.set(30_000);
    h.actor.send({ type: 'maintenance.tick' });
    expect(viewOf(h.actor.getSnapshot()).sessions).toBe(0);
    h.clock.set(59_999);
    h.actor.send({ type: 'maintenance.tick' });
    expect(h.emitted.some((e) => e.type === 'worker.recycling')).toBe(false);
    h.clock.set(60_000);
    h.actor.send({ type: 'maintenance.tick' });
    await h.settle(); // routing events are delivered a microtask later
    expect(h.emitted.find((e) => e.type === 'worker.recycling')).toMatchObject({ why: 'maxAge' });
    expect(h.emitted.some((e) => e.type === 'session.expired')).toBe(true);
    h.actor.stop();
  });

  it('counts maxAge from ready: a start slower than maxAge still serves the waiting calls', async () => {
    const h = harness({ recycle: { maxAge: 300 } });
    h.actor.start();
    await h.settle();
    const waiting = [call(1), call(2)];
    for (const c of waiting) submitCall(h.actor, c);
    h.clock.set(500); // the start took longer than maxAge
    h.ready(h.procs[0]!);
    // Both go to it: the second early (pipelining), to start when the first ends.
    expect(h.procs[0]!.sent).toBe(2);
    h.procs[0]!.handlers.message({ t: 'ok', id: 1, v: 1 });
    h.procs[0]!.handlers.message({ t: 'ok', id: 2, v: 2 });
    expect(await Promise.all(waiting.map((c) => c.promise))).toEqual([1, 2]);
    h.actor.stop();
  });
});
