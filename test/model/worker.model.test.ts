/**
 * Model-based tests of the worker machine (docs/testing.md explains them).
 *
 * 1. Paths are generated from `workerMachine` itself with `xstate/graph`: the shortest path to
 *    every transition, ignored events included, with both sides of every id-based guard.
 * 2. Every path is then run against the real implementation: a real worker actor, the real
 *    child-process transport, a real `python3` running test/fixtures/mbt.py, each model event
 *    mapped to a real-world stimulus (test/model/stimuli.ts). At every step the event the actor
 *    processed, the states it went through, what it emitted and what it did to the process must be
 *    what the model says.
 */
import { fileURLToPath } from 'node:url';
import { beforeAll, describe, expect, it } from 'vitest';
import { waitFor } from 'xstate';
import { PyvisorError, WorkerInitError } from '../../src/errors.js';
import { WORKER_EVENT_TYPES, type WorkerExit } from '../../src/machines/worker.machine.js';
import type { PendingCall } from '../../src/pool/call.js';
import { resolveInterpreter } from '../../src/transport/interpreter.js';
import { isAlive, PENDING, probe, RealWorker, STEP_TIMEOUT, until } from './real-worker.js';
import {
  type Exclusion,
  KILL_WAIT,
  NO_TRANSPORT_CALL,
  planSuite,
  type Run,
  SPAWN_EXIT,
  SPAWN_TIMEOUT,
} from './stimuli.js';
import {
  ALL_STATE_IDS,
  activeIds,
  afterLabel,
  DELAYED_EVENTS,
  describePath,
  generatePaths,
  label,
  lastTransitionKey,
  leaf,
  type RecordingCall,
  replay,
  samples,
  transitionsOf,
  traversalStubs,
  valueName,
  type WorkerPath,
} from './worker-model.js';

const REPO = fileURLToPath(new URL('../../', import.meta.url));

const generated = generatePaths();
const suite = planSuite(generated);

function transitionKey(t: { from: WorkerPath['state']; to: WorkerPath['state']; label: string }) {
  return `${valueName(t.from.value)} --${t.label}--> ${valueName(t.to.value)}`;
}

/** `from --label--> to` with leaf state names, for every transition of a path. */
function triples(path: WorkerPath): string[] {
  return transitionsOf(path).map(
    (t) => `${leaf(valueName(t.from.value))} --${t.label}--> ${leaf(valueName(t.to.value))}`,
  );
}

function containsSequence(paths: WorkerPath[], sequence: string[]): boolean {
  return paths.some((path) => {
    const steps = triples(path);
    return steps.some((_, i) => sequence.every((s, k) => steps[i + k] === s));
  });
}

