import { statSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { dirname, isAbsolute, resolve } from 'node:path';
import { InvalidOptionError } from '../errors.js';
import type { Logger } from '../observe/logger.js';
import { DEFAULT_MAX_MESSAGE_SIZE } from '../protocol/index.js';

/** Health-check settings: idle workers are pinged every `interval` ms and must answer in `timeout` ms. */
export interface HealthCheckOptions {
  /** Milliseconds between pings of an idle worker. Default 5000. */
  interval?: number;
  /** Milliseconds a worker has to answer a ping before it is killed and replaced. Default 5000. */
  timeout?: number;
}

/** Restart policy: exponential backoff with jitter, bounded by a restart intensity. */
export interface RestartOptions {
  /** First delay before restarting a slot, ms. Default 100. */
  minDelay?: number;
  /** Upper bound of the backoff delay, ms. Default 10000. */
  maxDelay?: number;
  /**
   * More than this many crashes of ready workers within `period` put the pool in `failed` for a
   * cool-down (see `coolDown`). Default 20.
   */
  maxRestarts?: number;
  /** Window for `maxRestarts`, ms. Default 60000. */
  period?: number;
  /**
   * How long the pool stays `failed` after exceeding the restart intensity before it starts its
   * workers again by itself (`pool.recovered`), ms. Doubles on each repeat, up to 10 minutes (or
   * `coolDown` if larger), and is back to its first value once the pool has run a whole `period`
   * without failing. `Infinity` keeps the pool failed until it is closed. Default 30000.
   */
  coolDown?: number;
}

/** Circuit breaker on start failures. */
export interface CircuitOptions {
  /** Consecutive start failures that open the breaker. Default 5. */
  threshold?: number;
  /** Time the breaker stays open before one probe start, ms. Default 10000. */
  resetTimeout?: number;
}

/** Graceful recycling of workers. */
export interface RecycleOptions {
  /** Replace a worker after it served this many calls. */
  maxCalls?: number;
  /** Replace a worker once it is this old (ms, counted from when it reported ready), between calls. */
  maxAge?: number;
  /**
   * Replace a worker whose resident memory (RSS) exceeds this many bytes, after the calls it runs
   * (never mid-call). Sampled from `/proc/<pid>/statm` on the maintenance tick (at least once a
   * second); Linux only (elsewhere it is never exceeded).
   */
  maxRss?: number;
}

/** Options of {@link createPool}. Times are in milliseconds. */
export interface PoolOptions {
  /** Path of the Python handler file (relative paths resolve against `cwd`). Required. */
  script: string;
  /**
   * Number of workers: a number (fixed), or `{ min, max }` (elastic: `min` start at once and
   * `ready()` waits for them; a call that finds no free worker starts another, up to `max`; a
   * worker idle for `idleTimeout` stops, down to `min`). Default `os.availableParallelism()`.
   */
  size?: number | { min: number; max: number };
  /** Elastic `size`: how long a worker beyond `min` may stay idle before it stops, ms. Default 60000. */
  idleTimeout?: number;
  /**
   * Calls one worker runs at once (1–10000). Default 1. Above 1, `async def` handlers run side by
   * side as tasks on the worker's event loop; plain handlers still block that loop while they run.
   */
  concurrency?: number;
  /**
   * With `concurrency` 1, a busy worker may be handed its next call while it runs one, when calls
   * would otherwise wait, so it starts that call the moment the running one ends. Default true.
   */
  pipeline?: boolean;
  /** Python interpreter. Default `PYVISOR_PYTHON`, else `python3`; resolved once to the real binary. */
  python?: string;
  /**
   * How workers are started. `'spawn'` (default): each worker is a new interpreter that imports the
   * script. `'forkserver'` (Linux): a template process imports the script once and every worker is
   * forked from it, then runs the `@on_init` functions itself: starts and replacements take
   * milliseconds instead of the import time, and the workers share the template's memory. Where
   * forking is not possible (not Linux, Python threads running after import, the template cannot
   * start) workers are spawned, with one `warning` event.
   */
  startMethod?: StartMethod;
  /**
   * Environment variables of the workers, added to `process.env` (like execa); a variable set to
   * `undefined` is left out. With `extendEnv: false` it is the workers' whole environment.
   */
  env?: NodeJS.ProcessEnv;
  /** Whether `env` extends `process.env` (default `true`) or replaces it (`false`). */
  extendEnv?: boolean;
  /** Working directory of the workers. Default `process.cwd()`. */
  cwd?: string;
  /** Pool name, used in stats, events and telemetry. Default `pyvisor`. */
  name?: string;
  /** Start workers on the first call or `ready()` instead of at once. Default false. */
  lazy?: boolean;
  /** Time a worker has to import the script and run `@on_init` functions. Default 30000. */
  initTimeout?: number;
  /** How long a call may wait for a free worker. Default: no limit. */
  checkoutTimeout?: number;
  /** Calls that may wait for a worker; beyond it calls reject at once with `ERR_QUEUE_FULL`. Default: no limit. */
  maxQueue?: number;
  /** Default `timeout` of every call (deadline for the whole call, queue wait included). Default: none. */
  callTimeout?: number;
  /** Idle time after which a session is forgotten. Default 600000 (10 minutes). */
  sessionTtl?: number;
  /** Ping idle workers; `false` turns it off. */
  healthCheck?: HealthCheckOptions | false;
  /** Restart backoff and intensity. */
  restart?: RestartOptions;
  /** Circuit breaker on start failures. */
  circuit?: CircuitOptions;
  /** Replace workers gracefully after `maxCalls` calls, `maxAge` ms, or above `maxRss` bytes. */
  recycle?: RecycleOptions;
  /** Time a cancelled or timed-out handler gets to stop before its process is killed. Default 2000. */
  cancelGrace?: number;
  /** Time a worker gets to exit after the shutdown message before SIGTERM, then SIGKILL. Default 2000. */
  stopTimeout?: number;
  /** Largest frame accepted from or sent to a worker, bytes. Default 256 MiB. */
  maxMessageSize?: number;
  /** Lines of stdout/stderr kept per worker for error messages. Default 50. */
  outputLines?: number;
  /** Receives structured records (pino-style `info/warn/error(object, message)`), stderr lines included. */
  logger?: Logger;
  /**
   * Whether the pool keeps Node's event loop alive while nothing is pending. Default `false`: an
   * idle pool lets a script exit when its work is done (its workers end with it), while a call,
   * `ready()` or `close()` is pending the pool holds the event loop open. `true` keeps the loop
   * open until `close()`, like a server socket.
   */
  keepAlive?: boolean;
  /**
   * Whether errors of `call()` and `stream()` carry the caller's stack (the line that made the
   * call) below their own message. Default `true`; costs well under a microsecond per call.
   */
  callSiteStacks?: boolean;
  /**
   * Development: reload the pool (`pool.reload()`) when a `.py` file changes under the script's
   * directory (`true`), or under `paths` (files or directories, relative to `cwd`), once changes
   * have been quiet for `debounce` ms (default 200). Off by default.
   */
  watch?: boolean | WatchOptions;
}

/** What `watch` watches. */
export interface WatchOptions {
  /** Files or directories whose `.py` files are watched. Default: the script's directory. */
  paths?: string[];
  /** Quiet time before a reload, ms. Default 200. */
  debounce?: number;
}

/** How workers are started: see {@link PoolOptions.startMethod}. */
export type StartMethod = 'spawn' | 'forkserver';

/** Fully defaulted, validated and frozen options. */
export interface NormalizedOptions {
  readonly script: string;
  /** Worker slots: the fixed size, or `max` of an elastic one. */
  readonly size: number;
  /** Workers started eagerly and kept: `size` when it is fixed. */
  readonly minSize: number;
  readonly idleTimeout: number;
  readonly concurrency: number;
  readonly pipeline: boolean;
  readonly python: string;
  readonly startMethod: StartMethod;
  readonly env: NodeJS.ProcessEnv;
  readonly cwd: string;
  readonly name: string;
  readonly lazy: boolean;
  readonly initTimeout: number;
  readonly checkoutTimeout: number | undefined;
  readonly maxQueue: number;
  readonly callTimeout: number | undefined;
  readonly sessionTtl: number;
  readonly healthCheck: { readonly interval: number; readonly timeout: number } | false;
  readonly restart: {
    readonly minDelay: number;
    readonly maxDelay: number;
    readonly maxRestarts: number;
    readonly period: number;
    readonly coolDown: number;
  };
  readonly circuit: { readonly threshold: number; readonly resetTimeout: number };
  readonly recycle: {
    readonly maxCalls: number;
    readonly maxAge: number;
    readonly maxRss: number;
  };
  readonly cancelGrace: number;
  readonly stopTimeout: number;
  readonly maxMessageSize: number;
  readonly outputLines: number;
  readonly logger: Logger | undefined;
  readonly keepAlive: boolean;
  readonly callSiteStacks: boolean;
  readonly watch: { readonly paths: readonly string[]; readonly debounce: number } | null;
}

// Node's timers overflow above 2^31-1 ms and then fire immediately.
const MAX_TIMER = 2 ** 31 - 1;

/** A value as an error message shows it. */
export function describe(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value);
  if (typeof value === 'bigint') return `${value}n`;
  if (value === null) return 'null';
  if (typeof value === 'object') return Array.isArray(value) ? 'an array' : 'an object';
  return String(value);
}

