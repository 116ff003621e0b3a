import { CallTimeoutError, CheckoutTimeoutError } from '../errors.js';
import { type CallTelemetry, outcomeOf } from '../observe/telemetry.js';

/** Where a call is in its life. */
export type CallPhase = 'queued' | 'running' | 'done';

/** What a running call needs from the worker it runs on (to ask for more stream items). */
export interface CallWorker {
  grantCredit(callId: number, n: number): void;
}

/** Calls the pool makes into the supervisor on behalf of a call. */
export interface CallOwner {
  /** The call settled early (timeout, abort, stream left): drop it from the queue or cancel it. */
  abandon(call: PendingCall): void;
  /** A call that held the event loop open (see {@link PendingCall.holdsLoop}) settled. */
  settled(call: PendingCall): void;
}

export interface CallInit {
  id: number;
  fn: string;
  /** The encoded `call` frame, or the frame and its attachment frames. */
  frame: Buffer | readonly Buffer[];
  stream: boolean;
  session: string | undefined;
  timeout: number | undefined;
  checkoutTimeout: number | undefined;
  signal: AbortSignal | undefined;
  owner: CallOwner;
  /** Null when telemetry is off: then nothing is recorded or allocated for it. */
  telemetry: CallTelemetry | null;
}

// Items a stream may have in flight before Python waits for credit.
export const STREAM_WINDOW = 64;

const DONE: IteratorReturnResult<undefined> = { done: true, value: undefined };

interface Waiter {
  resolve: (r: IteratorResult<unknown>) => void;
  reject: (e: unknown) => void;
}

/**
 * One call from the user's side: it owns the promise (or the stream buffer), the deadline timers
 * and the abort listener, and guarantees that the call settles exactly once whatever races
 * between a reply, a timeout, an abort and a crash.
 */
export class PendingCall {
  readonly id: number;
  readonly fn: string;
  readonly frame: Buffer | readonly Buffer[];
  readonly stream: boolean;
  readonly session: string | undefined;
  readonly createdAt: number = performance.now();
  /** Order in the checkout queue (set by the queue). */
  seq = 0;
  /** Counted in the checkout queue (owned by the queue). */
  queued = false;
  phase: CallPhase = 'queued';
  /** Slot of the worker running it, once dispatched. */
  workerId = -1;
  startedAt = 0;
  worker: CallWorker | null = null;
  /** The pool holds Node's event loop open for it until it settles. */
  holdsLoop = false;
  readonly #owner: CallOwner;
  readonly #telemetry: CallTelemetry | null;
  readonly #signal: AbortSignal | undefined;
  #onAbort: (() => void) | null = null;
  #deadline: NodeJS.Timeout | null = null;
  #checkoutTimer: NodeJS.Timeout | null = null;
  #resolve!: (value: unknown) => void;
  #reject!: (error: unknown) => void;
  readonly promise: Promise<unknown> | null = null;
  // Stream state.
  #items: unknown[] = [];
  #head = 0;
  #ended = false;
  #error: unknown = null;
  /**
   * `next()` calls waiting for an item, oldest first (a consumer may call it without awaiting);
   * created by the first one that waits, so a plain call allocates none.
   */
  #waiters: Waiter[] | null = null;
  #consumed = 0;
  #granted = STREAM_WINDOW;

