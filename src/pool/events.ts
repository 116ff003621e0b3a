import type { PyvisorError } from '../errors.js';
import type { WorkerExitReason } from '../machines/worker.machine.js';
import type { WorkerState } from '../machines/worker-state.js';
import type { ForkServerWarning } from '../transport/fork-server.js';

export type { WorkerState } from '../machines/worker-state.js';

/**
 * Something the pool works around but you may want to fix; see `code`. Emitted once per code per
 * pool.
 */
export type PoolWarning = ForkServerWarning;

/**
 * Events of a {@link Pool}, for `pool.on(name, listener)`. Each listener gets one object argument.
 */
export interface PoolEvents {
  /** Every worker is ready (again). */
  'pool.ready': (event: { name: string }) => void;
  /**
   * The pool failed: every call now rejects with `ERR_POOL_FAILED`. After too many crashes
   * (restart intensity) this lasts a cool-down (`error.retryAt` says until when), then the pool
   * starts its workers again and emits `pool.recovered`. Without an interpreter, or after a bug
   * in pyvisor, it is final.
   */
  'pool.failed': (event: { error: PyvisorError }) => void;
  /**
   * The cool-down after a `pool.failed` is over: the pool takes calls again and starts new workers
   * (`pool.ready` follows once they are all ready). `downMs` is how long it was failed; `trips`
   * counts the failures in a row (each one doubles the next cool-down).
   */
  'pool.recovered': (event: { name: string; downMs: number; trips: number }) => void;
  /**
   * Elastic size: a worker is starting in slot `workerId` because calls wait and none is free
   * (`why: 'demand'`); `size` counts the pool's workers with it.
   */
  'worker.added': (event: { workerId: number; why: 'demand'; size: number }) => void;
  /** Elastic size: a worker idle for `idleTimeout` stopped (`why: 'idle'`); `size` is what is left. */
  'worker.removed': (event: { workerId: number; why: 'idle'; size: number }) => void;
  /** `watch`: `.py` files changed (absolute paths); a reload follows. */
  'watch.change': (event: { name: string; files: string[] }) => void;
  /** `reload()` began replacing the workers, one slot at a time. */
  'reload.start': (event: { name: string }) => void;
  /** Every slot runs the new code (the workers it replaced may still finish their calls). */
  'reload.done': (event: { name: string }) => void;
  /**
   * A reload stopped: its new worker did not start (`error` is its `ERR_WORKER_INIT`, with the
   * traceback), or the pool failed or closed meanwhile. The workers that had not been replaced
   * keep serving.
   */
  'reload.failed': (event: { name: string; error: PyvisorError }) => void;
  /** A worker slot changed state. */
  'worker.state': (event: {
    workerId: number;
    pid: number | null;
    from: WorkerState;
    to: WorkerState;
  }) => void;
  /**
   * A worker reported ready; `initMs` is the time from spawn to its ready message, `version` and
   * `executable` describe its interpreter and `handlers` lists what the script registered (`async`: an `async def` or async generator).
   */
  'worker.ready': (event: {
    workerId: number;
    pid: number | null;
    initMs: number;
    version: string;
    executable: string;
    handlers: { name: string; stream: boolean; async?: boolean }[];
  }) => void;
  /** A worker process ended. */
  'worker.exit': (event: {
    workerId: number;
    pid: number | null;
    reason: WorkerExitReason;
    exitCode: number | null;
    signal: NodeJS.Signals | null;
    error: PyvisorError | null;
  }) => void;
  /** A slot will get a new process after `delay` ms. */
  'worker.restart': (event: {
    workerId: number;
    reason: WorkerExitReason | 'recycled';
    delay: number;
    error: PyvisorError | null;
  }) => void;
  /**
   * A worker is being replaced gracefully (`recycle.maxCalls`, `recycle.maxAge` or
   * `recycle.maxRss`), after the calls it runs. `rss` is its resident memory at the last sample
   * (bytes; null where it is not sampled): for `maxRss`, the figure over the limit.
   */
  'worker.recycle': (event: {
    workerId: number;
    pid: number | null;
    why: 'maxCalls' | 'maxAge' | 'maxRss';
    rss: number | null;
  }) => void;
  /**
   * One line a worker wrote to stderr. `workerId` -1: a line of the fork server's template (what
   * the script printed while it was imported there, with `startMethod: 'forkserver'`).
   */
  'worker.stderr': (event: { workerId: number; pid: number | null; line: string }) => void;
  /** One line a worker wrote to stdout (e.g. `print()` in a handler). */
  'worker.stdout': (event: { workerId: number; pid: number | null; line: string }) => void;
  /** A worker did not answer a health check in time; it is killed and replaced. */
  'health.failed': (event: { workerId: number; pid: number | null }) => void;
  /** The circuit breaker changed state; `error` is the last start failure when it opens. */
  'circuit.change': (event: {
    state: 'closed' | 'open' | 'halfOpen';
    error: PyvisorError | null;
  }) => void;
  /** A session's worker died, so the session now lives on another worker (its state is gone). */
  'session.moved': (event: { session: string; from: number; to: number }) => void;
  /** A session was idle for `sessionTtl` and was forgotten. */
  'session.expired': (event: { session: string }) => void;
  /**
   * The pool works around something you may want to fix (once per `code`): with
   * `startMethod: 'forkserver'`, why workers are spawned instead (`WARN_FORK_UNSUPPORTED`,
   * `WARN_FORK_FAILED`, `WARN_FORK_THREADS` with the thread names) or that native threads ran in
   * the template (`WARN_FORK_NATIVE_THREADS`).
   */
  warning: (event: PoolWarning) => void;
  /**
   * An internal error in pyvisor itself (a bug): please report it. The pool has failed by then
   * (`pool.failed`, every promise rejected); this event is only for reporting.
   */
  error: (error: unknown) => void;
}
