/**
 * The abstract side of the model-based tests: test paths generated from `workerMachine` itself
 * with `xstate/graph`, and a pure replay of a path that tells what the machine expects at every
 * step (state values of each microstep, emitted events, what it did to the call).
 *
 * Nothing here starts a process: traversal runs the machine's `assign` actions purely (the
 * invoked process actor is never started), so every sample event carries stub objects.
 */
import {
  type ActorLogic,
  getInitialSnapshot,
  getMicrosteps,
  getNextSnapshot,
  type SnapshotFrom,
  type StateValue,
} from 'xstate';
import {
  getPathsFromEvents,
  getShortestPaths,
  getStateNodes,
  joinPaths,
  type StatePath,
} from 'xstate/graph';
import { ProtocolError, PyvisorError } from '../../src/errors.js';
import {
  type WorkerCall,
  type WorkerEvent,
  type WorkerInput,
  workerMachine,
} from '../../src/machines/worker.machine.js';
import { encodeFrame, type InitErrorMessage, type ReadyMessage } from '../../src/protocol/index.js';
import type { SpawnSpec, WorkerTransport } from '../../src/transport/transport.js';

export type WorkerSnapshot = SnapshotFrom<typeof workerMachine>;
export type WorkerPath = StatePath<WorkerSnapshot, WorkerEvent>;

/**
 * Which side of an id-based guard a sample is on. `running`: the id of the call running now;
 * `unknown`: an id no call has; `answer`: the pong for the health check in progress; `stale`:
 * a pong for some other check.
 */
export type Variant = 'running' | 'unknown' | 'answer' | 'stale';
export type SampleEvent = WorkerEvent & { variant?: Variant };

/** An id that no call of a test ever has. */
export const UNKNOWN_ID = 9999;
/** Added to the current ping id to make a stale pong. */
export const STALE_PING_OFFSET = 1000;

// ------------------------------------------------------------------------------------------
// Stubs.

/** A `WorkerCall` that records what the machine does to it. */
export class RecordingCall implements WorkerCall {
  readonly fn = 'wait';
  readonly frame: Buffer;
  readonly stream = false;
  readonly log: Array<{ op: 'dispatched' | 'resolve' | 'reject' | 'item' | 'end'; arg?: unknown }> =
    [];
  constructor(readonly id: number) {
    this.frame = encodeFrame(JSON.stringify({ t: 'call', id, fn: this.fn, args: [] }));
  }
  get settled(): boolean {
    return this.log.some((e) => e.op === 'resolve' || e.op === 'reject' || e.op === 'end');
  }
  dispatched(): void {
    this.log.push({ op: 'dispatched' });
  }
  resolve(value: unknown): void {
    this.log.push({ op: 'resolve', arg: value });
  }
  reject(error: unknown): void {
    this.log.push({ op: 'reject', arg: error });
  }
  item(value: unknown): void {
    this.log.push({ op: 'item', arg: value });
  }
  end(): void {
    this.log.push({ op: 'end' });
  }
}

/** A transport that goes nowhere: `send`, `kill` record and do nothing. */
export class RecordingTransport implements WorkerTransport {
  readonly pid = 4242;
  readonly sent: Buffer[] = [];
  readonly signals: NodeJS.Signals[] = [];
  send(frame: Buffer): void {
    this.sent.push(frame);
  }
  kill(signal: NodeJS.Signals): void {
    this.signals.push(signal);
  }
  outputTail(): string {
    return '';
  }
}

/** The stub objects sample events carry; one set per traversal or replay. */
export class Stubs {
  readonly transport = new RecordingTransport();
  readonly calls = new Map<number, RecordingCall>();
  call(id: number): RecordingCall {
    let call = this.calls.get(id);
    if (!call) {
      call = new RecordingCall(id);
      this.calls.set(id, call);
    }
    return call;
  }
}

export const STUB_SPEC: SpawnSpec = {
  command: 'stub',
  args: [],
  env: {},
  cwd: '/',
  maxMessageSize: 1024,
  outputLines: 0,
};

/** The model's input. The timer values do not matter to the model: delays are just events. */
export function modelInput(stubs: Stubs): WorkerInput {
  return {
    workerId: 0,
    generation: 1,
    spec: STUB_SPEC,
    spawn: () => stubs.transport,
    initTimeout: 1000,
    cancelGrace: 1000,
    healthTimeout: 1000,
    stopTimeout: 1000,
    maxCalls: 1000,
  };
}

