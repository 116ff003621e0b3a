/**
 * The abstract side of the model-based tests: test paths generated from `workerMachine` itself
 * with `xstate/graph`, and a pure replay of a path that tells what the machine expects at every
 * step (the state, the calls in flight, each microstep, emitted events, what it did to the calls).
 *
 * One {@link WorkerModel} per worker configuration: concurrency 1 (one call at a time), serial
 * with pipelining (a second call handed early waits in the process), concurrency 2 (two calls run
 * at once). Nothing here starts a process: traversal runs the machine's `assign` actions purely
 * (the invoked process actor is never started), so every sample event carries stub objects.
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
 * Which side of a guard a sample is on. For an event about a call (a reply, a cancel, credit,
 * `cancel.expired`): `1`, `2`... the position of the call among those in flight, oldest first,
 * or `unknown`, an id no call in flight has. `answer`: the pong of the health check in progress;
 * `current`: the health timer of the check in progress; `stale`: a pong or a timer of any other
 * check.
 */
export type Variant = string;
export type SampleEvent = WorkerEvent & { variant?: Variant };

/** An id that no call of a test ever has. */
export const UNKNOWN_ID = 9999;
/** Added to the current ping id to make a stale pong. */
export const STALE_PING_OFFSET = 1000;

// ------------------------------------------------------------------------------------------
// Configurations.

export interface ModelConfig {
  /** For test titles. */
  name: string;
  /** The worker's `maxInFlight`. */
  maxInFlight: number;
  /** The worker's `serial` (and the process's: PYVISOR_CONCURRENCY is maxInFlight if not). */
  serial: boolean;
  /** Only the samples for which this holds (default: all of them). */
  events?: (event: SampleEvent, snapshot: WorkerSnapshot) => boolean;
  /** Only the generated paths for which this holds (default: all of them). */
  paths?: (path: WorkerPath) => boolean;
}

/** Concurrency 1: one call at a time, a second one is bounced. Every sample, every path. */
export const CONCURRENCY_1: ModelConfig = { name: 'concurrency 1', maxInFlight: 1, serial: true };

/**
 * The events of the models with two calls in flight: what two calls do to each other. Not the
 * events whose handling does not depend on how many calls are in flight (health checks, credit,
 * stray frames other than a reply for an unknown id, transport failures, timers of stopping and
 * starting), which the concurrency-1 model covers.
 */
const TWO_CALL_EVENTS =
  /^(process\.spawned|python\.ready|call\.start|worker\.stop|worker\.kill|process\.exited|python\.(ok|err)\(\d\)|python\.ok\(unknown\)|call\.cancel\(\d\)|cancel\.expired\(\d\))$/;

/** The last transition starts with two calls in flight. */
function fromTwoCalls(path: WorkerPath): boolean {
  const steps = path.steps;
  return steps.length > 1 && steps[steps.length - 2]!.state.context.flights.size >= 2;
}

/**
 * Concurrency 1 with pipelining (`maxInFlight` 2, serial): a second call is handed early and
 * waits in the process until the first one finishes. The paths whose last transition starts with
 * two calls in flight.
 *
 * A call cancelled before it started is answered by the process itself, at once: while that
 * answer is due, no other reply is offered (the process cannot write one first unless it raced:
 * the handler finished before the runtime read the cancel; then it started the call, and it is
 * the handler that answers the cancel).
 */
export const PIPELINED: ModelConfig = {
  name: 'pipelining',
  maxInFlight: 2,
  serial: true,
  events(event, snapshot) {
    const name = label(event);
    if (!TWO_CALL_EVENTS.test(name)) return false;
    const flights = [...snapshot.context.flights.values()];
    const unstarted = flights.findIndex((f) => !f.started && f.cancelled);
    const reply = /^python\.(\w+)\((\d)\)$/.exec(name);
    return !(unstarted >= 0 && reply && (reply[1] !== 'err' || Number(reply[2]) !== unstarted + 1));
  },
  paths: fromTwoCalls,
};

