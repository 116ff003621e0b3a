/**
 * Model-based tests of the worker machine, concurrency 1 (docs/testing.md explains them; the
 * models with two calls in flight are in concurrency.model.test.ts).
 *
 * 1. Paths are generated from `workerMachine` itself with `xstate/graph`: the shortest path to
 *    every transition, ignored events included, with both sides of every guard.
 * 2. Every path is then run against the real implementation: a real worker actor, the real
 *    child-process transport, a real `python3` running test/fixtures/mbt.py, each model event
 *    mapped to a real-world stimulus (test/model/stimuli.ts). At every step the event the actor
 *    processed, the states it went through, what it emitted and what it did to the process must be
 *    what the model says.
 */
import { describe, expect, it } from 'vitest';
import { WORKER_EVENT_TYPES } from '../../src/machines/worker.machine.js';
import { runAgainstPython } from './run-suite.js';
import {
  type Exclusion,
  KILL_WAIT,
  NO_TRANSPORT_CALL,
  planSuite,
  SPAWN_EXIT,
  SPAWN_TIMEOUT,
} from './stimuli.js';
import {
  ALL_STATE_IDS,
  afterLabel,
  CONCURRENCY_1,
  DELAYED_EVENTS,
  label,
  lastTransitionKey,
  leaf,
  type RecordingCall,
  stateKey,
  statesCovered,
  transitionKey,
  transitionsOf,
  WorkerModel,
  type WorkerPath,
} from './worker-model.js';

const model = new WorkerModel(CONCURRENCY_1);
const suite = planSuite(model);
const generated = suite.generated;

/** `from --label--> to` with leaf state keys, for every transition of a path. */
function triples(path: WorkerPath): string[] {
  return transitionsOf(path).map(
    (t) => `${leaf(stateKey(t.from))} --${t.label}--> ${leaf(stateKey(t.to))}`,
  );
}

function containsSequence(paths: WorkerPath[], sequence: string[]): boolean {
  return paths.some((path) => {
    const steps = triples(path);
    return steps.some((_, i) => sequence.every((s, k) => steps[i + k] === s));
  });
}

/** The transitions that cannot be driven by a real process, and why (see stimuli.ts). */
const DOCUMENTED_EXCLUSIONS: Exclusion[] = [
  { transition: 'alive.starting.spawning --process.exited--> initFailed', reason: SPAWN_EXIT },
  {
    transition: 'alive.starting.spawning --after(initTimeout)--> alive.killing',
    reason: SPAWN_TIMEOUT,
  },
  // A spawn that throws after the init timer fired while spawning (a stop before the spawn is
  // reported is driven: `spawning --worker.stop--> killing --process.failed--> stopped`).
  { transition: 'alive.killing --process.failed--> initTimedOut', reason: SPAWN_TIMEOUT },
  // The worker makes no transport call while initializing or ready with no check out, so nothing
  // can throw there.
  {
    transition: 'alive.starting.initializing --process.failed--> initFailed',
    reason: NO_TRANSPORT_CALL,
  },
  { transition: 'alive.ready --process.failed--> alive.killing', reason: NO_TRANSPORT_CALL },
  // killWait leads to the final state of the recorded ending, one transition per ending.
  ...[
    'stopped',
    'killed',
    'initTimedOut',
    'protocolError',
    'initFailed',
    'unresponsive',
    'crashed',
  ].map((final) => ({
    transition: `alive.killing --after(killWait)--> ${final}`,
    reason: KILL_WAIT,
  })),
];

