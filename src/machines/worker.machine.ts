import {
  type ActorRefFrom,
  assign,
  emit,
  enqueueActions,
  fromCallback,
  raise,
  setup,
} from 'xstate';
import {
  ProtocolError,
  type PyvisorError,
  WorkerCrashedError,
  WorkerInitError,
} from '../errors.js';
import {
  type ErrMessage,
  encodeMessage,
  type InitErrorMessage,
  type PythonMessage,
  type ReadyMessage,
} from '../protocol/index.js';
import { errorFromReply } from '../protocol/reply-errors.js';
import type {
  ProcessExit,
  SpawnSpec,
  SpawnTransport,
  WorkerTransport,
} from '../transport/transport.js';

/**
 * What the worker needs of a call. The pool's `PendingCall` implements it; tests can pass any
 * object with this shape.
 */
export interface WorkerCall {
  readonly id: number;
  readonly fn: string;
  /** The encoded `call` frame (with its attachment frames, if any), ready to write. */
  readonly frame: Buffer | readonly Buffer[];
  readonly stream: boolean;
  readonly settled: boolean;
  dispatched(
    workerId: number,
    port: { grantCredit(callId: number, n: number): void },
    pid: number | null,
  ): void;
  resolve(value: unknown): void;
  reject(error: unknown): void;
  item(value: unknown): void;
  end(): void;
}

/**
 * Where a busy worker finds its next call when it finishes one (the pool's checkout queue). With
 * it, a worker under load goes from one call to the next in the reply's event, without passing
 * through `ready`; without it (or when nothing waits), it says that a place is free.
 */
export interface CallSource {
  /** A call is waiting that this worker may take now. Must not change anything. */
  waiting(workerId: number, generation: number): boolean;
  /** Takes the call `waiting` saw; called right after it returned true. */
  take(workerId: number, generation: number): WorkerCall | undefined;
  /**
   * A call handed over early (pipelining: it waited in the process behind the running call)
   * has started, now that the call before it finished.
   */
  started?(workerId: number, generation: number, call: WorkerCall): void;
}

/** Why a worker ended; one final state each (`stopped` covers planned stops and recycling). */
export type WorkerExitReason =
  | 'stopped'
  | 'crashed'
  | 'initFailed'
  | 'initTimedOut'
  | 'unresponsive'
  | 'protocolError'
  | 'killed';

/** Why a worker was asked to stop. */
export type StopReason = 'close' | 'recycle' | 'failed';

/** The output of a finished worker machine: process death as data. */
export interface WorkerExit {
  workerId: number;
  generation: number;
  reason: WorkerExitReason;
  /** Why it was stopped, for `stopped` (and for stops during start-up). */
  stopReason: StopReason | null;
  pid: number | null;
  exitCode: number | null;
  signal: NodeJS.Signals | null;
  /** It had reported ready before it ended. */
  wasReady: boolean;
  /** Calls it served. */
  calls: number;
  /**
   * What went wrong: set for every reason but `stopped`, and for a stop during which the transport
   * failed (`process.failed`).
   */
  error: PyvisorError | null;
  /** Last stderr lines. */
  stderr: string;
}

/** Input of {@link workerMachine}. Times in ms. */
export interface WorkerInput {
  workerId: number;
  generation: number;
  spec: SpawnSpec;
  spawn: SpawnTransport;
  initTimeout: number;
  cancelGrace: number;
  healthTimeout: number;
  stopTimeout: number;
  /** Retire (stop gracefully) after this many calls. */
  maxCalls: number;
  /**
   * Calls the worker may hold at once (`concurrency`, plus one when pipelining: a serial worker
   * may be handed its next call while it runs one). Default 1.
   */
  maxInFlight?: number;
  /**
   * The process runs its calls one after another, in the order they were sent (`concurrency` 1).
   * Only the oldest call in flight can have started, so when the process dies the others are
   * handed back (`worker.bounced`) instead of failed: they never ran. Default true.
   */
  serial?: boolean;
  /** The queue to take the next call from when one finishes (see {@link CallSource}). */
  calls?: CallSource;
}

