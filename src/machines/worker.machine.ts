import { type ActorRefFrom, and, assign, emit, fromCallback, raise, setup } from 'xstate';
import {
  ProtocolError,
  type PyvisorError,
  WorkerCrashedError,
  WorkerInitError,
} from '../errors.js';
import {
  type ErrMessage,
  encodeMessage,
  type InitErrorMessage,
  type PythonMessage,
  type ReadyMessage,
} from '../protocol/index.js';
import { errorFromReply } from '../protocol/reply-errors.js';
import type {
  ProcessExit,
  SpawnSpec,
  SpawnTransport,
  WorkerTransport,
} from '../transport/transport.js';

/**
 * What the worker needs of a call. The pool's `PendingCall` implements it; tests can pass any
 * object with this shape.
 */
export interface WorkerCall {
  readonly id: number;
  readonly fn: string;
  /** The encoded `call` frame (with its attachment frames, if any), ready to write. */
  readonly frame: Buffer | readonly Buffer[];
  readonly stream: boolean;
  readonly settled: boolean;
  dispatched(
    workerId: number,
    port: { grantCredit(callId: number, n: number): void },
    pid: number | null,
  ): void;
  resolve(value: unknown): void;
  reject(error: unknown): void;
  item(value: unknown): void;
  end(): void;
}

/**
 * Where a busy worker finds its next call when it finishes one (the pool's checkout queue). With
 * it, a worker under load goes from one call to the next in the reply's event, without passing
 * through `ready.idle`; without it (or when nothing waits), it goes idle and says so.
 */
export interface CallSource {
  /** A call is waiting that this worker may take now. Must not change anything. */
  waiting(workerId: number, generation: number): boolean;
  /** Takes the call `waiting` saw; called right after it returned true. */
  take(workerId: number, generation: number): WorkerCall | undefined;
}

/** Why a worker ended; one final state each (`stopped` covers planned stops and recycling). */
export type WorkerExitReason =
  | 'stopped'
  | 'crashed'
  | 'initFailed'
  | 'initTimedOut'
  | 'unresponsive'
  | 'protocolError'
  | 'killed';

/** Why a worker was asked to stop. */
export type StopReason = 'close' | 'recycle' | 'failed';

/** The output of a finished worker machine: process death as data. */
export interface WorkerExit {
  workerId: number;
  generation: number;
  reason: WorkerExitReason;
  /** Why it was stopped, for `stopped` (and for stops during start-up). */
  stopReason: StopReason | null;
  pid: number | null;
  exitCode: number | null;
  signal: NodeJS.Signals | null;
  /** It had reported ready before it ended. */
  wasReady: boolean;
  /** Calls it served. */
  calls: number;
  /**
   * What went wrong: set for every reason but `stopped`, and for a stop during which the transport
   * failed (`process.failed`).
   */
  error: PyvisorError | null;
  /** Last stderr lines. */
  stderr: string;
}

/** Input of {@link workerMachine}. Times in ms. */
export interface WorkerInput {
  workerId: number;
  generation: number;
  spec: SpawnSpec;
  spawn: SpawnTransport;
  initTimeout: number;
  cancelGrace: number;
  healthTimeout: number;
  stopTimeout: number;
  /** Retire (stop gracefully) after this many calls. */
  maxCalls: number;
  /** The queue to take the next call from when one finishes (see {@link CallSource}). */
  calls?: CallSource;
}

/** Events a worker machine receives. */
export type WorkerEvent =
  // From the process (the invoked transport actor).
  | { type: 'process.spawned'; transport: WorkerTransport }
  | { type: 'process.exited'; exit: ProcessExit }
  | { type: 'process.protocolError'; error: ProtocolError }
  /**
   * The transport threw (the spawn, a `send` or a `kill`), or the process actor failed: the
   * process can no longer be driven. `error` is what was thrown.
   */
  | { type: 'process.failed'; error: unknown }
  | { type: 'python.ready'; message: ReadyMessage }
  | { type: 'python.initError'; message: InitErrorMessage }
  | { type: 'python.ok'; message: { t: 'ok'; id: number; v: unknown } }
  | { type: 'python.item'; message: { t: 'item'; id: number; v: unknown } }
  | { type: 'python.end'; message: { t: 'end'; id: number } }
  | { type: 'python.err'; message: ErrMessage }
  | { type: 'python.pong'; message: { t: 'pong'; id: number } }
  // From the supervisor.
  | { type: 'call.start'; call: WorkerCall }
  | { type: 'call.cancel'; callId: number }
  | { type: 'stream.credit'; callId: number; n: number }
  | { type: 'health.check' }
  | { type: 'worker.stop'; reason: StopReason }
  | { type: 'worker.kill'; error: PyvisorError };

