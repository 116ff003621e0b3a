/**
 * Every error pyvisor produces extends {@link PyvisorError} and carries a stable `code`, so
 * callers can branch on `err.code` without parsing messages.
 *
 * @example
 * ```ts
 * try {
 *   await pool.call('parse', [text]);
 * } catch (err) {
 *   if (err instanceof PyvisorError && err.code === 'ERR_PYTHON') console.error(err.pythonTraceback);
 * }
 * ```
 */

/** All stable error codes. */
export type PyvisorErrorCode =
  | 'ERR_PYTHON'
  | 'ERR_UNKNOWN_HANDLER'
  | 'ERR_CALL_TIMEOUT'
  | 'ERR_CHECKOUT_TIMEOUT'
  | 'ERR_QUEUE_FULL'
  | 'ERR_WORKER_CRASHED'
  | 'ERR_WORKER_INIT'
  | 'ERR_CIRCUIT_OPEN'
  | 'ERR_POOL_FAILED'
  | 'ERR_POOL_CLOSED'
  | 'ERR_PROTOCOL'
  | 'ERR_SERIALIZATION'
  | 'ERR_INVALID_OPTION'
  | 'ERR_PYTHON_NOT_FOUND';

/** Base class of every error pyvisor throws or rejects with. */
export class PyvisorError extends Error {
  /** Stable, machine-readable code. */
  readonly code: PyvisorErrorCode;

  constructor(code: PyvisorErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
  }

  override get name(): string {
    return this.constructor.name;
  }
}

/** Facts about a worker process attached to errors that involve one. */
export interface ProcessFacts {
  /** Slot index of the worker in the pool. */
  workerId?: number;
  pid?: number;
  exitCode?: number | null;
  signal?: NodeJS.Signals | null;
  /** The last lines the worker wrote to stderr (and stdout), oldest first. */
  stderr?: string;
}

/** The handler raised an exception in Python (`ERR_PYTHON`). */
export class PythonError extends PyvisorError {
  /** The Python exception class name, e.g. `ValueError`. */
  readonly pythonType: string;
  /** The Python traceback as Python prints it. */
  readonly pythonTraceback: string;
  constructor(
    message: string,
    pythonType: string,
    pythonTraceback: string,
    code: 'ERR_PYTHON' | 'ERR_SERIALIZATION' = 'ERR_PYTHON',
  ) {
    super(code, `${pythonType}: ${message}`);
    this.pythonType = pythonType;
    this.pythonTraceback = pythonTraceback;
    // Node prints `stack`; appending the remote traceback puts it where users look first.
    if (pythonTraceback) this.stack = `${this.stack}\n\nPython traceback:\n${pythonTraceback}`;
  }
}

/** No handler with that name is registered in the worker's script (`ERR_UNKNOWN_HANDLER`). */
export class UnknownHandlerError extends PyvisorError {
  constructor(
    readonly handler: string,
    message: string,
  ) {
    super('ERR_UNKNOWN_HANDLER', message);
  }
}

/** The call's `timeout` elapsed, queue wait included (`ERR_CALL_TIMEOUT`). */
export class CallTimeoutError extends PyvisorError {
  readonly timeout: number;
  constructor(fn: string, timeout: number) {
    super('ERR_CALL_TIMEOUT', `Call to '${fn}' timed out after ${timeout} ms`);
    this.timeout = timeout;
  }
}

/** No worker became free within `checkoutTimeout` (`ERR_CHECKOUT_TIMEOUT`). */
export class CheckoutTimeoutError extends PyvisorError {
  readonly timeout: number;
  constructor(fn: string, timeout: number) {
    super('ERR_CHECKOUT_TIMEOUT', `Call to '${fn}' waited ${timeout} ms for a free worker`);
    this.timeout = timeout;
  }
}

/** `maxQueue` calls are already waiting (`ERR_QUEUE_FULL`). */
export class QueueFullError extends PyvisorError {
  readonly maxQueue: number;
  constructor(maxQueue: number) {
    super('ERR_QUEUE_FULL', `The queue is full: ${maxQueue} calls are already waiting (maxQueue)`);
    this.maxQueue = maxQueue;
  }
}

function describeExit(f: ProcessFacts): string {
  if (f.signal) return `was killed by ${f.signal}`;
  if (f.exitCode !== undefined && f.exitCode !== null) return `exited with code ${f.exitCode}`;
  return 'died';
}

function withStderr(message: string, stderr: string | undefined): string {
  return stderr ? `${message}\n--- worker stderr (last lines) ---\n${stderr}` : message;
}

/** The worker process died while running the call (`ERR_WORKER_CRASHED`). */
export class WorkerCrashedError extends PyvisorError implements ProcessFacts {
  readonly workerId?: number;
  readonly pid?: number;
  readonly exitCode: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly stderr: string;
  constructor(facts: ProcessFacts, detail?: string, options?: { cause?: unknown }) {
    super(
      'ERR_WORKER_CRASHED',
      withStderr(
        `Worker ${facts.workerId ?? '?'} (pid ${facts.pid ?? '?'}) ${detail ?? describeExit(facts)}`,
        facts.stderr,
      ),
      options,
    );
    this.workerId = facts.workerId;
    this.pid = facts.pid;
    this.exitCode = facts.exitCode ?? null;
    this.signal = facts.signal ?? null;
    this.stderr = facts.stderr ?? '';
  }
}