function isDirectory(path: string): boolean {
  try {
    return statSync(path).isDirectory();
  } catch {
    return false;
  }
}

/** Validates a duration option (ms). `undefined` yields `fallback`. */
export function duration(
  name: string,
  value: unknown,
  fallback: number,
  { allowZero = true }: { allowZero?: boolean } = {},
): number {
  if (value === undefined) return fallback;
  if (
    typeof value !== 'number' ||
    !Number.isFinite(value) ||
    value < 0 ||
    (!allowZero && value === 0) ||
    value > MAX_TIMER
  ) {
    throw new InvalidOptionError(
      name,
      `Expected the \`${name}\` option to be a ${allowZero ? 'non-negative' : 'positive'} number of milliseconds (at most ${MAX_TIMER}), got ${describe(value)}`,
    );
  }
  return value;
}

function optionalDuration(name: string, value: unknown): number | undefined {
  return value === undefined ? undefined : duration(name, value, 0, { allowZero: false });
}

function integer(name: string, value: unknown, fallback: number, min: number): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min) {
    throw new InvalidOptionError(
      name,
      `Expected the \`${name}\` option to be an integer >= ${min}, got ${describe(value)}`,
    );
  }
  return value;
}

function str(name: string, value: unknown, fallback: string): string {
  if (value === undefined) return fallback;
  if (typeof value !== 'string' || value.length === 0) {
    throw new InvalidOptionError(
      name,
      `Expected the \`${name}\` option to be a non-empty string, got ${describe(value)}`,
    );
  }
  return value;
}