/**
 * Concurrency 2 (`maxInFlight` 2, not serial; PYVISOR_CONCURRENCY=2, calls as asyncio tasks):
 * two calls run at once. The paths whose last transition starts with two calls in flight; stream
 * items too, to see each reach its own call. Not serial, the machine treats the calls in flight
 * alike whatever their order, so a cancel goes to the oldest call not cancelled yet (cancelling
 * the newer one first would only repeat the same transitions in mirror), and the first cancel
 * timer to fire is the oldest call's.
 */
export const CONCURRENCY_2: ModelConfig = {
  name: 'concurrency 2',
  maxInFlight: 2,
  serial: false,
  events(event, snapshot) {
    const name = label(event);
    const flights = [...snapshot.context.flights.values()];
    if (event.type === 'call.cancel' && event.variant !== 'unknown') {
      return Number(event.variant) === flights.findIndex((f) => !f.cancelled) + 1;
    }
    // So the oldest cancelled call's timer is the first to fire.
    if (event.type === 'cancel.expired' && event.variant !== 'unknown') {
      return Number(event.variant) === flights.findIndex((f) => f.cancelled) + 1;
    }
    return TWO_CALL_EVENTS.test(name) || /^python\.item\(\d\)$/.test(name);
  },
  paths: fromTwoCalls,
};

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

/**
 * A call source with nothing waiting (the model has no queue: the branch that takes the next
 * call in the reply's event is tested in the unit tests), which records the pipelined calls the
 * worker said started.
 */
export class RecordingSource {
  readonly started: number[] = [];
  waiting(): boolean {
    return false;
  }
  take(): WorkerCall | undefined {
    return undefined;
  }
  startedCall(call: WorkerCall): void {
    this.started.push(call.id);
  }
}