/** Events a worker machine receives. */
export type WorkerEvent =
  // From the process (the invoked transport actor).
  | { type: 'process.spawned'; transport: WorkerTransport }
  | { type: 'process.exited'; exit: ProcessExit }
  | { type: 'process.protocolError'; error: ProtocolError }
  /**
   * The transport threw (the spawn, a `send` or a `kill`), or the process actor failed: the
   * process can no longer be driven. `error` is what was thrown.
   */
  | { type: 'process.failed'; error: unknown }
  | { type: 'python.ready'; message: ReadyMessage }
  | { type: 'python.initError'; message: InitErrorMessage }
  | { type: 'python.ok'; message: { t: 'ok'; id: number; v: unknown } }
  | { type: 'python.item'; message: { t: 'item'; id: number; v: unknown } }
  | { type: 'python.end'; message: { t: 'end'; id: number } }
  | { type: 'python.err'; message: ErrMessage }
  | { type: 'python.pong'; message: { t: 'pong'; id: number } }
  // From the supervisor.
  | { type: 'call.start'; call: WorkerCall }
  | { type: 'call.cancel'; callId: number }
  | { type: 'stream.credit'; callId: number; n: number }
  | { type: 'health.check' }
  | { type: 'worker.stop'; reason: StopReason }
  // Raised by the machine itself, after a delay.
  /** `cancelGrace` ms passed since the cancel of `callId` was sent. */
  | { type: 'cancel.expired'; callId: number }
  /** `healthTimeout` ms passed since the ping of health check `pingId` was sent. */
  | { type: 'health.timeout'; pingId: number }
  | { type: 'worker.kill'; error: PyvisorError };

/**
 * Every event type a worker receives, for tools and model-based tests that need the list at run
 * time (the `Record` makes the compiler check that it is complete).
 */
export const WORKER_EVENT_TYPES = Object.keys({
  'process.spawned': true,
  'process.exited': true,
  'process.protocolError': true,
  'process.failed': true,
  'python.ready': true,
  'python.initError': true,
  'python.ok': true,
  'python.item': true,
  'python.end': true,
  'python.err': true,
  'python.pong': true,
  'call.start': true,
  'call.cancel': true,
  'stream.credit': true,
  'health.check': true,
  'worker.stop': true,
  'worker.kill': true,
  'cancel.expired': true,
  'health.timeout': true,
} satisfies Record<WorkerEvent['type'], true>) as WorkerEvent['type'][];

/** Events a worker emits to whoever listens (the supervisor). */
export type WorkerEmitted =
  | { type: 'worker.ready'; workerId: number; generation: number; info: ReadyMessage }
  /** A place became free (a call finished, or the worker became ready) and it took no call. */
  | { type: 'worker.free'; workerId: number; generation: number; inFlight: number }
  /**
   * A call handed back: the worker could not take it, or it was waiting in a process that is
   * going away (`gone`) and never started.
   */
  | {
      type: 'worker.bounced';
      workerId: number;
      generation: number;
      call: WorkerCall;
      gone: boolean;
    }
  | { type: 'health.failed'; workerId: number; generation: number; pid: number | null };

interface Ending {
  reason: WorkerExitReason;
  error: PyvisorError | null;
}

/** A call the worker sent to its process and that has no terminal reply yet. */
export interface Flight {
  readonly call: WorkerCall;
  /**
   * It runs in the process (or ran). False for a call handed early to a serial worker, which
   * waits in the process until the calls sent before it finish.
   */
  readonly started: boolean;
  /** Its cancel was sent (the caller has its answer): waiting for Python to acknowledge it. */
  readonly cancelled: boolean;
}

/** Calls in flight by id, in the order they were sent (never mutated: replaced on change). */
export type Flights = ReadonlyMap<number, Flight>;

export interface WorkerContext {
  readonly workerId: number;
  readonly generation: number;
  readonly input: WorkerInput;
  /** How many calls it may hold at once (see {@link WorkerInput.maxInFlight}). */
  readonly capacity: number;
  transport: WorkerTransport | null;
  pid: number | null;
  info: ReadyMessage | null;
  flights: Flights;
  calls: number;
  pingId: number;
  /** A health check's ping is out and its pong has not come back. */
  checking: boolean;
  stopReason: StopReason | null;
  ending: Ending | null;
  exit: ProcessExit | null;
  /** Lets a running stream ask for more items without knowing about actors. */
  readonly port: { grantCredit(callId: number, n: number): void };
}

const PYTHON_EVENT = {
  ready: 'python.ready',
  init_error: 'python.initError',
  ok: 'python.ok',
  item: 'python.item',
  end: 'python.end',
  err: 'python.err',
  pong: 'python.pong',
} as const;

// How long to wait for the exit of a SIGKILLed process before giving up on it (a process in
// uninterruptible sleep); the slot is then released anyway.
const KILL_WAIT_MS = 5000;

/** The id of the invoked process actor: its failures arrive as `xstate.error.actor.process`. */
const PROCESS_ACTOR = 'process';

/**
 * Runs the process for as long as the worker is alive; the cleanup kills it (unless it exited).
 *
 * Nothing the transport throws escapes: a spawn that throws, and a `send` or `kill` that throws
 * inside one of the machine's actions, become a `process.failed` event. The machine gets a
 * transport whose `send` and `kill` catch and report (one wrapper per process, none per call), so
 * its actions need no error handling of their own.
 */
const pythonProcess = fromCallback<
  WorkerEvent,
  { spec: SpawnSpec; spawn: SpawnTransport },
  WorkerEvent