function object<T>(name: string, value: unknown, keys?: readonly string[]): Partial<T> {
  if (value === undefined) return {};
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new InvalidOptionError(
      name,
      `Expected the \`${name}\` option to be an object, got ${describe(value)}`,
    );
  }
  if (keys) {
    // A misspelt key would silently keep the default (e.g. `restart: { maxRestart: 100 }`).
    for (const key of Object.keys(value)) {
      if (!keys.includes(key)) {
        throw new InvalidOptionError(
          `${name}.${key}`,
          `Unknown option \`${name}.${key}\`; expected one of ${keys.map((k) => `\`${k}\``).join(', ')}`,
        );
      }
    }
  }
  return value as Partial<T>;
}

// Workers are processes: far beyond this a pool is a mistake, and a huge size would allocate
// per-slot state until memory runs out.
const MAX_SIZE = 1024;
const MAX_CONCURRENCY = 10_000;

function logger(name: string, value: unknown): Logger | undefined {
  if (value === undefined) return undefined;
  const ok =
    typeof value === 'object' &&
    value !== null &&
    ['info', 'warn', 'error'].every(
      (m) => typeof (value as Record<string, unknown>)[m] === 'function',
    );
  if (!ok) {
    throw new InvalidOptionError(
      name,
      `Expected the \`${name}\` option to be an object with info, warn and error methods, got ${describe(value)}`,
    );
  }
  return value as Logger;
}