/** The stub objects sample events carry; one set per traversal or replay. */
export class Stubs {
  readonly transport = new RecordingTransport();
  readonly source = new RecordingSource();
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
export function modelInput(stubs: Stubs, config: ModelConfig): WorkerInput {
  const source = stubs.source;
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
    maxInFlight: config.maxInFlight,
    serial: config.serial,
    calls: {
      waiting: () => source.waiting(),
      take: () => source.take(),
      started: (_workerId, _generation, call) => source.startedCall(call),
    },
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
// Events and their labels.

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

/** Event types that name a call (by `message.id` or `callId`). */
export const CALL_EVENTS = new Set([
  'python.ok',
  'python.item',
  'python.end',
  'python.err',
  'call.cancel',
  'stream.credit',
  'cancel.expired',
]);

/** The call id an event names, if it names one. */
export function idOf(event: { type: string }): number | undefined {
  const e = event as { message?: { id?: number }; callId?: number };
  return e.message?.id ?? e.callId;
}

/**
 * The guard variant of `event` arriving in `snapshot`, judged from the context as the machine's
 * guards judge it: what a real event's label is.
 */
export function variantIn(snapshot: WorkerSnapshot, event: { type: string }): Variant | undefined {
  const { flights, checking, pingId } = snapshot.context;
  if (CALL_EVENTS.has(event.type)) {
    const id = idOf(event);
    const position = [...flights.keys()].indexOf(id as number);
    return position < 0 ? 'unknown' : String(position + 1);
  }
  if (event.type === 'python.pong') {
    return checking && idOf(event) === pingId ? 'answer' : 'stale';
  }
  if (event.type === 'health.timeout') {
    const timer = (event as { pingId?: number }).pingId;
    return checking && timer === pingId ? 'current' : 'stale';
  }
  return undefined;
}

/** The label of an event (a real one included) in the context it arrives in. */
export function labelIn(snapshot: WorkerSnapshot, event: { type: string }): string {
  if (event.type.startsWith('xstate.after.')) return afterLabel(event.type);
  const variant = variantIn(snapshot, event);
  return variant ? `${event.type}(${variant})` : event.type;
}

function handled(snapshot: WorkerSnapshot, event: SampleEvent): boolean {
  return workerMachine.getTransitionData(snapshot, event).length > 0;
}

/** Attaches to each sample the variant it has in `snapshot`. */
function withVariants(snapshot: WorkerSnapshot, events: WorkerEvent[]): SampleEvent[] {
  return events.map((event) => {
    const variant = variantIn(snapshot, event);
    return variant ? { ...event, variant } : event;
  });
}

function replies(id: number): WorkerEvent[] {
  return [
    { type: 'python.ok', message: { t: 'ok', id, v: `ok ${id}` } },
    { type: 'python.item', message: { t: 'item', id, v: `item ${id}` } },
    { type: 'python.end', message: { t: 'end', id } },
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
    },
    { type: 'call.cancel', callId: id },
    { type: 'stream.credit', callId: id, n: 8 },
  ];
}

/**
 * Every sample event that has an explicit transition in `snapshot` (ignoring is an explicit
 * transition too). Events about a call come for each call in flight and for an unknown id; a pong
 * and a health timer for the check in progress (if one is) and for another one; `cancel.expired`
 * for each cancelled call in flight (the machine schedules it for no other) and for an unknown id.
 */
export function samples(snapshot: WorkerSnapshot, stubs: Stubs): SampleEvent[] {
  const { calls, pingId, checking, flights } = snapshot.context;
  const list: WorkerEvent[] = [
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
    ...DELAYED_EVENTS.map((type) => ({ type }) as unknown as WorkerEvent),
  ];
  for (const id of flights.keys()) list.push(...replies(id));
  list.push(...replies(UNKNOWN_ID));
  for (const [id, flight] of flights) {
    if (flight.cancelled) list.push({ type: 'cancel.expired', callId: id });
  }
  list.push({ type: 'cancel.expired', callId: UNKNOWN_ID });
  if (checking) {
    list.push(
      { type: 'python.pong', message: { t: 'pong', id: pingId } },
      { type: 'health.timeout', pingId },
    );
  }
  list.push(
    { type: 'python.pong', message: { t: 'pong', id: pingId + STALE_PING_OFFSET } },
    // A check that is over (or, before any, one that never was).
    { type: 'health.timeout', pingId: checking ? pingId - 1 : pingId },
  );
  return withVariants(snapshot, list).filter((event) => handled(snapshot, event));
}

// ------------------------------------------------------------------------------------------
// State names.

/** `{alive: 'ready'}` -> `alive.ready`. */
export function valueName(value: StateValue): string {
  if (typeof value === 'string') return value;
  return Object.entries(value)
    .map(([key, sub]) => (sub === undefined ? key : `${key}.${valueName(sub as StateValue)}`))
    .join(',');
}

/** The leaf of a state value or key: `alive.busy[s,w]+ping` -> `busy[s,w]+ping`. */
export function leaf(name: string): string {
  const data = name.search(/[[+]/);
  const path = data < 0 ? name : name.slice(0, data);
  return name.slice(path.lastIndexOf('.') + 1);
}

/** The leaf state of a value or key, without its data: `alive.busy[s,w]+ping` -> `busy`. */
export function stateOf(name: string): string {
  const data = name.search(/[[+]/);
  const path = data < 0 ? name : name.slice(0, data);
  return path.slice(path.lastIndexOf('.') + 1);
}

/** What a flight is, in a state key: `s` started or `w` waiting in the process, `c` cancelled. */
export function flightSign(flight: { started: boolean; cancelled: boolean }): string {
  return (flight.started ? 's' : 'w') + (flight.cancelled ? 'c' : '');
}

/**
 * The state of the worker as the model tells states apart: the state value and, in `ready` and
 * `busy`, the calls in flight (oldest first, see {@link flightSign}) and, in `ready`, whether a
 * health check is out: `alive.ready+ping`, `alive.busy[s,wc]`. Call ids, counters and the ending
 * are left out, so that the states are finitely many; so is a check out while busy (the events
 * that end it are distinct transitions anyway).
 */
export function stateKey(snapshot: WorkerSnapshot): string {
  const name = valueName(snapshot.value);
  if (name !== 'alive.ready' && name !== 'alive.busy') return name;
  const { flights, checking } = snapshot.context;
  const sign = flights.size > 0 ? `[${[...flights.values()].map(flightSign).join(',')}]` : '';
  return `${name}${sign}${checking && name === 'alive.ready' ? '+ping' : ''}`;
}

/**
 * {@link stateKey}, with a health check out shown in `busy` too: what a step's `from` and `to`
 * are, so that an event that ends a check while busy is never taken for one that changes nothing.
 */
export function fullKey(snapshot: WorkerSnapshot): string {
  const key = stateKey(snapshot);
  return snapshot.context.checking && !key.endsWith('+ping') && key.startsWith('alive.busy')
    ? `${key}+ping`
    : key;
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
 * A vertex of the traversal is a transition: the state key it reaches, the event (with its guard
 * variant) and the state key it left. The full context is not serialised (it holds live objects,
 * and counters that grow): the shortest path to each vertex is a shortest path that takes that
 * transition, so together the paths take every transition between the model's states once,
 * ignored events (explicit self-transitions) included.
 */
export function serializeTransition(
  snapshot: WorkerSnapshot,
  event: WorkerEvent | undefined,
  previous: WorkerSnapshot | undefined,
): string {
  const here = stateKey(snapshot);
  if (!event || !previous) return here;
  return `${stateKey(previous)} --${label(event)}--> ${here}`;
}

const traversal = {
  serializeState: serializeTransition,
  serializeEvent: (event: WorkerEvent) => label(event),
};

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

/** Key of a transition: `from --label--> to`, with state keys. */
export function transitionKey(t: { from: WorkerSnapshot; to: WorkerSnapshot; label: string }) {
  return `${stateKey(t.from)} --${t.label}--> ${stateKey(t.to)}`;
}

/** `spawning --process.spawned--> initializing --python.ready--> ready` (leaf state keys). */
export function describePath(path: WorkerPath): string {
  const steps = transitionsOf(path);
  if (steps.length === 0) return leaf(stateKey(path.state));
  return (
    steps.map((t) => `${leaf(stateKey(t.from))} --${t.label}-->`).join(' ') +
    ` ${leaf(stateKey(path.state))}`
  );
}

/** Key of a path's last transition: `from --label--> to`. */
export function lastTransitionKey(path: WorkerPath): string {
  const last = transitionsOf(path).at(-1);
  return last ? transitionKey(last) : stateKey(path.state);
}

/** Drops every path that is a prefix of another one (running the longer one checks both). */
export function dedupe(paths: WorkerPath[]): WorkerPath[] {
  const keyed = paths
    .map((path) => ({
      path,
      seq: transitionsOf(path).map((t) => `${stateKey(t.from)}|${t.label}`),
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

/** A call in flight, as a replay step shows it. */
export interface FlightView {
  id: number;
  started: boolean;
  cancelled: boolean;
}

export interface ReplayStep {
  index: number;
  label: string;
  /** The event, rebuilt from the replay's own context: its ids are the ones the real run uses. */
  event: SampleEvent;
  /** State keys (see {@link fullKey}) before and after. */
  from: string;
  to: string;
  /** State value of each microstep. */
  micro: string[];
  /** The events emitted during the step (`worker.bounced(gone)` for a call handed back as gone). */
  emitted: string[];
  /** What the step does to the process: `frame:<t>` written, `kill:<signal>` sent. */
  effects: string[];
  /** The machine's own (non-assign) actions the step runs, e.g. `deliver item`. */
  actions: string[];
  /** The calls in flight before and after. */
  before: FlightView[];
  after: FlightView[];
  /** The id of the call in flight the event names (a reply, cancel, credit, cancel.expired). */
  target: number | null;
  /** Calls that started in this step (sent and started, or started after the one before them). */
  started: number[];
  pingId: number;
  checking: boolean;
  spawned: boolean;
  next: WorkerSnapshot;
}

/** The machine's actions that act on the process, as the real transport sees them. */
const EFFECTS: Record<string, string> = {
  'send cancel': 'frame:cancel',
  'send credit': 'frame:credit',
  'send exit': 'frame:exit',
  'send SIGTERM': 'kill:SIGTERM',
  'send SIGKILL': 'kill:SIGKILL',
};

/** The SIGKILL the process actor's cleanup sends when the worker leaves `alive` before the exit. */
const CLEANUP_KILL = 'kill:SIGKILL';

/** An emitted event as the steps record it. */
export function emittedName(event: { type: string; gone?: boolean }): string {
  return event.type === 'worker.bounced' && event.gone ? 'worker.bounced(gone)' : event.type;
}

function flightsOf(snapshot: WorkerSnapshot): FlightView[] {
  return [...snapshot.context.flights.values()].map((f) => ({
    id: f.call.id,
    started: f.started,
    cancelled: f.cancelled,
  }));
}

export interface Replay {
  steps: ReplayStep[];
  stubs: Stubs;
  final: WorkerSnapshot;
}

/** The paths of one worker configuration, and what the machine does along them. */
export class WorkerModel {
  /** The stubs all generated paths share (their recordings show the traversal ran the actions). */
  readonly traversalStubs = new Stubs();

  constructor(readonly config: ModelConfig) {}

  input(stubs: Stubs): WorkerInput {
    return modelInput(stubs, this.config);
  }

  /** Shortest paths to every transition of the worker machine in this configuration. */
  generatePaths(): WorkerPath[] {
    return getShortestPaths(workerMachine, {
      input: this.input(this.traversalStubs),
      events: (snapshot) => this.samples(snapshot, this.traversalStubs),
      ...traversal,
    });
  }

  /** The samples of this configuration (see {@link samples}, {@link ModelConfig.events}). */
  samples(snapshot: WorkerSnapshot, stubs: Stubs): SampleEvent[] {
    const all = samples(snapshot, stubs);
    const keep = this.config.events;
    return keep ? all.filter((event) => keep(event, snapshot)) : all;
  }

  /**
   * The snapshot a path really ends in, its events taken again from the initial state.
   *
   * A path's `state` (and its steps' states) are not always that one: a vertex stands for a
   * transition, not for the whole context, and xstate/graph keeps one snapshot per vertex, from
   * whichever path reached it last. Two paths reaching `killing --process.failed--> killing` with
   * different recorded endings share that vertex, so the snapshot of one may carry the other's
   * ending. The events of a path are its own.
   */
  endState(path: WorkerPath): WorkerSnapshot {
    let snapshot = getInitialSnapshot(workerMachine, this.input(this.traversalStubs));
    for (const { event } of transitionsOf(path)) {
      snapshot = getNextSnapshot(workerMachine, snapshot, event);
    }
    return snapshot;
  }

  /**
   * Appends one event to a path, with xstate/graph: the event is taken from the samples of the
   * path's last state by its label, so its guard variant is evaluated in that state's context.
   */
  extendPath(head: WorkerPath, eventLabel: string): WorkerPath | null {
    const state = this.endState(head);
    const event = this.samples(state, this.traversalStubs).find((e) => label(e) === eventLabel);
    if (!event) return null;
    // (getPathsFromEvents' generics do not infer a machine with emitted events: give them.)
    const logic = workerMachine as unknown as ActorLogic<WorkerSnapshot, WorkerEvent, WorkerInput>;
    const [tail] = getPathsFromEvents(logic, [event], {
      fromState: state,
      input: this.input(this.traversalStubs),
      ...traversal,
    });
    return tail ? joinPaths({ ...head, state }, tail) : null;
  }

  /** Replays a path with fresh stubs: what the machine does at each step. */
  replay(path: WorkerPath): Replay {
    const stubs = new Stubs();
    let snapshot = getInitialSnapshot(workerMachine, this.input(stubs));
    const steps: ReplayStep[] = [];
    transitionsOf(path).forEach((t, index) => {
      const event = this.samples(snapshot, stubs).find((e) => label(e) === t.label);
      if (!event) throw new Error(`replay: no sample '${t.label}' in ${stateKey(snapshot)}`);
      const written = stubs.transport.sent.length;
      const startedBefore = stubs.source.started.length;
      const micro = getMicrosteps(workerMachine, snapshot, event);
      const next = micro.length > 0 ? micro[micro.length - 1]![0] : snapshot;
      const to = stateKey(next);
      if (to !== stateKey(t.to)) {
        throw new Error(`replay: '${t.label}' reached ${to}, the path says ${stateKey(t.to)}`);
      }
      // Frames written by assign actions (`start call`, `send ping`: run by the replay itself),
      // then the effects of the other actions (returned by getMicrosteps, not run).
      const effects = [
        ...stubs.transport.sent
          .slice(written)
          .map((frame) => `frame:${JSON.parse(frame.subarray(4).toString('utf8')).t}`),
        ...micro.flatMap(([, actions]) =>
          actions.map((a) => EFFECTS[a.type]).filter((e): e is string => e !== undefined),
        ),
      ];
      // Leaving `alive` stops the process actor, whose cleanup SIGKILLs a process that has not
      // exited; a spawn that threw (process.failed before the spawn was reported: while
      // spawning, or killing after a stop) left none. Otherwise the process exists even if the
      // model never saw its spawn (a stop before it): the actor spawns as it starts.
      const from = valueName(snapshot.value);
      const toValue = valueName(next.value);
      const spawnThrew = event.type === 'process.failed' && snapshot.context.transport === null;
      const cleanupKill =
        from.startsWith('alive.') &&
        !toValue.startsWith('alive.') &&
        event.type !== 'process.exited' &&
        !spawnThrew;
      const before = flightsOf(snapshot);
      const after = flightsOf(next);
      const id = idOf(event);
      const target = CALL_EVENTS.has(event.type) && before.some((f) => f.id === id) ? id! : null;
      const started = [
        ...(event.type === 'call.start' && after.find((f) => f.id === event.call.id)?.started
          ? [event.call.id]
          : []),
        ...stubs.source.started.slice(startedBefore),
      ];
      steps.push({
        index,
        label: t.label,
        event,
        from: fullKey(snapshot),
        to: fullKey(next),
        micro: micro.map(([s]) => valueName(s.value)),
        emitted: micro.flatMap(([, actions]) =>
          actions
            .filter((a) => (a.type as string) === 'xstate.emit')
            .map((a) =>
              emittedName(
                (a.params as unknown as { event: { type: string; gone?: boolean } }).event,
              ),
            ),
        ),
        // Actions talk to `context.transport`, which is null until the spawn is reported.
        effects: [
          ...(next.context.transport === null ? [] : effects),
          ...(cleanupKill ? [CLEANUP_KILL] : []),
        ],
        actions: micro.flatMap(([, actions]) =>
          actions.map((a) => a.type as string).filter((t) => !t.startsWith('xstate.')),
        ),
        before,
        after,
        target,
        started,
        pingId: snapshot.context.pingId,
        checking: snapshot.context.checking,
        spawned: snapshot.context.transport !== null,
        next,
      });
      snapshot = next;
    });
    return { steps, stubs, final: snapshot };
  }
}

/** The state node ids a set of paths goes through, transient states (microsteps) included. */
export function statesCovered(model: WorkerModel, paths: WorkerPath[]): Set<string> {
  const ids = new Set<string>(['worker']);
  for (const path of paths) {
    for (const id of activeIds(path.steps[0]!.state.value)) ids.add(id);
    for (const step of model.replay(path).steps) {
      for (const micro of step.micro) {
        // valueName -> value: `alive.ready` is {alive: 'ready'}.
        let id = 'worker';
        for (const part of micro.split('.')) {
          id = `${id}.${part}`;
          ids.add(id);
        }
      }
    }
  }
  return ids;
}