>(({ input, sendBack }) => {
  let exited = false;
  let transport: WorkerTransport;
  try {
    transport = input.spawn(input.spec, {
      message(message: PythonMessage) {
        sendBack({ type: PYTHON_EVENT[message.t], message } as WorkerEvent);
      },
      protocolError(error) {
        sendBack({ type: 'process.protocolError', error });
      },
      output() {
        // Output lines are observed by the pool directly on the transport's handlers.
      },
      exit(exit) {
        exited = true;
        sendBack({ type: 'process.exited', exit });
      },
    });
  } catch (error) {
    // Nothing was started (node's spawn throws before it forks, e.g. for a NUL byte in env).
    sendBack({ type: 'process.failed', error });
    return () => {};
  }
  const failed = (error: unknown) => sendBack({ type: 'process.failed', error });
  // The events `failed` sends are queued: the action that called `send` or `kill` finishes first.
  const guarded: WorkerTransport = {
    get pid() {
      return transport.pid;
    },
    send(frame) {
      try {
        transport.send(frame);
      } catch (error) {
        failed(error);
      }
    },
    kill(signal) {
      try {
        transport.kill(signal);
      } catch (error) {
        failed(error);
      }
    },
    outputTail() {
      try {
        return transport.outputTail();
      } catch {
        return '';
      }
    },
  };
  sendBack({ type: 'process.spawned', transport: guarded });
  return () => {
    if (exited) return;
    try {
      transport.kill('SIGKILL');
    } catch {
      // The worker is ending anyway: nothing is left to report the failure to.
    }
  };
});

function tail(context: WorkerContext): string {
  return context.transport?.outputTail() ?? '';
}

/**
 * The process's pid. A transport may learn it after the spawn (a worker forked by a fork server):
 * then it is read from the transport until the worker is ready, and stored from then on.
 */
function pidOf(context: WorkerContext): number | null {
  return context.pid ?? context.transport?.pid ?? null;
}

function facts(context: WorkerContext, exit: ProcessExit | null) {
  return {
    workerId: context.workerId,
    pid: pidOf(context) ?? undefined,
    exitCode: exit?.exitCode ?? null,
    signal: exit?.signal ?? null,
    stderr: tail(context),
  };
}

const NO_FLIGHTS: Flights = new Map();

function idOf(event: WorkerEvent): number | undefined {
  if ('message' in event) return (event.message as { id?: number }).id;
  if ('callId' in event) return event.callId;
  return undefined;
}

function flightOf(context: WorkerContext, event: WorkerEvent): Flight | undefined {
  const id = idOf(event);
  return id === undefined ? undefined : context.flights.get(id);
}

/** Sends `call` to the process and returns the flights with it added. */
function send(context: WorkerContext, flights: Flights, call: WorkerCall): Flights {
  // A serial process runs its calls in the order they were sent: one sent while another is in
  // flight waits there until it finishes.
  const started = context.input.serial === false || flights.size === 0;
  if (started) call.dispatched(context.workerId, context.port, context.pid);
  context.transport!.send(call.frame);
  const next = new Map(flights);
  next.set(call.id, { call, started, cancelled: false });
  return next;
}

/**
 * The flights without `id`. On a serial worker, when nothing started remains, the first call
 * still waiting in the process (and not cancelled: the process drops those) starts now.
 */
function withoutFlight(context: WorkerContext, flights: Flights, id: number): Flights {
  if (flights.size === 1) return NO_FLIGHTS;
  const next = new Map(flights);
  next.delete(id);
  if (context.input.serial === false) return next;
  let waiting: Flight | undefined;
  for (const flight of next.values()) {
    if (flight.started) return next;
    if (!waiting && !flight.cancelled) waiting = flight;
  }
  if (waiting) {
    const call = waiting.call;
    call.dispatched(context.workerId, context.port, context.pid);
    context.input.calls?.started?.(context.workerId, context.generation, call);
    next.set(call.id, { call, started: true, cancelled: false });
  }
  return next;
}

/** The scheduled `cancel.expired` of a call (one per cancelled call, so it is named by its id). */
function cancelTimer(callId: number): string {
  return `cancel.${callId}`;
}

const HEALTH_TIMER = 'health';

/** The error of a worker whose transport threw, or whose process actor failed. */
function transportFailure(context: WorkerContext, cause: unknown): WorkerCrashedError {
  return new WorkerCrashedError(
    facts(context, null),
    `became unusable: its transport failed (${cause instanceof Error ? cause.message : String(cause)})`,
    { cause },
  );
}

/**
 * Ends every call in flight on a worker that is going away. A call that started fails with
 * `error(call)`; one that was still waiting in the process never ran, so it is handed back to be
 * routed again (returned); cancelled calls already have their answer.
 */
function endFlights(context: WorkerContext, error: (call: WorkerCall) => unknown): WorkerCall[] {
  const unstarted: WorkerCall[] = [];
  for (const { call, started, cancelled } of context.flights.values()) {
    if (cancelled) continue;
    if (started) call.reject(error(call));
    else unstarted.push(call);
  }
  return unstarted;
}