export const READY: ReadyMessage = {
  t: 'ready',
  pid: 4242,
  version: '3.0.0',
  executable: 'python3',
  handlers: [],
  initMs: 1,
};
export const INIT_ERROR: InitErrorMessage = {
  t: 'init_error',
  type: 'RuntimeError',
  message: 'sample init error',
  traceback: '',
};
export const SAMPLE_PROTOCOL_ERROR = new ProtocolError('sample protocol error');
export const SAMPLE_KILL_ERROR = new PyvisorError('ERR_POOL_CLOSED', 'killed by the model test');
export const SAMPLE_TRANSPORT_ERROR = new Error('sample transport failure');

// ------------------------------------------------------------------------------------------
// Events.

/** The delayed (`after`) event types of the machine, read from its state nodes. */
export const DELAYED_EVENTS: readonly string[] = [
  ...new Set(
    getStateNodes(workerMachine.root).flatMap((node) => node.after.map((t) => t.eventType)),
  ),
];

/** `xstate.after.stopTimeout.worker.alive.stopping.asking` -> `after(stopTimeout)`. */
export function afterLabel(type: string): string {
  const delay = type.slice('xstate.after.'.length).split('.')[0];
  return `after(${delay})`;
}

export function label(event: { type: string; variant?: Variant }): string {
  if (event.type.startsWith('xstate.after.')) return afterLabel(event.type);
  return event.variant ? `${event.type}(${event.variant})` : event.type;
}

function handled(snapshot: WorkerSnapshot, event: SampleEvent): boolean {
  return workerMachine.getTransitionData(snapshot, event).length > 0;
}

/**
 * Every sample event that has an explicit transition in `snapshot` (ignoring is an explicit
 * transition too). Guarded events come in both variants where both can happen.
 */
export function samples(snapshot: WorkerSnapshot, stubs: Stubs): SampleEvent[] {
  const { call, calls, pingId } = snapshot.context;
  const list: SampleEvent[] = [
    { type: 'process.spawned', transport: stubs.transport },
    { type: 'process.exited', exit: { exitCode: null, signal: 'SIGKILL' } },
    { type: 'process.protocolError', error: SAMPLE_PROTOCOL_ERROR },
    { type: 'process.failed', error: SAMPLE_TRANSPORT_ERROR },
    { type: 'python.ready', message: READY },
    { type: 'python.initError', message: INIT_ERROR },
    { type: 'call.start', call: stubs.call(calls + 1) },
    { type: 'health.check' },
    { type: 'worker.stop', reason: 'close' },
    { type: 'worker.kill', error: SAMPLE_KILL_ERROR },
    ...DELAYED_EVENTS.map((type) => ({ type }) as unknown as SampleEvent),
  ];
  const ids: Array<[Variant, number]> = [['unknown', UNKNOWN_ID]];
  if (call) ids.unshift(['running', call.id]);
  for (const [variant, id] of ids) {
    list.push(
      { type: 'python.ok', message: { t: 'ok', id, v: `ok ${id}` }, variant },
      { type: 'python.item', message: { t: 'item', id, v: `item ${id}` }, variant },
      { type: 'python.end', message: { t: 'end', id }, variant },
      {
        type: 'python.err',
        message: {
          t: 'err',
          id,
          kind: 'python',
          type: 'ValueError',
          message: 'raised on request',
          traceback: '',
        },
        variant,
      },
      { type: 'call.cancel', callId: id, variant },
      { type: 'stream.credit', callId: id, n: 8, variant },
    );
  }
  list.push(
    { type: 'python.pong', message: { t: 'pong', id: pingId }, variant: 'answer' },
    {
      type: 'python.pong',
      message: { t: 'pong', id: pingId + STALE_PING_OFFSET },
      variant: 'stale',
    },
  );
  return list.filter((event) => handled(snapshot, event));
}

// ------------------------------------------------------------------------------------------
// State names.

/** `{alive: {ready: 'idle'}}` -> `alive.ready.idle`. */
export function valueName(value: StateValue): string {
  if (typeof value === 'string') return value;
  return Object.entries(value)
    .map(([key, sub]) => (sub === undefined ? key : `${key}.${valueName(sub as StateValue)}`))
    .join(',');
}

/** The leaf of a state value: `alive.ready.idle` -> `idle`. */
export function leaf(name: string): string {
  return name.slice(name.lastIndexOf('.') + 1);
}

/** State node ids active in `value` (`worker`, `worker.alive`, ...). */
export function activeIds(value: StateValue, prefix = 'worker'): string[] {
  if (typeof value === 'string') return [prefix, `${prefix}.${value}`];
  return [
    prefix,
    ...Object.entries(value).flatMap(([key, sub]) =>
      activeIds(sub as StateValue, `${prefix}.${key}`),
    ),
  ];
}

