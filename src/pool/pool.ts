import { statSync } from 'node:fs';
import { EventEmitter } from 'eventemitter3';
import { type Actor, createActor } from 'xstate';
import {
  InvalidOptionError,
  PoolClosedError,
  PoolFailedError,
  type PyvisorError,
  WorkerCrashedError,
  WorkerInitError,
} from '../errors.js';
import type { WorkerActor } from '../machines/worker.machine.js';
import { workerStateOf } from '../machines/worker-state.js';
import { type Inspector, sanitizingInspector } from '../observe/inspect.js';
import { attachLogger } from '../observe/logger.js';
import { PoolTelemetry } from '../observe/telemetry.js';
import { encodeCall } from '../protocol/index.js';
import {
  abandonCall,
  failEveryCall,
  failureOf,
  type SlotView,
  type SupervisorEmitted,
  type SupervisorEvent,
  submitCall,
  supervisorMachine,
  viewOf,
} from '../supervisor/supervisor.machine.js';
import { spawnChildProcess } from '../transport/child-process.js';
import { ForkServer } from '../transport/fork-server.js';
import { resolveInterpreter } from '../transport/interpreter.js';
import type { SpawnTransport } from '../transport/transport.js';
import { type CallOwner, PendingCall, STREAM_WINDOW } from './call.js';
import { withCallSite } from './call-site.js';
import type { PoolEvents, WorkerState } from './events.js';
import { LoopHold, unrefClock } from './loop-hold.js';
import {
  describe,
  duration,
  type NormalizedOptions,
  normalizeOptions,
  type PoolOptions,
} from './options.js';
import { watchPython } from './watch.js';

/** Options of one call. */
export interface CallOptions {
  /** Deadline for the whole call in ms, queue wait included. Default: the pool's `callTimeout`. */
  timeout?: number;
  /** Cancels the call; it rejects with `signal.reason`. */
  signal?: AbortSignal;
  /** Pins the call to the worker that served earlier calls with the same session id. */
  session?: string;
  /**
   * Keyword arguments: the handler is called as `fn(*args, **kwargs)`. A plain object; its values
   * travel like `args` (JSON, binary values as raw bytes). Keywords the handler does not take
   * fail as Python would: `ERR_PYTHON` with a `TypeError`.
   */
  kwargs?: Readonly<Record<string, unknown>>;
}

/** Options of {@link Pool.close}. */
export interface CloseOptions {
  /** How long in-flight calls may run before their workers are killed, ms. Default 10000. */
  timeout?: number;
}

/** Public state of the pool. */
export type PoolState = 'starting' | 'running' | 'failed' | 'closing' | 'closed';

/** One worker slot in {@link PoolStats}. */
export type WorkerStats = SlotView;

/** A snapshot of the pool returned by {@link Pool.stats}. */
export interface PoolStats {
  name: string;
  state: PoolState;
  /** Calls waiting to start: in the queue, or handed early to a busy worker (pipelining). */
  queued: number;
  /** Exactly one entry per slot. */
  workers: WorkerStats[];
  /** State of the circuit breaker. */
  circuit: 'closed' | 'open' | 'halfOpen';
  /** Sessions currently pinned. */
  sessions: number;
}

/** Extra, mostly for tests and tools: not needed for normal use. */
export interface PoolInternals {
  /** Replaces the process transport (tests use fakes). */
  spawn?: SpawnTransport;
  /**
   * An XState inspection observer (e.g. `@statelyai/inspect`'s `inspector.inspect`). It sees the
   * supervisor, every worker and the circuit breaker, with sanitised contexts and events.
   */
  inspect?: Inspector;
  /** The supervisor's clock (ms) for worker ages, sessions and restart intensity; tests inject one. */
  now?: () => number;
  /**
   * The platform the fork server believes it runs on (`startMethod: 'forkserver'`); tests pass
   * another than `linux` to force the fallback to spawning.
   */
  platform?: NodeJS.Platform;
}

