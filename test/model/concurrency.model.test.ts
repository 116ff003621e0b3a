/**
 * Model-based tests of the worker machine with two calls in flight (docs/testing.md explains
 * them; concurrency 1 is worker.model.test.ts):
 *
 * - pipelining (`maxInFlight` 2, serial): the process runs its calls one after another, and a
 *   second call handed early waits in it until the first one finishes;
 * - concurrency 2 (`maxInFlight` 2, not serial): the process is started with
 *   PYVISOR_CONCURRENCY=2 and runs both calls at once, as asyncio tasks (the fixture's handlers are
 *   `async def`).
 *
 * As for concurrency 1, the paths are generated from `workerMachine` with `xstate/graph` (the
 * calls in flight are part of the model's state, so the traversal is finite whatever the call
 * ids), restricted to the events that concern two calls, and every path whose last transition
 * starts with two calls in flight is run against real Python.
 */
import { describe, expect, it } from 'vitest';
import { WorkerCrashedError } from '../../src/errors.js';
import { runAgainstPython } from './run-suite.js';
import { planSuite, type Suite } from './stimuli.js';
import {
  CONCURRENCY_2,
  lastTransitionKey,
  leaf,
  type ModelConfig,
  PIPELINED,
  stateKey,
  transitionKey,
  transitionsOf,
  WorkerModel,
  type WorkerPath,
} from './worker-model.js';

function triples(path: WorkerPath): string[] {
  return transitionsOf(path).map(
    (t) => `${leaf(stateKey(t.from))} --${t.label}--> ${leaf(stateKey(t.to))}`,
  );
}

/** The first run that takes these transitions one after another. */
function runWith(suite: Suite, sequence: string[]) {
  return suite.runs.find((run) => {
    const steps = triples(run.path);
    return steps.some((_, i) => sequence.every((s, k) => steps[i + k] === s));
  });
}

function plans(config: ModelConfig) {
  const model = new WorkerModel(config);
  return { model, suite: planSuite(model) };
}

/** Every generated path's last transition is taken by a run; none is excluded. */
function runsEveryTransition(suite: Suite): void {
  expect(suite.exclusions).toEqual([]);
  const taken = new Set(suite.runs.flatMap((r) => transitionsOf(r.path).map(transitionKey)));
  for (const path of suite.generated) {
    const key = lastTransitionKey(path);
    expect(taken, key).toContain(key);
  }
  // The last transition of every run starts with two calls in flight (the rest of the machine is
  // the concurrency-1 model's), or is the exit of a killing worker that followed one.
  for (const run of suite.runs) {
    const counts = run.replay.steps.map((s) => s.before.length);
    expect(Math.max(...counts)).toBe(2);
  }
}

const pipelined = plans(PIPELINED);
const concurrent = plans(CONCURRENCY_2);

describe('paths generated from workerMachine, pipelining (maxInFlight 2, serial)', () => {
  const { suite } = pipelined;

  it('runs every transition that starts with two calls in flight against real Python', () => {
    expect(suite.generated.length).toBeGreaterThan(30);
    runsEveryTransition(suite);
  });

  it('a call handed early waits, and starts when the one before it finishes', () => {
    const run = runWith(suite, [
      'busy[s] --call.start--> busy[s,w]',
      'busy[s,w] --python.ok(1)--> busy[s]',
    ])!;
    expect(run).toBeDefined();
    const sent = run.replay.steps.find((s) => s.to.includes('[s,w]'))!;
    expect(sent.started).toEqual([]);
    const freed = run.replay.steps.find((s) => s.label === 'python.ok(1)')!;
    expect(freed.started).toEqual([2]);
    // The call source is told (the pool counts it as running from now on).
    expect(run.replay.stubs.source.started).toEqual([2]);
  });

  it('a call handed early and cancelled before it starts is answered by Python at once', () => {
    const run = runWith(suite, [
      'busy[s,w] --call.cancel(2)--> busy[s,wc]',
      'busy[s,wc] --python.err(2)--> busy[s]',
    ])!;
    expect(run).toBeDefined();
    const answer = run.plan.steps.find((p) => p.step.label === 'python.err(2)')!;
    expect(answer.stimulus).toMatchObject({ kind: 'natural' });
    // Its handler never runs: the process never acknowledges its start.
    expect(run.plan.steps.flatMap((p) => p.awaitStarted)).not.toContain(2);
  });

  it('a process exit with a call handed early: the running call fails, the other is bounced (gone)', () => {
    const run = runWith(suite, ['busy[s,w] --process.exited--> crashed'])!;
    expect(run).toBeDefined();
    const exit = run.replay.steps.find((s) => s.label === 'process.exited')!;
    expect(exit.emitted).toEqual(['worker.bounced(gone)']);
    const [first, second] = [1, 2].map((id) => run.replay.stubs.calls.get(id)!.log);
    expect(first!.at(-1)?.op).toBe('reject');
    expect(second).toEqual([]); // never dispatched, never settled: routed again by the pool
  });

  it('a cancel not obeyed with a call handed early: killed, the waiting call bounced (gone)', () => {
    const run = runWith(suite, [
      'busy[sc,w] --cancel.expired(1)--> killing',
      'killing --process.exited--> killed',
    ])!;
    expect(run).toBeDefined();
    const expired = run.replay.steps.find((s) => s.label === 'cancel.expired(1)')!;
    expect(expired.emitted).toEqual(['worker.bounced(gone)']);
  });
});

