import type { InspectionEvent, Observer } from 'xstate';

/** An XState inspection observer, as `createActor(..., { inspect })` takes it. */
export type Inspector = Observer<InspectionEvent> | ((event: InspectionEvent) => void);

type Rec = Record<string, unknown>;

function callSummary(call: unknown): Rec | null {
  if (!call || typeof call !== 'object') return null;
  const c = call as { id?: unknown; fn?: unknown; stream?: unknown; session?: unknown };
  return {
    id: c.id,
    fn: c.fn,
    stream: c.stream,
    session: c.session === undefined ? undefined : '…',
  };
}

// Marks a context this module produced, so sanitising twice (the pool's observer, then an
// inspector's own `sanitizeContext`) returns it unchanged instead of emptying it.
const SANITIZED = Symbol('pyvisor.sanitized');

function mark<T extends object>(value: T): T {
  Object.defineProperty(value, SANITIZED, { value: true, enumerable: false });
  return value;
}

/**
 * What the inspector may see of a machine's context: ids, counters and states; never payloads,
 * frames, environment variables or live objects. Safe to apply twice.
 */
export function sanitizeContext(context: unknown): unknown {
  if (!context || typeof context !== 'object') return context;
  if ((context as { [SANITIZED]?: boolean })[SANITIZED]) return context;
  return mark(sanitizeRaw(context as Rec) as Rec);
}

function sanitizeRaw(c: Rec): unknown {
  if ('workerId' in c && 'port' in c) {
    const info = c.info as { handlers?: { name: string }[]; version?: string } | null;
    const ending = c.ending as { reason?: string; error?: { code?: string } | null } | null;
    return {
      workerId: c.workerId,
      generation: c.generation,
      pid: c.pid,
      calls: c.calls,
      call: callSummary(c.call),
      python: info?.version,
      handlers: info?.handlers?.map((h) => h.name),
      stopReason: c.stopReason,
      ending: ending ? { reason: ending.reason, code: ending.error?.code } : null,
    };
  }
  if ('slots' in c && 'router' in c) {
    const options = c.options as { name?: string; size?: number };
    const router = c.router as {
      ready?: number;
      queued?: number;
      sessions?: number;
      free?: number;
    };
    const circuit = c.circuit as { getSnapshot?: () => { value?: unknown } } | undefined;
    return {
      pool: options.name,
      size: options.size,
      ready: router.ready,
      free: router.free,
      circuit: circuit?.getSnapshot?.().value,
      queued: router.queued,
      sessions: router.sessions,
      slots: (c.slots as Rec[]).map((s) => ({
        id: s.index,
        generation: s.generation,
        pid: (s.worker as { pid?: number | null } | null)?.pid ?? null,
        live: s.worker !== null,
        restarts: s.restarts,
        restartPending: s.restartPending,
        blocked: s.blocked,
      })),
      failure: (c.failure as { code?: string } | null)?.code ?? null,
    };
  }
  if ('failures' in c) return { failures: c.failures };
  return {};
}

/** Keeps an event's type and the ids it refers to; drops arguments, results and objects. */
export function sanitizeEvent(event: unknown): unknown {
  if (!event || typeof event !== 'object') return event;
  const e = event as Rec;
  const out: Rec = { type: e.type };
  for (const key of [
    'workerId',
    'generation',
    'callId',
    'n',
    'reason',
    'slot',
    'timeout',
    'state',
  ]) {
    if (key in e && (typeof e[key] !== 'object' || e[key] === null)) out[key] = e[key];
  }
  if ('call' in e) out.call = callSummary(e.call);
  if ('message' in e && e.message && typeof e.message === 'object') {
    const m = e.message as Rec;
    out.message = { t: m.t, id: m.id, kind: m.kind, type: m.type };
  }
  if ('exit' in e && e.exit && typeof e.exit === 'object') {
    const x = e.exit as Rec;
    out.exit = { exitCode: x.exitCode, signal: x.signal };
  }
  if ('error' in e && e.error && typeof e.error === 'object') {
    out.error = { code: (e.error as Rec).code };
  }
  if ('output' in e && e.output && typeof e.output === 'object') {
    const o = e.output as Rec;
    out.output = { workerId: o.workerId, reason: o.reason, exitCode: o.exitCode, signal: o.signal };
  }
  return out;
}

const SNAPSHOT_KEYS = ['status', 'value', 'children'] as const;

/**
 * Keeps only what an inspector needs of a snapshot: status, state value, sanitised context,
 * children, tags, and the output or error reduced to codes. Promise and callback actors carry
 * their `input` in their snapshot (for pyvisor: the spawn spec with the whole environment); it
 * never leaves.
 */
export function sanitizeSnapshot(snapshot: unknown): unknown {
  if (!snapshot || typeof snapshot !== 'object') return snapshot;
  const raw = snapshot as Rec;
  const safe: Rec = {};
  for (const key of SNAPSHOT_KEYS) if (raw[key] !== undefined) safe[key] = raw[key];
  if ('context' in raw) safe.context = sanitizeContext(raw.context);
  if (raw.tags instanceof Set) safe.tags = [...raw.tags];
  else if (Array.isArray(raw.tags)) safe.tags = raw.tags;
  if (raw.output !== undefined && raw.output !== null) {
    safe.output = (sanitizeEvent({ output: raw.output }) as { output?: unknown }).output ?? null;
  }
  if (raw.error) safe.error = { code: (raw.error as { code?: unknown }).code ?? null };
  return safe;
}

// Inspectors read `actorRef.getSnapshot()` themselves when an actor registers; hand them a view
// of the actor whose snapshot is sanitised too.
const views = new WeakMap<object, object>();
function sanitizedActorRef(actorRef: object): object {
  let view = views.get(actorRef);
  if (!view) {
    view = new Proxy(actorRef, {
      get(target, key, receiver) {
        if (key === 'getSnapshot') {
          return () => sanitizeSnapshot((target as { getSnapshot(): unknown }).getSnapshot());
        }
        const value = Reflect.get(target, key, receiver);
        return typeof value === 'function' ? value.bind(target) : value;
      },
    });
    views.set(actorRef, view);
  }
  return view;
}

/**
 * Wraps an inspection observer so it only ever sees sanitised contexts, snapshots and events
 * (no payloads, no env), whatever inspector the user plugs in.
 */
export function sanitizingInspector(inspector: Inspector): (event: InspectionEvent) => void {
  const next =
    typeof inspector === 'function' ? inspector : (e: InspectionEvent) => inspector.next?.(e);
  return (event) => {
    const safe = { ...event } as Rec;
    // Every kind (@xstate.event, .snapshot, .microstep, ...) may carry the event and a snapshot.
    if ('event' in event) safe.event = sanitizeEvent(event.event);
    if ('snapshot' in event && event.snapshot) safe.snapshot = sanitizeSnapshot(event.snapshot);
    if (event.actorRef) safe.actorRef = sanitizedActorRef(event.actorRef);
    next(safe as unknown as InspectionEvent);
  };
}
