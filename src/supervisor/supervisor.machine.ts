import {
  type ActorRefFrom,
  type AnyActorRef,
  enqueueActions,
  fromCallback,
  fromPromise,
  setup,
} from 'xstate';
import {
  CircuitOpenError,
  PoolClosedError,
  PoolFailedError,
  type PyvisorError,
} from '../errors.js';
import {
  type CircuitActor,
  type CircuitEmitted,
  type CircuitEvent,
  type CircuitState,
  circuitMachine,
} from '../machines/circuit.machine.js';
import {
  type WorkerActor,
  type WorkerEmitted,
  type WorkerEvent,
  type WorkerExit,
  type WorkerInput,
  workerMachine,
} from '../machines/worker.machine.js';
import type { PendingCall } from '../pool/call.js';
import type { NormalizedOptions } from '../pool/options.js';
import type { ReadyMessage } from '../protocol/index.js';
import { workerSpawnSpec } from '../transport/spawn-spec.js';
import type { SpawnSpec, SpawnTransport } from '../transport/transport.js';
import { backoffDelay } from './backoff.js';
import { CheckoutQueue } from './checkout-queue.js';
import { RestartIntensity } from './restart-intensity.js';
import {
  callWaitingFor,
  circuitBlocksCalls,
  now,
  type RoutingEffects,
  rejectQueued,
  retireIfDue,
  routeCall,
  serve,
  serveAll,
  stopWorker,
  takeWaitingCall,
} from './routing.js';
import { SessionTable } from './sessions.js';

/** One worker position in the pool; its process is replaced, the slot stays. */
export interface Slot {
  readonly index: number;
  /** Bumped for every process started in the slot. */
  generation: number;
  ref: WorkerActor | null;
  pid: number | null;
  /** The current process reported ready. */
  ready: boolean;
  startedAt: number;
  idleSince: number;
  /** Processes started after the first. */
  restarts: number;
  /** Calls dispatched to this slot, all processes together. */
  calls: number;
  /** Calls dispatched to the slot's current process (for `recycle.maxCalls`). */
  processCalls: number;
  /** Consecutive start failures, for the backoff exponent. */
  failures: number;
  /** A restart timer is running. */
  restartPending: boolean;
  /** Waiting for the circuit breaker to allow a start. */
  blocked: boolean;
  lastExit: WorkerExit | null;
}

/** Input of {@link supervisorMachine}. */
export interface SupervisorInput {
  options: NormalizedOptions;
  spawn: SpawnTransport;
  /** `signal` aborts when the pool no longer waits (it closed while resolving). */
  resolvePython: (
    python: string,
    env: NodeJS.ProcessEnv,
    cwd: string,
    signal?: AbortSignal,
  ) => Promise<string>;
  /** A line of a worker's stdout or stderr. */
  onOutput: (workerId: number, stream: 'stdout' | 'stderr', line: string) => void;
  /** A worker actor was spawned (the pool watches its state). */
  onWorkerSpawned: (workerId: number, ref: WorkerActor) => void;
  /** What routing emits when it runs outside the machine (see `submitCall`). */
  onRoutingEvent: (event: SupervisorEmitted) => void;
}

export interface SupervisorContext {
  readonly options: NormalizedOptions;
  readonly input: SupervisorInput;
  spec: SpawnSpec | null;
  readonly slots: Slot[];
  /** Slots whose worker is idle, in the order they became idle. */
  readonly idle: Set<number>;
  readonly queue: CheckoutQueue<PendingCall>;
  readonly sessions: SessionTable;
  readonly intensity: RestartIntensity;
  readonly circuit: CircuitActor;
  /**
   * Calls are routed synchronously, outside the machine, while this is true (`up`); once the pool
   * fails or closes, every call and idle worker goes through the machine's events again.
   */
  routing: boolean;
  /** The effects of routing done outside the machine: sent and emitted at once. */
  readonly direct: RoutingEffects;
  circuitState: CircuitState;
  /** The slot whose start is the half-open probe. */
  probe: number | null;
  readyCount: number;
  lastStartError: PyvisorError | null;
  failure: PyvisorError | null;
}

type WorkerDone = { type: `xstate.done.actor.${string}`; output: WorkerExit };

