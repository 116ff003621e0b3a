import {
  type ActorRefFrom,
  type AnyActorRef,
  enqueueActions,
  fromCallback,
  fromPromise,
  raise,
  type SnapshotFrom,
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
  type StopReason,
  type WorkerActor,
  type WorkerEmitted,
  type WorkerEvent,
  type WorkerExit,
  type WorkerInput,
  workerMachine,
} from '../machines/worker.machine.js';
import {
  inFlightOf,
  isAccepting,
  type WorkerState,
  workerStateOf,
} from '../machines/worker-state.js';
import type { PendingCall } from '../pool/call.js';
import type { NormalizedOptions } from '../pool/options.js';
import type { ReadyMessage } from '../protocol/index.js';
import { workerSpawnSpec } from '../transport/spawn-spec.js';
import type { SpawnSpec, SpawnTransport, WorkerTransport } from '../transport/transport.js';
import { backoffDelay } from './backoff.js';
import { RestartIntensity } from './restart-intensity.js';
import {
  earlyCalls,
  type RetireWhy,
  type RoutedWorker,
  Router,
  type RouterEvent,
} from './router.js';
import { residentBytes } from './rss.js';

const WORKER_DONE = 'xstate.done.actor.worker-';

/** One worker process as the router sees it: its slot, its generation and its actor. */
export class SlotWorker implements RoutedWorker<PendingCall> {
  ref!: WorkerActor;
  /** Its process's transport, set as soon as the process is spawned. */
  transport: WorkerTransport | null = null;
  /** Set when it reports ready. */
  readyAt = 0;
  /** Resident memory at the last maintenance tick, bytes; null before the first sample. */
  rss: number | null = null;
  /** Since when it has had no call (`now()` clock), for an elastic pool's `idleTimeout`. */
  idleSince: number | null = null;

  constructor(
    readonly slot: number,
    readonly generation: number,
    readonly startedAt: number,
  ) {}

  /** Its pid: known at the spawn, or shortly after for a worker forked by a fork server. */
  get pid(): number | null {
    return this.transport?.pid ?? null;
  }

  /** Its process died because the process it was forked from died (see `template.exited`). */
  get hostLost(): boolean {
    return this.transport?.hostLost === true;
  }

  accepting(): boolean {
    return isAccepting(this.ref.getSnapshot());
  }

  start(call: PendingCall): void {
    this.idleSince = null;
    this.ref.send({ type: 'call.start', call });
  }

  cancel(callId: number): void {
    this.ref.send({ type: 'call.cancel', callId });
  }

  stop(reason: StopReason): void {
    this.ref.send({ type: 'worker.stop', reason });
  }

  /** The calls its machine holds; read only when the machine can no longer settle them itself. */
  callsInFlight(): PendingCall[] {
    return [...this.ref.getSnapshot().context.flights.values()].map(
      (flight) => flight.call as PendingCall,
    );
  }
}

/** One worker position in the pool; its process is replaced, the slot stays. */
export interface Slot {
  readonly index: number;
  /** Bumped for every process started in the slot. */
  generation: number;
  /** The slot's current process, from spawn to exit. */
  worker: SlotWorker | null;
  /** Processes started after the first. */
  restarts: number;
  /** Consecutive start failures, for the backoff exponent. */
  failures: number;
  /** A restart timer is running. */
  restartPending: boolean;
  /** Waiting for the circuit breaker to allow a start. */
  blocked: boolean;
  /** When a retiring worker of this slot was last health-checked (`now()` clock). */
  checkedAt: number;
  /** A reload's replacement, starting beside the slot's worker until it is ready. */
  incoming: SlotWorker | null;
  /** Workers a reload replaced: they finish their calls and exit; nothing restarts them. */
  leaving: SlotWorker[];
  /** Elastic size: the slot has no process and wants none (beyond `min`, not needed now). */
  parked: boolean;
  /** Elastic size: its worker is stopping for being idle; the slot parks when it exits. */
  parking: boolean;
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
  onOutput: (
    workerId: number,
    pid: number | null,
    stream: 'stdout' | 'stderr',
    line: string,
  ) => void;
  /**
   * A worker actor became a slot's worker (the pool watches its state): when it is spawned, or,
   * for a reload's replacement (`adopted`), once it is ready and takes the slot.
   */
  onWorkerSpawned: (workerId: number, ref: WorkerActor, adopted: boolean) => void;
  /** What routing emits; it runs outside the machine's transitions (see {@link Router}). */
  onRoutingEvent: (event: SupervisorEmitted) => void;
  /** The clock for ages, sessions and restart intensity, ms. Default `performance.now`. */
  now?: () => number;
}

export interface SupervisorContext {
  readonly options: NormalizedOptions;
  readonly input: SupervisorInput;
  readonly now: () => number;
  spec: SpawnSpec | null;
  readonly slots: Slot[];
  /** The queue, the free workers and the session pins: routing's one owner. */
  readonly router: Router<PendingCall, SlotWorker>;
  readonly intensity: RestartIntensity;
  readonly circuit: CircuitActor;
  /** The slot whose start is the half-open probe. */
  probe: number | null;
  lastStartError: PyvisorError | null;
  failure: PyvisorError | null;
  /** Restart-intensity trips in a row (reset once the pool ran a whole `period` after one). */
  trips: number;
  /** When the pool last came back from a cool-down (`now()` clock), or null. */
  recoveredAt: number | null;
  /** The current cool-down: its length and when it began (`now()` clock); null when up. */
  coolDown: { ms: number; since: number } | null;
  /** The rolling reload in progress: the slot being replaced now; null when none runs. */
  reload: { slot: number } | null;
}