  constructor(init: CallInit) {
    this.id = init.id;
    this.fn = init.fn;
    this.frame = init.frame;
    this.stream = init.stream;
    this.session = init.session;
    this.#owner = init.owner;
    this.#telemetry = init.telemetry;
    this.#signal = init.signal;
    if (!init.stream) {
      this.promise = new Promise((resolve, reject) => {
        this.#resolve = resolve;
        this.#reject = reject;
      });
    }
    if (init.timeout !== undefined) {
      const ms = init.timeout;
      this.#deadline = setTimeout(() => this.#giveUp(new CallTimeoutError(this.fn, ms)), ms);
    }
    if (init.checkoutTimeout !== undefined) {
      const ms = init.checkoutTimeout;
      this.#checkoutTimer = setTimeout(() => {
        if (this.phase === 'queued') this.#giveUp(new CheckoutTimeoutError(this.fn, ms));
      }, ms);
    }
    if (init.signal) {
      const signal = init.signal;
      this.#onAbort = () => this.#giveUp(abortReason(signal));
      signal.addEventListener('abort', this.#onAbort, { once: true });
    }
  }

  get settled(): boolean {
    return this.phase === 'done';
  }

  /** The supervisor handed the call to a worker. */
  dispatched(workerId: number, worker: CallWorker, pid: number | null = null): void {
    this.phase = 'running';
    this.workerId = workerId;
    this.worker = worker;
    this.startedAt = performance.now();
    this.#telemetry?.dispatched(workerId, pid, this.startedAt - this.createdAt);
    if (this.#checkoutTimer) {
      clearTimeout(this.#checkoutTimer);
      this.#checkoutTimer = null;
    }
  }

  resolve(value: unknown): void {
    if (this.phase === 'done') return;
    this.#finish('ok', null);
    this.#resolve(value);
  }

  reject(error: unknown): void {
    if (this.phase === 'done') return;
    this.#finish(outcomeOf(error), error);
    if (this.stream) {
      this.#error = error;
      this.#wake();
    } else {
      this.#reject(error);
    }
  }

  /** A stream item arrived. */
  item(value: unknown): void {
    if (this.phase === 'done') return;
    const waiter = this.#waiters?.shift();
    if (waiter) {
      this.#consumed++;
      this.#maybeGrant();
      waiter.resolve({ done: false, value });
    } else {
      this.#items.push(value);
    }
  }

  /** The stream finished. */
  end(): void {
    if (this.phase === 'done') return;
    this.#finish('ok', null);
    this.#ended = true;
    this.#wake();
  }

  /** Async iteration of a stream call. */
  next(): Promise<IteratorResult<unknown>> {
    if (this.#head < this.#items.length) {
      const value = this.#items[this.#head];
      this.#items[this.#head++] = undefined;
      if (this.#head === this.#items.length) {
        this.#items = [];
        this.#head = 0;
      }
      this.#consumed++;
      this.#maybeGrant();
      return Promise.resolve({ done: false, value });
    }
    if (this.#error !== null) {
      const error = this.#error;
      this.#error = null;
      this.#ended = true;
      return Promise.reject(error);
    }
    if (this.#ended) return Promise.resolve(DONE);
    this.#waiters ??= [];
    const waiters = this.#waiters;
    return new Promise((resolve, reject) => {
      waiters.push({ resolve, reject });
    });
  }

  /** The consumer left the loop early: cancel the generator in Python. */
  return(): Promise<IteratorResult<unknown>> {
    this.#items = [];
    this.#head = 0;
    this.#error = null;
    this.#ended = true;
    this.#wake();
    if (this.phase !== 'done') {
      this.#finish('abandoned', null);
      this.#owner.abandon(this);
    }
    return Promise.resolve(DONE);
  }

  #maybeGrant(): void {
    if (this.phase !== 'running' || !this.worker) return;
    // Top the window up once half of it was consumed, so Python rarely waits and Node's buffer
    // never holds more than one window.
    if (this.#granted - this.#consumed <= STREAM_WINDOW / 2) {
      const n = this.#consumed + STREAM_WINDOW - this.#granted;
      this.#granted += n;
      this.worker.grantCredit(this.id, n);
    }
  }

  /** The stream ended or failed: the oldest waiter gets the error, if any, the others the end. */
  #wake(): void {
    const waiters = this.#waiters;
    if (!waiters || waiters.length === 0) return;
    this.#waiters = null;
    for (const waiter of waiters) {
      if (this.#error !== null) {
        const error = this.#error;
        this.#error = null;
        this.#ended = true;
        waiter.reject(error);
      } else {
        waiter.resolve(DONE);
      }
    }
  }

  #giveUp(error: unknown): void {
    if (this.phase === 'done') return;
    this.reject(error);
    this.#owner.abandon(this);
  }

  #finish(outcome: string, error: unknown): void {
    this.phase = 'done';
    if (this.holdsLoop) {
      this.holdsLoop = false;
      this.#owner.settled(this);
    }
    this.#telemetry?.settled(outcome, error, performance.now() - this.createdAt);
    if (this.#deadline) clearTimeout(this.#deadline);
    if (this.#checkoutTimer) clearTimeout(this.#checkoutTimer);
    this.#deadline = this.#checkoutTimer = null;
    if (this.#onAbort) {
      this.#signal?.removeEventListener('abort', this.#onAbort);
      this.#onAbort = null;
    }
  }
}

function abortReason(signal: AbortSignal): unknown {
  return signal.reason ?? new DOMException('This operation was aborted', 'AbortError');
}
