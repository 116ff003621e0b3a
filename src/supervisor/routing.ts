/**
 * Routing of calls to workers: the checkout queue, the idle set and session pins, all in the
 * supervisor's context. It runs in two ways with the same code: inside supervisor actions (with
 * XState's enqueue), and directly, synchronously, on the per-call path (`call()` and a worker
 * becoming idle), where a trip through the supervisor's mailbox would cost two machine events
 * per call (see docs/benchmarks.md). Lifecycle (spawn, exits, restarts, breaker, close) stays in
 * the supervisor machine; the direct path is only taken while it is `up`.
 */
import type { AnyActorRef } from 'xstate';
import { CircuitOpenError, type PyvisorError, QueueFullError } from '../errors.js';
import type { StopReason, WorkerActor, WorkerEvent } from '../machines/worker.machine.js';
import type { PendingCall } from '../pool/call.js';
import type { Slot, SupervisorContext, SupervisorEmitted } from './supervisor.machine.js';

/** The two effects routing has: tell a worker something, tell the pool something. */
export interface RoutingEffects {
  sendTo(ref: AnyActorRef, event: WorkerEvent): void;
  emit(event: SupervisorEmitted): void;
}

export const now = () => performance.now();

export function isWorkerIdle(ref: WorkerActor): boolean {
  const snapshot = ref.getSnapshot();
  // Same as matches({ alive: { ready: 'idle' } }), without parsing a state path on every call.
  const value = snapshot.value as { alive?: { ready?: string } | string };
  return (
    snapshot.status === 'active' && typeof value.alive === 'object' && value.alive.ready === 'idle'
  );
}

/** Hands `call` to the worker in `slot` (which must be idle). */
export function dispatch(
  context: SupervisorContext,
  enqueue: RoutingEffects,
  slot: Slot,
  call: PendingCall,
) {
  context.idle.delete(slot.index);
  claim(context, enqueue, slot, call);
  enqueue.sendTo(slot.ref!, { type: 'call.start', call });
}

/** The bookkeeping of a call going to `slot`: counters and the session pin. */
function claim(context: SupervisorContext, enqueue: RoutingEffects, slot: Slot, call: PendingCall) {
  slot.calls++;
  slot.processCalls++;
  if (call.session !== undefined) {
    const previous = context.sessions.bind(call.session, slot.index, slot.generation, now());
    if (previous) {
      enqueue.emit({
        type: 'session.moved',
        session: call.session,
        from: { workerId: previous.slot, generation: previous.generation },
        to: { workerId: slot.index, generation: slot.generation },
      });
    }
  }
}

/**
 * Whether the busy worker in `slot`, on finishing its call, can take the next one at once (in
 * the same machine event as the reply). Only the plain case: anything that needs a decision
 * (retirement, a call whose session moved to another worker) goes through `serve`.
 */
export function callWaitingFor(context: SupervisorContext, slot: Slot): boolean {
  if (!context.routing || retirementDue(context, slot, now()) !== null) return false;
  const call = context.queue.peek(slot.index);
  if (!call) return false;
  const pinned = call.session === undefined ? undefined : pinnedSlot(context, call);
  return pinned === undefined || pinned === slot;
}

/** Takes the call `callWaitingFor` saw, for the worker in `slot` that is about to run it. */
export function takeWaitingCall(
  context: SupervisorContext,
  enqueue: RoutingEffects,
  slot: Slot,
): PendingCall | undefined {
  const call = context.queue.next(slot.index);
  if (call) claim(context, enqueue, slot, call);
  return call;
}

/** Where a call must wait, if its session pins it to a live worker. */
export function pinnedSlot(context: SupervisorContext, call: PendingCall): Slot | undefined {
  if (call.session === undefined) return undefined;
  const binding = context.sessions.get(call.session, now());
  if (!binding) return undefined;
  const slot = context.slots[binding.slot]!;
  return slot.ref && slot.generation === binding.generation ? slot : undefined;
}