/** Events the supervisor receives. */
export type SupervisorEvent =
  | { type: 'pool.close'; timeout: number }
  /** Replace every worker, one at a time, by one running the code on disk now. */
  | { type: 'pool.reload' }
  | { type: 'restart.due'; slot: number }
  | { type: 'close.deadline' }
  | { type: 'maintenance.tick' }
  /** Elastic size: calls wait and no worker is free (see the router's `demand`). */
  | { type: 'pool.demand' }
  /** The cool-down after a restart-intensity trip is over: the pool starts its workers again. */
  | { type: 'coolDown.expired' }
  /** A worker machine reached its final state (raised from its done event, see below). */
  | { type: 'worker.exited'; exit: WorkerExit }
  /**
   * The fork server's template died (`startMethod: 'forkserver'`), and every worker forked from it
   * with it: one crash for the restart intensity (those workers' own exits do not count).
   */
  | { type: 'template.exited'; error: PyvisorError }
  /** A child reached its final state: a worker (its id starts with `worker-`) or nothing else. */
  | { type: `xstate.done.actor.${string}`; output: unknown }
  /** A child actor failed (a bug, not a process death): the pool fails. */
  | { type: `xstate.error.actor.${string}`; error: unknown }
  | Extract<WorkerEmitted, { type: 'worker.ready' | 'health.failed' }>
  | CircuitEmitted;

/**
 * Every event type the supervisor receives, for tools and the completeness test (the `Record`
 * makes the compiler check that it is complete). `xstate.error.actor.*` and `xstate.done.actor.*`
 * stand for the error and done events of its children.
 */
export const SUPERVISOR_EVENT_TYPES = Object.keys({
  'pool.close': true,
  'pool.reload': true,
  'restart.due': true,
  'close.deadline': true,
  'maintenance.tick': true,
  'pool.demand': true,
  'coolDown.expired': true,
  'worker.exited': true,
  'template.exited': true,
  'xstate.error.actor.*': true,
  'xstate.done.actor.*': true,
  'worker.ready': true,
  'health.failed': true,
  'circuit.opened': true,
  'circuit.halfOpen': true,
  'circuit.closed': true,
} satisfies Record<
  | Exclude<SupervisorEvent['type'], `xstate.${'error' | 'done'}.actor.${string}`>
  | 'xstate.error.actor.*'
  | 'xstate.done.actor.*',
  true
>) as string[];

/** Events the supervisor emits for the pool's event emitter. */
export type SupervisorEmitted =
  | { type: 'pool.ready' }
  | { type: 'pool.failed'; error: PyvisorError }
  | { type: 'pool.recovered'; downMs: number; trips: number }
  | { type: 'reload.start' }
  | { type: 'worker.added'; workerId: number; why: 'demand'; size: number }
  | { type: 'worker.removed'; workerId: number; why: 'idle'; size: number }
  | { type: 'reload.done' }
  | { type: 'reload.failed'; error: PyvisorError }
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
  | {
      type: 'worker.recycling';
      workerId: number;
      pid: number | null;
      why: RetireWhy;
      rss: number | null;
    }
  | RouterEvent
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

/** The breaker's state: its machine is the one owner. */
export function circuitStateOf(context: SupervisorContext): CircuitState {
  return context.circuit.getSnapshot().value as CircuitState;
}

/** A call that finds no free worker fails fast while the breaker is not closed and none is ready. */
function refusal(context: SupervisorContext): PyvisorError | null {
  if (circuitStateOf(context) === 'closed' || context.router.ready > 0) return null;
  return new CircuitOpenError(context.lastStartError);
}

/** Starts a new process in `slot`. */
function startWorker(context: SupervisorContext, enqueue: Enqueue, slot: Slot): void {
  slot.blocked = false;
  slot.restartPending = false;
  slot.worker = spawnWorker(context, enqueue, slot, true);
}

/**
 * Spawns a process for `slot`. `current`: it is the slot's worker from now on (the pool watches
 * its state); else it is a reload's replacement, adopted once it is ready.
 */
function spawnWorker(
  context: SupervisorContext,
  enqueue: Enqueue,
  slot: Slot,
  current: boolean,
): SlotWorker {
  const { options, input, router } = context;
  // A reload's replacement is not a restart.
  if (current && slot.generation > 0) slot.restarts++;
  slot.generation++;
  const worker = new SlotWorker(slot.index, slot.generation, context.now());
  enqueue.spawn((spawn, self) => {
    const spawnTransport: SpawnTransport = (spec, handlers) => {
      const transport = input.spawn(spec, {
        ...handlers,
        output: (stream, line) => input.onOutput(slot.index, worker.pid, stream, line),
      });
      worker.transport = transport;
      return transport;
    };
    const ref = spawn(workerMachine, {
      id: `worker-${slot.index}-${worker.generation}`,
      input: {
        workerId: slot.index,
        generation: worker.generation,
        spec: context.spec!,
        spawn: spawnTransport,
        initTimeout: options.initTimeout,
        cancelGrace: options.cancelGrace,
        healthTimeout: options.healthCheck ? options.healthCheck.timeout : 0,
        stopTimeout: options.stopTimeout,
        // recycle.maxCalls is applied by the router, which counts calls as it routes them.
        maxCalls: Number.POSITIVE_INFINITY,
        maxInFlight: options.concurrency + earlyCalls(options.concurrency, options.pipeline),
        serial: options.concurrency === 1,
        calls: {
          waiting: () => router.hasCallFor(worker),
          take: () => router.nextFor(worker),
          started: (_slot, _generation, call) => router.started(worker, call as PendingCall),
        },
      },
    }) as WorkerActor;
    worker.ref = ref;
    ref.on('*', (event) => {
      // Routing events go straight to the router (no supervisor event per call).
      if (event.type === 'worker.free') {
        if (event.inFlight === 0) worker.idleSince = context.now();
        router.workerFree(worker);
      } else if (event.type === 'worker.bounced') {
        router.bounced(event.call as PendingCall, worker, event.gone);
      } else self.send(event as SupervisorEvent);
    });
    if (current) input.onWorkerSpawned(slot.index, ref, false);
  });
  return worker;
}