/** The part of `enqueueActions`' enqueuer that {@link endWith} uses. */
interface Enqueue {
  assign(patch: Partial<WorkerContext>): void;
  emit(event: WorkerEmitted): void;
}

/** Records how the worker ends, ends its calls in flight and hands back those that never ran. */
function endWith(
  context: WorkerContext,
  enqueue: Enqueue,
  reason: WorkerExitReason,
  error: PyvisorError,
  others: ((call: WorkerCall) => PyvisorError) | null = null,
  extra: Partial<WorkerContext> = {},
): void {
  const unstarted = endFlights(context, others ?? (() => error));
  enqueue.assign({ ...extra, flights: NO_FLIGHTS, ending: { reason, error } });
  for (const call of unstarted) {
    enqueue.emit({
      type: 'worker.bounced',
      workerId: context.workerId,
      generation: context.generation,
      call,
      gone: true,
    });
  }
}

/** Why the other calls of a worker killed for one call's sake fail. */
function collateral(context: WorkerContext, why: string) {
  return (call: WorkerCall) =>
    new WorkerCrashedError(facts(context, null), `was killed while it ran call ${call.id}: ${why}`);
}

// ------------------------------------------------------------------------------------------
// Transitions shared by states that react alike. Each is spread into every state it applies to,
// so that each state still lists every event it can receive.

/** A frame the state does not expect (or undecodable bytes): the worker is killed as broken. */
const PROTOCOL_ERROR = {
  target: '#worker.alive.killing',
  actions: 'end as protocol error',
} as const;

/** {@link PROTOCOL_ERROR} for each of `types`. */
function protocolErrorOn<T extends WorkerEvent['type']>(...types: T[]) {
  return Object.fromEntries(types.map((type) => [type, PROTOCOL_ERROR])) as Record<
    T,
    typeof PROTOCOL_ERROR
  >;
}

/** A call for a worker that cannot take one now: handed back rather than lost. */
const BOUNCE = { actions: 'bounce call' } as const;

/** Killed on the supervisor's word (`worker.kill`): its error ends the worker and its calls. */
const KILL = { target: '#worker.alive.killing', actions: 'end as killed' } as const;

/** Health checks of a ready worker, idle or busy: one ping at a time, answered or killed. */
const HEALTH = {
  'health.check': [
    // One check at a time.
    { guard: 'a check is out' },
    { actions: 'send ping' },
  ],
  'python.pong': [
    { guard: 'pong answers the check', actions: 'end check' },
    // The answer to a check that already passed, or a stale one.
    {},
  ],
  'health.timeout': [
    {
      guard: 'the check timed out',
      target: '#worker.alive.killing',
      actions: ['report health failure', 'end as unresponsive'],
    },
    // A timer of a check that was answered just before it fired.
    {},
  ],
} as const;

/**
 * A terminal reply (`ok`, `err`, `end`) for a call in flight: settle it (or, after its cancel,
 * drop it). The last one out retires the worker when due, else a waiting call takes its place
 * in the same event, else the worker says a place is free. A terminal reply for any other id is
 * a protocol error. Straight transitions, no transient state: this is the per-call hot path.
 */
const TERMINAL_REPLY = [
  {
    guard: 'the last call finished and the worker should retire',
    target: '#worker.alive.stopping',
    actions: ['settle reply', 'note retirement'],
  },
  {
    guard: 'a call finished and another is waiting',
    actions: ['settle reply', 'start waiting call'],
  },
  {
    guard: 'reply is for the last call in flight',
    target: '#worker.alive.ready',
    actions: ['settle reply'],
  },
  {
    guard: 'reply is for a call in flight',
    actions: ['settle reply', 'announce free'],
  },
  PROTOCOL_ERROR,
] as const;

/** How the process of a worker that reported ready ends (ready or busy). */
const READY_ENDINGS = {
  // DOWN: every call in flight fails with ERR_WORKER_CRASHED (or is routed again if it never ran).
  'process.exited': { target: '#worker.crashed', actions: 'end as crashed' },
  // The transport threw: the same, with what it threw as the cause. The process may still run:
  // it is killed, and the slot is released only once it is gone.
  'process.failed': {
    target: '#worker.alive.killing',
    actions: { type: 'end as transport failure', params: { reason: 'crashed' } },
  },
  'process.protocolError': PROTOCOL_ERROR,
  'worker.kill': KILL,
  ...protocolErrorOn('python.ready', 'python.initError'),
} as const;

