/** What the queue needs of a call. */
export interface QueuedCall {
  seq: number;
  /** True while the call is counted in the queue; owned by the queue. */
  queued: boolean;
  readonly settled: boolean;
}

/** An array-backed FIFO with O(1) shift. */
class Fifo<T> {
  #items: (T | undefined)[] = [];
  #head = 0;

  get length(): number {
    return this.#items.length - this.#head;
  }

  push(item: T): void {
    this.#items.push(item);
  }

  unshift(item: T): void {
    if (this.#head > 0) this.#items[--this.#head] = item;
    else this.#items.unshift(item);
  }

  peek(): T | undefined {
    return this.#items[this.#head];
  }

  /** The `i`-th item from the head, or undefined. */
  at(i: number): T | undefined {
    return this.#items[this.#head + i];
  }

  shift(): T | undefined {
    if (this.#head >= this.#items.length) return undefined;
    const item = this.#items[this.#head];
    this.#items[this.#head++] = undefined;
    if (this.#head === this.#items.length) {
      this.#items = [];
      this.#head = 0;
    }
    return item;
  }

  drain(): T[] {
    const out = this.#items.slice(this.#head) as T[];
    this.#items = [];
    this.#head = 0;
    return out;
  }
}

function firstLive<C extends QueuedCall>(fifo: Fifo<C>): C | undefined {
  for (let i = 0; ; i++) {
    const call = fifo.at(i);
    if (call === undefined || (call.queued && !call.settled)) return call;
  }
}

/**
 * Calls waiting for a worker: one FIFO for calls any worker may take, and one per worker slot for
 * calls pinned to it by a session. A free worker takes the oldest of the two heads. Calls that
 * settled while waiting (timeout, abort) are skipped lazily, and counted out by `dropped()`.
 */
export class CheckoutQueue<C extends QueuedCall> {
  readonly #any = new Fifo<C>();
  readonly #pinned: Fifo<C>[];
  #seq = 0;
  #size = 0;

  constructor(slots: number) {
    this.#pinned = Array.from({ length: slots }, () => new Fifo<C>());
  }

  /** Calls waiting (settled ones excluded). */
  get size(): number {
    return this.#size;
  }

  /** Adds a call at the back; `slot` pins it to one worker. */
  push(call: C, slot?: number): void {
    call.seq = ++this.#seq;
    this.#insert(call, slot);
  }

  /** Puts back a call that was handed to a worker that could not take it; it keeps its place. */
  requeue(call: C, slot?: number): void {
    call.queued = true;
    if (slot === undefined) this.#any.unshift(call);
    else this.#pinned[slot]!.unshift(call);
    this.#size++;
  }

  /** Moves calls pinned to `slot` back to the shared FIFO, in order (their worker died). */
  unpin(slot: number): void {
    const moved = this.#pinned[slot]!.drain();
    if (moved.length === 0) return;
    const rest = this.#any.drain();
    const merged = [...moved, ...rest].sort((a, b) => a.seq - b.seq);
    for (const call of merged) this.#any.push(call);
  }

  /** Takes the oldest call `slot` may run, or undefined. */
  next(slot: number): C | undefined {
    const call = this.#live(slot)?.shift();
    if (call) {
      call.queued = false;
      this.#size--;
    }
    return call;
  }

  /** The call `next(slot)` would return, left in place. Changes nothing. */
  peekLive(slot: number): C | undefined {
    const a = firstLive(this.#pinned[slot]!);
    const b = firstLive(this.#any);
    if (a === undefined) return b;
    return b === undefined || a.seq < b.seq ? a : b;
  }

  /** A queued call settled on its own (timeout, abort); it is skipped when reached. */
  dropped(call: C): void {
    if (!call.queued) return;
    call.queued = false;
    this.#size--;
  }

  /** Empties the queue; returns the calls still waiting. */
  drain(): C[] {
    const out: C[] = [];
    for (const fifo of [this.#any, ...this.#pinned]) {
      for (const call of fifo.drain()) {
        if (call.queued && !call.settled) out.push(call);
        call.queued = false;
      }
    }
    this.#size = 0;
    return out;
  }

  /**
   * The FIFO (the slot's own or the shared one) whose head is the oldest live call `slot` may
   * run. Calls that were dropped or settled while waiting are cleared from the heads on the way.
   */
  #live(slot: number): Fifo<C> | undefined {
    const own = this.#pinned[slot]!;
    for (;;) {
      const a = own.peek();
      const b = this.#any.peek();
      if (a === undefined && b === undefined) return undefined;
      const fifo = a !== undefined && (b === undefined || a.seq < b.seq) ? own : this.#any;
      const call = fifo.peek()!;
      if (call.queued && !call.settled) return fifo;
      fifo.shift();
      if (call.queued) {
        // Settled while waiting, before its dropped() arrived.
        call.queued = false;
        this.#size--;
      }
    }
  }

  #insert(call: C, slot: number | undefined): void {
    call.queued = true;
    if (slot === undefined) this.#any.push(call);
    else this.#pinned[slot]!.push(call);
    this.#size++;
  }
}