/** Events the supervisor receives. */
export type SupervisorEvent =
  | { type: 'call.requested'; call: PendingCall }
  | { type: 'call.abandoned'; call: PendingCall }
  | { type: 'pool.close'; timeout: number }
  | { type: 'restart.due'; slot: number }
  | { type: 'close.deadline' }
  | { type: 'maintenance.tick' }
  | WorkerEmitted
  | CircuitEmitted
  | WorkerDone;

/** Events the supervisor emits for the pool's event emitter. */
export type SupervisorEmitted =
  | { type: 'pool.ready' }
  | { type: 'pool.failed'; error: PyvisorError }
  | { type: 'pool.circuitOpen'; error: CircuitOpenError }
  | { type: 'worker.exited'; exit: WorkerExit }
  | {
      type: 'worker.started';
      workerId: number;
      pid: number | null;
      initMs: number;
      info: ReadyMessage;
    }
  | {
      type: 'worker.restarting';
      workerId: number;
      delay: number;
      reason: WorkerExit['reason'] | 'recycled';
      exit: WorkerExit;
    }
  | { type: 'worker.recycling'; workerId: number; pid: number | null; why: 'maxCalls' | 'maxAge' }
  | {
      type: 'session.moved';
      session: string;
      from: { workerId: number; generation: number };
      to: { workerId: number; generation: number };
    }
  | { type: 'session.expired'; session: string }
  | { type: 'circuit.changed'; state: CircuitState; error: PyvisorError | null }
  | { type: 'health.failed'; workerId: number; pid: number | null };

/**
 * The few things supervisor helpers enqueue. XState's own enqueue type is tied to the machine
 * being defined, so the helpers below take this narrow view of it (see `effects`).
 */
interface Enqueue {
  sendTo(ref: AnyActorRef, event: WorkerEvent | CircuitEvent): void;
  emit(event: SupervisorEmitted): void;
  raise(event: SupervisorEvent, options: { delay: number; id: string }): void;
  cancel(id: string): void;
  /** Removes a finished child from the supervisor (it would otherwise stay in `children`). */
  stopChild(ref: AnyActorRef): void;
  /** Runs `build` with XState's `spawn`, so the child joins the supervisor's actor system. */
  spawn(build: (spawn: SpawnFn, self: AnyActorRef) => void): void;
}
type SpawnFn = (
  logic: typeof workerMachine,
  options: { id: string; input: WorkerInput },
) => AnyActorRef;

interface LooseEnqueue {
  sendTo(ref: AnyActorRef, event: object): void;
  emit(event: object): void;
  raise(event: object, options: object): void;
  cancel(id: string): void;
  stopChild(ref: AnyActorRef): void;
  assign(fn: (args: { spawn: SpawnFn; self: AnyActorRef }) => object): void;
}

function effects(enqueue: unknown): Enqueue {
  const e = enqueue as LooseEnqueue;
  return {
    sendTo: (ref, event) => e.sendTo(ref, event),
    emit: (event) => e.emit(event),
    raise: (event, options) => e.raise(event, options),
    cancel: (id) => e.cancel(id),
    stopChild: (ref) => e.stopChild(ref),
    spawn: (build) =>
      e.assign(({ spawn, self }) => {
        build(spawn, self);
        return {};
      }),
  };
}

// XState aborts `signal` when the actor is stopped, i.e. when the pool closes while resolving.
const resolvePythonActor = fromPromise<string, SupervisorInput>(({ input, signal }) =>
  input.resolvePython(input.options.python, input.options.env, input.options.cwd, signal),
);

// Timers here only pace health checks and recycling; they must never keep Node alive on their own.
const maintenanceTicker = fromCallback<SupervisorEvent, { interval: number }>(
  ({ sendBack, input }) => {
    const timer = setInterval(() => sendBack({ type: 'maintenance.tick' }), input.interval);
    timer.unref();
    return () => clearInterval(timer);
  },
);

function tickInterval(options: NormalizedOptions): number {
  const candidates = [1000, options.sessionTtl / 2];
  if (options.healthCheck) candidates.push(options.healthCheck.interval);
  if (Number.isFinite(options.recycle.maxAge)) candidates.push(options.recycle.maxAge / 2);
  return Math.max(10, Math.min(...candidates));
}

