/**
 * The Stately inspector relay for `pyvisor inspect`: `@statelyai/inspect`'s local WebSocket
 * server, plus a WebSocket inspector connected to it, tamed so that it never reconnects and never
 * keeps the process alive after {@link Relay.stop}.
 *
 * Why the taming: `createWebSocketInspector` (0.7) reconnects on every socket error after 5 s, for
 * ever, with a timer nobody can cancel — and closing a socket that is still connecting *is* an
 * error, so a plain `inspector.stop()` can start that loop. Here the inspector's socket gets an
 * error handler that does not reconnect, the socket is open before the pool starts, and stop()
 * waits for it to close before stopping the server.
 */
import { createServer } from 'node:net';
import type { InspectionEvent, Observer } from 'xstate';
import { sanitizeContext, sanitizeEvent, sanitizeSnapshot } from '../observe/inspect.js';

/** The two modules of `@statelyai/inspect` the relay needs. */
export interface InspectModules {
  createInspectorServer: (options?: { port?: number; autoOpen?: boolean }) => { stop(): void };
  createWebSocketInspector: (options: {
    url: string;
    sanitizeContext?: (context: Record<string, unknown>) => Record<string, unknown>;
    sanitizeEvent?: (event: { type: string }) => { type: string };
    serialize?: <E extends { type: string }>(event: E) => E;
  }) => {
    inspect: Observer<InspectionEvent>;
    stop(): void;
    start(): void;
    adapter: object;
  };
}

/** `@statelyai/inspect` is not installed (it is an optional peer dependency). */
export class InspectUnavailableError extends Error {
  override readonly name = 'InspectUnavailableError';
}

/**
 * Loads `@statelyai/inspect` and its `/server` entry. Rejects with
 * {@link InspectUnavailableError} when the package is not installed.
 */
export async function loadInspectModules(
  client = '@statelyai/inspect',
  server = '@statelyai/inspect/server',
): Promise<InspectModules> {
  try {
    const [c, s] = await Promise.all([import(client), import(server)]);
    return {
      createInspectorServer: (s as InspectModules).createInspectorServer,
      createWebSocketInspector: (c as InspectModules).createWebSocketInspector,
    };
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ERR_MODULE_NOT_FOUND') {
      throw new InspectUnavailableError(
        `pyvisor inspect needs the optional package @statelyai/inspect, which is not installed.\nInstall it next to pyvisor:  npm install --save-dev @statelyai/inspect`,
      );
    }
    throw error;
  }
}

/** Rejects when something listens on `port` already (the relay would crash on EADDRINUSE). */
export function checkPortFree(port: number): Promise<void> {
  return new Promise((resolvePromise, reject) => {
    // A client that connects during the check (a browser, a test) must not hang on it.
    const probe = createServer((socket) => socket.destroy());
    probe.unref();
    probe.once('error', (error: NodeJS.ErrnoException) =>
      reject(
        new Error(
          error.code === 'EADDRINUSE'
            ? `port ${port} is already in use; choose another one with --port`
            : `cannot listen on port ${port}: ${error.message}`,
        ),
      ),
    );
    probe.listen(port, () => probe.close(() => resolvePromise()));
  });
}

const WORKER_KEYS = new Set([
  'workerId',
  'generation',
  'pid',
  'calls',
  'call',
  'python',
  'handlers',
  'stopReason',
  'ending',
]);
const SUPERVISOR_KEYS = new Set([
  'pool',
  'size',
  'ready',
  'free',
  'circuit',
  'queued',
  'sessions',
  'slots',
  'failure',
]);

/**
 * `sanitizeContext` for the inspector, safe to apply twice. The pool's inspection events carry
 * contexts it sanitised already, but `@statelyai/inspect` reads `actorRef.getSnapshot()` itself
 * for actor events and applies its `sanitizeContext` to both kinds; `sanitizeContext` of an
 * already sanitised context would be `{}`.
 */
export function sanitizeContextOnce(context: Record<string, unknown>): Record<string, unknown> {
  if (!context || typeof context !== 'object') return context;
  const keys = Object.keys(context);
  const raw = 'port' in context || 'queue' in context;
  if (!raw && keys.length > 0) {
    if (keys.every((k) => WORKER_KEYS.has(k)) || keys.every((k) => SUPERVISOR_KEYS.has(k))) {
      return context;
    }
  }
  return sanitizeContext(context) as Record<string, unknown>;
}

/**
 * Keeps only what the inspector needs of an event's snapshot (see `sanitizeSnapshot`): invoked
 * promise and callback actors carry their `input` — the spawn spec, with the whole environment —
 * and it must never leave.
 */
