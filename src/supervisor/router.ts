/**
 * The one owner of routing state: the checkout queue, the free workers and the session pins.
 * Nothing else changes them. The supervisor creates the router and holds it in its context; it
 * tells the router about workers (ready, free, gone) and asks it to `route` calls. Routing runs
 * synchronously on the per-call path (a new call, a worker finishing one), without a trip
 * through the supervisor's mailbox, which would cost two machine events per call (see
 * docs/benchmarks.md).
 *
 * The router knows nothing of XState: a worker is a {@link RoutedWorker} (one per process), a
 * call a {@link RoutedCall}, and time comes from an injected clock, so it is unit-tested alone.
 */
import { type PyvisorError, QueueFullError } from '../errors.js';
import { CheckoutQueue, type QueuedCall } from './checkout-queue.js';
import { SessionTable } from './sessions.js';

/** What the router needs of a call. */
export interface RoutedCall extends QueuedCall {
  readonly id: number;
  readonly session: string | undefined;
  /** Slot of the worker running it, once dispatched (-1 before). */
  readonly workerId: number;
  reject(error: unknown): void;
}

/** One worker process, as the router sees it. */
export interface RoutedWorker<C extends RoutedCall> {
  /** Slot index (stable across the slot's processes). */
  readonly slot: number;
  /** Which process of the slot this is. */
  readonly generation: number;
  /**
   * When the process reported ready (the router's clock), for `recycle.maxAge`: a worker's age
   * counts from then, so a start slower than `maxAge` still serves calls before it is retired.
   */
  readonly readyAt: number;
  /** Resident memory at the last sample, bytes (null: not sampled), for `recycle.maxRss`. */
  readonly rss: number | null;
  /**
   * Whether it takes calls at all at this moment (it may be ending without having said so);
   * whether it has room is the router's count.
   */
  accepting(): boolean;
  /** Hands it a call (it must have room). */
  start(call: C): void;
  /** Asks it to cancel the call it runs with this id (ignored if it runs another). */
  cancel(callId: number): void;
}

/** What routing tells the outside world. */
export type RouterEvent = {
  type: 'session.moved';
  session: string;
  from: { workerId: number; generation: number };
  to: { workerId: number; generation: number };
};

/** Why a worker is due for replacement. */
export type RetireWhy = 'maxCalls' | 'maxAge' | 'maxRss';

/** What the router asks of its owner (the supervisor). */
export interface RouterHooks<C extends RoutedCall, W extends RoutedWorker<C>> {
  /** The clock, ms (`performance.now` in the pool, a fake in tests). */
  now(): number;
  /** The error for a call that finds no free worker and may not wait for one, or null. */
  refusal(): PyvisorError | null;
  /**
   * A free worker is past `recycle.maxCalls` or `recycle.maxAge`: stop it and return true (the
   * router then routes nothing more to it), or return false to keep it (the supervisor keeps the
   * last ready worker while no replacement can start).
   */
  retire(worker: W, why: RetireWhy): boolean;
  /** Told after the router's own state changed; never from inside a worker's transition. */
  emit(event: RouterEvent): void;
  /**
   * A call found no free worker: an elastic pool may start another. Called synchronously,
   * possibly inside a transition.
   */
  demand?(): void;
  /** An elastic pool may still add a worker, or one it added is not ready yet. */
  growing?(): boolean;
}

/** Options of a {@link Router}. */
export interface RouterOptions {
  slots: number;
  /** Calls one worker runs at once (`concurrency`). Default 1. */
  concurrency?: number;
  /**
   * A worker that runs calls one at a time (`concurrency` 1) may be handed its next call while it
   * runs one, when calls would otherwise wait: it starts that call the moment the running one ends,
   * without a round trip through Node. Default false.
   */
  pipeline?: boolean;
  maxQueue: number;
  sessionTtl: number;
  recycle: { maxCalls: number; maxAge: number; maxRss: number };
}