describe('paths generated from workerMachine, concurrency 2 (maxInFlight 2, PYVISOR_CONCURRENCY=2)', () => {
  const { suite } = concurrent;

  it('runs every transition that starts with two calls in flight against real Python', () => {
    expect(suite.generated.length).toBeGreaterThan(30);
    runsEveryTransition(suite);
    for (const run of suite.runs) {
      expect(run.plan.config.concurrency).toBe(2);
      for (const call of run.plan.calls.values()) expect(call.fn).toMatch(/^await_/);
    }
  });

  it('two calls in flight, one cancelled: the other carries on and replies', () => {
    const run = runWith(suite, [
      'busy[s] --call.start--> busy[s,s]',
      'busy[s,s] --call.cancel(1)--> busy[sc,s]',
      'busy[sc,s] --python.ok(2)--> busy[sc]',
    ])!;
    expect(run).toBeDefined();
    expect(run.replay.stubs.calls.get(2)!.log.at(-1)).toEqual({ op: 'resolve', arg: 'ok 2' });
  });

  it('a process exit with two calls in flight: both fail with ERR_WORKER_CRASHED', () => {
    const run = runWith(suite, ['busy[s,s] --process.exited--> crashed'])!;
    expect(run).toBeDefined();
    for (const id of [1, 2]) {
      const last = run.replay.stubs.calls.get(id)!.log.at(-1)!;
      expect(last.op).toBe('reject');
      expect((last.arg as WorkerCrashedError).code).toBe('ERR_WORKER_CRASHED');
    }
  });

  it('a reply for an unknown id with two calls in flight: a protocol error', () => {
    expect(
      runWith(suite, [
        'busy[s,s] --python.ok(unknown)--> killing',
        'killing --process.exited--> protocolError',
      ]),
    ).toBeDefined();
  });

  it('a cancel not obeyed with two in flight: the other call fails, naming the cancelled one', () => {
    const run = runWith(suite, [
      'busy[s,s] --call.cancel(1)--> busy[sc,s]',
      'busy[sc,s] --cancel.expired(1)--> killing',
      'killing --process.exited--> killed',
    ])!;
    expect(run).toBeDefined();
    // The cancelled call already has its answer (the caller was told when it gave up).
    expect(run.replay.stubs.calls.get(1)!.log.map((e) => e.op)).toEqual(['dispatched']);
    const last = run.replay.stubs.calls.get(2)!.log.at(-1)!;
    expect(last.op).toBe('reject');
    expect(last.arg).toBeInstanceOf(WorkerCrashedError);
    expect((last.arg as Error).message).toMatch(
      /was killed while it ran call 2: call 1 did not stop within \d+ ms of its cancel/,
    );
  });
});

runAgainstPython(
  'pipelining: the paths, run against a real worker and a real python3',
  pipelined.suite,
);
runAgainstPython(
  'concurrency 2: the paths, run against a real worker and python3 (PYVISOR_CONCURRENCY=2)',
  concurrent.suite,
);