/**
 * Every event type a worker receives, for tools and model-based tests that need the list at run
 * time (the `Record` makes the compiler check that it is complete).
 */
export const WORKER_EVENT_TYPES = Object.keys({
  'process.spawned': true,
  'process.exited': true,
  'process.protocolError': true,
  'process.failed': true,
  'python.ready': true,
  'python.initError': true,
  'python.ok': true,
  'python.item': true,
  'python.end': true,
  'python.err': true,
  'python.pong': true,
  'call.start': true,
  'call.cancel': true,
  'stream.credit': true,
  'health.check': true,
  'worker.stop': true,
  'worker.kill': true,
} satisfies Record<WorkerEvent['type'], true>) as WorkerEvent['type'][];

/** Events a worker emits to whoever listens (the supervisor). */
export type WorkerEmitted =
  | { type: 'worker.ready'; workerId: number; generation: number; info: ReadyMessage }
  | { type: 'worker.idle'; workerId: number; generation: number }
  | { type: 'worker.bounced'; workerId: number; generation: number; call: WorkerCall }
  | { type: 'health.failed'; workerId: number; generation: number; pid: number | null };

interface Ending {
  reason: WorkerExitReason;
  error: PyvisorError | null;
}

export interface WorkerContext {
  readonly workerId: number;
  readonly generation: number;
  readonly input: WorkerInput;
  transport: WorkerTransport | null;
  pid: number | null;
  info: ReadyMessage | null;
  call: WorkerCall | null;
  calls: number;
  pingId: number;
  stopReason: StopReason | null;
  ending: Ending | null;
  exit: ProcessExit | null;
  /** Lets a running stream ask for more items without knowing about actors. */
  readonly port: { grantCredit(callId: number, n: number): void };
}

const PYTHON_EVENT = {
  ready: 'python.ready',
  init_error: 'python.initError',
  ok: 'python.ok',
  item: 'python.item',
  end: 'python.end',
  err: 'python.err',
  pong: 'python.pong',
} as const;

// How long to wait for the exit of a SIGKILLed process before giving up on it (a process in
// uninterruptible sleep); the slot is then released anyway.
const KILL_WAIT_MS = 5000;

/** The id of the invoked process actor: its failures arrive as `xstate.error.actor.process`. */
const PROCESS_ACTOR = 'process';

/**
 * Runs the process for as long as the worker is alive; the cleanup kills it (unless it exited).
 *
 * Nothing the transport throws escapes: a spawn that throws, and a `send` or `kill` that throws
 * inside one of the machine's actions, become a `process.failed` event. The machine gets a
 * transport whose `send` and `kill` catch and report (one wrapper per process, none per call), so
 * its actions need no error handling of their own.
 */
const pythonProcess = fromCallback<
  WorkerEvent,
  { spec: SpawnSpec; spawn: SpawnTransport },
  WorkerEvent
>(({ input, sendBack }) => {
  let exited = false;
  let transport: WorkerTransport;
  try {
    transport = input.spawn(input.spec, {
      message(message: PythonMessage) {
        sendBack({ type: PYTHON_EVENT[message.t], message } as WorkerEvent);
      },
      protocolError(error) {
        sendBack({ type: 'process.protocolError', error });
      },
      output() {
        // Output lines are observed by the pool directly on the transport's handlers.
      },
      exit(exit) {
        exited = true;
        sendBack({ type: 'process.exited', exit });
      },
    });
  } catch (error) {
    // Nothing was started (node's spawn throws before it forks, e.g. for a NUL byte in env).
    sendBack({ type: 'process.failed', error });
    return () => {};
  }
  const failed = (error: unknown) => sendBack({ type: 'process.failed', error });
  // The events `failed` sends are queued: the action that called `send` or `kill` finishes first.
  const guarded: WorkerTransport = {
    get pid() {
      return transport.pid;
    },
    send(frame) {
      try {
        transport.send(frame);
      } catch (error) {
        failed(error);
      }
    },
    kill(signal) {
      try {
        transport.kill(signal);
      } catch (error) {
        failed(error);
      }
    },
    outputTail() {
      try {
        return transport.outputTail();
      } catch {
        return '';
      }
    },
  };
  sendBack({ type: 'process.spawned', transport: guarded });
  return () => {
    if (exited) return;
    try {
      transport.kill('SIGKILL');
    } catch {
      // The worker is ending anyway: nothing is left to report the failure to.
    }
  };
});