describe('paths generated from workerMachine, concurrency 1 (xstate/graph)', () => {
  it('offers a sample for every event type, delayed events and both guard variants included', () => {
    const offered = new Set<string>();
    for (const path of generated) {
      for (const t of transitionsOf(path)) offered.add(t.label);
    }
    for (const type of WORKER_EVENT_TYPES) {
      expect([...offered].some((l) => l === type || l.startsWith(`${type}(`))).toBe(true);
    }
    // initTimeout, stopTimeout (asking, terminating), killWait: the other timers are raised
    // events (cancel.expired, health.timeout).
    expect(DELAYED_EVENTS).toHaveLength(4);
    for (const type of DELAYED_EVENTS) expect(offered).toContain(afterLabel(type));
    for (const guarded of ['python.ok', 'python.err', 'python.end', 'python.item']) {
      expect(offered).toContain(`${guarded}(1)`);
      expect(offered).toContain(`${guarded}(unknown)`);
    }
    for (const guarded of ['call.cancel', 'stream.credit', 'cancel.expired']) {
      expect(offered).toContain(`${guarded}(1)`);
      expect(offered).toContain(`${guarded}(unknown)`);
    }
    expect(offered).toContain('python.pong(answer)');
    expect(offered).toContain('python.pong(stale)');
    expect(offered).toContain('health.timeout(current)');
    expect(offered).toContain('health.timeout(stale)');
  });

  it('has one shortest path per transition, ignored events included', () => {
    expect(generated.length).toBeGreaterThan(200);
    // Every transition a state offers (in the context the path reached it with) is the last step
    // of some path.
    const ends = new Set(generated.map((p) => triples(p).at(-1)));
    for (const path of generated) {
      for (const event of model.samples(path.state, model.traversalStubs)) {
        const from = leaf(stateKey(path.state));
        const found = [...ends].some((e) => e?.startsWith(`${from} --${label(event)}--> `));
        expect(found, `${from} --${label(event)}-->`).toBe(true);
      }
    }
  });

  it('covers every state of the machine', () => {
    expect([...statesCovered(model, generated)].sort()).toEqual([...ALL_STATE_IDS].sort());
  });

  it('includes the scenarios that matter', () => {
    const paths = suite.runs.map((r) => r.path);
    const scenarios: Record<string, string[]> = {
      'cancel (worker.stop) while spawning': ['spawning --worker.stop--> killing'],
      'worker.stop while initializing': ['initializing --worker.stop--> killing'],
      'DOWN while initializing': ['initializing --process.exited--> initFailed'],
      'init error': [
        'initializing --python.initError--> killing',
        'killing --process.exited--> initFailed',
      ],
      'init timeout': [
        'initializing --after(initTimeout)--> killing',
        'killing --process.exited--> initTimedOut',
      ],
      'busy -> crashed': ['busy[s] --process.exited--> crashed'],
      'a second call is bounced': ['busy[s] --call.start--> busy[s]'],
      'cancel, then the late result -> ready': [
        'busy[s] --call.cancel(1)--> busy[sc]',
        'busy[sc] --python.err(1)--> ready',
      ],
      'cancel, then a late ok -> ready': [
        'busy[s] --call.cancel(1)--> busy[sc]',
        'busy[sc] --python.ok(1)--> ready',
      ],
      'cancel not obeyed: cancelGrace expires -> killed': [
        'busy[s] --call.cancel(1)--> busy[sc]',
        'busy[sc] --cancel.expired(1)--> killing',
        'killing --process.exited--> killed',
      ],
      'a cancel timer that is over is ignored': ['busy[sc] --cancel.expired(unknown)--> busy[sc]'],
      'health check answered': [
        'ready --health.check--> ready+ping',
        'ready+ping --python.pong(answer)--> ready',
      ],
      'pong withheld: healthTimeout -> unresponsive': [
        'ready --health.check--> ready+ping',
        'ready+ping --health.timeout(current)--> killing',
        'killing --process.exited--> unresponsive',
      ],
      'a health timer that is over is ignored': [
        'ready+ping --health.timeout(stale)--> ready+ping',
      ],
      'health check while busy, answered': [
        'busy[s] --health.check--> busy[s]',
        'busy[s] --python.pong(answer)--> busy[s]',
      ],
      'health check while busy, pong withheld -> unresponsive': [
        'busy[s] --health.check--> busy[s]',
        'busy[s] --health.timeout(current)--> killing',
        'killing --process.exited--> unresponsive',
      ],
      'protocol error while busy': [
        'busy[s] --process.protocolError--> killing',
        'killing --process.exited--> protocolError',
      ],
      'unknown reply id while busy': [
        'busy[s] --python.ok(unknown)--> killing',
        'killing --process.exited--> protocolError',
      ],
      'protocol error while initializing': ['initializing --process.protocolError--> killing'],
      'graceful stop': ['ready --worker.stop--> asking', 'asking --process.exited--> stopped'],
      'stop escalates to SIGTERM then SIGKILL': [
        'asking --after(stopTimeout)--> terminating',
        'terminating --after(stopTimeout)--> killing',
        'killing --process.exited--> stopped',
      ],
      'the spawn throws': ['spawning --process.failed--> initFailed'],
      'a stop, then the spawn throws': [
        'spawning --worker.stop--> killing',
        'killing --process.failed--> stopped',
      ],
      // A transport that throws once the process runs: the process is killed, and the worker ends
      // once it is gone.
      'sending the call throws': [
        'ready --call.start--> busy[s]',
        'busy[s] --process.failed--> killing',
        'killing --process.exited--> crashed',
      ],
      'sending the ping throws': [
        'ready --health.check--> ready+ping',
        'ready+ping --process.failed--> killing',
        'killing --process.exited--> crashed',
      ],
      'sending the cancel throws': [
        'busy[s] --call.cancel(1)--> busy[sc]',
        'busy[sc] --process.failed--> killing',
        'killing --process.exited--> crashed',
      ],
      'sending the exit frame throws': [
        'ready --worker.stop--> asking',
        'asking --process.failed--> killing',
        'killing --process.exited--> stopped',
      ],
      'SIGTERM throws': [
        'asking --after(stopTimeout)--> terminating',
        'terminating --process.failed--> killing',
        'killing --process.exited--> stopped',
      ],
      // The worker keeps waiting for the exit (here, the test kills the process).
      'SIGKILL throws': [
        'killing --process.failed--> killing',
        'killing --process.exited--> protocolError',
      ],
    };
    for (const [name, sequence] of Object.entries(scenarios)) {
      expect(containsSequence(paths, sequence), name).toBe(true);
    }
  });

  it('runs every path against real Python except the documented exclusions', () => {
    const byTransition = (list: Exclusion[]) =>
      [...list].sort((a, b) => a.transition.localeCompare(b.transition));
    expect(byTransition(suite.exclusions)).toEqual(byTransition(DOCUMENTED_EXCLUSIONS));
    // Every transition of the generated set is taken by some path that runs, but those.
    const taken = new Set(suite.runs.flatMap((r) => transitionsOf(r.path).map(transitionKey)));
    const excluded = new Set(DOCUMENTED_EXCLUSIONS.map((e) => e.transition));
    const wanted = generated
      .filter((path) => transitionsOf(path).length > 0)
      .map(lastTransitionKey)
      .filter((key) => !excluded.has(key));
    expect(wanted.length).toBe(generated.length - 1 - excluded.size); // - the empty path
    for (const key of wanted) expect(taken, key).toContain(key);
    expect(
      [
        ...statesCovered(
          model,
          suite.runs.map((r) => r.path),
        ),
      ].sort(),
    ).toEqual([...ALL_STATE_IDS].sort());
  });

  it('ran the assign actions of the machine on the stubs while traversing', () => {
    const first = model.traversalStubs.calls.get(1) as RecordingCall;
    const ops = new Set(first.log.map((e) => e.op));
    for (const op of ['dispatched', 'resolve', 'reject', 'end']) expect(ops).toContain(op);
    expect(model.traversalStubs.transport.sent.length).toBeGreaterThan(0);
  });
});

runAgainstPython('the paths, concurrency 1, run against a real worker and a real python3', suite);