/**
 * Slots that have (or want) a process and keep it: all of them for a fixed size; not those
 * parked or parking (stopping for being idle) in an elastic pool.
 */
function activeSlots(context: SupervisorContext): number {
  let n = 0;
  for (const slot of context.slots) if (!slot.parked && !slot.parking) n++;
  return n;
}

/**
 * Elastic size: starts parked slots while more calls wait than workers are on their way (one
 * start per waiting call at most), up to `max`.
 */
function grow(context: SupervisorContext, enqueue: Enqueue): void {
  const { router } = context;
  let coming = 0;
  for (const slot of context.slots) {
    const serving = slot.worker !== null && router.isCurrent(slot.worker);
    if (!slot.parked && !slot.parking && !serving) coming++;
  }
  for (const slot of context.slots) {
    if (router.queued <= coming) return;
    if (!slot.parked) continue;
    slot.parked = false;
    coming++;
    enqueue.emit({
      type: 'worker.added',
      workerId: slot.index,
      why: 'demand',
      size: activeSlots(context),
    });
    startIfAllowed(context, enqueue, slot);
  }
}

/** Elastic size: stops workers idle for `idleTimeout`, newest slots first, down to `min`. */
function shrink(context: SupervisorContext, enqueue: Enqueue): void {
  const { options, router } = context;
  let active = activeSlots(context);
  const now = context.now();
  for (let i = context.slots.length - 1; i >= 0 && active > options.minSize; i--) {
    const slot = context.slots[i]!;
    const worker = slot.worker;
    if (slot.parked || slot.parking || !worker || !router.isCurrent(worker)) continue;
    if (worker.idleSince === null || now - worker.idleSince < options.idleTimeout) continue;
    if (router.loadOf(slot.index) > 0) continue;
    slot.parking = true;
    active--;
    router.workerGone(worker);
    enqueue.sendTo(worker.ref, { type: 'worker.stop', reason: 'recycle' });
  }
}

/** Every process of `slot`: its worker, a reload's replacement, and those a reload replaced. */
function processesOf(slot: Slot): SlotWorker[] {
  const out = slot.worker ? [slot.worker] : [];
  if (slot.incoming) out.push(slot.incoming);
  out.push(...slot.leaving);
  return out;
}

/** Starts the replacement for the reload's current slot. */
function startReplacement(context: SupervisorContext, enqueue: Enqueue): void {
  const slot = context.slots[context.reload!.slot]!;
  slot.incoming = spawnWorker(context, enqueue, slot, false);
}

/**
 * A reload's replacement is ready: it takes the slot; the worker it replaces takes no new call
 * and stops once its calls are done (a restart pending for the slot is cancelled).
 */
function adoptReplacement(context: SupervisorContext, enqueue: Enqueue, slot: Slot): void {
  const incoming = slot.incoming!;
  const old = slot.worker;
  if (slot.restartPending) enqueue.cancel(`restart-${slot.index}`);
  slot.restartPending = false;
  slot.blocked = false;
  slot.incoming = null;
  slot.worker = incoming;
  // The slot's state is the new worker's from now on, before the old one starts stopping.
  context.input.onWorkerSpawned(slot.index, incoming.ref, true);
  if (old) {
    context.router.workerGone(old);
    old.stop('recycle');
    slot.leaving.push(old);
  }
}

/** The first slot from `from` on that has a process to replace, or -1. */
function nextReloadSlot(context: SupervisorContext, from: number): number {
  for (let i = from; i < context.slots.length; i++) if (!context.slots[i]!.parked) return i;
  return -1;
}

/** The reload moves on to the next slot, or is done. */
function continueReload(context: SupervisorContext, enqueue: Enqueue): void {
  const next = nextReloadSlot(context, context.reload!.slot + 1);
  if (next >= 0) {
    context.reload = { slot: next };
    startReplacement(context, enqueue);
  } else {
    context.reload = null;
    enqueue.emit({ type: 'reload.done' });
  }
}

/** The reload ends without finishing: its replacement (if any) is stopped. */
function abortReload(context: SupervisorContext, enqueue: Enqueue, error: PyvisorError): void {
  if (!context.reload) return;
  const slot = context.slots[context.reload.slot]!;
  slot.incoming?.stop('close');
  context.reload = null;
  enqueue.emit({ type: 'reload.failed', error });
}

