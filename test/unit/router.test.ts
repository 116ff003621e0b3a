// The router alone: fake workers, fake calls and an injected clock (no process, no timer).
import { describe, expect, it } from 'vitest';
import { CircuitOpenError, PoolClosedError, type PyvisorError } from '../../src/errors.js';
import {
  type RetireWhy,
  type RoutedCall,
  type RoutedWorker,
  Router,
  type RouterEvent,
} from '../../src/supervisor/router.js';

class FakeCall implements RoutedCall {
  seq = 0;
  queued = false;
  settled = false;
  workerId = -1;
  error: unknown = null;
  constructor(
    readonly id: number,
    readonly session: string | undefined = undefined,
  ) {}
  reject(error: unknown): void {
    if (this.settled) throw new Error(`call ${this.id} settled twice`);
    this.settled = true;
    this.error = error;
  }
}

class FakeWorker implements RoutedWorker<FakeCall> {
  idle = true;
  running: FakeCall[] = [];
  cancelled: number[] = [];
  stopped = false;
  rss: number | null = null;
  constructor(
    readonly slot: number,
    readonly generation = 1,
    readonly readyAt = 0,
  ) {}
  accepting(): boolean {
    return !this.stopped;
  }
  isIdle(): boolean {
    return this.idle && !this.stopped;
  }
  /** Calls it may hold (concurrency, plus one with pipelining). */
  capacity = 1;
  start(call: FakeCall): void {
    if (this.stopped || this.running.length >= this.capacity) {
      throw new Error(`worker ${this.slot} has no room`);
    }
    this.idle = false;
    call.workerId = this.slot;
    this.running.push(call);
  }
  cancel(callId: number): void {
    this.cancelled.push(callId);
  }
}

interface Setup {
  slots?: number;
  maxQueue?: number;
  sessionTtl?: number;
  maxCalls?: number;
  maxAge?: number;
  maxRss?: number;
  concurrency?: number;
  pipeline?: boolean;
  refusal?: () => PyvisorError | null;
  keep?: boolean;
}

function setup(opts: Setup = {}) {
  const clock = { t: 0 };
  const events: RouterEvent[] = [];
  const retired: [number, RetireWhy][] = [];
  const router = new Router<FakeCall, FakeWorker>(
    {
      slots: opts.slots ?? 2,
      concurrency: opts.concurrency ?? 1,
      pipeline: opts.pipeline ?? false,
      maxQueue: opts.maxQueue ?? Number.POSITIVE_INFINITY,
      sessionTtl: opts.sessionTtl ?? 1000,
      recycle: {
        maxCalls: opts.maxCalls ?? Number.POSITIVE_INFINITY,
        maxAge: opts.maxAge ?? Number.POSITIVE_INFINITY,
        maxRss: opts.maxRss ?? Number.POSITIVE_INFINITY,
      },
    },
    {
      now: () => clock.t,
      refusal: opts.refusal ?? (() => null),
      retire: (worker, why) => {
        if (opts.keep) return false;
        worker.stopped = true;
        retired.push([worker.slot, why]);
        return true;
      },
      emit: (event) => events.push(event),
    },
  );
  /** A worker that reports ready, then free (as a real one does). */
  const join = (slot: number, generation = 1) => {
    const w = new FakeWorker(slot, generation, clock.t);
    w.capacity = (opts.concurrency ?? 1) + (opts.pipeline && (opts.concurrency ?? 1) === 1 ? 1 : 0);
    router.workerReady(w);
    router.workerFree(w);
    return w;
  };
  /** `w` finished its call: it takes the next one at once if there is one, else goes free. */
  const finish = (w: FakeWorker) => {
    w.running.pop();
    if (router.hasCallFor(w)) {
      const next = router.nextFor(w)!;
      next.workerId = w.slot;
      w.running.push(next);
      return next;
    }
    w.idle = true;
    router.workerFree(w);
    return undefined;
  };
  return { router, clock, events, retired, join, finish };
}