function tail(context: WorkerContext): string {
  return context.transport?.outputTail() ?? '';
}

function facts(context: WorkerContext, exit: ProcessExit | null) {
  return {
    workerId: context.workerId,
    pid: context.pid ?? undefined,
    exitCode: exit?.exitCode ?? null,
    signal: exit?.signal ?? null,
    stderr: tail(context),
  };
}

function isCurrentCall(context: WorkerContext, id: number): boolean {
  return context.call !== null && context.call.id === id;
}

/** The error of a worker whose transport threw, or whose process actor failed. */
function transportFailure(context: WorkerContext, cause: unknown): WorkerCrashedError {
  return new WorkerCrashedError(
    facts(context, null),
    `became unusable: its transport failed (${cause instanceof Error ? cause.message : String(cause)})`,
    { cause },
  );
}

// ------------------------------------------------------------------------------------------
// Transitions shared by states that react alike. Each is spread into every state it applies to,
// so that each state still lists every event it can receive.

/** A frame the state does not expect (or undecodable bytes): the worker is killed as broken. */
const PROTOCOL_ERROR = {
  target: '#worker.alive.killing',
  actions: 'end as protocol error',
} as const;

/** {@link PROTOCOL_ERROR} for each of `types`. */
function protocolErrorOn<T extends WorkerEvent['type']>(...types: T[]) {
  return Object.fromEntries(types.map((type) => [type, PROTOCOL_ERROR])) as Record<
    T,
    typeof PROTOCOL_ERROR
  >;
}

/** A call for a worker that cannot take one now: handed back rather than lost. */
const BOUNCE = { actions: 'bounce call' } as const;

/** Killed on the supervisor's word (`worker.kill`): its error ends the worker and the call. */
const KILL = { target: '#worker.alive.killing', actions: 'end as killed' } as const;

/**
 * The terminal reply of the running call (`ok`, `err`, `end`): settle it (or, after a cancel,
 * drop it) and go back to ready, or retire when due. A terminal reply for any other id is a
 * protocol error. Straight transitions, no transient state: this is the per-call hot path.
 */
function terminalReplies(settle: 'resolve call' | 'forget call') {
  const afterReply = [
    {
      guard: and(['reply is for the running call', 'should retire']),
      target: '#worker.alive.stopping',
      actions: [settle, 'note retirement'],
    },
    {
      guard: and(['reply is for the running call', 'a call is waiting']),
      target: '#worker.alive.busy',
      actions: [settle, 'start waiting call'],
    },
    { guard: 'reply is for the running call', target: '#worker.alive.ready', actions: settle },
    PROTOCOL_ERROR,
  ] as const;
  return { 'python.ok': afterReply, 'python.err': afterReply, 'python.end': afterReply } as const;
}

/** How the process of a worker that reported ready ends (idle, checking, busy, cancelling). */
const READY_ENDINGS = {
  // DOWN: a running call fails with ERR_WORKER_CRASHED.
  'process.exited': { target: '#worker.crashed', actions: 'end as crashed' },
  // The transport threw: the same, with what it threw as the cause. The process may still run:
  // it is killed, and the slot is released only once it is gone.
  'process.failed': {
    target: '#worker.alive.killing',
    actions: { type: 'end as transport failure', params: { reason: 'crashed' } },
  },
  'process.protocolError': PROTOCOL_ERROR,
  'worker.kill': KILL,
} as const;

/** While a call runs (busy, cancelling). */
const CALL_RUNNING = {
  ...READY_ENDINGS,
  // Never mid-call: finish the call, then stop.
  'worker.stop': { actions: 'remember stop' },
  'call.start': BOUNCE,
  // Busy workers are not pinged; a pong can only answer a check that was overtaken by a call
  // (see ready.checking).
  'health.check': {},
  'python.pong': {},
  ...protocolErrorOn('python.ready', 'python.initError'),
} as const;

