import type { ActorOptions, AnyActorLogic } from 'xstate';

type Clock = NonNullable<ActorOptions<AnyActorLogic>['clock']>;

// Longest interval Node's timers take; the timer never needs to fire, only to exist.
const FOREVER = 2 ** 31 - 1;

function noop(): void {}

/**
 * Holds Node's event loop open while the pool has something pending (a call, `ready()`,
 * `close()`), or from start to close with `keepAlive`. It is one timer, ref'd and unref'd, so that
 * everything else the pool owns (processes, pipes, XState's timers) can be unref'd: an idle pool
 * then lets a script exit, and its workers end with it.
 */
export class LoopHold {
  readonly #always: boolean;
  #timer: NodeJS.Timeout | null = null;
  #count = 0;

  constructor(always: boolean) {
    this.#always = always;
  }

  /** The pool started: from now on it may hold the loop. */
  start(): void {
    if (this.#timer) return;
    this.#timer = setInterval(noop, FOREVER);
    if (!this.#always && this.#count === 0) this.#timer.unref();
  }

  /** Something became pending. */
  acquire(): void {
    if (this.#count++ === 0 && !this.#always) this.#timer?.ref();
  }

  /** Something pending settled (one call per {@link acquire}). */
  release(): void {
    if (--this.#count === 0 && !this.#always) this.#timer?.unref();
  }

  /** The pool is closed: it holds nothing any more. */
  end(): void {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = null;
    this.#count = 0;
  }
}

/**
 * XState's clock for the pool's actors, with unref'd timers (backoff, cool-down, health and cancel
 * timeouts): they run while the loop is held, and never hold it themselves.
 */
export const unrefClock: Clock = {
  setTimeout(fn: (...args: unknown[]) => void, timeout: number) {
    const timer = setTimeout(fn, timeout);
    timer.unref();
    return timer;
  },
  clearTimeout(id: unknown) {
    clearTimeout(id as NodeJS.Timeout);
  },
};