/** Every state node id of the machine, the root included. */
export const ALL_STATE_IDS: readonly string[] = [
  workerMachine.root.id,
  ...getStateNodes(workerMachine.root).map((node) => node.id),
];

// ------------------------------------------------------------------------------------------
// Paths.

/**
 * A vertex of the traversal is a transition: the state value it reaches, the event (with its
 * guard variant) and the value it left. Context is not serialised (it holds live objects), so the
 * shortest path to each vertex is a shortest path that takes that transition: together the paths
 * take every transition of the machine once, ignored events (explicit self-transitions)
 * included.
 */
export function serializeTransition(
  snapshot: WorkerSnapshot,
  event: WorkerEvent | undefined,
  previous: WorkerSnapshot | undefined,
): string {
  const here = valueName(snapshot.value);
  if (!event || !previous) return here;
  return `${valueName(previous.value)} --${label(event)}--> ${here}`;
}

const traversal = {
  serializeState: serializeTransition,
  serializeEvent: (event: WorkerEvent) => label(event),
};

/** The stubs all generated paths share (their recordings show the traversal ran the actions). */
export const traversalStubs = new Stubs();

/** Shortest paths to every transition of the worker machine. */
export function generatePaths(): WorkerPath[] {
  return getShortestPaths(workerMachine, {
    input: modelInput(traversalStubs),
    events: (snapshot) => samples(snapshot, traversalStubs),
    ...traversal,
  });
}

export interface Transition {
  from: WorkerSnapshot;
  event: SampleEvent;
  to: WorkerSnapshot;
  label: string;
}

/** The transitions of a path (xstate/graph's steps are `[init, ...(event, state reached)]`). */
export function transitionsOf(path: WorkerPath): Transition[] {
  const out: Transition[] = [];
  for (let i = 1; i < path.steps.length; i++) {
    const from = path.steps[i - 1]!.state;
    const { event, state } = path.steps[i]!;
    out.push({ from, event, to: state, label: label(event) });
  }
  return out;
}

/** `spawning --process.spawned--> initializing --python.ready--> idle` (leaf state names). */
export function describePath(path: WorkerPath): string {
  const steps = transitionsOf(path);
  if (steps.length === 0) return valueName(path.state.value);
  return (
    steps.map((t) => `${leaf(valueName(t.from.value))} --${t.label}-->`).join(' ') +
    ` ${leaf(valueName(path.state.value))}`
  );
}

/** Key of a path's last transition: `from --label--> to`. */
export function lastTransitionKey(path: WorkerPath): string {
  const steps = transitionsOf(path);
  const last = steps[steps.length - 1];
  if (!last) return valueName(path.state.value);
  return serializeTransition(last.to, last.event, last.from);
}

/**
 * The snapshot a path really ends in, its events taken again from the initial state.
 *
 * A path's `state` (and its steps' states) are not always that one: a vertex stands for a
 * transition, not for the context, and xstate/graph keeps one snapshot per vertex, from whichever
 * path reached it last. Two paths reaching `killing --process.failed--> killing` with different
 * recorded endings share that vertex, so the snapshot of one may carry the other's ending. The
 * events of a path are its own.
 */
export function endState(path: WorkerPath): WorkerSnapshot {
  let snapshot = getInitialSnapshot(workerMachine, modelInput(traversalStubs));
  for (const { event } of transitionsOf(path)) {
    snapshot = getNextSnapshot(workerMachine, snapshot, event);
  }
  return snapshot;
}

/**
 * Appends one event to a path, with xstate/graph: the event is taken from the samples of the
 * path's last state by its label, so its guard variant is evaluated in that state's context.
 */
export function extendPath(head: WorkerPath, eventLabel: string): WorkerPath | null {
  const state = endState(head);
  const event = samples(state, traversalStubs).find((e) => label(e) === eventLabel);
  if (!event) return null;
  // (getPathsFromEvents' generics do not infer a machine with emitted events: give them.)
  const logic = workerMachine as unknown as ActorLogic<WorkerSnapshot, WorkerEvent, WorkerInput>;
  const [tail] = getPathsFromEvents(logic, [event], {
    fromState: state,
    input: modelInput(traversalStubs),
    ...traversal,
  });
  return tail ? joinPaths({ ...head, state }, tail) : null;
}

/** Drops every path that is a prefix of another one (running the longer one checks both). */
export function dedupe(paths: WorkerPath[]): WorkerPath[] {
  const keyed = paths
    .map((path) => ({
      path,
      seq: transitionsOf(path).map((t) => `${valueName(t.from.value)}|${t.label}`),
    }))
    .sort((a, b) => b.seq.length - a.seq.length);
  const kept: typeof keyed = [];
  for (const candidate of keyed) {
    const covered = kept.some((k) => candidate.seq.every((step, i) => k.seq[i] === step));
    if (!covered) kept.push(candidate);
  }
  return kept.map((k) => k.path).reverse();
}