/** While the process is on its way out (stopping, killing): only its end matters now. */
const ON_THE_WAY_OUT = {
  // Already ending.
  'worker.stop': {},
  'call.start': BOUNCE,
  'call.cancel': {},
  'stream.credit': {},
  'health.check': {},
  // Timers of calls and checks that no longer matter.
  'cancel.expired': {},
  'health.timeout': {},
  // Whatever Python says now no longer matters. A protocol error here is not worth a different
  // ending either.
  'process.protocolError': {},
  'python.ok': {},
  'python.item': {},
  'python.end': {},
  'python.err': {},
  'python.pong': {},
  'python.ready': {},
  'python.initError': {},
} as const;

const ENDINGS = [
  'initFailed',
  'initTimedOut',
  'unresponsive',
  'protocolError',
  'stopped',
  'crashed',
] as const;

/** From `killing` to the final state named by the recorded ending (`killed` otherwise). */
function toFinalState(actions: ('record exit' | 'note transport failure')[]) {
  return [
    ...ENDINGS.map((reason) => ({
      guard: { type: 'ending is' as const, params: { reason } },
      target: `#worker.${reason}`,
      actions,
    })),
    { target: '#worker.killed', actions },
  ];
}

/**
 * One Python worker process, from spawn to exit. Every event that can reach a state has an
 * explicit transition there (ignoring is spelled out, with the reason), and every path ends in a
 * final state whose output says how the process ended. Calls in flight are data (`flights`, at
 * most `capacity`): `ready` holds none, `busy` at least one.
 */