/** While the process is on its way out (stopping, killing): only its end matters now. */
const ON_THE_WAY_OUT = {
  // Already ending.
  'worker.stop': {},
  'call.start': BOUNCE,
  'call.cancel': {},
  'stream.credit': {},
  'health.check': {},
  // Whatever Python says now no longer matters. A protocol error here is not worth a different
  // ending either.
  'process.protocolError': {},
  'python.ok': {},
  'python.item': {},
  'python.end': {},
  'python.err': {},
  'python.pong': {},
  'python.ready': {},
  'python.initError': {},
} as const;

const ENDINGS = [
  'initFailed',
  'initTimedOut',
  'unresponsive',
  'protocolError',
  'stopped',
  'crashed',
] as const;

/** From `killing` to the final state named by the recorded ending (`killed` otherwise). */
function toFinalState(actions: ('record exit' | 'note transport failure')[]) {
  return [
    ...ENDINGS.map((reason) => ({
      guard: { type: 'ending is' as const, params: { reason } },
      target: `#worker.${reason}`,
      actions,
    })),
    { target: '#worker.killed', actions },
  ];
}

/**
 * One Python worker process, from spawn to exit. Every event that can reach a state has an
 * explicit transition there (ignoring is spelled out, with the reason), and every path ends in a
 * final state whose output says how the process ended.
 */