export function scrubInspectionEvent<E extends { type: string }>(event: E): E {
  const snapshot = (event as { snapshot?: unknown }).snapshot;
  if (!snapshot || typeof snapshot !== 'object') return event;
  return { ...event, snapshot: sanitizeSnapshot(snapshot) };
}

/** The minimal WebSocket surface used here (`ws`'s WebSocket in Node). */
interface SocketLike {
  readyState: number;
  onerror: ((event: unknown) => void) | null;
  addEventListener(type: 'open' | 'close' | 'error', listener: () => void): void;
  removeEventListener(type: 'open' | 'close' | 'error', listener: () => void): void;
  terminate?: () => void;
}
/** Private fields of `@statelyai/inspect`'s WebSocketAdapter that the relay relies on. */
interface AdapterInternals {
  ws?: SocketLike;
  status?: string;
}
const OPEN = 1;
const CLOSED = 3;

type SocketEvent = 'open' | 'close' | 'error';

/** Resolves with the first of `events` the socket emits, or `'timeout'` after `ms`. */
function waitFor(
  socket: SocketLike,
  events: readonly SocketEvent[],
  ms: number,
): Promise<SocketEvent | 'timeout'> {
  return new Promise((done) => {
    const listeners = events.map((type) => [type, () => finish(type)] as const);
    const finish = (how: SocketEvent | 'timeout') => {
      clearTimeout(timer);
      for (const [type, listener] of listeners) socket.removeEventListener(type, listener);
      done(how);
    };
    const timer = setTimeout(() => finish('timeout'), ms);
    for (const [type, listener] of listeners) socket.addEventListener(type, listener);
  });
}

/** A running relay: pass {@link Relay.inspect} to the pool, call {@link Relay.stop} at the end. */
export interface Relay {
  /** The page to open in a browser. */
  readonly url: string;
  /** The inspection observer for the pool's `inspect` option. */
  readonly inspect: Observer<InspectionEvent>;
  /** Closes the inspector's socket, then the server. Safe to call twice. */
  stop(): Promise<void>;
}

/**
 * Starts the relay server on `port` and connects a sanitising WebSocket inspector to it.
 * Resolves once the inspector's socket is open; rejects if the port is taken or the socket does
 * not open within 5 s (after stopping everything it started).
 */
export async function startRelay(
  modules: InspectModules,
  { port, open }: { port: number; open: boolean },
): Promise<Relay> {
  await checkPortFree(port);
  const server = modules.createInspectorServer({ port, autoOpen: open });
  const inspector = modules.createWebSocketInspector({
    url: `ws://localhost:${port}`,
    sanitizeContext: sanitizeContextOnce,
    sanitizeEvent: sanitizeEvent as (event: { type: string }) => { type: string },
    serialize: scrubInspectionEvent,
  });
  const adapter = inspector.adapter as AdapterInternals;
  let stopped = false;
  const tame = (): SocketLike | undefined => {
    const socket = adapter.ws;
    if (!socket) return undefined;
    // Replaces the adapter's handler, which would reconnect after 5 s, for ever.
    socket.onerror = () => {
      adapter.status = 'closed';
    };
    return socket;
  };

  let socket = tame();
  const deadline = performance.now() + 5000;
  while (socket && socket.readyState !== OPEN && performance.now() < deadline) {
    const how = await waitFor(
      socket,
      ['open', 'error', 'close'],
      Math.max(1, deadline - performance.now()),
    );
    if (how === 'open' || how === 'timeout') break;
    // Refused (the server was not listening yet): retry shortly, until the deadline.
    await new Promise((r) => setTimeout(r, 50));
    inspector.start();
    socket = tame();
  }

  const stop = async (): Promise<void> => {
    if (stopped) return;
    stopped = true;
    // Inspection events are sent from setTimeout(0) callbacks: let the last ones go out.
    await new Promise((r) => setTimeout(r, 20));
    const last = adapter.ws;
    if (last && last.readyState !== CLOSED) {
      const closed = waitFor(last, ['close'], 1000);
      inspector.stop();
      if ((await closed) === 'timeout') last.terminate?.();
    } else inspector.stop();
    server.stop();
  };

  if (!socket) {
    await stop();
    throw new Error(
      'this version of @statelyai/inspect is not supported (its WebSocket adapter has no `ws`; pyvisor was tested with 0.7)',
    );
  }
  if (socket.readyState !== OPEN) {
    await stop();
    throw new Error(`the inspector could not connect to the relay on ws://localhost:${port}`);
  }
  return { url: `http://localhost:${port}`, inspect: inspector.inspect, stop };
}