/** Why a worker failed to start. */
export type InitFailureReason = 'error' | 'crash' | 'timeout' | 'spawn';

/**
 * A worker failed to start: its script or an `@on_init` function raised, the process died or the
 * init timed out (`ERR_WORKER_INIT`). Carries the Python traceback and the stderr tail.
 */
export class WorkerInitError extends PyvisorError implements ProcessFacts {
  readonly reason: InitFailureReason;
  readonly workerId?: number;
  readonly pid?: number;
  readonly exitCode: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly stderr: string;
  readonly pythonType?: string;
  readonly pythonTraceback?: string;
  constructor(
    reason: InitFailureReason,
    facts: ProcessFacts & { pythonType?: string; pythonMessage?: string; pythonTraceback?: string },
    options?: { cause?: unknown },
  ) {
    const who = `Worker ${facts.workerId ?? '?'} (pid ${facts.pid ?? '?'})`;
    let what: string;
    if (reason === 'error')
      what = `failed to initialise: ${facts.pythonType}: ${facts.pythonMessage}`;
    else if (reason === 'timeout') what = 'did not finish initialising in time (initTimeout)';
    else if (reason === 'spawn') what = 'could not be started';
    else what = `${describeExit(facts)} before it was ready`;
    let message = `${who} ${what}`;
    if (facts.pythonTraceback) message += `\n${facts.pythonTraceback.trimEnd()}`;
    super('ERR_WORKER_INIT', withStderr(message, facts.stderr), options);
    this.reason = reason;
    this.workerId = facts.workerId;
    this.pid = facts.pid;
    this.exitCode = facts.exitCode ?? null;
    this.signal = facts.signal ?? null;
    this.stderr = facts.stderr ?? '';
    this.pythonType = facts.pythonType;
    this.pythonTraceback = facts.pythonTraceback;
  }
}

/** The circuit breaker is open after repeated start failures (`ERR_CIRCUIT_OPEN`). */
export class CircuitOpenError extends PyvisorError {
  constructor(cause?: unknown) {
    super(
      'ERR_CIRCUIT_OPEN',
      'The circuit breaker is open: workers keep failing to start, so no worker is available' +
        (cause instanceof Error ? ` (last failure: ${cause.message.split('\n')[0]})` : ''),
      { cause },
    );
  }
}

/** Workers crashed more than `restart.maxRestarts` times within `restart.period` (`ERR_POOL_FAILED`). */
export class PoolFailedError extends PyvisorError {
  /**
   * When the pool starts its workers again (epoch ms, like `Date.now()`), for a pool cooling down
   * after too many crashes (`restart.coolDown`); undefined for a failure it does not recover from.
   * A server can turn it into a `Retry-After` header.
   */
  readonly retryAt: number | undefined;

  constructor(message: string, cause?: unknown, options: { retryAt?: number } = {}) {
    super('ERR_POOL_FAILED', message, { cause });
    this.retryAt = options.retryAt;
  }
}

/** The pool is closing or closed (`ERR_POOL_CLOSED`). */
export class PoolClosedError extends PyvisorError {
  constructor(message = 'The pool is closed') {
    super('ERR_POOL_CLOSED', message);
  }
}

/** The worker sent something that is not a valid protocol frame (`ERR_PROTOCOL`). */
export class ProtocolError extends PyvisorError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('ERR_PROTOCOL', message, options);
  }
}

/**
 * Arguments that cannot be encoded as JSON (rejected before anything is sent), or a Python result
 * that cannot be (then `pythonType`/`pythonTraceback` are set) (`ERR_SERIALIZATION`).
 */
export class SerializationError extends PyvisorError {
  readonly pythonType?: string;
  readonly pythonTraceback?: string;
  constructor(
    message: string,
    options?: { cause?: unknown; pythonType?: string; pythonTraceback?: string },
  ) {
    super('ERR_SERIALIZATION', message, options);
    this.pythonType = options?.pythonType;
    this.pythonTraceback = options?.pythonTraceback;
  }
}

/** An option passed to `createPool`, `call` or `close` is invalid (`ERR_INVALID_OPTION`). */
export class InvalidOptionError extends PyvisorError {
  constructor(
    readonly option: string,
    message: string,
  ) {
    super('ERR_INVALID_OPTION', message);
  }
}

/** The Python interpreter could not be found or run (`ERR_PYTHON_NOT_FOUND`). */
export class PythonNotFoundError extends PyvisorError {
  readonly python: string;
  /** The `PATH` that was searched for a bare name (`python3`); undefined for a path. */
  readonly searchedPath: string | undefined;
  constructor(python: string, cause?: unknown, searchedPath?: string) {
    let where = '';
    if (searchedPath === '') {
      where =
        " (the workers' PATH is empty: did `env` replace the environment, with `extendEnv: false`?)";
    } else if (searchedPath !== undefined) {
      where = ` (searched the workers' PATH: ${searchedPath})`;
    }
    super(
      'ERR_PYTHON_NOT_FOUND',
      `Python interpreter '${python}' could not be run${where}. Set the \`python\` option or PYVISOR_PYTHON to a Python 3.9+ executable.`,
      { cause },
    );
    this.python = python;
    this.searchedPath = searchedPath;
  }
}