/** Why the worker in `slot` is due for replacement (`recycle`), if it is. */
export function retirementDue(
  context: SupervisorContext,
  slot: Slot,
  t: number,
): 'maxCalls' | 'maxAge' | null {
  const { maxCalls, maxAge } = context.options.recycle;
  if (slot.processCalls >= maxCalls) return 'maxCalls';
  if (t - slot.startedAt >= maxAge) return 'maxAge';
  return null;
}

/**
 * A worker past `recycle.maxCalls` or `recycle.maxAge` is retired here, when it becomes free,
 * rather than by the worker itself: the supervisor knows whether it is the last ready worker
 * while the breaker is not closed, and then keeps it (its replacement could not start). Under
 * sustained load this is where `maxAge` takes effect: a busy worker is never idle on the
 * maintenance tick, so an old one is retired when it finishes a call.
 */
export function retireIfDue(
  context: SupervisorContext,
  enqueue: RoutingEffects,
  slot: Slot,
): boolean {
  const why = retirementDue(context, slot, now());
  if (why === null) return false;
  if (context.circuitState !== 'closed' && context.readyCount <= 1) return false;
  context.idle.delete(slot.index);
  enqueue.emit({ type: 'worker.recycling', workerId: slot.index, pid: slot.pid, why });
  stopWorker(enqueue, slot, 'recycle');
  return true;
}

/** Gives the free worker in `slot` the oldest call it may run. */
export function serve(context: SupervisorContext, enqueue: RoutingEffects, slot: Slot): void {
  if (retireIfDue(context, enqueue, slot)) return;
  for (;;) {
    const call = context.queue.next(slot.index);
    if (!call) {
      context.idle.add(slot.index);
      slot.idleSince = now();
      return;
    }
    const pinned = pinnedSlot(context, call);
    if (pinned && pinned !== slot) {
      // Its session was pinned elsewhere after it was queued: wait there instead.
      if (context.idle.has(pinned.index) && isWorkerIdle(pinned.ref!)) {
        dispatch(context, enqueue, pinned, call);
      } else {
        context.queue.requeue(call, pinned.index);
      }
      continue;
    }
    dispatch(context, enqueue, slot, call);
    return;
  }
}

/** Matches every idle worker with waiting calls (after calls were moved around). */
export function serveAll(context: SupervisorContext, enqueue: RoutingEffects): void {
  for (const index of [...context.idle]) {
    const slot = context.slots[index]!;
    context.idle.delete(index);
    serve(context, enqueue, slot);
  }
}

export function rejectQueued(context: SupervisorContext, error: () => PyvisorError): void {
  for (const call of context.queue.drain()) call.reject(error());
}

export function circuitBlocksCalls(context: SupervisorContext): boolean {
  return context.circuitState !== 'closed' && context.readyCount === 0;
}

/** Finds a worker for a new call, or queues it; rejects it when it cannot run. */
export function routeCall(context: SupervisorContext, enqueue: RoutingEffects, call: PendingCall) {
  if (call.settled) return;
  const pinned = pinnedSlot(context, call);
  if (pinned) {
    context.sessions.bind(call.session!, pinned.index, pinned.generation, now());
    if (context.idle.has(pinned.index) && isWorkerIdle(pinned.ref!)) {
      dispatch(context, enqueue, pinned, call);
      return;
    }
  } else {
    for (const index of context.idle) {
      const slot = context.slots[index]!;
      if (isWorkerIdle(slot.ref!)) {
        dispatch(context, enqueue, slot, call);
        return;
      }
      // Not idle after all (it is ending); its exit event will clean up.
      context.idle.delete(index);
    }
    if (circuitBlocksCalls(context)) {
      call.reject(new CircuitOpenError(context.lastStartError));
      return;
    }
  }
  if (context.queue.size >= context.options.maxQueue) {
    call.reject(new QueueFullError(context.options.maxQueue));
    return;
  }
  context.queue.push(call, pinned?.index);
}

export function stopWorker(enqueue: RoutingEffects, slot: Slot, reason: StopReason): void {
  if (slot.ref) enqueue.sendTo(slot.ref, { type: 'worker.stop', reason } satisfies WorkerEvent);
}
