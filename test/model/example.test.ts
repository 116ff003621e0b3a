/**
 * The worked example of docs/testing.md, kept as a test so the documentation cannot rot: model-based
 * testing of `workerMachine` with nothing but xstate, `xstate/graph` and a scripted fake transport
 * (no Python). In your own project, import from 'pyvisor/machines' and 'pyvisor' instead of
 * '../../src/...'.
 */
import { describe, expect, it } from 'vitest';
import { createActor, SimulatedClock, type SnapshotFrom } from 'xstate';
import { getShortestPaths, getStateNodes } from 'xstate/graph';
import { PoolClosedError, ProtocolError } from '../../src/index.js'; // 'pyvisor'
import {
  type TransportHandlers,
  type WorkerCall,
  type WorkerEvent,
  type WorkerInput,
  type WorkerTransport,
  workerMachine,
} from '../../src/machines/index.js'; // 'pyvisor/machines'

type Snapshot = SnapshotFrom<typeof workerMachine>;
type Sample = WorkerEvent & { variant?: string };

// 1. Stubs. Traversal runs the machine's assign actions (`start call` calls `call.dispatched()` and
//    `transport.send()`), so the sample events must carry objects that accept those calls.
const transport: WorkerTransport = { pid: 1, send() {}, kill() {}, outputTail: () => '' };
const stubCall = (id: number): WorkerCall => ({
  id,
  fn: 'f',
  frame: Buffer.from([0, 0, 0, 2, 123, 125]), // {}
  stream: false,
  settled: false,
  dispatched() {},
  resolve() {},
  reject() {},
  item() {},
  end() {},
});
const input: WorkerInput = {
  workerId: 0,
  generation: 1,
  spec: { command: 'python3', args: [], env: {}, cwd: '/', maxMessageSize: 1024, outputLines: 0 },
  spawn: () => transport,
  initTimeout: 1000,
  cancelGrace: 1000,
  healthTimeout: 1000,
  stopTimeout: 1000,
  maxCalls: 100,
};

// 2. Sample events: one per event type, both sides of each guard (each call in flight and an unknown
//    id; the check in progress and another one), and the delayed events, whose types
//    (`xstate.after.<delay>.<state id>`) are read from the state nodes.
const delayed = getStateNodes(workerMachine.root).flatMap((n) => n.after.map((t) => t.eventType));
const UNKNOWN = 9999;

function samples(s: Snapshot): Sample[] {
  const { flights, calls, pingId, checking } = s.context;
  const list: Sample[] = [
    { type: 'process.spawned', transport },
    { type: 'process.exited', exit: { exitCode: 1, signal: null } },
    { type: 'process.protocolError', error: new ProtocolError('bad frame') },
    {
      type: 'python.ready',
      message: { t: 'ready', pid: 1, version: '3', executable: 'py', handlers: [], initMs: 1 },
    },
    {
      type: 'python.initError',
      message: { t: 'init_error', type: 'E', message: '', traceback: '' },
    },
    { type: 'call.start', call: stubCall(calls + 1) },
    { type: 'health.check' },
    { type: 'worker.stop', reason: 'close' },
    { type: 'worker.kill', error: new PoolClosedError('killed') },
    { type: 'python.pong', message: { t: 'pong', id: pingId + 1 }, variant: 'stale' },
    { type: 'health.timeout', pingId: pingId + 1, variant: 'stale' },
    { type: 'cancel.expired', callId: UNKNOWN, variant: 'unknown' },
    ...delayed.map((type) => ({ type }) as unknown as Sample),
  ];
  if (checking) {
    list.push(
      { type: 'python.pong', message: { t: 'pong', id: pingId }, variant: 'answer' },
      { type: 'health.timeout', pingId, variant: 'current' },
    );
  }
  const ids = [...flights.keys(), UNKNOWN];
  for (const [i, id] of ids.entries()) {
    const variant = id === UNKNOWN ? 'unknown' : String(i + 1);
    // The machine schedules cancel.expired for a cancelled call only.
    if (flights.get(id)?.cancelled) list.push({ type: 'cancel.expired', callId: id, variant });
    list.push(
      { type: 'python.ok', message: { t: 'ok', id, v: 1 }, variant },
      { type: 'python.end', message: { t: 'end', id }, variant },
      { type: 'python.item', message: { t: 'item', id, v: 1 }, variant },
      {
        type: 'python.err',
        message: { t: 'err', id, kind: 'python', type: 'E', message: '', traceback: '' },
        variant,
      },
      { type: 'call.cancel', callId: id, variant },
      { type: 'stream.credit', callId: id, n: 1, variant },
    );
  }
  // Only events the state has a transition for (an explicit "ignore" counts).
  return list.filter((e) => workerMachine.getTransitionData(s, e).length > 0);
}

const labelOf = (e: { type: string; variant?: string }) =>
  e.variant ? `${e.type}(${e.variant})` : e.type;
// The state value and, in ready and busy, the part of the context that decides what comes next:
// the calls in flight (`r` running, `c` cancelled) and whether a health check is out.
const stateOf = (s: Snapshot) => {
  const value = JSON.stringify(s.value);
  if (!s.matches({ alive: 'ready' }) && !s.matches({ alive: 'busy' })) return value;
  const flights = [...s.context.flights.values()].map((f) => (f.cancelled ? 'c' : 'r')).join('');
  return `${value}${flights}${s.context.checking ? '+ping' : ''}`;
};