/** The state node ids a set of paths goes through, transient states (microsteps) included. */
function statesCovered(paths: WorkerPath[]): Set<string> {
  const ids = new Set<string>();
  for (const path of paths) {
    for (const id of activeIds(path.steps[0]!.state.value)) ids.add(id);
    for (const step of replay(path).steps) {
      for (const micro of step.micro) {
        // valueName -> value: `alive.ready.idle` is {alive: {ready: 'idle'}}.
        const parts = micro.split('.');
        let id = 'worker';
        for (const part of parts) {
          id = `${id}.${part}`;
          ids.add(id);
        }
      }
    }
  }
  ids.add('worker');
  return ids;
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
  // The worker makes no transport call while initializing or idle, so nothing can throw there.
  {
    transition: 'alive.starting.initializing --process.failed--> initFailed',
    reason: NO_TRANSPORT_CALL,
  },
  { transition: 'alive.ready.idle --process.failed--> alive.killing', reason: NO_TRANSPORT_CALL },
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

describe('paths generated from workerMachine (xstate/graph)', () => {
  it('offers a sample for every event type, delayed events and both guard variants included', () => {
    const offered = new Set<string>();
    for (const path of generated) {
      for (const t of transitionsOf(path)) offered.add(t.label);
    }
    for (const type of WORKER_EVENT_TYPES) {
      expect([...offered].some((l) => l === type || l.startsWith(`${type}(`))).toBe(true);
    }
    expect(DELAYED_EVENTS).toHaveLength(6);
    for (const type of DELAYED_EVENTS) expect(offered).toContain(afterLabel(type));
    for (const guarded of ['python.ok', 'python.err', 'python.end', 'python.item']) {
      expect(offered).toContain(`${guarded}(running)`);
      expect(offered).toContain(`${guarded}(unknown)`);
    }
    expect(offered).toContain('python.pong(answer)');
    expect(offered).toContain('python.pong(stale)');
  });

  it('has one shortest path per transition, ignored events included', () => {
    expect(generated.length).toBeGreaterThan(150);
    // Every transition a state offers (in the context the path reached it with) is the last step
    // of some path.
    const ends = new Set(generated.map((p) => triples(p).at(-1)));
    for (const path of generated) {
      for (const event of samples(path.state, traversalStubs)) {
        const from = leaf(valueName(path.state.value));
        const found = [...ends].some((e) => e?.startsWith(`${from} --${label(event)}--> `));
        expect(found, `${from} --${label(event)}-->`).toBe(true);
      }
    }
  });

  it('covers every state of the machine, transient ones included', () => {
    expect([...statesCovered(generated)].sort()).toEqual([...ALL_STATE_IDS].sort());
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
      'busy -> crashed': ['busy --process.exited--> crashed'],
      'busy -> cancelling -> late result -> ready': [
        'busy --call.cancel(running)--> cancelling',
        'cancelling --python.err(running)--> idle',
      ],
      'busy -> cancelling -> late ok -> ready': [
        'busy --call.cancel(running)--> cancelling',
        'cancelling --python.ok(running)--> idle',
      ],
      'cancelling -> cancelGrace -> killed': [
        'cancelling --after(cancelGrace)--> killing',
        'killing --process.exited--> killed',
      ],
      'checking -> healthTimeout -> unresponsive': [
        'checking --after(healthTimeout)--> killing',
        'killing --process.exited--> unresponsive',
      ],
      'protocol error while busy': [
        'busy --process.protocolError--> killing',
        'killing --process.exited--> protocolError',
      ],
      'unknown reply id while busy': [
        'busy --python.ok(unknown)--> killing',
        'killing --process.exited--> protocolError',
      ],
      'protocol error while initializing': ['initializing --process.protocolError--> killing'],
      'graceful stop': ['idle --worker.stop--> asking', 'asking --process.exited--> stopped'],
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
        'idle --call.start--> busy',
        'busy --process.failed--> killing',
        'killing --process.exited--> crashed',
      ],
      'sending the ping throws': [
        'idle --health.check--> checking',
        'checking --process.failed--> killing',
        'killing --process.exited--> crashed',
      ],
      'sending the cancel throws': [
        'busy --call.cancel(running)--> cancelling',
        'cancelling --process.failed--> killing',
        'killing --process.exited--> crashed',
      ],
      'sending the exit frame throws': [
        'idle --worker.stop--> asking',
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
    expect([...statesCovered(suite.runs.map((r) => r.path))].sort()).toEqual(
      [...ALL_STATE_IDS].sort(),
    );
  });

  it('ran the assign actions of the machine on the stubs while traversing', () => {
    const first = traversalStubs.calls.get(1) as RecordingCall;
    const ops = new Set(first.log.map((e) => e.op));
    for (const op of ['dispatched', 'resolve', 'reject', 'end']) expect(ops).toContain(op);
    expect(traversalStubs.transport.sent.length).toBeGreaterThan(0);
  });
});

describe.concurrent('the paths, run against a real worker and a real python3', () => {
  let python = '';
  beforeAll(async () => {
    python = await resolveInterpreter(process.env.PYVISOR_PYTHON ?? 'python3', process.env, REPO);
  });

  suite.runs.forEach((run, index) => {
    const name = `#${index + 1} ${describePath(run.path)}`;
    it(name, async ({ expect, onTestFinished }) => {
      const pids: number[] = [];
      const worker = new RealWorker({ python, plan: run.plan, onPid: (pid) => pids.push(pid) });
      onTestFinished(() => {
        worker.dispose();
        for (const pid of pids) {
          try {
            process.kill(pid, 'SIGKILL');
          } catch {
            // Already gone.
          }
        }
        worker.ctl.remove();
      });

      await worker.run();
      // run() checked each step as it came; the states it matched, once more, in one place:
      expect(worker.matched.map((e) => `${e.from} --${e.label}--> ${e.to}`)).toEqual(
        run.replay.steps.map((s) => `${s.from} --${s.label}--> ${s.to}`),
      );
      if (run.replay.final.status === 'done') {
        await waitFor(worker.actor, (s) => s.status === 'done', { timeout: STEP_TIMEOUT });
        checkOutput(run, worker, expect);
      }
      await checkCalls(run, worker, expect);

      worker.dispose();
      // A spawn that throws starts nothing.
      expect(pids).toHaveLength(run.plan.config.spawnFails ? 0 : 1);
      await until(() => pids.every((pid) => !isAlive(pid)), `pids ${pids} to be gone`);
      expect(pids.filter(isAlive)).toEqual([]);
    });
  });
});

type Expect = typeof expect;

function checkOutput(run: Run, worker: RealWorker, expect: Expect): void {
  const real = worker.output!;
  const model = run.replay.final.output as WorkerExit;
  const facts = (out: WorkerExit) => ({
    reason: out.reason,
    stopReason: out.stopReason,
    wasReady: out.wasReady,
    calls: out.calls,
    error: out.error && {
      code: out.error.code,
      name: out.error.name,
      initReason: out.error instanceof WorkerInitError ? out.error.reason : undefined,
    },
  });
  expect(facts(real)).toEqual(facts(model));
  expect(real.pid).toBe(worker.pid);
  expect(run.plan.exit).toContainEqual({ exitCode: real.exitCode, signal: real.signal });
  // A worker.kill ends with the very error it was given.
  if (model.error?.code === 'ERR_POOL_CLOSED') expect(real.error).toBe(worker.killError);
  if (real.error && 'pid' in real.error) expect(real.error.pid ?? null).toBe(worker.pid);
}

/** Each call the path made must have been treated as the model treated its stub. */
async function checkCalls(run: Run, worker: RealWorker, expect: Expect): Promise<void> {
  const delivered = new Map<number, unknown[]>();
  for (const step of run.replay.steps) {
    if (step.actions.includes('deliver item') && step.callBefore !== null) {
      const items = delivered.get(step.callBefore) ?? [];
      items.push((step.event as { message: { v: unknown } }).message.v);
      delivered.set(step.callBefore, items);
    }
  }
  for (const [id, tracked] of worker.calls) {
    const model = run.replay.stubs.calls.get(id)!;
    const call: PendingCall = tracked.call;
    expect(call.phase !== 'queued', `call ${id} dispatched`).toBe(
      model.log.some((e) => e.op === 'dispatched'),
    );
    const settled = model.log.find(
      (e) => e.op === 'resolve' || e.op === 'reject' || e.op === 'end',
    );
    const aborted = tracked.controller.signal.aborted;
    if (call.stream) {
      const items: unknown[] = [];
      let end: 'done' | 'pending' | { error: unknown } = 'pending';
      for (;;) {
        const next = call.next().then(
          (r) => r,
          (error: unknown) => ({ error }),
        );
        const r = await probe(next);
        if (r === PENDING) break;
        if ('error' in r) {
          end = { error: r.error };
          break;
        }
        if (r.done) {
          end = 'done';
          break;
        }
        items.push(r.value);
      }
      expect(items, `items of call ${id}`).toEqual(delivered.get(id) ?? []);
      if (aborted) expect((end as { error: Error }).error?.name).toBe('AbortError');
      else if (!settled) expect(end).toBe('pending');
      else if (settled.op === 'end') expect(end).toBe('done');
      else expect(errorFacts((end as { error: unknown }).error)).toEqual(errorFacts(settled.arg));
      continue;
    }
    await probe(call.promise!.catch(() => {}));
    const outcome = tracked.outcome;
    if (aborted) {
      expect(outcome.kind).toBe('rejected');
      expect((outcome as { error: Error }).error.name).toBe('AbortError');
    } else if (!settled) {
      expect(outcome.kind, `call ${id} unsettled`).toBe('pending');
      expect(call.settled).toBe(false);
    } else if (settled.op === 'resolve') {
      expect(outcome).toEqual({ kind: 'resolved', value: settled.arg });
    } else {
      expect(outcome.kind).toBe('rejected');
      expect(errorFacts((outcome as { error: unknown }).error)).toEqual(errorFacts(settled.arg));
    }
  }
}

function errorFacts(error: unknown) {
  if (error instanceof PyvisorError) return { code: error.code, name: error.name };
  return { name: (error as Error | undefined)?.name };
}
