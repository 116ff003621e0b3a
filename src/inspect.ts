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

/**
 * What the inspector may see of a machine's context: ids, counters and states; never payloads,
 * frames, environment variables or live objects.
 */
export function sanitizeContext(context: unknown): unknown {
  if (!context || typeof context !== 'object') return context;
  const c = context as Rec;
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
  if ('slots' in c && 'queue' in c) {
    const options = c.options as { name?: string; size?: number };
    return {
      pool: options.name,
      size: options.size,
      readyCount: c.readyCount,
      circuit: c.circuitState,
      queued: (c.queue as { size?: number }).size,
      sessions: (c.sessions as { size?: number }).size,
      slots: (c.slots as Rec[]).map((s) => ({
        id: s.index,
        generation: s.generation,
        pid: s.pid,
        ready: s.ready,
        calls: s.calls,
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

/**
 * Wraps an inspection observer so it only ever sees sanitised contexts and events (no payloads,
 * no env), whatever inspector the user plugs in.
 */
export function sanitizingInspector(inspector: Inspector): (event: InspectionEvent) => void {
  const next =
    typeof inspector === 'function' ? inspector : (e: InspectionEvent) => inspector.next?.(e);
  return (event) => {
    const safe = { ...event } as Rec;
    // Every kind (@xstate.event, .snapshot, .microstep, ...) may carry the event and a snapshot.
    if ('event' in event) safe.event = sanitizeEvent(event.event);
    if ('snapshot' in event && event.snapshot) {
      const snapshot = event.snapshot as unknown as Rec;
      const copy: Rec = { ...snapshot, context: sanitizeContext(snapshot.context) };
      if ('output' in snapshot) copy.output = sanitizeEvent({ output: snapshot.output });
      safe.snapshot = copy;
    }
    next(safe as unknown as InspectionEvent);
  };
}