// 3. Paths. A vertex is a transition (previous state, event, state), never the whole context (it
//    holds live objects and counters): the shortest path to each vertex takes that transition, so
//    the paths together take every transition, ignored events included.
const paths = getShortestPaths(workerMachine, {
  input,
  events: samples,
  serializeEvent: labelOf,
  serializeState: (s, event, previous) =>
    event && previous ? `${stateOf(previous)} -${labelOf(event)}-> ${stateOf(s)}` : stateOf(s),
});

// 4. Run each path against a real actor whose transport is scripted: the test plays the process.
const DELAYS: Record<string, number> = { killWait: 5000 };
// Sent to the actor: the supervisor's events, and the timers the machine raises itself
// (cancel.expired, health.timeout), as they come when they fire: with the clock, whichever timer
// is due first would fire, not the one the path names.
const TIMERS = ['cancel.expired', 'health.timeout'];
const isActorSide = (type: string) =>
  ['call.', 'stream.', 'health.', 'worker.', 'cancel.'].some((p) => type.startsWith(p));

function runPath(path: (typeof paths)[number]): void {
  const clock = new SimulatedClock();
  let handlers: TransportHandlers | undefined;
  const steps = path.steps.slice(1); // steps[0] is the initial state
  const first = steps.find((s) => !isActorSide(s.event.type))?.event.type;
  const trace: string[] = []; // every event the actor processed, and where it went
  const actor = createActor(workerMachine, {
    clock,
    input: {
      ...input,
      spawn: (_spec, h) => {
        handlers = h;
        // A process that is gone before its spawn is even reported (e.g. ENOENT).
        if (first === 'process.exited') h.exit({ exitCode: 1, signal: null });
        return transport;
      },
    },
    inspect: (e) => {
      if (e.type !== '@xstate.snapshot' || e.rootId !== e.actorRef.sessionId) return;
      if (e.event.type === 'xstate.init') return;
      trace.push(`${e.event.type} -> ${stateOf(e.snapshot as Snapshot)}`);
    },
  });
  let started = false;
  for (const { event } of steps) {
    const type = event.type;
    if (isActorSide(type)) {
      actor.send(event); // before start(), it is queued and processed before process.spawned
      continue;
    }
    if (!started) {
      actor.start(); // spawns: process.spawned, or what the fake spawn does (above)
      started = true;
      // The spawn itself produced process.spawned (or the early exit): nothing more to do.
      if (type === 'process.spawned' || type === 'process.exited') continue;
    }
    if (type.startsWith('python.')) {
      handlers!.message((event as unknown as { message: never }).message);
    } else if (type === 'process.protocolError') {
      handlers!.protocolError(event.error);
    } else if (type === 'process.exited') {
      handlers!.exit(event.exit);
    } else if (type.startsWith('xstate.after.')) {
      const delay = type.split('.')[2]!;
      clock.increment(DELAYS[delay] ?? (input[delay as keyof WorkerInput] as number));
    }
  }
  if (!started) actor.start(); // a path made only of events queued before the spawn
  // The trace must be the path, except for what comes by itself and changes nothing: the spawn
  // report (when the actor starts), and a timer the machine raised that fires, ignored, when the
  // clock runs on for an `after` timer.
  const expected = steps.map((s) => `${s.event.type} -> ${stateOf(s.state)}`);
  const got: string[] = [];
  trace.forEach((t, i) => {
    const [type, , value] = t.split(' ');
    const before = i === 0 ? stateOf(path.steps[0]!.state) : trace[i - 1]!.split(' -> ')[1];
    const spontaneous = (type === 'process.spawned' || TIMERS.includes(type!)) && value === before;
    if (t === expected[got.length] || !spontaneous) got.push(t);
  });
  expect(got.slice(0, expected.length)).toEqual(expected);
  actor.stop();
}

describe('docs/testing.md example: every transition, with a scripted transport', () => {
  it('generates paths through every transition', () => {
    expect(paths.length).toBeGreaterThan(200);
  });

  // The init timer starts when the actor starts, after the spawn is reported: no transport can
  // make it fire in `spawning`. Those paths are left out, by name.
  const early = (p: (typeof paths)[number]) =>
    (p.steps[1]?.event.type as string | undefined) ===
    'xstate.after.initTimeout.worker.alive.starting';

  it('leaves out only the paths that need the init timer to fire before the spawn', () => {
    expect(paths.filter(early).map((p) => stateOf(p.state))).toEqual([
      '{"alive":"killing"}',
      '"initTimedOut"',
      // The same start, then killWait (a process that survives SIGKILL) to its final state.
      '"initTimedOut"',
    ]);
  });

  const named = paths
    .filter((p) => !early(p))
    .map(
      (p) =>
        [
          p.steps
            .slice(1)
            .map((s) => labelOf(s.event))
            .join(' > ') || '(start)',
          p,
        ] as const,
    );
  it.each(named)('%s', (_name, path) => runPath(path));
});
