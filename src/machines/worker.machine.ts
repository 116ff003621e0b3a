import { type ActorRefFrom, and, assign, emit, fromCallback, setup } from 'xstate';
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
  /** What went wrong, for every reason but `stopped`. */
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

/** Runs the process for as long as the worker is alive; the cleanup kills it. */
const pythonProcess = fromCallback<
  WorkerEvent,
  { spec: SpawnSpec; spawn: SpawnTransport },
  WorkerEvent
>(({ input, sendBack }) => {
  let exited = false;
  const transport = input.spawn(input.spec, {
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
  sendBack({ type: 'process.spawned', transport });
  return () => {
    if (!exited) transport.kill('SIGKILL');
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

/**
 * The terminal reply of the running call (`ok`, `err`, `end`): settle it (or, after a cancel,
 * drop it) and go back to ready, or retire when due. A terminal reply for any other id is a
 * protocol error. Straight transitions, no transient state: this is the per-call hot path.
 */
function afterReply(settle: 'resolve call' | 'forget call') {
  return [
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
    { target: '#worker.alive.killing', actions: 'end as protocol error' },
  ] as const;
}

const ENDINGS = ['initFailed', 'initTimedOut', 'unresponsive', 'protocolError', 'stopped'] as const;

/** From `killing` to the final state named by the recorded ending (`killed` otherwise). */
function toFinalState(actions: 'record exit'[]) {
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
        src: 'python process',
        input: ({ context }) => ({ spec: context.input.spec, spawn: context.input.spawn }),
      },
      initial: 'starting',
      states: {
        starting: {
          initial: 'spawning',
          after: {
            initTimeout: { target: 'killing', actions: 'end as init timeout' },
          },
          on: {
            // Cancel during start-up: nothing to finish, end the process at once.
            'worker.stop': {
              target: 'killing',
              actions: ['remember stop', { type: 'end as', params: { reason: 'stopped' } }],
            },
            'worker.kill': { target: 'killing', actions: 'end as killed' },
            // Never dispatched to a starting worker; hand it back rather than lose it.
            'call.start': { actions: 'bounce call' },
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
                'process.exited': {
                  target: '#worker.initFailed',
                  actions: 'end as crashed during start',
                },
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
                // DOWN while waiting for the init reply.
                'process.exited': {
                  target: '#worker.initFailed',
                  actions: 'end as crashed during start',
                },
                'process.protocolError': {
                  target: '#worker.alive.killing',
                  actions: 'end as protocol error',
                },
                'python.ok': { target: '#worker.alive.killing', actions: 'end as protocol error' },
                'python.item': {
                  target: '#worker.alive.killing',
                  actions: 'end as protocol error',
                },
                'python.end': { target: '#worker.alive.killing', actions: 'end as protocol error' },
                'python.err': { target: '#worker.alive.killing', actions: 'end as protocol error' },
                'python.pong': {
                  target: '#worker.alive.killing',
                  actions: 'end as protocol error',
                },
              },
            },
          },
        },
        ready: {
          initial: 'idle',
          on: {
            'process.exited': { target: '#worker.crashed', actions: 'end as crashed' },
            'process.protocolError': { target: 'killing', actions: 'end as protocol error' },
            'worker.stop': { target: 'stopping', actions: 'remember stop' },
            'worker.kill': { target: 'killing', actions: 'end as killed' },
            // A cancel or credit for a call that already finished: nothing to do.
            'call.cancel': {},
            'stream.credit': {},
            // No call is running, so any reply is for an unknown id.
            'python.ok': { target: 'killing', actions: 'end as protocol error' },
            'python.item': { target: 'killing', actions: 'end as protocol error' },
            'python.end': { target: 'killing', actions: 'end as protocol error' },
            'python.err': { target: 'killing', actions: 'end as protocol error' },
            'python.ready': { target: 'killing', actions: 'end as protocol error' },
            'python.initError': { target: 'killing', actions: 'end as protocol error' },
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
            'python.ok': afterReply('resolve call'),
            'python.err': afterReply('resolve call'),
            'python.end': afterReply('resolve call'),
            'python.item': [
              { guard: 'reply is for the running call', actions: 'deliver item' },
              { target: 'killing', actions: 'end as protocol error' },
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
            // DOWN while running a call: the call fails with ERR_WORKER_CRASHED.
            'process.exited': { target: '#worker.crashed', actions: 'end as crashed' },
            'process.protocolError': { target: 'killing', actions: 'end as protocol error' },
            // Never mid-call: finish the call, then stop.
            'worker.stop': { actions: 'remember stop' },
            'worker.kill': { target: 'killing', actions: 'end as killed' },
            'call.start': { actions: 'bounce call' },
            // Busy workers are not pinged; a pong can only answer a check that was overtaken by
            // a call (see ready.checking).
            'health.check': {},
            'python.pong': {},
            'python.ready': { target: 'killing', actions: 'end as protocol error' },
            'python.initError': { target: 'killing', actions: 'end as protocol error' },
          },
        },
        cancelling: {
          // The caller was already told; wait for Python to acknowledge the interrupt.
          entry: 'send cancel',
          after: { cancelGrace: { target: 'killing', actions: 'end as killed' } },
          on: {
            // A reply after the cancel (the handler finished anyway, or acknowledged the
            // interrupt): discarded, the caller has its answer.
            'python.ok': afterReply('forget call'),
            'python.err': afterReply('forget call'),
            'python.end': afterReply('forget call'),
            'python.item': [
              // Items already in flight when the cancel was sent.
              { guard: 'reply is for the running call' },
              { target: 'killing', actions: 'end as protocol error' },
            ],
            'process.exited': { target: '#worker.crashed', actions: 'end as crashed' },
            'process.protocolError': { target: 'killing', actions: 'end as protocol error' },
            'worker.stop': { actions: 'remember stop' },
            'worker.kill': { target: 'killing', actions: 'end as killed' },
            'call.start': { actions: 'bounce call' },
            // Already cancelling; a second cancel (timeout and abort racing) changes nothing.
            'call.cancel': {},
            // The stream was abandoned; it gets no more credit.
            'stream.credit': {},
            'health.check': {},
            'python.pong': {},
            'python.ready': { target: 'killing', actions: 'end as protocol error' },
            'python.initError': { target: 'killing', actions: 'end as protocol error' },
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
            'process.exited': { target: '#worker.stopped', actions: 'record exit' },
            'worker.kill': {
              target: 'killing',
              actions: { type: 'end as', params: { reason: 'stopped' } },
            },
            // Already stopping.
            'worker.stop': {},
            'call.start': { actions: 'bounce call' },
            'call.cancel': {},
            'stream.credit': {},
            'health.check': {},
            // Whatever Python says now no longer matters: it is on its way out. A protocol
            // error here is not worth a different ending either.
            'process.protocolError': {},
            'python.ok': {},
            'python.item': {},
            'python.end': {},
            'python.err': {},
            'python.pong': {},
            'python.ready': {},
            'python.initError': {},
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
            'process.exited': toFinalState(['record exit']),
            // Already ending: none of these can change the outcome.
            'worker.stop': {},
            'worker.kill': {},
            'call.start': { actions: 'bounce call' },
            'call.cancel': {},
            'stream.credit': {},
            'health.check': {},
            // Stopped before the spawn was reported: kill what was just started.
            'process.spawned': { actions: ['store transport', 'send SIGKILL'] },
            'process.protocolError': {},
            'python.ok': {},
            'python.item': {},
            'python.end': {},
            'python.err': {},
            'python.pong': {},
            'python.ready': {},
            'python.initError': {},
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