describe('Router', () => {
  it('hands sequential calls to the most recently used free worker (LIFO)', () => {
    const { router, join, finish } = setup({ slots: 3 });
    const workers = [join(0), join(1), join(2)];
    const served: number[] = [];
    for (let i = 0; i < 5; i++) {
      const call = new FakeCall(i);
      router.route(call);
      served.push(call.workerId);
      finish(workers[call.workerId]!);
    }
    // The first goes to the top of the stack; every later one to the same, warm worker.
    expect(new Set(served).size).toBe(1);
    expect(router.free).toBe(3);
  });

  it('spreads concurrent calls over every free worker, then queues', () => {
    const { router, join } = setup({ slots: 2 });
    join(0);
    join(1);
    const calls = [new FakeCall(1), new FakeCall(2), new FakeCall(3)];
    for (const c of calls) router.route(c);
    expect(calls.map((c) => c.workerId).sort()).toEqual([-1, 0, 1]);
    expect(router.queued).toBe(1);
  });

  it('a finishing worker takes the oldest waiting call in the reply (hasCallFor changes nothing)', () => {
    const { router, join, finish } = setup({ slots: 1 });
    const w = join(0);
    const [a, b, c] = [new FakeCall(1), new FakeCall(2), new FakeCall(3)];
    router.route(a);
    router.route(b);
    router.route(c);
    b.settled = true; // timed out while waiting
    expect(router.hasCallFor(w)).toBe(true);
    expect(router.hasCallFor(w)).toBe(true);
    expect(router.queued).toBe(2); // looking changed nothing
    expect(finish(w)).toBe(c);
    expect(router.queued).toBe(0);
  });

  it('a worker that says it is free before its readiness is noted is served once, when it is', () => {
    const { router } = setup({ slots: 1 });
    const call = new FakeCall(1);
    router.route(call);
    const w = new FakeWorker(0);
    router.workerFree(w);
    expect(call.workerId).toBe(-1);
    router.workerReady(w);
    expect(w.running).toEqual([call]);
    // Its first idle report arriving after its readiness must not dispatch a second call.
    router.route(new FakeCall(2));
    expect(w.running).toHaveLength(1);
  });

  it('keeps a session on its worker, queues behind it, and moves it when that worker is gone', () => {
    const { router, join, finish, events } = setup({ slots: 2 });
    const w0 = join(0);
    const w1 = join(1);
    const first = new FakeCall(1, 's');
    router.route(first);
    const home = first.workerId === 0 ? w0 : w1;
    const other = home === w0 ? w1 : w0;
    const pinned = new FakeCall(2, 's');
    router.route(pinned);
    expect(pinned.workerId).toBe(-1); // waits for home although the other is free
    expect(router.hasCallFor(other)).toBe(false);
    expect(finish(home)).toBe(pinned);
    router.workerGone(home);
    const moved = new FakeCall(3, 's');
    router.route(moved);
    expect(moved.workerId).toBe(other.slot);
    expect(events).toEqual([
      {
        type: 'session.moved',
        session: 's',
        from: { workerId: home.slot, generation: 1 },
        to: { workerId: other.slot, generation: 1 },
      },
    ]);
  });

  it('forgets sessions after sessionTtl of the injected clock, and only then', () => {
    const { router, clock, join } = setup({ slots: 1, sessionTtl: 1000 });
    join(0);
    router.route(new FakeCall(1, 's'));
    expect(router.sessions).toBe(1);
    clock.t = 999;
    expect(router.maintain(null).expired).toEqual([]);
    clock.t = 1000;
    expect(router.maintain(null).expired).toEqual(['s']);
    expect(router.sessions).toBe(0);
  });

  it('retires a worker at maxCalls between queued calls, and unpins its waiting calls', () => {
    const { router, join, finish, retired } = setup({ slots: 2, maxCalls: 2 });
    const w0 = join(0);
    const w1 = join(1);
    const calls = [1, 2, 3].map((i) => new FakeCall(i, 's'));
    for (const c of calls) router.route(c);
    const home = calls[0]!.workerId === 0 ? w0 : w1;
    expect(finish(home)).toBe(calls[1]);
    // Two calls served: it is due, takes no third, and the pinned call goes to the other worker.
    expect(finish(home)).toBeUndefined();
    expect(retired).toEqual([[home.slot, 'maxCalls']]);
    expect(calls[2]!.workerId).toBe(1 - home.slot);
    expect(router.ready).toBe(1);
  });

  it('a session pinned to a busy worker that is due for retirement moves on at once (concurrency 3)', () => {
    const { router, join, retired, events } = setup({ slots: 2, maxCalls: 2, concurrency: 3 });
    join(0);
    join(1);
    const calls = [1, 2, 3].map((i) => new FakeCall(i, 's'));
    for (const c of calls) router.route(c);
    const home = calls[0]!.workerId;
    // The session's worker holds its first two calls, its last two by maxCalls: it still has a
    // free place, but the third call does not wait for its replacement; it goes to the other
    // worker, which the session now follows.
    expect(calls[1]!.workerId).toBe(home);
    expect(retired).toEqual([[home, 'maxCalls']]);
    expect(calls[2]!.workerId).toBe(1 - home);
    expect(router.queued).toBe(0);
    expect(events).toEqual([
      {
        type: 'session.moved',
        session: 's',
        from: { workerId: home, generation: 1 },
        to: { workerId: 1 - home, generation: 1 },
      },
    ]);
  });

  it('retires a worker whose sampled RSS is over maxRss on the maintenance tick, busy or free', () => {
    const { router, join, retired } = setup({ slots: 2, maxRss: 1000 });
    const a = join(0);
    const b = join(1);
    a.rss = 1000; // at the limit: not over it
    b.rss = null; // not sampled
    router.maintain(null);
    expect(retired).toEqual([]);
    a.rss = 1001;
    router.maintain(null);
    expect(retired).toEqual([[0, 'maxRss']]);
    expect(router.ready).toBe(1);
  });

  it('retires a free worker past maxAge on the maintenance tick (injected clock)', () => {
    const { router, clock, join, retired } = setup({ slots: 2, maxAge: 5000 });
    join(0);
    clock.t = 3000;
    join(1);
    clock.t = 4999;
    router.maintain(null);
    expect(retired).toEqual([]);
    clock.t = 5000;
    router.maintain(null);
    expect(retired).toEqual([[0, 'maxAge']]);
    clock.t = 8000;
    router.maintain(null);
    expect(retired).toEqual([
      [0, 'maxAge'],
      [1, 'maxAge'],
    ]);
    expect(router.free).toBe(0);
  });

  it('keeps a due worker when the supervisor says so (last worker while the breaker is open)', () => {
    const { router, join, finish } = setup({ slots: 1, maxCalls: 1, keep: true });
    const w = join(0);
    router.route(new FakeCall(1));
    router.route(new FakeCall(2));
    expect(finish(w)).toBeUndefined(); // due: not taken in the reply...
    expect(w.running).toHaveLength(1); // ...but served when it went free, since it was kept
  });

  it('pings every ready worker, idle or busy, that showed no sign of life for an interval', () => {
    const { router, clock, join, finish } = setup({ slots: 2 });
    const w0 = join(0);
    const w1 = join(1);
    const call = new FakeCall(1);
    router.route(call);
    const hot = call.workerId === 0 ? w0 : w1;
    const cold = hot === w0 ? w1 : w0;
    clock.t = 5000;
    // Both: the idle one, and the busy one (its call has run for the whole interval).
    expect(router.maintain(5000).toCheck).toEqual([w0, w1]);
    // A check does not take a worker off the stack: calls still go to the most recent one.
    expect(router.free).toBe(1);
    clock.t = 7000;
    finish(hot);
    // Not pinged again until another interval passed; a finished call is a sign of life too.
    clock.t = 9999;
    expect(router.maintain(5000).toCheck).toEqual([]);
    clock.t = 10_000;
    expect(router.maintain(5000).toCheck).toEqual([cold]);
    const next = new FakeCall(2);
    router.route(next);
    expect(next.workerId).toBe(hot.slot);
  });

  it('refuses calls that cannot wait, bounds the queue, and rejects everything once stopped', () => {
    let open = true;
    const { router, join } = setup({
      slots: 1,
      maxQueue: 1,
      refusal: () => (open ? new CircuitOpenError(null) : null),
    });
    const refused = new FakeCall(1);
    router.route(refused);
    expect((refused.error as PyvisorError).code).toBe('ERR_CIRCUIT_OPEN');
    open = false;
    const queued = new FakeCall(2);
    const full = new FakeCall(3);
    router.route(queued);
    router.route(full);
    expect((full.error as PyvisorError).code).toBe('ERR_QUEUE_FULL');
    router.stop(() => new PoolClosedError());
    expect((queued.error as PyvisorError).code).toBe('ERR_POOL_CLOSED');
    const late = new FakeCall(4);
    router.route(late);
    expect((late.error as PyvisorError).code).toBe('ERR_POOL_CLOSED');
    const w = join(0);
    expect(w.running).toEqual([]);
  });

  it('abandon drops a queued call and cancels a running one on its worker', () => {
    const { router, join } = setup({ slots: 1 });
    const w = join(0);
    const running = new FakeCall(1);
    const waiting = new FakeCall(2);
    router.route(running);
    router.route(waiting);
    waiting.settled = true;
    router.abandon(waiting);
    expect(router.queued).toBe(0);
    router.abandon(running);
    expect(w.cancelled).toEqual([1]);
  });

  it('a bounced call keeps its place and goes to the next free worker', () => {
    const { router, join } = setup({ slots: 2 });
    const w0 = join(0);
    const first = new FakeCall(1);
    router.route(first);
    const second = new FakeCall(2);
    router.route(second);
    expect(second.workerId).toBe(-1);
    w0.running = [];
    router.bounced(first);
    const w1 = join(1);
    expect(w1.running).toEqual([first]);
  });

  it('with concurrency, a call goes to the least loaded worker with a free place, then queues', () => {
    const { router, join, finish } = setup({ slots: 2, concurrency: 3 });
    const w0 = join(0);
    const w1 = join(1);
    const calls = Array.from({ length: 7 }, (_, i) => new FakeCall(i + 1));
    for (const call of calls) router.route(call);
    // Spread evenly (least loaded first), three places each, the seventh waits.
    expect(w0.running.length).toBe(3);
    expect(w1.running.length).toBe(3);
    expect(router.queued).toBe(1);
    expect(router.loadOf(0) + router.loadOf(1)).toBe(6);
    // A call finishing on w1 hands w1 the waiting call in its place.
    const next = finish(w1);
    expect(next).toBe(calls[6]);
    expect(router.queued).toBe(0);
    expect(router.loadOf(1)).toBe(3);
    // Nothing waits: a finished call frees a place, and the next call goes there.
    w0.running.pop();
    router.workerFree(w0);
    expect(router.loadOf(0)).toBe(2);
    const late = new FakeCall(99);
    router.route(late);
    expect(late.workerId).toBe(0);
  });

  it('pipelining: a call that finds every worker busy is handed to one early, counted as queued until it starts', () => {
    const { router, join } = setup({ slots: 2, pipeline: true, maxQueue: 3 });
    const w0 = join(0);
    const w1 = join(1);
    const a = new FakeCall(1);
    const b = new FakeCall(2);
    router.route(a);
    router.route(b);
    // Both busy: the next two go early, one each, to the worker that took its call first.
    const c = new FakeCall(3);
    const d = new FakeCall(4);
    router.route(c);
    router.route(d);
    expect(w0.running.length + w1.running.length).toBe(4);
    expect(router.queued).toBe(2);
    expect(router.callsOf(0) + router.callsOf(1)).toBe(2);
    // Every place and every early slot taken: the next one waits in the queue...
    const e = new FakeCall(5);
    router.route(e);
    expect(e.queued).toBe(true);
    expect(router.queued).toBe(3);
    // ...and maxQueue counts the early ones too.
    const f = new FakeCall(6);
    router.route(f);
    expect(f.error).toBeInstanceOf(Error);
    expect((f.error as PyvisorError).code).toBe('ERR_QUEUE_FULL');
    // The early call starts when the one before it finishes: then it counts as a call.
    const cWorker = w0.running.includes(c) ? w0 : w1;
    router.started(cWorker, c);
    expect(router.queued).toBe(2);
    expect(router.callsOf(0) + router.callsOf(1)).toBe(3);
    // An early call that gives up is cancelled where it waits, and no longer counts.
    const dWorker = w0.running.includes(d) ? w0 : w1;
    d.settled = true;
    router.abandon(d);
    expect(dWorker.cancelled).toEqual([4]);
    expect(router.queued).toBe(1);
  });

  it('pipelining: an early call handed back by a worker that died goes to another worker', () => {
    const { router, join } = setup({ slots: 2, pipeline: true });
    const w0 = join(0);
    const w1 = join(1);
    const a = new FakeCall(1);
    const b = new FakeCall(2);
    router.route(a);
    router.route(b);
    const early = new FakeCall(3);
    router.route(early);
    const holder = w0.running.includes(early) ? w0 : w1;
    const other = holder === w0 ? w1 : w0;
    // The holder dies: its running call failed (not the router's business), the early one comes
    // back; the holder takes no more calls, the other one runs it after its current call.
    holder.stopped = true;
    router.bounced(early, holder, true);
    expect(other.running).toContain(early);
    expect(router.isCurrent(holder)).toBe(false);
  });
});