/** Starts a new process in `slot`. */
function startWorker(context: SupervisorContext, enqueue: Enqueue, slot: Slot): void {
  const { options, input } = context;
  slot.blocked = false;
  slot.restartPending = false;
  if (slot.generation > 0) slot.restarts++;
  slot.generation++;
  slot.processCalls = 0;
  slot.ready = false;
  slot.pid = null;
  slot.startedAt = now();
  const generation = slot.generation;
  const index = slot.index;
  enqueue.spawn((spawn, self) => {
    const spawnTransport: SpawnTransport = (spec, handlers) => {
      const transport = input.spawn(spec, {
        ...handlers,
        output: (stream, line) => input.onOutput(index, stream, line),
      });
      slot.pid = transport.pid ?? null;
      return transport;
    };
    const ref = spawn(workerMachine, {
      id: `worker-${index}-${generation}`,
      input: {
        workerId: index,
        generation,
        spec: context.spec!,
        spawn: spawnTransport,
        initTimeout: options.initTimeout,
        cancelGrace: options.cancelGrace,
        healthTimeout: options.healthCheck ? options.healthCheck.timeout : 0,
        stopTimeout: options.stopTimeout,
        // recycle.maxCalls is applied by the supervisor (see retireIfDue).
        maxCalls: Number.POSITIVE_INFINITY,
        calls: {
          waiting: (_, gen) => {
            const current = (self as SupervisorActor).getSnapshot().context;
            return gen === slot.generation && callWaitingFor(current, slot);
          },
          take: () => {
            const current = (self as SupervisorActor).getSnapshot().context;
            return takeWaitingCall(current, current.direct, slot);
          },
        },
      },
    }) as WorkerActor;
    ref.on('*', (event) => {
      // A worker that became idle takes its next call at once (no supervisor event per call).
      const current = (self as SupervisorActor).getSnapshot().context;
      if (event.type === 'worker.idle' && current.routing) serveIdle(current, event);
      else self.send(event as SupervisorEvent);
    });
    slot.ref = ref;
    input.onWorkerSpawned(index, ref);
  });
}

/** Starts `slot` now if the breaker allows it, else parks it until the breaker changes. */
function startIfAllowed(context: SupervisorContext, enqueue: Enqueue, slot: Slot): void {
  if (context.circuitState === 'closed') {
    startWorker(context, enqueue, slot);
  } else if (context.circuitState === 'halfOpen' && context.probe === null) {
    context.probe = slot.index;
    startWorker(context, enqueue, slot);
  } else {
    slot.blocked = true;
  }
}

function cancelRestarts(context: SupervisorContext, enqueue: Enqueue): void {
  for (const slot of context.slots) {
    if (slot.restartPending) enqueue.cancel(`restart-${slot.index}`);
    slot.restartPending = false;
    slot.blocked = false;
  }
}

/** Bookkeeping for a worker that ended; returns its slot, or undefined for a stale event. */
function releaseSlot(
  context: SupervisorContext,
  enqueue: Enqueue,
  exit: WorkerExit,
): Slot | undefined {
  const slot = context.slots[exit.workerId];
  if (!slot || slot.generation !== exit.generation || !slot.ref) return undefined;
  enqueue.stopChild(slot.ref);
  slot.ref = null;
  slot.pid = null;
  slot.lastExit = exit;
  context.idle.delete(slot.index);
  if (slot.ready) context.readyCount--;
  slot.ready = false;
  // Calls waiting for this worker (sessions) go back to the shared queue.
  context.queue.unpin(slot.index);
  return slot;
}

function isStartFailure(exit: WorkerExit): boolean {
  return !exit.wasReady && exit.reason !== 'stopped' && exit.reason !== 'killed';
}

function isCrash(exit: WorkerExit): boolean {
  return (
    exit.wasReady &&
    (exit.reason === 'crashed' || exit.reason === 'unresponsive' || exit.reason === 'protocolError')
  );
}

function liveSlots(context: SupervisorContext): number {
  let n = 0;
  for (const slot of context.slots) if (slot.ref) n++;
  return n;
}

/**
 * The pool's supervisor: starts every worker eagerly, owns the checkout queue and the session
 * table, restarts dead workers with backoff, bounds restart storms (restart intensity) and
 * consults the circuit breaker before every start.
 */