/** The read-only view of routing that `stats()`, telemetry and the inspector get. */
export interface RouterView {
  /** Calls waiting to start: in the queue, or handed early to a busy worker (pipelining). */
  readonly queued: number;
  /** Sessions pinned now (expired ones not yet swept included). */
  readonly sessions: number;
  /** Workers registered as ready (idle or busy). */
  readonly ready: number;
  /** Workers with a free place. */
  readonly free: number;
  /** Calls routed to the current worker of `slot` and not finished there. */
  loadOf(slot: number): number;
  /** Calls dispatched to `slot`, all its processes together. */
  callsOf(slot: number): number;
}

/**
 * Calls a busy worker may be handed early, beyond its `concurrency` places: one with pipelining on
 * a serial worker, else none. The one rule for the router's count and the worker's capacity.
 */
export function earlyCalls(concurrency: number, pipeline: boolean | undefined): number {
  return pipeline && concurrency === 1 ? 1 : 0;
}

/** What the maintenance tick found. */
export interface Maintenance<W> {
  /** Sessions that expired (now forgotten). */
  expired: string[];
  /**
   * Ready workers (idle or busy) that showed no sign of life (ready, a finished call, a check)
   * for the health-check interval: the supervisor pings them.
   */
  toCheck: W[];
}

/**
 * Routes calls to workers. A worker has `concurrency` places; the router counts the calls each
 * one holds (its load). Workers with a free place are a stack ordered by last use: a call goes to
 * the least loaded of them, and among equals to the most recently used (LIFO, as pgbouncer and
 * HikariCP do), so sequential calls keep one process warm instead of rotating over all of them.
 * With pipelining, a call that finds every place taken is handed to a busy serial worker (one
 * extra call each) instead of waiting in the queue.
 */
export class Router<C extends RoutedCall, W extends RoutedWorker<C>> implements RouterView {
  readonly #hooks: RouterHooks<C, W>;
  readonly #maxQueue: number;
  /** Places per worker (`concurrency`). */
  readonly #places: number;
  /** Extra calls a worker with every place taken may be handed early (pipelining). */
  readonly #extra: number;
  readonly #recycle: { maxCalls: number; maxAge: number; maxRss: number };
  /** `recycle.maxAge` is set (the clock is not read per call otherwise). */
  readonly #agesOut: boolean;
  readonly #queue: CheckoutQueue<C>;
  readonly #sessions: SessionTable;
  /** The ready worker of each slot, or null. */
  readonly #workers: (W | null)[];
  /** A slot's new worker that said it was free before it was registered as ready. */
  readonly #early: (W | null)[];
  /** Workers with a free place, least recently used first (the top of the stack is the end). */
  #free: W[] = [];
  /** Calls routed to each slot's current worker and not finished there. */
  readonly #load: number[];
  /**
   * Calls handed early to a busy serial worker (pipelining) that have not started: still waiting,
   * so they count as queued, and are cancelled on their worker when they give up.
   */
  readonly #ahead = new Map<C, W>();
  /** The order in which each slot's worker last took a call (the free stack's order). */
  readonly #lastUsed: number[];
  #uses = 0;
  /** When each slot's worker last showed a sign of life (ready, a call finished, a check sent). */
  readonly #seen: number[];
  readonly #calls: number[];
  readonly #processCalls: number[];
  /** Set once the pool stops taking calls: why new calls are refused. */
  #stopped: (() => PyvisorError) | null = null;

  constructor(options: RouterOptions, hooks: RouterHooks<C, W>) {
    this.#hooks = hooks;
    this.#maxQueue = options.maxQueue;
    this.#places = Math.max(1, options.concurrency ?? 1);
    this.#extra = earlyCalls(this.#places, options.pipeline);
    this.#recycle = options.recycle;
    this.#agesOut = Number.isFinite(options.recycle.maxAge);
    this.#queue = new CheckoutQueue<C>(options.slots);
    this.#sessions = new SessionTable(options.sessionTtl);
    this.#workers = Array.from({ length: options.slots }, () => null);
    this.#early = Array.from({ length: options.slots }, () => null);
    this.#lastUsed = new Array<number>(options.slots).fill(0);
    this.#seen = new Array<number>(options.slots).fill(0);
    this.#load = new Array<number>(options.slots).fill(0);
    this.#calls = new Array<number>(options.slots).fill(0);
    this.#processCalls = new Array<number>(options.slots).fill(0);
  }