function sizeOption(value: unknown): { size: number; minSize: number } {
  if (value === undefined || typeof value === 'number') {
    const size = integer('size', value, Math.min(availableParallelism(), MAX_SIZE), 1);
    return { size, minSize: size };
  }
  const given = object<{ min?: unknown; max?: unknown }>('size', value, ['min', 'max']);
  const min = integer('size.min', given.min ?? Number.NaN, 1, 1);
  const max = integer('size.max', given.max ?? Number.NaN, 1, 1);
  if (max < min) {
    throw new InvalidOptionError(
      'size.max',
      `Expected \`size.max\` (${max}) to be at least \`size.min\` (${min})`,
    );
  }
  return { size: max, minSize: min };
}

function watchOption(value: unknown, script: string, cwd: string): NormalizedOptions['watch'] {
  if (value === undefined || value === false) return null;
  if (value === true)
    return Object.freeze({ paths: Object.freeze([dirname(script)]), debounce: 200 });
  const given = object<WatchOptions>('watch', value, ['paths', 'debounce']);
  let paths: readonly string[] = [dirname(script)];
  if (given.paths !== undefined) {
    if (
      !Array.isArray(given.paths) ||
      given.paths.length === 0 ||
      !given.paths.every((p) => typeof p === 'string' && p.length > 0)
    ) {
      throw new InvalidOptionError(
        'watch.paths',
        `Expected \`watch.paths\` to be a non-empty array of paths, got ${describe(given.paths)}`,
      );
    }
    paths = given.paths.map((p) => (isAbsolute(p) ? p : resolve(cwd, p)));
  }
  return Object.freeze({
    paths: Object.freeze(paths),
    debounce: duration('watch.debounce', given.debounce, 200),
  });
}

const KNOWN = new Set([
  'script',
  'size',
  'idleTimeout',
  'concurrency',
  'pipeline',
  'python',
  'startMethod',
  'env',
  'extendEnv',
  'cwd',
  'name',
  'lazy',
  'initTimeout',
  'checkoutTimeout',
  'maxQueue',
  'callTimeout',
  'sessionTtl',
  'healthCheck',
  'restart',
  'circuit',
  'recycle',
  'cancelGrace',
  'stopTimeout',
  'maxMessageSize',
  'outputLines',
  'logger',
  'keepAlive',
  'callSiteStacks',
  'watch',
  'inspect',
]);

const START_METHODS: readonly StartMethod[] = ['spawn', 'forkserver'];

function startMethod(value: unknown): StartMethod {
  if (value === undefined) return 'spawn';
  if (!START_METHODS.includes(value as StartMethod)) {
    throw new InvalidOptionError(
      'startMethod',
      `Expected the \`startMethod\` option to be 'spawn' or 'forkserver', got ${describe(value)}`,
    );
  }
  return value as StartMethod;
}

/**
 * A string that goes to a process (an argument, a path) cannot hold a NUL byte: `spawn` would
 * throw, late and inside a worker. Rejected here, up front, naming the option.
 */