// ------------------------------------------------------------------------------------------
// Replay: what the machine does at each step, with fresh stubs.

export interface ReplayStep {
  index: number;
  label: string;
  /** The event, rebuilt from the replay's own context: its ids are the ones the real run uses. */
  event: SampleEvent;
  from: string;
  to: string;
  /** State value of each microstep (transient states such as `finishing` show up here). */
  micro: string[];
  /** Types of the events emitted during the step. */
  emitted: string[];
  /** What the step does to the process: `frame:<t>` written, `kill:<signal>` sent. */
  effects: string[];
  /** The machine's own (non-assign) actions the step runs, e.g. `deliver item`. */
  actions: string[];
  callBefore: number | null;
  callAfter: number | null;
  pingId: number;
  spawned: boolean;
  after: WorkerSnapshot;
}

/** The machine's actions that act on the process, as the real transport sees them. */
const EFFECTS: Record<string, string> = {
  'send cancel': 'frame:cancel',
  'send credit': 'frame:credit',
  'send ping': 'frame:ping',
  'send exit': 'frame:exit',
  'send SIGTERM': 'kill:SIGTERM',
  'send SIGKILL': 'kill:SIGKILL',
};

/** The SIGKILL the process actor's cleanup sends when the worker leaves `alive` before the exit. */
const CLEANUP_KILL = 'kill:SIGKILL';

export interface Replay {
  steps: ReplayStep[];
  stubs: Stubs;
  final: WorkerSnapshot;
}

export function replay(path: WorkerPath): Replay {
  const stubs = new Stubs();
  let snapshot = getInitialSnapshot(workerMachine, modelInput(stubs));
  const steps: ReplayStep[] = [];
  transitionsOf(path).forEach((t, index) => {
    const event = samples(snapshot, stubs).find((e) => label(e) === t.label);
    if (!event) throw new Error(`replay: no sample '${t.label}' in ${valueName(snapshot.value)}`);
    const written = stubs.transport.sent.length;
    const micro = getMicrosteps(workerMachine, snapshot, event);
    const next = micro.length > 0 ? micro[micro.length - 1]![0] : snapshot;
    const to = valueName(next.value);
    if (to !== valueName(t.to.value)) {
      throw new Error(`replay: '${t.label}' reached ${to}, the path says ${valueName(t.to.value)}`);
    }
    // Frames written by assign actions (`start call`, `send ping`: run by the replay itself), then
    // the effects of the other actions (returned by getMicrosteps, not run).
    const effects = [
      ...stubs.transport.sent
        .slice(written)
        .map((frame) => `frame:${JSON.parse(frame.subarray(4).toString('utf8')).t}`),
      ...micro.flatMap(([, actions]) =>
        actions.map((a) => EFFECTS[a.type]).filter((e): e is string => e !== undefined),
      ),
    ];
    // Leaving `alive` stops the process actor, whose cleanup SIGKILLs a process that has not
    // exited; a spawn that threw (process.failed before the spawn was reported: while spawning,
    // or killing after a stop) left none. Otherwise the process exists even if the model never
    // saw its spawn (a stop before it): the actor spawns as it starts.
    const from = valueName(snapshot.value);
    const spawnThrew = event.type === 'process.failed' && snapshot.context.transport === null;
    const cleanupKill =
      from.startsWith('alive.') &&
      !to.startsWith('alive.') &&
      event.type !== 'process.exited' &&
      !spawnThrew;
    steps.push({
      index,
      label: t.label,
      event,
      from,
      to,
      micro: micro.map(([s]) => valueName(s.value)),
      emitted: micro.flatMap(([, actions]) =>
        actions
          .filter((a) => (a.type as string) === 'xstate.emit')
          .map((a) => (a.params as unknown as { event: { type: string } }).event.type),
      ),
      // Actions talk to `context.transport`, which is null until the spawn is reported.
      effects: [
        ...(next.context.transport === null ? [] : effects),
        ...(cleanupKill ? [CLEANUP_KILL] : []),
      ],
      actions: micro.flatMap(([, actions]) =>
        actions.map((a) => a.type as string).filter((t) => !t.startsWith('xstate.')),
      ),
      callBefore: snapshot.context.call?.id ?? null,
      callAfter: next.context.call?.id ?? null,
      pingId: snapshot.context.pingId,
      spawned: snapshot.context.transport !== null,
      after: next,
    });
    snapshot = next;
  });
  return { steps, stubs, final: snapshot };
}