const DEFAULT_CLOSE_TIMEOUT = 10_000;

/**
 * A pool of supervised Python workers. Create it with {@link createPool}.
 */
export class Pool extends EventEmitter<PoolEvents> implements AsyncDisposable {
  readonly options: NormalizedOptions;
  readonly #actor: Actor<typeof supervisorMachine>;
  #started = false;
  #nextId = 0;
  #closing: Promise<void> | null = null;
  #closed = false;
  /** Set when the supervisor itself failed (an internal error), not by a modelled failure. */
  #failure: PyvisorError | null = null;
  #readyWaiters: { resolve: () => void; reject: (error: unknown) => void }[] = [];
  /** The last reload asked for (running or waiting), and the one waiting for another to end. */
  #reloading: Promise<void> | null = null;
  #reloadQueued: Promise<void> | null = null;
  /** Settles the reload the supervisor runs now. */
  #reloadWaiter: { resolve: () => void; reject: (error: unknown) => void } | null = null;
  readonly #owner: CallOwner;
  readonly #workerStates: WorkerState[];
  /** The state updater of each slot's current worker, once it has started. */
  readonly #workerSync = new Map<number, () => void>();
  readonly #telemetry: PoolTelemetry;
  readonly #hold: LoopHold;
  /** Stops the `watch` option's file watchers. */
  #unwatch: (() => void) | null = null;
  /** With `startMethod: 'forkserver'`: the template and the workers forked from it. */
  readonly #forkServer: ForkServer | null = null;
  #done!: () => void;
  readonly #whenDone = new Promise<void>((resolve) => {
    this.#done = () => {
      this.#unwatch?.();
      this.#unwatch = null;
      const finish = () => {
        this.#hold.end();
        resolve();
      };
      // Every worker is gone: the fork server's template goes too, before close() resolves.
      if (this.#forkServer) this.#forkServer.close().then(finish, finish);
      else finish();
    };
  });

  /** @internal Use {@link createPool}. */
  constructor(options: PoolOptions, internals: PoolInternals = {}) {
    super();
    this.options = normalizeOptions(options);
    checkScript(this.options.script);
    this.#workerStates = Array.from({ length: this.options.size }, () => 'stopped' as WorkerState);
    this.#hold = new LoopHold(this.options.keepAlive);
    this.#owner = {
      abandon: (call) => abandonCall(this.#actor, call),
      settled: () => this.#hold.release(),
    };
    this.#telemetry = new PoolTelemetry(this.options.name, {
      queued: () => viewOf(this.#actor.getSnapshot()).queued,
      workersByState: () => {
        const counts: Record<string, number> = {};
        for (const w of this.stats().workers) counts[w.state] = (counts[w.state] ?? 0) + 1;
        return counts;
      },
    });
    const inspect = internals.inspect;
    if (this.options.startMethod === 'forkserver' && !internals.spawn) {
      this.#forkServer = new ForkServer({
        platform: internals.platform,
        // What the script prints while the template imports it: a line of no worker (-1).
        onOutput: (stream, line) => {
          const event = stream === 'stderr' ? 'worker.stderr' : 'worker.stdout';
          const pid = this.#forkServer?.templatePid ?? null;
          if (this.listenerCount(event) > 0) this.emit(event, { workerId: -1, pid, line });
        },
        onWarning: (warning) => {
          if (this.listenerCount('warning') > 0) this.emit('warning', warning);
        },
        onTemplateExit: (exit) => {
          const status = exit.signal
            ? `was killed by ${exit.signal}`
            : `exited with code ${exit.exitCode}`;
          this.#send({
            type: 'template.exited',
            error: new WorkerCrashedError(
              {
                pid: exit.pid ?? undefined,
                exitCode: exit.exitCode,
                signal: exit.signal,
                stderr: exit.stderr,
              },
              `is the fork server's template: it ${status}, and every worker forked from it died with it`,
            ),
          });
        },
      });
    }
    this.#actor = createActor(supervisorMachine, {
      clock: unrefClock,
      input: {
        options: this.options,
        spawn: internals.spawn ?? this.#forkServer?.spawn ?? spawnChildProcess,
        resolvePython: resolveInterpreter,
        onOutput: (workerId, pid, stream, line) => {
          const event = stream === 'stderr' ? 'worker.stderr' : 'worker.stdout';
          if (this.listenerCount(event) > 0) this.emit(event, { workerId, pid, line });
        },
        onWorkerSpawned: (workerId, ref, adopted) => this.#watchWorker(workerId, ref, adopted),
        ...(internals.now ? { now: internals.now } : {}),
        onRoutingEvent: (event) => this.#onSupervisorEvent(event),
      },
      ...(inspect ? { inspect: sanitizingInspector(inspect) } : {}),
    });
    this.#actor.on('*', (event) => this.#onSupervisorEvent(event as SupervisorEmitted));
    this.#actor.subscribe({
      complete: () => {
        this.#telemetry.close();
        this.#done();
      },
      error: (cause) => {
        // A bug in pyvisor, not in user code: the pool fails, and every promise it returned
        // settles (XState has already stopped the workers, which kills their processes).
        const message = cause instanceof Error ? cause.message : String(cause);
        const error = new PoolFailedError(`The pool failed: internal error: ${message}`, cause);
        this.#failure = error;
        failEveryCall(this.#actor, error);
        this.#telemetry.close();
        this.#onSupervisorEvent({ type: 'pool.failed', error });
        // Kept for listeners of the 0.1 event; nothing depends on anyone listening.
        if (this.listenerCount('error') > 0) this.emit('error', cause);
        this.#done();
      },
    });
    if (this.options.logger) attachLogger(this, this.options.name, this.options.logger);
    if (!this.options.lazy) this.#start();
  }

  /** Pool name. */
  get name(): string {
    return this.options.name;
  }

  /**
   * Resolves once every worker is ready. Rejects when the circuit breaker opens (with
   * `ERR_CIRCUIT_OPEN`, the last start failure as `cause`), when the pool fails, or with
   * `ERR_POOL_CLOSED` when it is closed first. A single start failure does not reject: the pool
   * keeps restarting.
   */
  ready(): Promise<void> {
    this.#start();
    const view = viewOf(this.#actor.getSnapshot());
    if (this.#closing || view.phase === 'closed') {
      return Promise.reject(new PoolClosedError('The pool was closed before it was ready'));
    }
    if (view.phase === 'failed') return Promise.reject(this.#failureOf(view.failure));
    if (view.allReady) return Promise.resolve();
    const hold = this.#hold;
    hold.acquire();
    return new Promise((resolve, reject) =>
      this.#readyWaiters.push({
        resolve: () => {
          hold.release();
          resolve();
        },
        reject: (error) => {
          hold.release();
          reject(error);
        },
      }),
    );
  }

  /**
   * Calls Python handler `fn` with `args` and resolves with its return value.
   *
   * @example
   * ```ts
   * const sum = await pool.call('add', [1, 2]); // 3
   * ```
   */
  call<T = unknown>(
    fn: string,
    args: readonly unknown[] = [],
    options: CallOptions = {},
  ): Promise<T> {
    let promise: Promise<T>;
    try {
      const call = this.#makeCall(fn, args, options, false);
      this.#submit(call);
      promise = call.promise as Promise<T>;
    } catch (error) {
      promise = Promise.reject(error);
    }
    return this.options.callSiteStacks ? withCallSite(promise) : promise;
  }

  /**
   * Calls a generator handler and iterates over what it yields. Leaving the loop early cancels
   * the generator in Python and frees the worker. Items are flow-controlled: Python pauses when
   * Node has not consumed them.
   *
   * @example
   * ```ts
   * for await (const n of pool.stream<number>('count', [3])) console.log(n); // 0 1 2
   * ```
   */
  stream<T = unknown>(
    fn: string,
    args: readonly unknown[] = [],
    options: CallOptions = {},
  ): AsyncIterableIterator<T> {
    let call: PendingCall | null = null;
    let failure: unknown = null;
    try {
      call = this.#makeCall(fn, args, options, true);
    } catch (error) {
      failure = error;
    }
    let submitted = false;
    const next = (): Promise<IteratorResult<T>> => {
      if (!call) {
        const error = failure;
        failure = null;
        return error ? Promise.reject(error) : Promise.resolve({ done: true, value: undefined });
      }
      if (!submitted) {
        submitted = true;
        this.#submit(call);
      }
      return call.next() as Promise<IteratorResult<T>>;
    };
    const sited = this.options.callSiteStacks;
    const iterator: AsyncIterableIterator<T> = {
      next: () => (sited ? withCallSite(next()) : next()),
      return: () => {
        if (call && submitted) return call.return() as Promise<IteratorResult<T>>;
        // Never started: nothing to cancel in Python, but its timers must go.
        call?.reject(new PoolClosedError('The stream was abandoned before it started'));
        call = null;
        failure = null;
        return Promise.resolve({ done: true, value: undefined });
      },
      [Symbol.asyncIterator]() {
        return iterator;
      },
    };
    return iterator;
  }

  /** A snapshot of the pool: its state, the queue and one entry per worker slot. */
  stats(): PoolStats {
    const view = viewOf(this.#actor.getSnapshot());
    return {
      name: this.options.name,
      state: this.#stateOf(view.phase),
      queued: view.queued,
      workers: view.slots,
      circuit: view.circuit,
      sessions: view.sessions,
    };
  }

  /** Current state of the pool. */
  get state(): PoolState {
    return this.#stateOf(viewOf(this.#actor.getSnapshot()).phase);
  }

  #stateOf(phase: PoolState): PoolState {
    if (phase === 'closed' || (this.#closed && !this.#started)) return 'closed';
    if (phase === 'failed') return this.#closing ? 'closing' : 'failed';
    return phase;
  }

  /**
   * Replaces every worker by one running the code on disk now, one slot at a time, without
   * failing a call: each replacement starts beside the worker it replaces, and only once it is
   * ready does the old worker stop taking calls (it finishes the ones it runs, then exits).
   * Resolves when every slot runs the new code. New code that does not start (a syntax error, an
   * `@on_init` that raises) rejects with its `ERR_WORKER_INIT` (traceback included) while the old
   * workers keep serving; nothing counts towards the restart intensity or the circuit breaker.
   * A reload asked for while one runs starts once it is done (calls made meanwhile share it).
   */
  reload(): Promise<void> {
    if (this.#closed) return Promise.reject(new PoolClosedError('The pool is closed'));
    // One already waits for the running reload: it will load the code on disk when it starts.
    if (this.#reloadQueued) return this.#reloadQueued;
    let reload: Promise<void> | undefined;
    const run = async (): Promise<void> => {
      if (this.#reloadQueued === reload) this.#reloadQueued = null;
      await this.ready();
      // With the fork server, the template is replaced first: workers fork from what it imported.
      if (this.#forkServer) await this.#renewTemplate();
      await new Promise<void>((resolve, reject) => {
        this.#reloadWaiter = { resolve, reject };
        this.#send({ type: 'pool.reload' });
      });
    };
    const running = this.#reloading;
    const hold = this.#hold;
    hold.acquire();
    reload = (running ? running.then(run, run) : run()).finally(() => {
      hold.release();
      if (this.#reloading === reload) this.#reloading = null;
    });
    if (running) this.#reloadQueued = reload;
    this.#reloading = reload;
    return reload;
  }

  /** A new fork-server template for a reload; its failure fails the reload like a worker's. */
  async #renewTemplate(): Promise<void> {
    try {
      await this.#forkServer!.renew();
    } catch (cause) {
      const failure = cause as Error & {
        init?: { type: string; message: string; traceback: string };
        stderr?: string;
      };
      const init = failure.init;
      const error = new WorkerInitError(
        init ? 'error' : 'crash',
        {
          stderr: failure.stderr ?? '',
          ...(init
            ? {
                pythonType: init.type,
                pythonMessage: init.message,
                pythonTraceback: init.traceback,
              }
            : {}),
        },
        { cause },
      );
      this.emit('reload.failed', { name: this.name, error });
      throw error;
    }
  }

  /**
   * Stops accepting calls, rejects queued ones with `ERR_POOL_CLOSED`, ends starting workers at
   * once, lets in-flight calls finish for up to `timeout` ms, then ends every process (shutdown
   * message, SIGTERM, SIGKILL). Resolves when every process has exited. Calling it again returns
   * the same promise.
   */
  close(options: CloseOptions = {}): Promise<void> {
    if (this.#closing) return this.#closing;
    let timeout: number;
    try {
      timeout = duration('timeout', options?.timeout, DEFAULT_CLOSE_TIMEOUT);
    } catch (error) {
      return Promise.reject(error);
    }
    this.#closed = true;
    this.#unwatch?.();
    this.#unwatch = null;
    this.#rejectReadyWaiters(new PoolClosedError('The pool was closed before it was ready'));
    if (!this.#started || this.#actor.getSnapshot().status === 'error') {
      // Nothing was started (a lazy pool), or XState already stopped every worker.
      this.#telemetry.close();
      // After an internal error, the fork server may still be closing (see #done).
      this.#closing = this.#started ? this.#whenDone : Promise.resolve();
      return this.#closing;
    }
    this.#hold.acquire(); // until done, which ends the hold
    this.#closing = (async () => {
      this.#send({ type: 'pool.close', timeout });
      await this.#whenDone;
    })();
    return this.#closing;
  }

  /** `await using pool = createPool(...)` closes the pool at the end of the scope. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  #start(): void {
    if (this.#started || this.#closed) return;
    this.#started = true;
    this.#hold.start();
    this.#actor.start();
    const { watch } = this.options;
    if (watch) {
      this.#unwatch = watchPython(watch.paths, watch.debounce, (files) => {
        if (this.#closed) return;
        this.emit('watch.change', { name: this.name, files });
        // The outcome is reported by reload.done / reload.failed (and the logger).
        this.reload().catch(() => {});
      });
    }
  }

  #send(event: SupervisorEvent): void {
    this.#actor.send(event);
  }

  #makeCall(fn: string, args: readonly unknown[], options: CallOptions, stream: boolean) {
    if (typeof fn !== 'string' || fn.length === 0) {
      throw new InvalidOptionError(
        'fn',
        `Expected the handler name to be a non-empty string, got ${String(fn)}`,
      );
    }
    if (!Array.isArray(args)) {
      throw new InvalidOptionError('args', `Expected \`args\` to be an array, got ${typeof args}`);
    }
    if (typeof options !== 'object' || options === null) {
      throw new InvalidOptionError('options', 'Expected call options to be an object');
    }
    const timeout =
      options.timeout === undefined
        ? this.options.callTimeout
        : duration('timeout', options.timeout, 0, { allowZero: false });
    const { signal, session, kwargs } = options;
    if (kwargs !== undefined && !isPlainObject(kwargs)) {
      throw new InvalidOptionError(
        'kwargs',
        `Expected \`kwargs\` to be a plain object of keyword arguments, got ${describe(kwargs)}`,
      );
    }
    if (signal !== undefined && !(signal instanceof AbortSignal)) {
      throw new InvalidOptionError('signal', 'Expected `signal` to be an AbortSignal');
    }
    if (session !== undefined && (typeof session !== 'string' || session.length === 0)) {
      throw new InvalidOptionError('session', 'Expected `session` to be a non-empty string');
    }
    if (this.#closed) throw new PoolClosedError();
    // Per call: the cheap check, not the whole view.
    const failure = failureOf(this.#actor.getSnapshot());
    if (failure !== undefined) throw this.#failureOf(failure);
    if (signal?.aborted) {
      throw signal.reason ?? new DOMException('This operation was aborted', 'AbortError');
    }
    const id = ++this.#nextId;
    const telemetry = this.#telemetry.startCall(fn, session);
    let frame: Buffer | Buffer[];
    try {
      frame = encodeCall(
        {
          id,
          fn,
          args,
          kwargs,
          streamCredit: stream ? STREAM_WINDOW : undefined,
          traceparent: telemetry?.traceparent,
        },
        this.options.maxMessageSize,
      );
    } catch (error) {
      telemetry?.settled((error as PyvisorError).code ?? 'error', error, 0);
      throw error;
    }
    return new PendingCall({
      id,
      fn,
      frame,
      stream,
      session,
      timeout,
      checkoutTimeout: this.options.checkoutTimeout,
      signal,
      owner: this.#owner,
      telemetry,
    });
  }

  #submit(call: PendingCall): void {
    if (this.#closed) {
      call.reject(new PoolClosedError());
      return;
    }
    this.#start();
    if (call.settled) return;
    call.holdsLoop = true;
    this.#hold.acquire();
    submitCall(this.#actor, call);
  }

  #failureOf(failure: PyvisorError | null): PyvisorError {
    return failure ?? this.#failure ?? new PoolFailedError('The pool failed');
  }

  #rejectReadyWaiters(error: unknown): void {
    const waiters = this.#readyWaiters;
    this.#readyWaiters = [];
    for (const waiter of waiters) waiter.reject(error);
  }

  #onSupervisorEvent(event: SupervisorEmitted): void {
    try {
      this.#syncWorkerStates();
      this.#dispatchEvent(event);
    } catch (error) {
      // A listener threw. It must not break the supervisor that emitted the event: report it
      // the way a throwing listener of an asynchronous event is reported in Node.
      queueMicrotask(() => {
        throw error;
      });
    }
  }

  #dispatchEvent(event: SupervisorEmitted): void {
    switch (event.type) {
      case 'pool.ready': {
        const waiters = this.#readyWaiters;
        this.#readyWaiters = [];
        for (const waiter of waiters) waiter.resolve();
        this.emit('pool.ready', { name: this.name });
        break;
      }
      case 'pool.failed':
        this.#rejectReadyWaiters(event.error);
        this.emit('pool.failed', { error: event.error });
        break;
      case 'worker.added':
        this.emit('worker.added', { workerId: event.workerId, why: event.why, size: event.size });
        break;
      case 'worker.removed':
        this.emit('worker.removed', { workerId: event.workerId, why: event.why, size: event.size });
        break;
      case 'reload.start':
        this.emit('reload.start', { name: this.name });
        break;
      case 'reload.done': {
        const waiter = this.#reloadWaiter;
        this.#reloadWaiter = null;
        this.emit('reload.done', { name: this.name });
        waiter?.resolve();
        break;
      }
      case 'reload.failed': {
        const waiter = this.#reloadWaiter;
        this.#reloadWaiter = null;
        this.emit('reload.failed', { name: this.name, error: event.error });
        waiter?.reject(event.error);
        break;
      }
      case 'pool.recovered':
        this.emit('pool.recovered', { name: this.name, downMs: event.downMs, trips: event.trips });
        break;
      case 'pool.circuitOpen':
        this.#rejectReadyWaiters(event.error);
        break;
      case 'worker.exited':
        this.emit('worker.exit', {
          workerId: event.exit.workerId,
          pid: event.exit.pid,
          reason: event.exit.reason,
          exitCode: event.exit.exitCode,
          signal: event.exit.signal,
          error: event.exit.error,
        });
        break;
      case 'worker.started':
        this.#telemetry.workerReady(event.initMs);
        this.emit('worker.ready', {
          workerId: event.workerId,
          pid: event.pid,
          initMs: event.initMs,
          version: event.info.version,
          executable: event.info.executable,
          handlers: event.info.handlers,
        });
        break;
      case 'worker.restarting':
        this.#telemetry.workerRestart(event.reason);
        this.emit('worker.restart', {
          workerId: event.workerId,
          reason: event.reason,
          delay: event.delay,
          error: event.exit.error,
        });
        break;
      case 'worker.recycling':
        this.emit('worker.recycle', {
          workerId: event.workerId,
          pid: event.pid,
          why: event.why,
          rss: event.rss,
        });
        break;
      case 'session.moved':
        this.emit('session.moved', {
          session: event.session,
          from: event.from.workerId,
          to: event.to.workerId,
        });
        break;
      case 'session.expired':
        this.emit('session.expired', { session: event.session });
        break;
      case 'circuit.changed':
        this.#telemetry.circuitTransition(event.state);
        this.emit('circuit.change', { state: event.state, error: event.error });
        break;
      case 'health.failed':
        this.#telemetry.healthCheckFailed();
        this.emit('health.failed', { workerId: event.workerId, pid: event.pid });
        break;
    }
  }

  #watchWorker(workerId: number, ref: WorkerActor, adopted: boolean): void {
    let last: WorkerState | null = null;
    const update = () => {
      // A worker a reload replaced no longer speaks for its slot.
      if (last !== null && this.#workerSync.get(workerId) !== update) return;
      // Tracked always (a few property reads), so a listener attached later gets a true `from`.
      const snapshot = ref.getSnapshot();
      const state = workerStateOf(snapshot);
      if (state === last) return;
      if (last === null) this.#workerSync.set(workerId, update);
      const from = last ?? this.#workerStates[workerId]!;
      last = state;
      this.#workerStates[workerId] = state;
      // A reload's new worker takes over a ready slot already ready: no change to report.
      if (from !== state && this.listenerCount('worker.state') > 0) {
        this.emit('worker.state', { workerId, pid: snapshot.context.pid, from, to: state });
      }
    };
    // The first update comes with the actor's start, which the supervisor defers until after the
    // events of the transition that spawned it (a circuit change is announced before the spawn).
    ref.subscribe({ next: update, complete: update, error: update });
    // A reload's replacement started long ago, beside the worker it replaces: it takes the slot
    // (and its `worker.state` events) now, already ready. Its first update runs with the
    // supervisor's next event (its `worker.ready`), outside the supervisor's transition.
    if (adopted) this.#workerSync.set(workerId, update);
  }

  /**
   * Emits the `worker.state` a worker already reached but whose observers have not run yet:
   * the supervisor reacts to a worker's events before the worker's snapshot observers are
   * called, and what it emits must not overtake the state change that caused it.
   */
  #syncWorkerStates(): void {
    for (const update of this.#workerSync.values()) update();
  }
}

/** An object literal (or one made with a null prototype): what keyword arguments can be. */
function isPlainObject(value: unknown): value is Record<string, unknown> {
  if (typeof value !== 'object' || value === null) return false;
  const proto = Object.getPrototypeOf(value);
  return proto === Object.prototype || proto === null;
}

function checkScript(script: string): void {
  let isFile = false;
  try {
    isFile = statSync(script).isFile();
  } catch {
    // Reported below.
  }
  if (!isFile) {
    throw new InvalidOptionError(
      'script',
      `The \`script\` option points at ${script}, which is not a file`,
    );
  }
}

/**
 * Creates a pool of Python workers running `options.script`, and (unless `lazy`) starts every
 * worker at once, in parallel.
 *
 * @example
 * ```ts
 * import { createPool } from 'pyvisor';
 * const pool = createPool({ script: './handlers.py', size: 4 });
 * await pool.ready();
 * console.log(await pool.call('add', [1, 2])); // 3
 * await pool.close();
 * ```
 */
export function createPool(options: PoolOptions & PoolInternals): Pool {
  const { spawn, inspect, now, platform, ...rest } = options ?? ({} as PoolOptions & PoolInternals);
  return new Pool(rest as PoolOptions, { spawn, inspect, now, platform });
}

export type { PyvisorError };