/** Starts `slot` now if the breaker allows it, else parks it until the breaker changes. */
function startIfAllowed(context: SupervisorContext, enqueue: Enqueue, slot: Slot): void {
  const circuit = circuitStateOf(context);
  if (circuit === 'closed') {
    startWorker(context, enqueue, slot);
  } else if (circuit === 'halfOpen' && context.probe === null) {
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
function releaseSlot(context: SupervisorContext, enqueue: Enqueue, exit: WorkerExit) {
  const slot = context.slots[exit.workerId];
  if (slot && releaseExtra(slot, enqueue, exit)) return undefined;
  const worker = slot?.worker;
  if (!slot || !worker || worker.generation !== exit.generation) return undefined;
  enqueue.stopChild(worker.ref);
  // Calls waiting for this worker (sessions) go back to the shared queue.
  context.router.workerGone(worker);
  slot.worker = null;
  return slot;
}

/** Releases a reload's replacement or a replaced worker that ended; false if it is neither. */
function releaseExtra(slot: Slot, enqueue: Enqueue, exit: WorkerExit): boolean {
  if (slot.incoming?.generation === exit.generation) {
    enqueue.stopChild(slot.incoming.ref);
    slot.incoming = null;
    return true;
  }
  const i = slot.leaving.findIndex((w) => w.generation === exit.generation);
  if (i < 0) return false;
  enqueue.stopChild(slot.leaving[i]!.ref);
  slot.leaving.splice(i, 1);
  return true;
}

function isStartFailure(exit: WorkerExit): boolean {
  return !exit.wasReady && exit.reason !== 'stopped' && exit.reason !== 'killed';
}

// Planned replacements are not crashes: recycling, a kill after a cancel's grace, and a kill for
// an unanswered health check (pyvisor chose to end those processes; their calls say why).
function isCrash(exit: WorkerExit): boolean {
  return exit.wasReady && (exit.reason === 'crashed' || exit.reason === 'protocolError');
}

// Cool-downs double on each trip in a row, up to this (or `restart.coolDown` if larger).
const MAX_COOL_DOWN = 10 * 60_000;

/** The cool-down after trip number `trips` (1 for the first), ms. */
export function coolDownDelay(trips: number, coolDown: number): number {
  if (!Number.isFinite(coolDown)) return coolDown;
  return Math.min(coolDown * 2 ** Math.min(trips - 1, 30), Math.max(MAX_COOL_DOWN, coolDown));
}

/** The slot's current worker, if `exit` is its exit (not a stale event). */
function exitingWorker(context: SupervisorContext, exit: WorkerExit): SlotWorker | undefined {
  const worker = context.slots[exit.workerId]?.worker;
  return worker?.generation === exit.generation ? worker : undefined;
}

/** Whether this event is one crash too many for the restart intensity. */
function intensityExceeded(context: SupervisorContext, event: SupervisorEvent): boolean {
  if (event.type === 'template.exited') return context.intensity.wouldExceed(context.now());
  if (event.type !== 'worker.exited') return false;
  const { exit } = event;
  const worker = exitingWorker(context, exit);
  return (
    worker !== undefined &&
    !worker.hostLost &&
    isCrash(exit) &&
    context.intensity.wouldExceed(context.now())
  );
}

/**
 * Workers whose actor failed (XState stopped them and their process) will never report an exit:
 * their calls in flight are rejected with `error` and their slot released here.
 */
function releaseFailedWorkers(context: SupervisorContext, enqueue: Enqueue, error: PyvisorError) {
  for (const slot of context.slots) {
    for (const worker of processesOf(slot)) {
      if (worker.ref.getSnapshot().status !== 'error') continue;
      for (const call of worker.callsInFlight()) call.reject(error);
      enqueue.stopChild(worker.ref);
      if (worker === slot.worker) {
        context.router.workerGone(worker);
        slot.worker = null;
      } else if (worker === slot.incoming) {
        slot.incoming = null;
      } else {
        slot.leaving.splice(slot.leaving.indexOf(worker), 1);
      }
    }
  }
}

function stopAll(context: SupervisorContext, reason: StopReason): void {
  // Starting workers end at once; busy ones finish their call first.
  for (const slot of context.slots) for (const worker of processesOf(slot)) worker.stop(reason);
}

// Any other child finishing would be a bug in pyvisor; there is nothing to do with it.
const WORKER_DONE_TRANSITION = [
  { guard: 'a worker finished', actions: 'name the worker exit' },
  {},
] as const;

/**
 * What `failed` and `closing` share: the router takes no calls, every worker has been told to
 * stop, and the supervisor only waits for their exits.
 */
const WINDING_DOWN = {
  // Started before the pool failed or began closing; it was told to stop, this makes sure.
  'worker.ready': { actions: 'stop the worker' },
  'worker.exited': { actions: 'release worker' },
  'xstate.done.actor.*': WORKER_DONE_TRANSITION,
  // The first failure is the one reported; a failed worker's slot is released so close() ends.
  'xstate.error.actor.*': { actions: 'release failed workers' },
  // Restarts were cancelled on entry; a timer that fired in the same step is stale.
  'restart.due': {},
  // Only a cooling-down pool waits for it (its child state takes it); closing, it is stale.
  'coolDown.expired': {},
  // Every worker is stopping: nothing to check, retire or forget.
  'maintenance.tick': {},
  // Nothing starts any more.
  'pool.demand': {},
  // The pool failed or is closing: a reload has nothing to replace.
  'pool.reload': { actions: 'refuse reload' },
  // The worker is being stopped anyway; its exit follows.
  'health.failed': {},
  // Its workers are stopping anyway; nothing starts any more.
  'template.exited': {},
  // The breaker's state is read from its machine; nothing starts any more.
  'circuit.opened': {},
  'circuit.halfOpen': {},
  'circuit.closed': {},
} as const;

/**
 * The pool's supervisor: starts every worker eagerly, restarts dead workers with backoff, bounds
 * restart storms (restart intensity) and consults the circuit breaker before every start. Calls
 * are routed by its {@link Router}.
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
    'every worker ready': ({ context, event }) => {
      if (event.type !== 'worker.ready') return false;
      const worker = context.slots[event.workerId]?.worker;
      return (
        worker?.generation === event.generation &&
        !context.router.isCurrent(worker) &&
        context.router.ready + 1 === activeSlots(context)
      );
    },
    'restart intensity exceeded and the pool cools down': ({ context, event }) =>
      Number.isFinite(context.options.restart.coolDown) && intensityExceeded(context, event),
    'restart intensity exceeded': ({ context, event }) => intensityExceeded(context, event),
    'no worker left': ({ context }) =>
      context.slots.every((slot) => processesOf(slot).length === 0),
    // Workers are the only children that finish: the circuit and the ticker run until stopped,
    // and the interpreter lookup's done event is handled by its invoke.
    'a worker finished': ({ event }) => event.type.startsWith(WORKER_DONE),
  },
  actions: {
    // A worker's done event becomes the named `worker.exited`, handled in the same macrostep.
    'name the worker exit': raise(({ event }) => ({
      type: 'worker.exited' as const,
      exit: (event as { output: WorkerExit }).output,
    })),
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
      for (const slot of context.slots) if (!slot.parked) startIfAllowed(context, enqueue, slot);
    }),
    'note worker ready': enqueueActions(({ context, event, enqueue: raw }) => {
      const enqueue = effects(raw);
      if (event.type !== 'worker.ready') return;
      const slot = context.slots[event.workerId];
      const adopted = slot?.incoming?.generation === event.generation;
      if (adopted) adoptReplacement(context, enqueue, slot!);
      const worker = slot?.worker;
      if (!slot || !worker || worker.generation !== event.generation) return;
      if (context.router.isCurrent(worker)) return;
      slot.failures = 0;
      if (context.probe === slot.index) context.probe = null;
      enqueue.sendTo(context.circuit, { type: 'start.succeeded' });
      enqueue.emit({
        type: 'worker.started',
        workerId: slot.index,
        pid: worker.pid,
        initMs: context.now() - worker.startedAt,
        info: event.info,
      });
      // It joins the router now and may take waiting calls at once.
      worker.readyAt = context.now();
      context.router.workerReady(worker);
      if (context.router.ready === activeSlots(context)) enqueue.emit({ type: 'pool.ready' });
      if (adopted) continueReload(context, enqueue);
    }),
    grow: enqueueActions(({ context, enqueue: raw }) => {
      if (context.spec) grow(context, effects(raw));
    }),
    'refuse reload': enqueueActions(({ context, enqueue: raw }) => {
      effects(raw).emit({
        type: 'reload.failed',
        error: context.failure ?? new PoolClosedError('The pool closed before the reload'),
      });
    }),
    'begin reload': enqueueActions(({ context, enqueue: raw }) => {
      const enqueue = effects(raw);
      // The pool sends one at a time; a second one while a reload runs would be a bug there.
      if (context.reload) return;
      context.reload = { slot: nextReloadSlot(context, 0) };
      enqueue.emit({ type: 'reload.start' });
      startReplacement(context, enqueue);
    }),
    'stop the worker': enqueueActions(({ context, event, enqueue: raw }) => {
      const enqueue = effects(raw);
      if (event.type !== 'worker.ready') return;
      const slot = context.slots[event.workerId];
      for (const worker of slot ? processesOf(slot) : []) {
        if (worker.generation === event.generation) {
          enqueue.sendTo(worker.ref, {
            type: 'worker.stop',
            reason: context.failure ? 'failed' : 'close',
          });
        }
      }
    }),
    'handle worker exit': enqueueActions(({ context, event, enqueue: raw }) => {
      const enqueue = effects(raw);
      if (event.type !== 'worker.exited') return;
      const { exit } = event;
      const replacement = context.slots[exit.workerId]?.incoming?.generation === exit.generation;
      const hostLost = exitingWorker(context, exit)?.hostLost === true;
      const slot = releaseSlot(context, enqueue, exit);
      enqueue.emit({ type: 'worker.exited', exit });
      // New code that does not start: the old workers keep serving; nothing is counted.
      if (replacement && context.reload) {
        context.reload = null;
        enqueue.emit({
          type: 'reload.failed',
          error:
            exit.error ??
            new PoolClosedError("The reload's new worker stopped before it was ready"),
        });
      }
      if (!slot) return;
      if (slot.parking) {
        // Stopped for being idle (elastic size): the slot parks, nothing restarts it.
        slot.parking = false;
        slot.parked = true;
        enqueue.emit({
          type: 'worker.removed',
          workerId: slot.index,
          why: 'idle',
          size: activeSlots(context),
        });
        // Calls that came while it was stopping may want the slot back.
        grow(context, enqueue);
        return;
      }
      let delay: number;
      let reason: WorkerExit['reason'] | 'recycled' = exit.reason;
      if (hostLost) {
        // Its template died: that death was counted once (`template.exited`), not per worker.
        delay = backoffDelay(0, context.options.restart);
      } else if (isStartFailure(exit)) {
        context.lastStartError = exit.error;
        // In half-open only the probe decides; an older start failing late says nothing new.
        const counts = circuitStateOf(context) !== 'halfOpen' || context.probe === slot.index;
        if (context.probe === slot.index) context.probe = null;
        if (counts) enqueue.sendTo(context.circuit, { type: 'start.failed' });
        delay = backoffDelay(slot.failures, context.options.restart);
        slot.failures++;
      } else if (isCrash(exit)) {
        context.intensity.record(context.now());
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
        { delay, id: `restart-${slot.index}` },
      );
      // If it was the last ready worker and the breaker is not closed, waiting calls fail fast
      // like new ones would.
      const refused = refusal(context);
      if (refused) context.router.rejectQueued(() => refused);
    }),
    'count template crash': ({ context }) => {
      context.intensity.record(context.now());
    },
    'release worker': enqueueActions(({ context, event, enqueue: raw }) => {
      const enqueue = effects(raw);
      if (event.type !== 'worker.exited') return;
      releaseSlot(context, enqueue, event.exit);
      enqueue.emit({ type: 'worker.exited', exit: event.exit });
    }),
    'fail the pool': enqueueActions(({ context, event, enqueue: raw }) => {
      const enqueue = effects(raw);
      const { maxRestarts, period, coolDown } = context.options.restart;
      const now = context.now();
      // A pool that ran a whole period since it last recovered starts over at the first delay.
      if (context.recoveredAt !== null && now - context.recoveredAt >= period) context.trips = 0;
      context.trips++;
      const ms = coolDownDelay(context.trips, coolDown);
      const recovers = Number.isFinite(ms);
      context.coolDown = recovers ? { ms, since: now } : null;
      const message = `The pool failed: workers crashed more than ${maxRestarts} times within ${period} ms (restart.maxRestarts / restart.period)`;
      let cause: PyvisorError | null | undefined;
      if (event.type === 'worker.exited') cause = event.exit.error;
      else if (event.type === 'template.exited') cause = event.error;
      context.failure = new PoolFailedError(
        recovers
          ? `${message}; it starts its workers again in ${ms} ms (restart.coolDown)`
          : message,
        cause,
        recovers ? { retryAt: Date.now() + ms } : undefined,
      );
      enqueue.emit({ type: 'pool.failed', error: context.failure });
    }),
    'schedule recovery': enqueueActions(({ context, enqueue: raw }) => {
      const enqueue = effects(raw);
      const ms = context.coolDown?.ms ?? 0;
      enqueue.raise({ type: 'coolDown.expired' }, { delay: ms, id: 'cool-down' });
    }),
    // The cool-down is over and every old worker is gone: a fresh start, as if the pool was new.
    recover: enqueueActions(({ context, enqueue: raw }) => {
      const enqueue = effects(raw);
      const now = context.now();
      const downMs = context.coolDown ? now - context.coolDown.since : 0;
      context.failure = null;
      context.coolDown = null;
      context.recoveredAt = now;
      context.intensity.clear();
      context.router.resume();
      for (const slot of context.slots) {
        slot.failures = 0;
        slot.parking = false;
        slot.parked = slot.index >= context.options.minSize;
        if (!slot.parked) startIfAllowed(context, enqueue, slot);
      }
      enqueue.emit({ type: 'pool.recovered', downMs, trips: context.trips });
    }),
    'fail the pool for a child error': enqueueActions(({ context, event, enqueue: raw }) => {
      const enqueue = effects(raw);
      const cause = (event as { error?: unknown }).error;
      const message = cause instanceof Error ? cause.message : String(cause);
      context.failure = new PoolFailedError(
        `The pool failed: an internal actor failed (${event.type.slice('xstate.error.actor.'.length)}): ${message}`,
        cause,
      );
      enqueue.emit({ type: 'pool.failed', error: context.failure });
    }),
    'restart slot': enqueueActions(({ context, event, enqueue: raw }) => {
      const enqueue = effects(raw);
      if (event.type !== 'restart.due') return;
      const slot = context.slots[event.slot];
      if (!slot || slot.worker || !slot.restartPending) return;
      slot.restartPending = false;
      startIfAllowed(context, enqueue, slot);
    }),
    'note circuit opened': enqueueActions(({ context, enqueue: raw }) => {
      const enqueue = effects(raw);
      const error = new CircuitOpenError(context.lastStartError);
      enqueue.emit({ type: 'circuit.changed', state: 'open', error: context.lastStartError });
      enqueue.emit({ type: 'pool.circuitOpen', error });
      if (context.router.ready === 0) {
        context.router.rejectQueued(() => new CircuitOpenError(context.lastStartError));
      }
    }),
    'start the probe': enqueueActions(({ context, enqueue: raw }) => {
      const enqueue = effects(raw);
      enqueue.emit({ type: 'circuit.changed', state: 'halfOpen', error: null });
      const parked = context.slots.find((slot) => slot.blocked);
      if (parked && context.probe === null) {
        context.probe = parked.index;
        startWorker(context, enqueue, parked);
      }
    }),
    'start parked slots': enqueueActions(({ context, enqueue: raw }) => {
      const enqueue = effects(raw);
      context.probe = null;
      enqueue.emit({ type: 'circuit.changed', state: 'closed', error: null });
      for (const slot of context.slots) if (slot.blocked) startWorker(context, enqueue, slot);
    }),
    'do maintenance': enqueueActions(({ context, enqueue: raw }) => {
      const enqueue = effects(raw);
      const { healthCheck } = context.options;
      // RSS first: the router retires a worker over recycle.maxRss in the same pass.
      for (const slot of context.slots) {
        const worker = slot.worker;
        if (worker?.pid != null && worker.readyAt > 0) worker.rss = residentBytes(worker.pid);
      }
      const { expired, toCheck } = context.router.maintain(
        healthCheck ? healthCheck.interval : null,
      );
      if (context.options.minSize < context.options.size && !context.reload) {
        shrink(context, enqueue);
      }
      for (const session of expired) enqueue.emit({ type: 'session.expired', session });
      for (const worker of toCheck) {
        enqueue.sendTo(worker.ref, { type: 'health.check' } satisfies WorkerEvent);
      }
      // A retiring worker (recycled while busy) left the router but still runs calls: it is
      // checked too, or one stuck in C code would hold its slot for good.
      if (!healthCheck) return;
      const now = context.now();
      for (const slot of context.slots) {
        if (now - slot.checkedAt < healthCheck.interval) continue;
        const retiring = [...slot.leaving];
        if (slot.worker && !context.router.isCurrent(slot.worker)) retiring.push(slot.worker);
        for (const worker of retiring) {
          if (workerStateOf(worker.ref.getSnapshot()) !== 'busy') continue;
          slot.checkedAt = now;
          enqueue.sendTo(worker.ref, { type: 'health.check' } satisfies WorkerEvent);
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
      const enqueue = effects(raw);
      releaseFailedWorkers(context, enqueue, context.failure!);
      context.router.stop(() => context.failure!);
      cancelRestarts(context, enqueue);
      abortReload(context, enqueue, context.failure!);
      stopAll(context, 'failed');
    }),
    'begin closing': enqueueActions(({ context, event, enqueue: raw }) => {
      const enqueue = effects(raw);
      context.router.stop(() => new PoolClosedError('The pool closed before the call started'));
      cancelRestarts(context, enqueue);
      abortReload(context, enqueue, new PoolClosedError('The pool closed during the reload'));
      stopAll(context, 'close');
      const timeout = event.type === 'pool.close' ? event.timeout : 0;
      enqueue.raise({ type: 'close.deadline' }, { delay: timeout, id: 'close-deadline' });
    }),
    'release failed workers': enqueueActions(({ context, enqueue }) => {
      releaseFailedWorkers(
        context,
        effects(enqueue),
        context.failure ?? new PoolClosedError('The pool closed while an internal actor failed'),
      );
    }),
    // Sent with enqueue: a child handling an event sent from a plain action would run its own
    // assigns inside it (XState warns, and they are not meant to run there).
    'kill remaining workers': enqueueActions(({ context, enqueue: raw }) => {
      const enqueue = effects(raw);
      for (const slot of context.slots) {
        for (const worker of processesOf(slot)) {
          enqueue.sendTo(worker.ref, {
            type: 'worker.kill',
            error: new PoolClosedError('The pool closed before the call finished (close timeout)'),
          });
        }
      }
    }),
  },
}).createMachine({
  id: 'supervisor',
  context: ({ input, spawn, self }): SupervisorContext => {
    const { options } = input;
    const now = input.now ?? (() => performance.now());
    const circuit = spawn('circuit', {
      id: 'circuit',
      input: { threshold: options.circuit.threshold, resetTimeout: options.circuit.resetTimeout },
    }) as CircuitActor;
    circuit.on('*', (event) => self.send(event as SupervisorEvent));
    const slots: Slot[] = Array.from({ length: options.size }, (_, index) => ({
      index,
      generation: 0,
      worker: null,
      restarts: 0,
      failures: 0,
      restartPending: false,
      blocked: false,
      checkedAt: 0,
      incoming: null,
      leaving: [],
      parked: index >= options.minSize,
      parking: false,
    }));
    const live = (): SupervisorContext => (self as AnyActorRef).getSnapshot().context;
    let demandSent = false;
    return {
      options,
      input,
      now,
      spec: null,
      slots,
      router: new Router<PendingCall, SlotWorker>(
        {
          slots: options.size,
          concurrency: options.concurrency,
          pipeline: options.pipeline,
          maxQueue: options.maxQueue,
          sessionTtl: options.sessionTtl,
          recycle: options.recycle,
        },
        {
          now,
          // The live context: XState copies it on every assign, so none is captured here.
          refusal: () => refusal(live()),
          retire: (worker, why) => {
            const current = live();
            // Keep the last ready worker while the breaker is not closed: its replacement
            // could not start.
            if (circuitStateOf(current) !== 'closed' && current.router.ready <= 1) return false;
            // Deferred: this runs inside call() and inside a worker's transition, where a user's
            // listener must neither run nor throw (XState's own emits are deferred the same way).
            const { rss } = worker;
            queueMicrotask(() =>
              input.onRoutingEvent({
                type: 'worker.recycling',
                workerId: worker.slot,
                pid: worker.pid,
                why,
                rss,
              }),
            );
            worker.stop('recycle');
            return true;
          },
          emit: (event) => queueMicrotask(() => input.onRoutingEvent(event)),
          // Elastic size only; one event for a burst of calls (sent outside the call's path).
          ...(options.minSize < options.size
            ? {
                growing: () => {
                  const current = live();
                  return current.slots.some(
                    (slot) =>
                      slot.parked ||
                      (!slot.parking && !(slot.worker && current.router.isCurrent(slot.worker))),
                  );
                },
                demand: () => {
                  if (demandSent || !live().slots.some((slot) => slot.parked)) return;
                  demandSent = true;
                  queueMicrotask(() => {
                    demandSent = false;
                    if ((self as AnyActorRef).getSnapshot().status === 'active') {
                      self.send({ type: 'pool.demand' });
                    }
                  });
                },
              }
            : {}),
        },
      ),
      intensity: new RestartIntensity(options.restart.maxRestarts, options.restart.period),
      circuit,
      probe: null,
      lastStartError: null,
      failure: null,
      trips: 0,
      recoveredAt: null,
      coolDown: null,
      reload: null,
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
        'worker.ready': { actions: 'note worker ready' },
        'health.failed': { actions: 'report health failure' },
        'worker.exited': [
          {
            guard: 'restart intensity exceeded and the pool cools down',
            target: 'failed.coolingDown',
            actions: ['release worker', 'fail the pool'],
          },
          {
            guard: 'restart intensity exceeded',
            target: 'failed',
            actions: ['release worker', 'fail the pool'],
          },
          { actions: 'handle worker exit' },
        ],
        'template.exited': [
          {
            guard: 'restart intensity exceeded and the pool cools down',
            target: 'failed.coolingDown',
            actions: 'fail the pool',
          },
          { guard: 'restart intensity exceeded', target: 'failed', actions: 'fail the pool' },
          { actions: 'count template crash' },
        ],
        'xstate.done.actor.*': WORKER_DONE_TRANSITION,
        'xstate.error.actor.*': { target: 'failed', actions: 'fail the pool for a child error' },
        'restart.due': { actions: 'restart slot' },
        'circuit.opened': { actions: 'note circuit opened' },
        'circuit.halfOpen': { actions: 'start the probe' },
        'circuit.closed': { actions: 'start parked slots' },
        'maintenance.tick': { actions: 'do maintenance' },
        'pool.reload': { actions: 'begin reload' },
        'pool.demand': { actions: 'grow' },
        'pool.close': { target: 'closing' },
        // Raised only while closing.
        'close.deadline': {},
        // Raised only while cooling down; the pool is up again only after it.
        'coolDown.expired': {},
      },
    },
    // Calls fail fast with ERR_POOL_FAILED. After a restart-intensity trip the pool waits out a
    // cool-down, then starts its workers again; other failures (no interpreter, a bug) are final.
    failed: {
      entry: 'shut down for failure',
      initial: 'forGood',
      states: {
        forGood: {},
        coolingDown: {
          entry: 'schedule recovery',
          on: { 'coolDown.expired': { target: 'waitingForExits' } },
        },
        // Old workers finish their calls and exit before the new ones start.
        waitingForExits: {
          always: {
            guard: 'no worker left',
            target: '#supervisor.up.starting',
            actions: 'recover',
          },
        },
      },
      on: {
        ...WINDING_DOWN,
        'pool.close': { target: 'closing' },
        // Raised only while closing.
        'close.deadline': {},
      },
    },
    closing: {
      entry: 'begin closing',
      always: { guard: 'no worker left', target: 'closed' },
      on: {
        ...WINDING_DOWN,
        'close.deadline': { actions: 'kill remaining workers' },
        // Already closing (close() returns the same promise; this is a second event at most).
        'pool.close': {},
      },
    },
    closed: { type: 'final' },
  },
});

/** A running supervisor actor. */
export type SupervisorActor = ActorRefFrom<typeof supervisorMachine>;

/** The pool's public phase. */
export type PoolPhase = 'starting' | 'running' | 'failed' | 'closing' | 'closed';

/** One slot as `stats()` shows it. */
export interface SlotView {
  /** Slot index, stable across restarts. */
  id: number;
  /** Pid of the slot's current process, or null between processes. */
  pid: number | null;
  state: WorkerState;
  /** Calls that started on this slot, over all its processes. */
  calls: number;
  /**
   * Calls running on the slot's process now (up to `concurrency`; a cancelled one until Python
   * acknowledges the cancel). A call handed to it early by pipelining counts once it starts, and
   * in the pool's `queued` until then. `state` is `busy` while it is ≥ 1.
   */
  inFlight: number;
  /** Processes started in this slot after the first. */
  restarts: number;
  /** Generation of the current (or last) process; 1 for the first. */
  generation: number;
  /**
   * Resident memory (RSS) of the slot's process at the last maintenance tick, bytes (at least
   * once a second, from `/proc/<pid>/statm`); null before the first sample, between processes,
   * and where there is no `/proc`.
   */
  rss: number | null;
}

/** What the pool may know of its supervisor: read-only, decoded here and nowhere else. */
export interface SupervisorView {
  phase: PoolPhase;
  failure: PyvisorError | null;
  circuit: CircuitState;
  queued: number;
  sessions: number;
  /** Every slot has a worker that is ready or busy. */
  allReady: boolean;
  slots: SlotView[];
}

/** The pool's view of a supervisor snapshot. */
export function viewOf(snapshot: SnapshotFrom<typeof supervisorMachine>): SupervisorView {
  const { context } = snapshot;
  const { router } = context;
  let phase: PoolPhase;
  if (snapshot.status === 'done') phase = 'closed';
  else if (snapshot.status === 'error' || snapshot.matches('failed')) phase = 'failed';
  else if (snapshot.matches('closing')) phase = 'closing';
  else if (snapshot.matches({ up: 'running' })) phase = 'running';
  else phase = 'starting';
  // An elastic pool's parked slots have no worker: stats show the workers there are.
  const slots = context.slots
    .filter((slot) => !slot.parked)
    .map((slot) => ({
      id: slot.index,
      pid: slot.worker?.pid ?? null,
      state: slotState(slot),
      calls: router.callsOf(slot.index),
      inFlight: slot.worker ? inFlightOf(slot.worker.ref.getSnapshot()) : 0,
      restarts: slot.restarts,
      generation: slot.generation,
      rss: slot.worker?.rss ?? null,
    }));
  return {
    phase,
    failure: context.failure,
    circuit: circuitStateOf(context),
    queued: router.queued,
    sessions: router.sessions,
    allReady:
      router.ready === activeSlots(context) &&
      context.slots.every(
        (slot) => slot.parked || slot.parking || ['ready', 'busy'].includes(slotState(slot)),
      ),
    slots,
  };
}

/** Whether the pool has failed: `undefined` if not, else its failure (null for an internal error). */
export function failureOf(
  snapshot: SnapshotFrom<typeof supervisorMachine>,
): PyvisorError | null | undefined {
  if (snapshot.status === 'error' || snapshot.matches('failed')) return snapshot.context.failure;
  return undefined;
}

/** The public state of a slot. */
export function slotState(slot: Slot): WorkerState {
  if (!slot.worker) return slot.restartPending || slot.blocked ? 'restarting' : 'stopped';
  return workerStateOf(slot.worker.ref.getSnapshot());
}

/** Submits a new call: routing is synchronous (no machine event). */
export function submitCall(supervisor: SupervisorActor, call: PendingCall): void {
  supervisor.getSnapshot().context.router.route(call);
}

/** A call settled early (timeout, abort, stream left): drop it from the queue, or cancel it. */
export function abandonCall(supervisor: SupervisorActor, call: PendingCall): void {
  supervisor.getSnapshot().context.router.abandon(call);
}

/**
 * The supervisor actor itself failed (an exception in pyvisor): XState stopped it and its
 * workers, so nothing else will settle the calls. Rejects the queued ones and those the workers
 * were running.
 */
export function failEveryCall(supervisor: SupervisorActor, error: PyvisorError): void {
  const { context } = supervisor.getSnapshot();
  context.router.stop(() => error);
  for (const slot of context.slots) {
    for (const worker of processesOf(slot)) {
      for (const call of worker.callsInFlight()) call.reject(error);
    }
  }
}