  get queued(): number {
    return this.#queue.size + this.#ahead.size;
  }

  get sessions(): number {
    return this.#sessions.size;
  }

  get ready(): number {
    let n = 0;
    for (const w of this.#workers) if (w) n++;
    return n;
  }

  get free(): number {
    return this.#free.length;
  }

  callsOf(slot: number): number {
    return this.#calls[slot] ?? 0;
  }

  loadOf(slot: number): number {
    return this.#workers[slot] ? this.#load[slot]! : 0;
  }

  /** Whether `worker` is the slot's current ready worker. */
  isCurrent(worker: W): boolean {
    return this.#workers[worker.slot] === worker;
  }

  // --- calls -------------------------------------------------------------------------------

  /** Finds a worker for a new call, or queues it; rejects it when it cannot run. */
  route(call: C): void {
    if (call.settled) return;
    if (this.#stopped) {
      call.reject(this.#stopped());
      return;
    }
    const pinned = this.#pinnedWorker(call);
    if (pinned) {
      this.#sessions.bind(call.session!, pinned.slot, pinned.generation, this.#hooks.now());
      const limit = this.#places + (this.queued < this.#maxQueue ? this.#earlyNow() : 0);
      if (this.#hasRoom(pinned, limit) && pinned.accepting()) {
        this.#dispatch(pinned, call);
        return;
      }
      // Retired just now (due for replacement): its sessions may go anywhere.
      if (!this.isCurrent(pinned)) {
        this.route(call);
        return;
      }
    } else {
      const free = this.#pickFree();
      if (free) {
        this.#dispatch(free, call);
        return;
      }
      this.#hooks.demand?.();
      const early = this.queued < this.#maxQueue ? this.#pickEarly() : null;
      if (early) {
        this.#dispatch(early, call);
        return;
      }
      const refusal = this.#hooks.refusal();
      if (refusal) {
        call.reject(refusal);
        return;
      }
    }
    if (this.queued >= this.#maxQueue) {
      call.reject(new QueueFullError(this.#maxQueue));
      return;
    }
    this.#queue.push(call, pinned?.slot);
  }

  /** A call settled on its own (timeout, abort, stream left): drop it, or cancel it where it runs. */
  abandon(call: C): void {
    if (call.queued) {
      this.#queue.dropped(call);
      return;
    }
    const early = this.#ahead.get(call);
    if (early) {
      // Waiting in its worker's process: the cancel drops it there before it starts.
      this.#ahead.delete(call);
      early.cancel(call.id);
      return;
    }
    if (call.workerId >= 0) this.#workers[call.workerId]?.cancel(call.id);
  }

  /**
   * `from` could not take the call it was handed (it was ending or full), or died before the call
   * started: route it again, ahead of the calls that came after it.
   */
  bounced(call: C, from?: W, gone = false): void {
    this.#ahead.delete(call);
    if (from && this.isCurrent(from)) {
      // A worker going away says so before it is reported gone: route nothing more to it.
      if (gone) this.#drop(from);
      else if (this.#load[from.slot]! > 0) this.#load[from.slot]!--;
    }
    if (call.settled) return;
    if (this.#stopped) {
      call.reject(this.#stopped());
      return;
    }
    this.#queue.requeue(call);
    this.#serveAll();
  }

  /**
   * Whether `worker`, on finishing a call, can take a waiting call in its place at once (in the
   * same machine event as the reply). Changes nothing. Only the plain case: retirement and a call
   * whose session moved elsewhere go through {@link workerFree}.
   */
  hasCallFor(worker: W): boolean {
    if (this.#stopped || !this.isCurrent(worker) || this.#retirementDue(worker) !== null) {
      return false;
    }
    const call = this.#queue.peekLive(worker.slot);
    if (!call) return false;
    if (call.session === undefined) return true;
    const binding = this.#sessions.peek(call.session, this.#hooks.now());
    if (!binding) return true;
    const pinned = this.#workers[binding.slot];
    return !pinned || pinned.generation !== binding.generation || pinned === worker;
  }

  /**
   * Takes the call {@link hasCallFor} saw, for `worker`, which is about to run it in the place of
   * the call it just finished.
   */
  nextFor(worker: W): C | undefined {
    const call = this.#queue.next(worker.slot);
    if (call) {
      this.#load[worker.slot]!--;
      this.#seen[worker.slot] = this.#hooks.now();
      this.#claim(worker, call);
    }
    return call;
  }

  /** A call handed early to `worker` started there, now that the call before it finished. */
  started(worker: W, call: C): void {
    if (this.#ahead.delete(call) && this.isCurrent(worker)) this.#calls[worker.slot]!++;
  }

  // --- workers -----------------------------------------------------------------------------

  /**
   * A new process reported ready: it joins the pool. It takes calls when it says it is free (its
   * first `worker.free` follows its `worker.ready`), or now if that came first.
   */
  workerReady(worker: W): void {
    const slot = worker.slot;
    this.#workers[slot] = worker;
    this.#processCalls[slot] = 0;
    this.#load[slot] = 0;
    this.#lastUsed[slot] = 0;
    this.#seen[slot] = this.#hooks.now();
    if (this.#early[slot] === worker) {
      this.#early[slot] = null;
      this.#serve(worker);
    }
  }

  /**
   * A place on `worker` became free: a call finished there and it took nothing in its place (or
   * it just became ready).
   */
  workerFree(worker: W): void {
    if (!this.isCurrent(worker)) {
      // Free before its readiness was noted: served once it is.
      if (this.#workers[worker.slot] === null) this.#early[worker.slot] = worker;
      return;
    }
    const slot = worker.slot;
    if (this.#load[slot]! > 0) this.#load[slot]!--;
    this.#seen[slot] = this.#hooks.now();
    this.#serve(worker);
  }

  /** A worker is ending or gone: it takes no more calls, and calls pinned to it may go anywhere. */
  workerGone(worker: W): void {
    // Calls that waited in it were handed back already (or failed with it).
    for (const [call, w] of this.#ahead) if (w === worker) this.#ahead.delete(call);
    if (!this.#drop(worker)) return;
    if (!this.#stopped) this.#serveAll();
  }

  /**
   * The maintenance tick: forgets expired sessions, retires workers past `maxAge` (busy ones stop
   * once their calls finish), and returns the workers due for a health check: those that showed
   * no sign of life for `healthInterval` ms, idle or busy. The supervisor pings them; they keep
   * taking calls meanwhile, and one that fails the check is reported gone.
   */
  maintain(healthInterval: number | null): Maintenance<W> {
    const t = this.#hooks.now();
    const expired = this.#sessions.sweep(t);
    const toCheck: W[] = [];
    let retired = false;
    for (const worker of this.#workers) {
      if (!worker) continue;
      // A busy worker is retired too: it takes no more calls and stops once its calls finish.
      if (this.#retireIfDue(worker)) {
        retired = true;
      } else if (healthInterval !== null && t - this.#seen[worker.slot]! >= healthInterval) {
        this.#seen[worker.slot] = t;
        toCheck.push(worker);
      }
    }
    // Calls pinned to a retired worker may go to another one now.
    if (retired && !this.#stopped) this.#serveAll();
    return { expired, toCheck };
  }

  /** Fails every waiting call with `error()` (the breaker opened and no worker is ready). */
  rejectQueued(error: () => PyvisorError): void {
    for (const call of this.#queue.drain()) call.reject(error());
  }

  /**
   * The pool stops taking calls (it failed or is closing): waiting calls and every later one are
   * rejected with `reason()`, sessions are forgotten, and no worker is handed another call.
   */
  stop(reason: () => PyvisorError): void {
    if (this.#stopped) return;
    this.#stopped = reason;
    this.#free = [];
    this.#sessions.clear();
    this.rejectQueued(reason);
    // Calls handed early have not started either: they are cancelled where they wait.
    for (const [call, worker] of [...this.#ahead]) {
      this.#ahead.delete(call);
      call.reject(reason());
      worker.cancel(call.id);
    }
  }

  /** The pool takes calls again after {@link stop} (it recovered from a cool-down). */
  resume(): void {
    this.#stopped = null;
  }

  // --- internals ---------------------------------------------------------------------------

  /**
   * Gives `worker`, which has a free place, the oldest calls it may run (one more than its places
   * with pipelining), and keeps it on the free stack while it has room.
   */
  #serve(worker: W): void {
    if (this.#stopped) return;
    if (this.#retireIfDue(worker)) {
      this.#serveAll();
      return;
    }
    const slot = worker.slot;
    const limit = this.#places + this.#earlyNow();
    while (this.#load[slot]! < limit && this.#queue.size > 0) {
      if (this.#retireIfDue(worker)) {
        this.#serveAll();
        return;
      }
      const call = this.#queue.next(slot);
      if (!call) break;
      const pinned = this.#pinnedWorker(call);
      if (pinned && pinned !== worker) {
        // Its session was pinned elsewhere after it was queued: wait there instead (unless that
        // worker was retired just now: then it runs here).
        if (this.#hasRoom(pinned, limit) && pinned.accepting()) this.#dispatch(pinned, call);
        else if (this.isCurrent(pinned)) this.#queue.requeue(call, pinned.slot);
        else this.#dispatch(worker, call);
        continue;
      }
      this.#dispatch(worker, call);
    }
    if (this.#load[slot]! < this.#places) this.#pushFree(worker);
  }

  /** Matches every worker that has room with waiting calls (after calls were moved around). */
  #serveAll(): void {
    const free = this.#free;
    this.#free = [];
    for (const worker of free) this.#serve(worker);
    const extra = this.#earlyNow();
    if (extra === 0 || this.#queue.size === 0) return;
    for (const worker of this.#workers) {
      if (worker && this.#load[worker.slot]! < this.#places + extra) this.#serve(worker);
    }
  }

  /**
   * The free worker a new call goes to: the least loaded, and among equals the most recently used
   * (the top of the stack). With one place each, that is the top.
   */
  #pickFree(): W | undefined {
    const free = this.#free;
    while (free.length > 0) {
      let best = free.length - 1;
      if (this.#places > 1) {
        for (let i = best - 1; i >= 0; i--) {
          if (this.#load[free[i]!.slot]! < this.#load[free[best]!.slot]!) best = i;
        }
      }
      const worker = free[best]!;
      // Not taking calls after all (it is ending; its exit will be reported).
      if (!worker.accepting()) {
        free.splice(best, 1);
        continue;
      }
      // Retired now (that takes it off the stack), unless the supervisor keeps it.
      if (this.#retireIfDue(worker)) continue;
      return worker;
    }
    return undefined;
  }

  /**
   * Calls a worker may hold beyond its places now: none while an elastic pool may still add a
   * worker (a waiting call goes to it rather than behind a busy worker's call).
   */
  #earlyNow(): number {
    return this.#extra === 0 || this.#hooks.growing?.() ? 0 : this.#extra;
  }

  /**
   * Pipelining: a busy serial worker that may be handed one call early. The one that took its
   * running call longest ago, which is the likeliest to finish first.
   */
  #pickEarly(): W | undefined {
    const extra = this.#earlyNow();
    if (extra === 0) return undefined;
    let best: W | undefined;
    for (const worker of this.#workers) {
      if (
        worker &&
        this.#load[worker.slot]! < this.#places + extra &&
        (!best || this.#lastUsed[worker.slot]! < this.#lastUsed[best.slot]!) &&
        worker.accepting()
      ) {
        best = worker;
      }
    }
    // Retired now, unless the supervisor keeps it; the call then waits in the queue.
    return best && !this.#retireIfDue(best) ? best : undefined;
  }

  #hasRoom(worker: W, limit: number): boolean {
    return this.#load[worker.slot]! < limit && !this.#retireIfDue(worker);
  }

  #dispatch(worker: W, call: C): void {
    this.#claim(worker, call);
    const slot = worker.slot;
    if (this.#load[slot]! >= this.#places) this.#removeFree(worker);
    else if (this.#places > 1) this.#moveToTop(worker);
    worker.start(call);
  }

  /** The bookkeeping of a call going to `worker`: counters and the session pin. */
  #claim(worker: W, call: C): void {
    const slot = worker.slot;
    // Every place taken: it waits in the process (pipelining) and is counted once it starts.
    if (this.#load[slot]! >= this.#places) this.#ahead.set(call, worker);
    else this.#calls[slot]!++;
    this.#load[slot]!++;
    this.#processCalls[slot]!++;
    this.#lastUsed[slot] = ++this.#uses;
    if (call.session === undefined) return;
    const previous = this.#sessions.bind(call.session, slot, worker.generation, this.#hooks.now());
    if (previous) {
      this.#hooks.emit({
        type: 'session.moved',
        session: call.session,
        from: { workerId: previous.slot, generation: previous.generation },
        to: { workerId: slot, generation: worker.generation },
      });
    }
  }

  /** The live worker a call's session pins it to, if any. */
  #pinnedWorker(call: C): W | undefined {
    if (call.session === undefined) return undefined;
    const binding = this.#sessions.get(call.session, this.#hooks.now());
    if (!binding) return undefined;
    const worker = this.#workers[binding.slot];
    return worker && worker.generation === binding.generation ? worker : undefined;
  }

  /** Retires `worker` if it is due and the supervisor agrees; it then takes no more calls. */
  #retireIfDue(worker: W): boolean {
    const why = this.#retirementDue(worker);
    if (why === null || !this.#hooks.retire(worker, why)) return false;
    this.#drop(worker);
    return true;
  }

  /** Forgets a worker that takes no more calls; calls pinned to it may go anywhere. */
  #drop(worker: W): boolean {
    if (this.#early[worker.slot] === worker) this.#early[worker.slot] = null;
    if (!this.isCurrent(worker)) return false;
    this.#workers[worker.slot] = null;
    this.#load[worker.slot] = 0;
    this.#removeFree(worker);
    this.#queue.unpin(worker.slot);
    return true;
  }

  #retirementDue(worker: W): RetireWhy | null {
    if (this.#processCalls[worker.slot]! >= this.#recycle.maxCalls) return 'maxCalls';
    if (worker.rss !== null && worker.rss > this.#recycle.maxRss) return 'maxRss';
    if (this.#agesOut && this.#hooks.now() - worker.readyAt >= this.#recycle.maxAge) {
      return 'maxAge';
    }
    return null;
  }

  #pushFree(worker: W): void {
    if (this.#free.includes(worker)) return;
    const slot = worker.slot;
    // Ordered by when each worker last took a call: one coming back from a health check keeps
    // its place at the bottom.
    const last = this.#lastUsed[slot]!;
    const free = this.#free;
    let i = free.length;
    while (i > 0 && this.#lastUsed[free[i - 1]!.slot]! > last) i--;
    // Usually the top: the worker that just finished is the most recently used.
    if (i === free.length) free.push(worker);
    else free.splice(i, 0, worker);
  }

  /** A worker on the free stack that just took a call is now the most recently used. */
  #moveToTop(worker: W): void {
    if (this.#removeFree(worker)) this.#free.push(worker);
  }

  #removeFree(worker: W): boolean {
    const free = this.#free;
    const i = free.indexOf(worker);
    if (i < 0) return false;
    if (i === free.length - 1) free.pop();
    else free.splice(i, 1);
    return true;
  }
}