export const workerMachine = setup({
  types: {
    context: {} as WorkerContext,
    events: {} as WorkerEvent,
    input: {} as WorkerInput,
    output: {} as WorkerExit,
    emitted: {} as WorkerEmitted,
  },
  actors: { 'python process': pythonProcess },
  delays: {
    initTimeout: ({ context }) => context.input.initTimeout,
    cancelGrace: ({ context }) => context.input.cancelGrace,
    healthTimeout: ({ context }) => context.input.healthTimeout,
    stopTimeout: ({ context }) => context.input.stopTimeout,
    killWait: KILL_WAIT_MS,
  },
  guards: {
    'reply is for a call in flight': ({ context, event }) => flightOf(context, event) !== undefined,
    'reply is for the last call in flight': ({ context, event }) =>
      context.flights.size === 1 && flightOf(context, event) !== undefined,
    'cancel is for a running call': ({ context, event }) =>
      flightOf(context, event)?.cancelled === false,
    'credit is for a running call': ({ context, event }) =>
      flightOf(context, event)?.cancelled === false,
    'the cancel expired for a call in flight': ({ context, event }) =>
      flightOf(context, event) !== undefined,
    'there is room': ({ context }) => context.flights.size < context.capacity,
    'a check is out': ({ context }) => context.checking,
    'pong answers the check': ({ context, event }) =>
      context.checking && event.type === 'python.pong' && event.message.id === context.pingId,
    'the check timed out': ({ context, event }) =>
      context.checking && event.type === 'health.timeout' && event.pingId === context.pingId,
    // Single guards rather than `and([...])`: these run on every reply.
    'the last call finished and the worker should retire': ({ context, event }) =>
      context.flights.size === 1 &&
      flightOf(context, event) !== undefined &&
      (context.stopReason !== null || context.calls >= context.input.maxCalls),
    // Asks the router (without changing anything) whether a call waits for the place just freed.
    'a call finished and another is waiting': ({ context, event }) =>
      context.stopReason === null &&
      flightOf(context, event) !== undefined &&
      (context.input.calls?.waiting(context.workerId, context.generation) ?? false),
    'ending is': ({ context }, params: { reason: WorkerExitReason }) =>
      context.ending?.reason === params.reason,
    'a process was spawned': ({ context }) => context.transport !== null,
  },
  actions: {
    'store transport': assign(({ event }) => {
      if (event.type !== 'process.spawned') return {};
      return { transport: event.transport, pid: event.transport.pid ?? null };
    }),
    'store ready info': assign(({ context, event }) =>
      event.type === 'python.ready'
        ? { info: event.message, pid: pidOf(context) ?? event.message.pid }
        : {},
    ),
    'announce ready': emit(({ context }) => ({
      type: 'worker.ready' as const,
      workerId: context.workerId,
      generation: context.generation,
      info: context.info!,
    })),
    'announce free': emit(({ context }) => ({
      type: 'worker.free' as const,
      workerId: context.workerId,
      generation: context.generation,
      inFlight: context.flights.size,
    })),
    'bounce call': emit(({ context, event }) => ({
      type: 'worker.bounced' as const,
      workerId: context.workerId,
      generation: context.generation,
      call: (event as Extract<WorkerEvent, { type: 'call.start' }>).call,
      gone: false,
    })),
    'start call': assign(({ context, event }) => {
      if (event.type !== 'call.start') return {};
      return { flights: send(context, context.flights, event.call), calls: context.calls + 1 };
    }),
    'start waiting call': assign(({ context }) => {
      // The guard just saw it, in the same synchronous step, so it is there.
      const call = context.input.calls!.take(context.workerId, context.generation)!;
      return { flights: send(context, context.flights, call), calls: context.calls + 1 };
    }),
    'settle reply': assign(({ context, event, self, system }) => {
      const id = idOf(event)!;
      const flight = context.flights.get(id);
      if (!flight) return {};
      if (flight.cancelled) {
        // The cancel was acknowledged in time (the caller already has its answer): its timer goes.
        // The scheduler directly, not the `cancel` action: every reply runs this, and a second
        // action (or enqueueActions) costs several µs per call.
        system.scheduler.cancel(self, cancelTimer(id));
      } else {
        const call = flight.call;
        if (event.type === 'python.ok') call.resolve(event.message.v);
        else if (event.type === 'python.end') call.end();
        else if (event.type === 'python.err') call.reject(errorFromReply(event.message, call.fn));
      }
      return { flights: withoutFlight(context, context.flights, id) };
    }),
    'deliver item': ({ context, event }) => {
      if (event.type !== 'python.item') return;
      const flight = context.flights.get(event.message.id);
      // Items already in flight when a cancel was sent are dropped.
      if (flight && !flight.cancelled) flight.call.item(event.message.v);
    },
    'send cancel': enqueueActions(({ context, event, enqueue }) => {
      if (event.type !== 'call.cancel') return;
      const flight = context.flights.get(event.callId);
      if (!flight) return;
      context.transport?.send(encodeMessage({ t: 'cancel', id: event.callId }));
      const flights = new Map(context.flights);
      flights.set(event.callId, { ...flight, cancelled: true });
      enqueue.assign({ flights });
      enqueue.raise(
        { type: 'cancel.expired', callId: event.callId },
        { delay: 'cancelGrace', id: cancelTimer(event.callId) },
      );
    }),
    'send credit': ({ context, event }) => {
      if (event.type === 'stream.credit') {
        context.transport?.send(encodeMessage({ t: 'credit', id: event.callId, n: event.n }));
      }
    },
    'send ping': enqueueActions(({ context, enqueue }) => {
      const pingId = context.pingId + 1;
      context.transport?.send(encodeMessage({ t: 'ping', id: pingId }));
      enqueue.assign({ pingId, checking: true });
      enqueue.raise(
        { type: 'health.timeout', pingId },
        { delay: 'healthTimeout', id: HEALTH_TIMER },
      );
    }),
    'end check': enqueueActions(({ enqueue }) => {
      enqueue.assign({ checking: false });
      enqueue.cancel(HEALTH_TIMER);
    }),
    'send exit': ({ context }) => {
      context.transport?.send(encodeMessage({ t: 'exit' }));
    },
    'send SIGTERM': ({ context }) => context.transport?.kill('SIGTERM'),
    'send SIGKILL': ({ context }) => context.transport?.kill('SIGKILL'),
    'remember stop': assign(({ context, event }) =>
      event.type === 'worker.stop' && context.stopReason === null
        ? { stopReason: event.reason }
        : {},
    ),
    'note retirement': assign(({ context }) => ({ stopReason: context.stopReason ?? 'recycle' })),
    'record exit': assign(({ event }) =>
      event.type === 'process.exited' ? { exit: event.exit } : {},
    ),
    'end as': assign((_, params: { reason: WorkerExitReason }) => ({
      ending: { reason: params.reason, error: null },
    })),
    'end as crashed': enqueueActions(({ context, event, enqueue }) => {
      const exit = event.type === 'process.exited' ? event.exit : null;
      const error = new WorkerCrashedError(facts(context, exit));
      endWith(context, enqueue, 'crashed', error, null, { exit });
    }),
    'end as crashed during start': assign(({ context, event }) => {
      const exit = event.type === 'process.exited' ? event.exit : null;
      const reason = exit?.spawnError ? 'spawn' : 'crash';
      const error = new WorkerInitError(reason, facts(context, exit), { cause: exit?.spawnError });
      return { exit, ending: { reason: 'initFailed' as const, error } };
    }),
    'end as transport failure': enqueueActions(
      ({ context, event, enqueue }, params: { reason: 'initFailed' | 'crashed' | 'stopped' }) => {
        const cause = event.type === 'process.failed' ? event.error : undefined;
        const error =
          params.reason === 'initFailed'
            ? new WorkerInitError('spawn', facts(context, null), { cause })
            : transportFailure(context, cause);
        endWith(context, enqueue, params.reason, error);
      },
    ),
    'note transport failure': assign(({ context, event }) => {
      // The recorded ending stands (the first reason wins); the failure is its error if it had none.
      const ending = context.ending;
      if (ending === null || ending.error !== null) return {};
      const cause = event.type === 'process.failed' ? event.error : undefined;
      return { ending: { reason: ending.reason, error: transportFailure(context, cause) } };
    }),
    // The process actor failed in a way it did not report itself: the same as a process.failed.
    'report process failure': raise(({ event }) => ({
      type: 'process.failed' as const,
      error: (event as { error?: unknown }).error,
    })),
    'end as init error': assign(({ context, event }) => {
      if (event.type !== 'python.initError') return {};
      const m = event.message;
      const error = new WorkerInitError('error', {
        ...facts(context, null),
        pythonType: m.type,
        pythonMessage: m.message,
        pythonTraceback: m.traceback,
      });
      return { ending: { reason: 'initFailed' as const, error } };
    }),
    'end as init timeout': assign(({ context }) => ({
      ending: {
        reason: 'initTimedOut' as const,
        error: new WorkerInitError('timeout', facts(context, null)),
      },
    })),
    'end as unresponsive': enqueueActions(({ context, enqueue }) => {
      const error = new WorkerCrashedError(
        facts(context, null),
        `did not answer a health check within ${context.input.healthTimeout} ms`,
      );
      endWith(context, enqueue, 'unresponsive', error);
    }),
    'end as killed': enqueueActions(({ context, event, enqueue }) => {
      if (event.type === 'worker.kill') {
        endWith(context, enqueue, 'killed', event.error);
        return;
      }
      const callId = event.type === 'cancel.expired' ? event.callId : -1;
      const why = `call ${callId} did not stop within ${context.input.cancelGrace} ms of its cancel (cancelGrace)`;
      const error = new WorkerCrashedError(facts(context, null), why);
      endWith(context, enqueue, 'killed', error, collateral(context, why));
    }),
    'end as protocol error': enqueueActions(({ context, event, enqueue }) => {
      let error: ProtocolError;
      if (event.type === 'process.protocolError') {
        error = event.error;
      } else {
        const message = 'message' in event ? (event.message as { t?: string; id?: number }) : {};
        error = new ProtocolError(
          `Worker ${context.workerId} sent an unexpected '${message.t}' frame` +
            (message.id !== undefined ? ` (id ${message.id})` : ''),
        );
      }
      endWith(context, enqueue, 'protocolError', error);
    }),
    'report health failure': emit(({ context }) => ({
      type: 'health.failed' as const,
      workerId: context.workerId,
      generation: context.generation,
      pid: context.pid,
    })),
  },
}).createMachine({
  id: 'worker',
  context: ({ input, self }) => ({
    workerId: input.workerId,
    generation: input.generation,
    input,
    capacity: Math.max(1, input.maxInFlight ?? 1),
    transport: null,
    pid: null,
    info: null,
    flights: NO_FLIGHTS,
    calls: 0,
    pingId: 0,
    checking: false,
    stopReason: null,
    ending: null,
    exit: null,
    port: { grantCredit: (callId, n) => self.send({ type: 'stream.credit', callId, n }) },
  }),
  initial: 'alive',
  output: ({ context }) => ({
    workerId: context.workerId,
    generation: context.generation,
    reason: context.ending?.reason ?? 'stopped',
    stopReason: context.stopReason,
    pid: pidOf(context),
    exitCode: context.exit?.exitCode ?? null,
    signal: context.exit?.signal ?? null,
    wasReady: context.info !== null,
    calls: context.calls,
    error: context.ending?.error ?? null,
    stderr: tail(context),
  }),
  states: {
    alive: {
      invoke: {
        id: PROCESS_ACTOR,
        src: 'python process',
        input: ({ context }) => ({ spec: context.input.spec, spawn: context.input.spawn }),
        // Whatever else makes the process actor fail is handled as a process.failed, state by state.
        onError: { actions: 'report process failure' },
      },
      initial: 'starting',
      states: {
        starting: {
          initial: 'spawning',
          after: {
            initTimeout: { target: 'killing', actions: 'end as init timeout' },
          },
          on: {
            // DOWN while waiting for the init reply (or before the spawn was reported).
            'process.exited': {
              target: '#worker.initFailed',
              actions: 'end as crashed during start',
            },
            // The spawn threw (nothing was started), or the process actor failed.
            'process.failed': {
              target: '#worker.initFailed',
              actions: { type: 'end as transport failure', params: { reason: 'initFailed' } },
            },
            // Cancel during start-up: nothing to finish, end the process at once.
            'worker.stop': {
              target: 'killing',
              actions: ['remember stop', { type: 'end as', params: { reason: 'stopped' } }],
            },
            'worker.kill': KILL,
            // Never dispatched to a starting worker.
            'call.start': BOUNCE,
            // No call runs yet, so a cancel or credit cannot be for this worker, and no cancel
            // or check has a timer.
            'call.cancel': {},
            'stream.credit': {},
            'cancel.expired': {},
            'health.timeout': {},
            // Only ready workers are health-checked.
            'health.check': {},
          },
          states: {
            spawning: {
              on: {
                'process.spawned': { target: 'initializing', actions: 'store transport' },
              },
            },
            initializing: {
              on: {
                'python.ready': {
                  target: '#worker.alive.ready',
                  actions: ['store ready info', 'announce ready'],
                },
                'python.initError': {
                  target: '#worker.alive.killing',
                  actions: 'end as init error',
                },
                ...protocolErrorOn(
                  'process.protocolError',
                  'python.ok',
                  'python.item',
                  'python.end',
                  'python.err',
                  'python.pong',
                ),
              },
            },
          },
        },
        ready: {
          // No call in flight.
          entry: 'announce free',
          on: {
            ...READY_ENDINGS,
            ...HEALTH,
            'call.start': { target: 'busy', actions: 'start call' },
            'worker.stop': { target: 'stopping', actions: 'remember stop' },
            // A cancel or credit for a call that already finished: nothing to do.
            'call.cancel': {},
            'stream.credit': {},
            // The timer of a cancelled call that was acknowledged just before it fired.
            'cancel.expired': {},
            // No call is in flight, so any reply is for an unknown id.
            ...protocolErrorOn('python.ok', 'python.item', 'python.end', 'python.err'),
          },
        },
        busy: {
          // At least one call in flight.
          on: {
            ...READY_ENDINGS,
            ...HEALTH,
            'call.start': [
              { guard: 'there is room', actions: 'start call' },
              // The router never sends more than a worker holds; if it did, the call goes back.
              BOUNCE,
            ],
            // Never mid-call: finish the calls in flight, then stop.
            'worker.stop': { actions: 'remember stop' },
            'python.ok': TERMINAL_REPLY,
            'python.err': TERMINAL_REPLY,
            'python.end': TERMINAL_REPLY,
            'python.item': [
              { guard: 'reply is for a call in flight', actions: 'deliver item' },
              PROTOCOL_ERROR,
            ],
            'call.cancel': [
              // The caller was already told; Python acknowledges the cancel with a reply.
              { guard: 'cancel is for a running call', actions: 'send cancel' },
              // A call that finished earlier, or one already cancelled (timeout and abort
              // racing): nothing more to do.
              {},
            ],
            'stream.credit': [
              { guard: 'credit is for a running call', actions: 'send credit' },
              // Credit for a stream that ended or was abandoned.
              {},
            ],
            'cancel.expired': [
              // The handler ignored its cancel: the process is killed, and the other calls in
              // flight on it fail (those that never started go elsewhere).
              {
                guard: 'the cancel expired for a call in flight',
                target: 'killing',
                actions: 'end as killed',
              },
              // It was acknowledged just before the timer fired.
              {},
            ],
          },
        },
        stopping: {
          // Graceful: ask, then SIGTERM, then SIGKILL. Only entered with no call in flight.
          initial: 'asking',
          states: {
            asking: {
              entry: 'send exit',
              after: { stopTimeout: 'terminating' },
            },
            terminating: {
              entry: 'send SIGTERM',
              after: {
                stopTimeout: {
                  target: '#worker.alive.killing',
                  actions: { type: 'end as', params: { reason: 'stopped' } },
                },
              },
            },
          },
          on: {
            ...ON_THE_WAY_OUT,
            'process.exited': { target: '#worker.stopped', actions: 'record exit' },
            // The exit frame or SIGTERM could not be sent: kill it, and end once it is gone.
            'process.failed': {
              target: 'killing',
              actions: { type: 'end as transport failure', params: { reason: 'stopped' } },
            },
            'worker.kill': {
              target: 'killing',
              actions: { type: 'end as', params: { reason: 'stopped' } },
            },
          },
        },
        killing: {
          // The reason is in context.ending; wait for the process to be gone so the output has its
          // exit code and the slot never holds two processes.
          entry: 'send SIGKILL',
          // A process that survives SIGKILL this long (uninterruptible sleep) is given up on; the
          // final state still follows the recorded reason.
          after: { killWait: toFinalState([]) },
          on: {
            ...ON_THE_WAY_OUT,
            'process.exited': toFinalState(['record exit']),
            'process.failed': [
              // SIGKILL could not be sent (or the process actor failed): keep waiting for the
              // exit, up to killWait, as for a process that survives SIGKILL (the cleanup tries
              // again).
              { guard: 'a process was spawned', actions: 'note transport failure' },
              // Stopped before the spawn was reported, and the spawn threw (or the process actor
              // failed before it): nothing was started, so no exit will come. End now.
              ...toFinalState(['note transport failure']),
            ],
            'worker.kill': {},
            // Stopped before the spawn was reported: kill what was just started.
            'process.spawned': { actions: ['store transport', 'send SIGKILL'] },
          },
        },
      },
    },
    stopped: { type: 'final' },
    crashed: { type: 'final' },
    initFailed: { type: 'final' },
    initTimedOut: { type: 'final' },
    unresponsive: { type: 'final' },
    protocolError: { type: 'final' },
    killed: { type: 'final' },
  },
});

/** A running worker actor. */
export type WorkerActor = ActorRefFrom<typeof workerMachine>;