export const workerMachine = setup({
  types: {
    context: {} as WorkerContext,
    events: {} as WorkerEvent,
    input: {} as WorkerInput,
    output: {} as WorkerExit,
    emitted: {} as WorkerEmitted,
  },
  actors: { 'python process': pythonProcess },
  delays: {
    initTimeout: ({ context }) => context.input.initTimeout,
    cancelGrace: ({ context }) => context.input.cancelGrace,
    healthTimeout: ({ context }) => context.input.healthTimeout,
    stopTimeout: ({ context }) => context.input.stopTimeout,
    killWait: KILL_WAIT_MS,
  },
  guards: {
    'reply is for the running call': ({ context, event }) =>
      'message' in event && isCurrentCall(context, (event.message as { id: number }).id),
    'cancel is for the running call': ({ context, event }) =>
      event.type === 'call.cancel' && isCurrentCall(context, event.callId),
    'credit is for the running call': ({ context, event }) =>
      event.type === 'stream.credit' && isCurrentCall(context, event.callId),
    'pong answers the check': ({ context, event }) =>
      event.type === 'python.pong' && event.message.id === context.pingId,
    'a call is waiting': ({ context }) =>
      context.input.calls?.waiting(context.workerId, context.generation) ?? false,
    'should retire': ({ context }) =>
      context.stopReason !== null || context.calls >= context.input.maxCalls,
    'ending is': ({ context }, params: { reason: WorkerExitReason }) =>
      context.ending?.reason === params.reason,
    'a process was spawned': ({ context }) => context.transport !== null,
  },
  actions: {
    'store transport': assign(({ event }) => {
      if (event.type !== 'process.spawned') return {};
      return { transport: event.transport, pid: event.transport.pid ?? null };
    }),
    'store ready info': assign(({ event }) =>
      event.type === 'python.ready' ? { info: event.message } : {},
    ),
    'announce ready': emit(({ context }) => ({
      type: 'worker.ready' as const,
      workerId: context.workerId,
      generation: context.generation,
      info: context.info!,
    })),
    'announce idle': emit(({ context }) => ({
      type: 'worker.idle' as const,
      workerId: context.workerId,
      generation: context.generation,
    })),
    'bounce call': emit(({ context, event }) => ({
      type: 'worker.bounced' as const,
      workerId: context.workerId,
      generation: context.generation,
      call: (event as Extract<WorkerEvent, { type: 'call.start' }>).call,
    })),
    'start call': assign(({ context, event }) => {
      if (event.type !== 'call.start') return {};
      const call = event.call;
      call.dispatched(context.workerId, context.port, context.pid);
      context.transport!.send(call.frame);
      return { call, calls: context.calls + 1 };
    }),
    'start waiting call': assign(({ context }) => {
      // The guard just saw it, in the same synchronous step, so it is there.
      const call = context.input.calls!.take(context.workerId, context.generation)!;
      call.dispatched(context.workerId, context.port, context.pid);
      context.transport!.send(call.frame);
      return { call, calls: context.calls + 1 };
    }),
    'resolve call': assign(({ context, event }) => {
      if (event.type === 'python.ok') context.call?.resolve(event.message.v);
      else if (event.type === 'python.end') context.call?.end();
      else if (event.type === 'python.err' && context.call) {
        context.call.reject(errorFromReply(event.message, context.call.fn));
      }
      return { call: null };
    }),
    'deliver item': ({ context, event }) => {
      if (event.type === 'python.item') context.call?.item(event.message.v);
    },
    'forget call': assign({ call: null }),
    'send cancel': ({ context }) => {
      if (context.call)
        context.transport?.send(encodeMessage({ t: 'cancel', id: context.call.id }));
    },
    'send credit': ({ context, event }) => {
      if (event.type === 'stream.credit') {
        context.transport?.send(encodeMessage({ t: 'credit', id: event.callId, n: event.n }));
      }
    },
    'send ping': assign(({ context }) => {
      const pingId = context.pingId + 1;
      context.transport?.send(encodeMessage({ t: 'ping', id: pingId }));
      return { pingId };
    }),
    'send exit': ({ context }) => {
      context.transport?.send(encodeMessage({ t: 'exit' }));
    },
    'send SIGTERM': ({ context }) => context.transport?.kill('SIGTERM'),
    'send SIGKILL': ({ context }) => context.transport?.kill('SIGKILL'),
    'remember stop': assign(({ context, event }) =>
      event.type === 'worker.stop' && context.stopReason === null
        ? { stopReason: event.reason }
        : {},
    ),
    'note retirement': assign(({ context }) => ({ stopReason: context.stopReason ?? 'recycle' })),
    'record exit': assign(({ event }) =>
      event.type === 'process.exited' ? { exit: event.exit } : {},
    ),
    'end as': assign((_, params: { reason: WorkerExitReason }) => ({
      ending: { reason: params.reason, error: null },
    })),
    'end as crashed': assign(({ context, event }) => {
      const exit = event.type === 'process.exited' ? event.exit : null;
      const error = new WorkerCrashedError(facts(context, exit));
      context.call?.reject(error);
      return { exit, call: null, ending: { reason: 'crashed' as const, error } };
    }),
    'end as crashed during start': assign(({ context, event }) => {
      const exit = event.type === 'process.exited' ? event.exit : null;
      const reason = exit?.spawnError ? 'spawn' : 'crash';
      const error = new WorkerInitError(reason, facts(context, exit), { cause: exit?.spawnError });
      return { exit, ending: { reason: 'initFailed' as const, error } };
    }),
    'end as transport failure': assign(
      ({ context, event }, params: { reason: 'initFailed' | 'crashed' | 'stopped' }) => {
        const cause = event.type === 'process.failed' ? event.error : undefined;
        const error =
          params.reason === 'initFailed'
            ? new WorkerInitError('spawn', facts(context, null), { cause })
            : transportFailure(context, cause);
        context.call?.reject(error);
        return { call: null, ending: { reason: params.reason, error } };
      },
    ),
    'note transport failure': assign(({ context, event }) => {
      // The recorded ending stands (the first reason wins); the failure is its error if it had none.
      const ending = context.ending;
      if (ending === null || ending.error !== null) return {};
      const cause = event.type === 'process.failed' ? event.error : undefined;
      return { ending: { reason: ending.reason, error: transportFailure(context, cause) } };
    }),
    // The process actor failed in a way it did not report itself: the same as a process.failed.
    'report process failure': raise(({ event }) => ({
      type: 'process.failed' as const,
      error: (event as { error?: unknown }).error,
    })),
    'end as init error': assign(({ context, event }) => {
      if (event.type !== 'python.initError') return {};
      const m = event.message;
      const error = new WorkerInitError('error', {
        ...facts(context, null),
        pythonType: m.type,
        pythonMessage: m.message,
        pythonTraceback: m.traceback,
      });
      return { ending: { reason: 'initFailed' as const, error } };
    }),
    'end as init timeout': assign(({ context }) => ({
      ending: {
        reason: 'initTimedOut' as const,
        error: new WorkerInitError('timeout', facts(context, null)),
      },
    })),
    'end as unresponsive': assign(({ context }) => ({
      ending: {
        reason: 'unresponsive' as const,
        error: new WorkerCrashedError(
          facts(context, null),
          `did not answer a health check within ${context.input.healthTimeout} ms`,
        ),
      },
    })),
    'end as killed': assign(({ context, event }) => {
      const error =
        event.type === 'worker.kill'
          ? event.error
          : new WorkerCrashedError(
              facts(context, null),
              `did not stop within ${context.input.cancelGrace} ms of a cancel (cancelGrace)`,
            );
      context.call?.reject(error);
      return { call: null, ending: { reason: 'killed' as const, error } };
    }),
    'end as protocol error': assign(({ context, event }) => {
      let error: ProtocolError;
      if (event.type === 'process.protocolError') {
        error = event.error;
      } else {
        const message = 'message' in event ? (event.message as { t?: string; id?: number }) : {};
        error = new ProtocolError(
          `Worker ${context.workerId} sent an unexpected '${message.t}' frame` +
            (message.id !== undefined ? ` (id ${message.id})` : ''),
        );
      }
      context.call?.reject(error);
      return { call: null, ending: { reason: 'protocolError' as const, error } };
    }),
    'report health failure': emit(({ context }) => ({
      type: 'health.failed' as const,
      workerId: context.workerId,
      generation: context.generation,
      pid: context.pid,
    })),
  },
}).createMachine({
  id: 'worker',
  context: ({ input, self }) => ({
    workerId: input.workerId,
    generation: input.generation,
    input,
    transport: null,
    pid: null,
    info: null,
    call: null,
    calls: 0,
    pingId: 0,
    stopReason: null,
    ending: null,
    exit: null,
    port: { grantCredit: (callId, n) => self.send({ type: 'stream.credit', callId, n }) },
  }),
  initial: 'alive',
  output: ({ context }) => ({
    workerId: context.workerId,
    generation: context.generation,
    reason: context.ending?.reason ?? 'stopped',
    stopReason: context.stopReason,
    pid: context.pid,
    exitCode: context.exit?.exitCode ?? null,
    signal: context.exit?.signal ?? null,
    wasReady: context.info !== null,
    calls: context.calls,
    error: context.ending?.error ?? null,
    stderr: tail(context),
  }),
  states: {
    alive: {
      invoke: {
        id: PROCESS_ACTOR,
        src: 'python process',
        input: ({ context }) => ({ spec: context.input.spec, spawn: context.input.spawn }),
        // Whatever else makes the process actor fail is handled as a process.failed, state by state.
        onError: { actions: 'report process failure' },
      },
      initial: 'starting',
      states: {
        starting: {
          initial: 'spawning',
          after: {
            initTimeout: { target: 'killing', actions: 'end as init timeout' },
          },
          on: {
            // DOWN while waiting for the init reply (or before the spawn was reported).
            'process.exited': {
              target: '#worker.initFailed',
              actions: 'end as crashed during start',
            },
            // The spawn threw (nothing was started), or the process actor failed.
            'process.failed': {
              target: '#worker.initFailed',
              actions: { type: 'end as transport failure', params: { reason: 'initFailed' } },
            },
            // Cancel during start-up: nothing to finish, end the process at once.
            'worker.stop': {
              target: 'killing',
              actions: ['remember stop', { type: 'end as', params: { reason: 'stopped' } }],
            },
            'worker.kill': KILL,
            // Never dispatched to a starting worker.
            'call.start': BOUNCE,
            // No call runs yet, so a cancel or credit cannot be for this worker.
            'call.cancel': {},
            'stream.credit': {},
            // Only ready workers are health-checked.
            'health.check': {},
          },
          states: {
            spawning: {
              on: {
                'process.spawned': { target: 'initializing', actions: 'store transport' },
              },
            },
            initializing: {
              on: {
                'python.ready': {
                  target: '#worker.alive.ready',
                  actions: ['store ready info', 'announce ready'],
                },
                'python.initError': {
                  target: '#worker.alive.killing',
                  actions: 'end as init error',
                },
                ...protocolErrorOn(
                  'process.protocolError',
                  'python.ok',
                  'python.item',
                  'python.end',
                  'python.err',
                  'python.pong',
                ),
              },
            },
          },
        },
        ready: {
          initial: 'idle',
          on: {
            ...READY_ENDINGS,
            'worker.stop': { target: 'stopping', actions: 'remember stop' },
            // A cancel or credit for a call that already finished: nothing to do.
            'call.cancel': {},
            'stream.credit': {},
            // No call is running, so any reply is for an unknown id.
            ...protocolErrorOn(
              'python.ok',
              'python.item',
              'python.end',
              'python.err',
              'python.ready',
              'python.initError',
            ),
          },
          states: {
            idle: {
              entry: 'announce idle',
              on: {
                'call.start': { target: '#worker.alive.busy', actions: 'start call' },
                'health.check': { target: 'checking' },
                // The answer to a check that already passed.
                'python.pong': {},
              },
            },
            checking: {
              entry: 'send ping',
              after: {
                healthTimeout: {
                  target: '#worker.alive.killing',
                  actions: ['report health failure', 'end as unresponsive'],
                },
              },
              on: {
                'python.pong': [
                  { guard: 'pong answers the check', target: 'idle' },
                  // A stale pong from an earlier check; keep waiting for this one.
                  {},
                ],
                // The supervisor does not dispatch to a worker being checked, but if a call does
                // arrive, run it: the pong, when it comes, is ignored while busy.
                'call.start': { target: '#worker.alive.busy', actions: 'start call' },
                // One check at a time.
                'health.check': {},
              },
            },
          },
        },
        busy: {
          on: {
            ...CALL_RUNNING,
            ...terminalReplies('resolve call'),
            'python.item': [
              { guard: 'reply is for the running call', actions: 'deliver item' },
              PROTOCOL_ERROR,
            ],
            'call.cancel': [
              { guard: 'cancel is for the running call', target: 'cancelling' },
              // A cancel for a call that finished earlier on this worker.
              {},
            ],
            'stream.credit': [
              { guard: 'credit is for the running call', actions: 'send credit' },
              // Credit for a stream that already ended.
              {},
            ],
          },
        },
        cancelling: {
          // The caller was already told; wait for Python to acknowledge the interrupt.
          entry: 'send cancel',
          after: { cancelGrace: { target: 'killing', actions: 'end as killed' } },
          on: {
            ...CALL_RUNNING,
            // A reply after the cancel (the handler finished anyway, or acknowledged the
            // interrupt): discarded, the caller has its answer.
            ...terminalReplies('forget call'),
            'python.item': [
              // Items already in flight when the cancel was sent.
              { guard: 'reply is for the running call' },
              PROTOCOL_ERROR,
            ],
            // Already cancelling; a second cancel (timeout and abort racing) changes nothing.
            'call.cancel': {},
            // The stream was abandoned; it gets no more credit.
            'stream.credit': {},
          },
        },
        stopping: {
          // Graceful: ask, then SIGTERM, then SIGKILL.
          initial: 'asking',
          states: {
            asking: {
              entry: 'send exit',
              after: { stopTimeout: 'terminating' },
            },
            terminating: {
              entry: 'send SIGTERM',
              after: {
                stopTimeout: {
                  target: '#worker.alive.killing',
                  actions: { type: 'end as', params: { reason: 'stopped' } },
                },
              },
            },
          },
          on: {
            ...ON_THE_WAY_OUT,
            'process.exited': { target: '#worker.stopped', actions: 'record exit' },
            // The exit frame or SIGTERM could not be sent: kill it, and end once it is gone.
            'process.failed': {
              target: 'killing',
              actions: { type: 'end as transport failure', params: { reason: 'stopped' } },
            },
            'worker.kill': {
              target: 'killing',
              actions: { type: 'end as', params: { reason: 'stopped' } },
            },
          },
        },
        killing: {
          // The reason is in context.ending; wait for the process to be gone so the output has its
          // exit code and the slot never holds two processes.
          entry: 'send SIGKILL',
          // A process that survives SIGKILL this long (uninterruptible sleep) is given up on; the
          // final state still follows the recorded reason.
          after: { killWait: toFinalState([]) },
          on: {
            ...ON_THE_WAY_OUT,
            'process.exited': toFinalState(['record exit']),
            'process.failed': [
              // SIGKILL could not be sent (or the process actor failed): keep waiting for the
              // exit, up to killWait, as for a process that survives SIGKILL (the cleanup tries
              // again).
              { guard: 'a process was spawned', actions: 'note transport failure' },
              // Stopped before the spawn was reported, and the spawn threw (or the process actor
              // failed before it): nothing was started, so no exit will come. End now.
              ...toFinalState(['note transport failure']),
            ],
            'worker.kill': {},
            // Stopped before the spawn was reported: kill what was just started.
            'process.spawned': { actions: ['store transport', 'send SIGKILL'] },
          },
        },
      },
    },
    stopped: { type: 'final' },
    crashed: { type: 'final' },
    initFailed: { type: 'final' },
    initTimedOut: { type: 'final' },
    unresponsive: { type: 'final' },
    protocolError: { type: 'final' },
    killed: { type: 'final' },
  },
});

/** A running worker actor. */
export type WorkerActor = ActorRefFrom<typeof workerMachine>;