function passable(option: string, value: string): void {
  if (value.includes('\0')) {
    throw new InvalidOptionError(
      option,
      `The \`${option}\` option contains a NUL byte, which cannot be passed to a process`,
    );
  }
}

/** Environment entries must be names and values a process can take. */
function checkEnv(env: NodeJS.ProcessEnv): void {
  for (const [key, value] of Object.entries(env)) {
    const option = `env.${key}`;
    if (key.length === 0 || key.includes('=') || key.includes('\0')) {
      throw new InvalidOptionError(
        'env',
        `The \`env\` option has the name ${JSON.stringify(key)}, which cannot be an environment variable (empty, or holding '=' or a NUL byte)`,
      );
    }
    const v: unknown = value;
    // undefined is left out by spawn; numbers and booleans it turns into strings.
    if (v === undefined || typeof v === 'number' || typeof v === 'boolean') continue;
    if (typeof v !== 'string') {
      throw new InvalidOptionError(
        option,
        `Expected \`${option}\` to be a string, got ${describe(v)}`,
      );
    }
    passable(option, v);
  }
}

/**
 * Validates user options and fills in every default, so the rest of the code never sees
 * `undefined` where a default exists. Throws {@link InvalidOptionError} naming the option.
 */
export function normalizeOptions(input: PoolOptions): NormalizedOptions {
  if (typeof input !== 'object' || input === null) {
    throw new InvalidOptionError('options', `Expected an options object, got ${describe(input)}`);
  }
  for (const key of Object.keys(input)) {
    if (!KNOWN.has(key)) {
      throw new InvalidOptionError(key, `Unknown option \`${key}\``);
    }
  }
  if (input.script === undefined) {
    throw new InvalidOptionError(
      'script',
      'The `script` option is required: the path of a Python file with @handler functions',
    );
  }
  const cwd = resolve(str('cwd', input.cwd, process.cwd()));
  const scriptArg = str('script', input.script, '');
  const script = isAbsolute(scriptArg) ? scriptArg : resolve(cwd, scriptArg);
  // The user's variables are checked; process.env is passed on as it is.
  const own = input.env === undefined ? {} : object<NodeJS.ProcessEnv>('env', input.env);
  checkEnv(own);
  const env = input.extendEnv === false ? own : { ...process.env, ...own };
  const health =
    input.healthCheck === false
      ? false
      : object<HealthCheckOptions>('healthCheck', input.healthCheck, ['interval', 'timeout']);
  const restart = object<RestartOptions>('restart', input.restart, [
    'minDelay',
    'maxDelay',
    'maxRestarts',
    'period',
    'coolDown',
  ]);
  const circuit = object<CircuitOptions>('circuit', input.circuit, ['threshold', 'resetTimeout']);
  const recycle = object<RecycleOptions>('recycle', input.recycle, [
    'maxCalls',
    'maxAge',
    'maxRss',
  ]);
  for (const key of ['lazy', 'pipeline', 'extendEnv', 'keepAlive', 'callSiteStacks'] as const) {
    if (input[key] !== undefined && typeof input[key] !== 'boolean') {
      throw new InvalidOptionError(
        key,
        `Expected the \`${key}\` option to be a boolean, got ${describe(input[key])}`,
      );
    }
  }
  const minDelay = duration('restart.minDelay', restart.minDelay, 100);
  const maxDelay = duration('restart.maxDelay', restart.maxDelay, Math.max(10_000, minDelay));
  if (maxDelay < minDelay) {
    throw new InvalidOptionError(
      'restart.maxDelay',
      `Expected \`restart.maxDelay\` (${maxDelay}) to be at least \`restart.minDelay\` (${minDelay})`,
    );
  }
  const options: NormalizedOptions = {
    script,
    ...sizeOption(input.size),
    idleTimeout: duration('idleTimeout', input.idleTimeout, 60_000, { allowZero: false }),
    concurrency: integer('concurrency', input.concurrency, 1, 1),
    pipeline: input.pipeline ?? true,
    python: str('python', input.python, process.env.PYVISOR_PYTHON || 'python3'),
    startMethod: startMethod(input.startMethod),
    env,
    cwd,
    name: str('name', input.name, 'pyvisor'),
    lazy: input.lazy ?? false,
    initTimeout: duration('initTimeout', input.initTimeout, 30_000, { allowZero: false }),
    checkoutTimeout: optionalDuration('checkoutTimeout', input.checkoutTimeout),
    maxQueue: integer('maxQueue', input.maxQueue, Number.POSITIVE_INFINITY, 0),
    callTimeout: optionalDuration('callTimeout', input.callTimeout),
    sessionTtl: duration('sessionTtl', input.sessionTtl, 600_000, { allowZero: false }),
    healthCheck:
      health === false
        ? false
        : Object.freeze({
            interval: duration('healthCheck.interval', health.interval, 5000, { allowZero: false }),
            timeout: duration('healthCheck.timeout', health.timeout, 5000, { allowZero: false }),
          }),
    restart: Object.freeze({
      minDelay,
      maxDelay,
      maxRestarts: integer('restart.maxRestarts', restart.maxRestarts, 20, 0),
      period: duration('restart.period', restart.period, 60_000, { allowZero: false }),
      coolDown:
        restart.coolDown === Number.POSITIVE_INFINITY
          ? Number.POSITIVE_INFINITY
          : duration('restart.coolDown', restart.coolDown, 30_000),
    }),
    circuit: Object.freeze({
      threshold: integer('circuit.threshold', circuit.threshold, 5, 1),
      resetTimeout: duration('circuit.resetTimeout', circuit.resetTimeout, 10_000, {
        allowZero: false,
      }),
    }),
    recycle: Object.freeze({
      maxCalls: integer('recycle.maxCalls', recycle.maxCalls, Number.POSITIVE_INFINITY, 1),
      maxAge:
        recycle.maxAge === undefined
          ? Number.POSITIVE_INFINITY
          : duration('recycle.maxAge', recycle.maxAge, 0, { allowZero: false }),
      maxRss: integer('recycle.maxRss', recycle.maxRss, Number.POSITIVE_INFINITY, 1),
    }),
    cancelGrace: duration('cancelGrace', input.cancelGrace, 2000),
    stopTimeout: duration('stopTimeout', input.stopTimeout, 2000),
    maxMessageSize: integer('maxMessageSize', input.maxMessageSize, DEFAULT_MAX_MESSAGE_SIZE, 16),
    outputLines: integer('outputLines', input.outputLines, 50, 0),
    logger: logger('logger', input.logger),
    keepAlive: input.keepAlive ?? false,
    callSiteStacks: input.callSiteStacks ?? true,
    watch: watchOption(input.watch, script, cwd),
  };
  if (options.concurrency > MAX_CONCURRENCY) {
    throw new InvalidOptionError(
      'concurrency',
      `Expected the \`concurrency\` option to be at most ${MAX_CONCURRENCY} calls per worker, got ${options.concurrency}`,
    );
  }
  if (options.size > MAX_SIZE) {
    throw new InvalidOptionError(
      'size',
      `Expected the \`size\` option to be at most ${MAX_SIZE} workers, got ${options.size}`,
    );
  }
  if (!isDirectory(cwd)) {
    throw new InvalidOptionError(
      'cwd',
      `The \`cwd\` option points at ${cwd}, which is not a directory`,
    );
  }
  for (const key of ['script', 'cwd', 'python'] as const) passable(key, options[key]);
  if (options.maxMessageSize > 2 ** 32 - 1) {
    throw new InvalidOptionError('maxMessageSize', 'Expected `maxMessageSize` to fit in 32 bits');
  }
  return Object.freeze(options);
}