export const supervisorMachine = setup({
  types: {
    context: {} as SupervisorContext,
    events: {} as SupervisorEvent,
    input: {} as SupervisorInput,
    emitted: {} as SupervisorEmitted,
  },
  actors: {
    'resolve python': resolvePythonActor,
    'maintenance ticker': maintenanceTicker,
    worker: workerMachine,
    circuit: circuitMachine,
  },
  guards: {
    'every worker ready': ({ context, event }) =>
      event.type === 'worker.ready' &&
      context.slots[event.workerId]?.generation === event.generation &&
      context.readyCount + 1 === context.options.size,
    'restart intensity exceeded': ({ context, event }) => {
      const exit = (event as WorkerDone).output;
      const slot = context.slots[exit.workerId];
      return (
        slot?.generation === exit.generation &&
        isCrash(exit) &&
        context.intensity.wouldExceed(now())
      );
    },
    'no worker left': ({ context }) => liveSlots(context) === 0,
  },
  actions: {
    'start python resolution failure': enqueueActions(({ context, event, enqueue: raw }) => {
      const enqueue = effects(raw);
      const cause = (event as { error?: unknown }).error;
      const message = cause instanceof Error ? cause.message : String(cause);
      context.failure = new PoolFailedError(`The pool failed: ${message}`, cause);
      enqueue.emit({ type: 'pool.failed', error: context.failure });
    }),
    'start all workers': enqueueActions(({ context, event, enqueue: raw }) => {
      const enqueue = effects(raw);
      context.spec = workerSpawnSpec(
        context.options,
        (event as unknown as { output: string }).output,
      );
      for (const slot of context.slots) startIfAllowed(context, enqueue, slot);
    }),
    'route call': enqueueActions(({ context, event, enqueue }) => {
      if (event.type === 'call.requested') routeCall(context, effects(enqueue), event.call);
    }),
    'reject call as failed': ({ context, event }) => {
      if (event.type === 'call.requested') {
        event.call.reject(context.failure ?? new PoolFailedError('The pool failed'));
      }
    },
    'reject call as closed': ({ event }) => {
      if (event.type === 'call.requested') event.call.reject(new PoolClosedError());
    },
    'abandon call': enqueueActions(({ context, event, enqueue: raw }) => {
      const enqueue = effects(raw);
      if (event.type !== 'call.abandoned') return;
      const call = event.call;
      if (call.workerId < 0) {
        context.queue.dropped(call);
        return;
      }
      const ref = context.slots[call.workerId]?.ref;
      // The worker ignores a cancel for a call it no longer runs.
      if (ref) enqueue.sendTo(ref, { type: 'call.cancel', callId: call.id } satisfies WorkerEvent);
    }),
    'note worker ready': enqueueActions(({ context, event, enqueue: raw }) => {
      const enqueue = effects(raw);
      if (event.type !== 'worker.ready') return;
      const slot = context.slots[event.workerId];
      if (!slot || slot.generation !== event.generation) return;
      slot.ready = true;
      slot.failures = 0;
      context.readyCount++;
      if (context.probe === slot.index) context.probe = null;
      enqueue.sendTo(context.circuit, { type: 'start.succeeded' });
      enqueue.emit({
        type: 'worker.started',
        workerId: slot.index,
        pid: slot.pid,
        initMs: now() - slot.startedAt,
        info: event.info,
      });
      if (context.readyCount === context.options.size) enqueue.emit({ type: 'pool.ready' });
    }),
    'serve idle worker': enqueueActions(({ context, event, enqueue }) => {
      if (event.type === 'worker.idle') serveIdle(context, event, effects(enqueue));
    }),
    'requeue bounced call': enqueueActions(({ context, event, enqueue: raw }) => {
      const enqueue = effects(raw);
      if (event.type !== 'worker.bounced') return;
      if (event.call.settled) return;
      context.queue.requeue(event.call as PendingCall);
      serveAll(context, enqueue);
    }),
    'stop the worker': enqueueActions(({ context, event, enqueue: raw }) => {
      const enqueue = effects(raw);
      const e = event as { workerId: number; generation: number };
      const slot = context.slots[e.workerId];
      if (slot && slot.generation === e.generation) {
        context.idle.delete(slot.index);
        stopWorker(enqueue, slot, context.failure ? 'failed' : 'close');
      }
    }),
    'reject bounced call': ({ context, event }) => {
      if (event.type === 'worker.bounced') {
        event.call.reject(context.failure ?? new PoolClosedError());
      }
    },
    'handle worker exit': enqueueActions(({ context, event, enqueue: raw }) => {
      const enqueue = effects(raw);
      const exit = (event as WorkerDone).output;
      const slot = releaseSlot(context, enqueue, exit);
      enqueue.emit({ type: 'worker.exited', exit });
      if (!slot) return;
      let delay: number;
      let reason: WorkerExit['reason'] | 'recycled' = exit.reason;
      if (isStartFailure(exit)) {
        context.lastStartError = exit.error;
        // In half-open only the probe decides; an older start failing late says nothing new.
        const counts = context.circuitState !== 'halfOpen' || context.probe === slot.index;
        if (context.probe === slot.index) context.probe = null;
        if (counts) enqueue.sendTo(context.circuit, { type: 'start.failed' });
        delay = backoffDelay(slot.failures, context.options.restart);
        slot.failures++;
      } else if (isCrash(exit)) {
        context.intensity.record(now());
        delay = backoffDelay(0, context.options.restart);
      } else {
        // Planned replacement (recycled, or killed after ignoring a cancel): no backoff.
        if (exit.stopReason === 'recycle') reason = 'recycled';
        delay = 0;
      }
      slot.restartPending = true;
      enqueue.emit({ type: 'worker.restarting', workerId: slot.index, delay, reason, exit });
      enqueue.raise(
        { type: 'restart.due', slot: slot.index },
        {
          delay,
          id: `restart-${slot.index}`,
        },
      );
      // Calls unpinned from the dead worker may fit idle workers now; if it was the last ready
      // one and the breaker is not closed, waiting calls fail fast like new ones would.
      if (circuitBlocksCalls(context)) {
        rejectQueued(context, () => new CircuitOpenError(context.lastStartError));
      }
      serveAll(context, enqueue);
    }),
    'release worker': enqueueActions(({ context, event, enqueue: raw }) => {
      const enqueue = effects(raw);
      const exit = (event as WorkerDone).output;
      releaseSlot(context, enqueue, exit);
      enqueue.emit({ type: 'worker.exited', exit });
    }),
    'fail the pool': enqueueActions(({ context, event, enqueue: raw }) => {
      const enqueue = effects(raw);
      const exit = (event as WorkerDone).output;
      const { maxRestarts, period } = context.options.restart;
      context.failure = new PoolFailedError(
        `The pool failed: workers crashed more than ${maxRestarts} times within ${period} ms (restart.maxRestarts / restart.period)`,
        exit.error,
      );
      enqueue.emit({ type: 'pool.failed', error: context.failure });
    }),
    'restart slot': enqueueActions(({ context, event, enqueue: raw }) => {
      const enqueue = effects(raw);
      if (event.type !== 'restart.due') return;
      const slot = context.slots[event.slot];
      if (!slot || slot.ref || !slot.restartPending) return;
      slot.restartPending = false;
      startIfAllowed(context, enqueue, slot);
    }),
    'note circuit opened': enqueueActions(({ context, enqueue: raw }) => {
      const enqueue = effects(raw);
      context.circuitState = 'open';
      const error = new CircuitOpenError(context.lastStartError);
      enqueue.emit({ type: 'circuit.changed', state: 'open', error: context.lastStartError });
      enqueue.emit({ type: 'pool.circuitOpen', error });
      if (context.readyCount === 0)
        rejectQueued(context, () => new CircuitOpenError(context.lastStartError));
    }),
    'start the probe': enqueueActions(({ context, enqueue: raw }) => {
      const enqueue = effects(raw);
      context.circuitState = 'halfOpen';
      enqueue.emit({ type: 'circuit.changed', state: 'halfOpen', error: null });
      const parked = context.slots.find((slot) => slot.blocked);
      if (parked && context.probe === null) {
        context.probe = parked.index;
        startWorker(context, enqueue, parked);
      }
    }),
    'start parked slots': enqueueActions(({ context, enqueue: raw }) => {
      const enqueue = effects(raw);
      context.circuitState = 'closed';
      context.probe = null;
      enqueue.emit({ type: 'circuit.changed', state: 'closed', error: null });
      for (const slot of context.slots) if (slot.blocked) startWorker(context, enqueue, slot);
    }),
    'note circuit state': ({ context, event }) => {
      if (event.type === 'circuit.opened') context.circuitState = 'open';
      else if (event.type === 'circuit.halfOpen') context.circuitState = 'halfOpen';
      else if (event.type === 'circuit.closed') context.circuitState = 'closed';
    },
    'do maintenance': enqueueActions(({ context, enqueue: raw }) => {
      const enqueue = effects(raw);
      const t = now();
      for (const session of context.sessions.sweep(t)) {
        enqueue.emit({ type: 'session.expired', session });
      }
      const { healthCheck } = context.options;
      for (const index of [...context.idle]) {
        const slot = context.slots[index]!;
        if (retireIfDue(context, enqueue, slot)) continue;
        if (healthCheck && t - slot.idleSince >= healthCheck.interval) {
          context.idle.delete(index);
          enqueue.sendTo(slot.ref!, { type: 'health.check' } satisfies WorkerEvent);
        }
      }
    }),
    'report health failure': enqueueActions(({ event, enqueue: raw }) => {
      const enqueue = effects(raw);
      if (event.type === 'health.failed') {
        enqueue.emit({ type: 'health.failed', workerId: event.workerId, pid: event.pid });
      }
    }),
    'shut down for failure': enqueueActions(({ context, enqueue: raw }) => {
      context.routing = false;
      const enqueue = effects(raw);
      rejectQueued(context, () => context.failure!);
      cancelRestarts(context, enqueue);
      context.idle.clear();
      context.sessions.clear();
      for (const slot of context.slots) stopWorker(enqueue, slot, 'failed');
    }),
    'begin closing': enqueueActions(({ context, event, enqueue: raw }) => {
      context.routing = false;
      const enqueue = effects(raw);
      rejectQueued(context, () => new PoolClosedError('The pool closed before the call started'));
      cancelRestarts(context, enqueue);
      context.idle.clear();
      context.sessions.clear();
      for (const slot of context.slots) {
        // Starting workers end at once; busy ones finish their call first.
        if (slot.ref) stopWorker(enqueue, slot, 'close');
      }
      const timeout = event.type === 'pool.close' ? event.timeout : 0;
      enqueue.raise({ type: 'close.deadline' }, { delay: timeout, id: 'close-deadline' });
    }),
    'kill remaining workers': enqueueActions(({ context, enqueue: raw }) => {
      const enqueue = effects(raw);
      for (const slot of context.slots) {
        if (slot.ref) {
          enqueue.sendTo(slot.ref, {
            type: 'worker.kill',
            error: new PoolClosedError('The pool closed before the call finished (close timeout)'),
          } satisfies WorkerEvent);
        }
      }
    }),
  },
}).createMachine({
  id: 'supervisor',
  context: ({ input, spawn, self }) => {
    const { options } = input;
    const circuit = spawn('circuit', {
      id: 'circuit',
      input: { threshold: options.circuit.threshold, resetTimeout: options.circuit.resetTimeout },
    }) as CircuitActor;
    circuit.on('*', (event) => self.send(event as SupervisorEvent));
    return {
      options,
      input,
      spec: null,
      slots: Array.from({ length: options.size }, (_, index) => ({
        index,
        generation: 0,
        ref: null,
        pid: null,
        ready: false,
        startedAt: 0,
        idleSince: 0,
        restarts: 0,
        calls: 0,
        processCalls: 0,
        failures: 0,
        restartPending: false,
        blocked: false,
        lastExit: null,
      })),
      idle: new Set<number>(),
      queue: new CheckoutQueue<PendingCall>(options.size),
      sessions: new SessionTable(options.sessionTtl),
      intensity: new RestartIntensity(options.restart.maxRestarts, options.restart.period),
      circuit,
      circuitState: 'closed' as CircuitState,
      probe: null,
      readyCount: 0,
      lastStartError: null,
      failure: null,
      routing: true,
      direct: {
        sendTo: (ref, event) => ref.send(event),
        // Deferred: routing runs inside call() and inside a worker's transition, where a user's
        // listener must neither run nor throw (XState's own emits are deferred the same way).
        emit: (event) => queueMicrotask(() => input.onRoutingEvent(event)),
      },
    };
  },
  initial: 'up',
  states: {
    up: {
      invoke: {
        src: 'maintenance ticker',
        input: ({ context }) => ({ interval: tickInterval(context.options) }),
      },
      initial: 'resolving',
      states: {
        resolving: {
          invoke: {
            src: 'resolve python',
            input: ({ context }) => context.input,
            onDone: { target: 'starting', actions: 'start all workers' },
            onError: { target: '#supervisor.failed', actions: 'start python resolution failure' },
          },
        },
        starting: {
          on: {
            'worker.ready': [
              { guard: 'every worker ready', target: 'running', actions: 'note worker ready' },
              { actions: 'note worker ready' },
            ],
          },
        },
        running: {},
      },
      on: {
        'call.requested': { actions: 'route call' },
        'call.abandoned': { actions: 'abandon call' },
        'worker.ready': { actions: 'note worker ready' },
        'worker.idle': { actions: 'serve idle worker' },
        'worker.bounced': { actions: 'requeue bounced call' },
        'health.failed': { actions: 'report health failure' },
        'xstate.done.actor.*': [
          {
            guard: 'restart intensity exceeded',
            target: 'failed',
            actions: ['release worker', 'fail the pool'],
          },
          { actions: 'handle worker exit' },
        ],
        'restart.due': { actions: 'restart slot' },
        'circuit.opened': { actions: 'note circuit opened' },
        'circuit.halfOpen': { actions: 'start the probe' },
        'circuit.closed': { actions: 'start parked slots' },
        'maintenance.tick': { actions: 'do maintenance' },
        'pool.close': { target: 'closing' },
      },
    },
    failed: {
      entry: 'shut down for failure',
      on: {
        'call.requested': { actions: 'reject call as failed' },
        'call.abandoned': { actions: 'abandon call' },
        'worker.ready': { actions: 'stop the worker' },
        'worker.idle': { actions: 'stop the worker' },
        'worker.bounced': { actions: 'reject bounced call' },
        'xstate.done.actor.*': { actions: 'release worker' },
        'circuit.opened': { actions: 'note circuit state' },
        'circuit.halfOpen': { actions: 'note circuit state' },
        'circuit.closed': { actions: 'note circuit state' },
        'pool.close': { target: 'closing' },
      },
    },
    closing: {
      entry: 'begin closing',
      always: { guard: 'no worker left', target: 'closed' },
      on: {
        'call.requested': { actions: 'reject call as closed' },
        'call.abandoned': { actions: 'abandon call' },
        'worker.ready': { actions: 'stop the worker' },
        'worker.idle': { actions: 'stop the worker' },
        'worker.bounced': { actions: 'reject bounced call' },
        'xstate.done.actor.*': { actions: 'release worker' },
        'close.deadline': { actions: 'kill remaining workers' },
        'circuit.opened': { actions: 'note circuit state' },
        'circuit.halfOpen': { actions: 'note circuit state' },
        'circuit.closed': { actions: 'note circuit state' },
      },
    },
    closed: { type: 'final' },
  },
});

/** A running supervisor actor. */
export type SupervisorActor = ActorRefFrom<typeof supervisorMachine>;

/** Gives the worker that reported idle its next call (stale reports are ignored). */
function serveIdle(
  context: SupervisorContext,
  event: Extract<WorkerEmitted, { type: 'worker.idle' }>,
  enqueue: RoutingEffects = context.direct,
): void {
  const slot = context.slots[event.workerId];
  if (!slot || slot.generation !== event.generation || !slot.ref) return;
  serve(context, enqueue, slot);
}

/**
 * Submits a new call: routed at once while the pool is up (no machine event), else through the
 * supervisor, which rejects it with the reason the pool is not taking calls.
 */
export function submitCall(supervisor: SupervisorActor, call: PendingCall): void {
  const { context } = supervisor.getSnapshot();
  if (context.routing) routeCall(context, context.direct, call);
  else supervisor.send({ type: 'call.requested', call });
}
