import { describe, expect, it } from 'vitest';
import {
  createActor,
  fromCallback,
  fromEventObservable,
  SimulatedClock,
  type Subscribable,
} from 'xstate';
import { PyvisorError, WorkerCrashedError, WorkerInitError } from '../../src/errors.js';
import { circuitMachine, WORKER_EVENT_TYPES, workerMachine } from '../../src/machines/index.js';
import type {
  CallSource,
  WorkerCall,
  WorkerEvent,
  WorkerInput,
} from '../../src/machines/worker.machine.js';
import { encodeFrame, type PythonMessage, type ReadyMessage } from '../../src/protocol/index.js';
import type { SpawnTransport, WorkerTransport } from '../../src/transport/transport.js';
import { atomicStates, handles, missingTransitions } from './completeness.js';
import { recordingCall } from './recording-call.js';

// The invoked process actor's failures arrive as `xstate.error.actor.<id>` (its `onError`).
const PROCESS_ACTOR_ID = workerMachine.getStateNodeById('worker.alive').invoke[0]!.id;
const PROCESS_ERROR = `xstate.error.actor.${PROCESS_ACTOR_ID}`;
const EVENT_TYPES: string[] = [...WORKER_EVENT_TYPES, PROCESS_ERROR];

// Events that cannot reach a state, with the reason. Anything else must have a transition.
const UNREACHABLE: Record<string, Record<string, string>> = {
  'worker.alive.starting.spawning': {
    'process.protocolError': 'no transport exists before process.spawned',
    'python.ready': 'no transport exists before process.spawned',
    'python.initError': 'no transport exists before process.spawned',
    'python.ok': 'no transport exists before process.spawned',
    'python.item': 'no transport exists before process.spawned',
    'python.end': 'no transport exists before process.spawned',
    'python.err': 'no transport exists before process.spawned',
    'python.pong': 'no transport exists before process.spawned',
  },
};

// process.spawned is the process actor's first event, sent once as it starts: only `spawning`
// can receive it, or `killing` when a stop overtook it.
const SPAWNED_REACHES = new Set(['worker.alive.starting.spawning', 'worker.alive.killing']);

describe('worker machine', () => {
  const states = atomicStates(workerMachine.root);

  it('has the states the contract names, with final states for every way a process ends', () => {
    const ids = states.map((s) => s.id);
    for (const id of [
      'worker.alive.starting.spawning',
      'worker.alive.starting.initializing',
      'worker.alive.ready',
      'worker.alive.busy',
      'worker.alive.stopping.terminating',
      'worker.alive.killing',
      'worker.alive.stopping.asking',
      'worker.stopped',
      'worker.crashed',
      'worker.initFailed',
      'worker.initTimedOut',
      'worker.unresponsive',
    ]) {
      expect(ids).toContain(id);
    }
    const finals = states.filter((s) => s.type === 'final').map((s) => s.key);
    expect(finals.sort()).toEqual(
      [
        'crashed',
        'initFailed',
        'initTimedOut',
        'killed',
        'protocolError',
        'stopped',
        'unresponsive',
      ].sort(),
    );
  });

  it('has an explicit transition for every event in every state it can reach', () => {
    const unreachable: Record<string, Record<string, string>> = {};
    for (const state of states) {
      unreachable[state.id] = { ...UNREACHABLE[state.id] };
      if (!SPAWNED_REACHES.has(state.id)) {
        unreachable[state.id]!['process.spawned'] = 'sent once, as the process actor starts';
      }
    }
    expect(missingTransitions(workerMachine, EVENT_TYPES, unreachable)).toEqual([]);
    // The process actor has an id, so its error event has a name that no other actor's has.
    expect(PROCESS_ACTOR_ID).toBe('process');
  });

  it('handles a cancel and a DOWN while starting and while waiting for the init reply', () => {
    const spawning = workerMachine.getStateNodeById('worker.alive.starting.spawning');
    const initializing = workerMachine.getStateNodeById('worker.alive.starting.initializing');
    for (const node of [spawning, initializing]) {
      expect(handles(node, 'worker.stop')).toBe(true);
      expect(handles(node, 'process.exited')).toBe(true);
    }
  });
});

describe('circuit machine', () => {
  it('handles both events in each of closed, open and halfOpen', () => {
    for (const key of ['closed', 'open', 'halfOpen']) {
      const node = circuitMachine.getStateNodeById(`circuit.${key}`);
      expect(node.transitions.has('start.failed')).toBe(true);
      expect(node.transitions.has('start.succeeded')).toBe(true);
    }
  });
});

type Handlers = Parameters<SpawnTransport>[1];
const READY: ReadyMessage = {
  t: 'ready',
  pid: 7,
  version: '3',
  executable: 'p',
  handlers: [],
  initMs: 1,
};

describe('worker machine: the next call comes with the reply', () => {
  function harness(waiting: WorkerCall[]) {
    let handlers: Handlers | null = null;
    const sent: string[] = [];
    const spawn: SpawnTransport = (_spec, h) => {
      handlers = h;
      return {
        pid: 7,
        send: (frame: Buffer) => sent.push(frame.subarray(4).toString()),
        kill() {},
        outputTail: () => '',
      };
    };
    const calls: CallSource = {
      waiting: () => waiting.length > 0,
      take: () => waiting.shift(),
    };
    const actor = createActor(workerMachine, {
      input: {
        workerId: 0,
        generation: 1,
        spec: { command: 'x', args: [], env: {}, cwd: '.', maxMessageSize: 1024, outputLines: 1 },
        spawn,
        initTimeout: 60_000,
        cancelGrace: 60_000,
        healthTimeout: 60_000,
        stopTimeout: 60_000,
        maxCalls: Number.POSITIVE_INFINITY,
        calls,
      },
    }).start();
    const idle: number[] = [];
    actor.on('worker.free', (e) => idle.push(e.inFlight));
    handlers!.message(READY);
    return { actor, sent, idle, reply: (m: PythonMessage) => handlers!.message(m) };
  }
  const call = recordingCall;
  /** The ids of the calls in flight. */
  const inFlight = (actor: ReturnType<typeof harness>['actor']) => [
    ...actor.getSnapshot().context.flights.keys(),
  ];

  it('stays busy and starts the waiting call in the reply event; ready (worker.free) when none waits', () => {
    const results: unknown[][] = [[], [], []];
    const waiting = [call(2, results[1]!), call(3, results[2]!)];
    const { actor, sent, idle, reply } = harness(waiting);
    expect(idle).toHaveLength(1);
    actor.send({ type: 'call.start', call: call(1, results[0]!) });
    reply({ t: 'ok', id: 1, v: 'one' });
    expect(actor.getSnapshot().value).toEqual({ alive: 'busy' });
    expect(inFlight(actor)).toEqual([2]);
    reply({ t: 'err', id: 2, kind: 'python', type: 'E', message: 'two', traceback: '' });
    expect(inFlight(actor)).toEqual([3]);
    reply({ t: 'ok', id: 3, v: 'three' });
    expect(actor.getSnapshot().value).toEqual({ alive: 'ready' });
    expect(sent.map((s) => JSON.parse(s).id)).toEqual([1, 2, 3]);
    expect(results[0]).toEqual(['one']);
    expect((results[1]![0] as Error).message).toContain('two');
    expect(results[2]).toEqual(['three']);
    expect(actor.getSnapshot().context.calls).toBe(3);
    // Free once after start-up and once at the end, never between the three calls.
    expect(idle).toEqual([0, 0]);
    actor.stop();
  });

  it('after a cancel, the late reply hands the worker the waiting call too', () => {
    const results: unknown[][] = [[], []];
    const { actor, reply } = harness([call(2, results[1]!)]);
    actor.send({ type: 'call.start', call: call(1, results[0]!) });
    actor.send({ type: 'call.cancel', callId: 1 });
    expect(actor.getSnapshot().value).toEqual({ alive: 'busy' });
    expect(actor.getSnapshot().context.flights.get(1)).toMatchObject({ cancelled: true });
    reply({ t: 'err', id: 1, kind: 'cancelled', type: 'Cancelled', message: 'c', traceback: '' });
    expect(actor.getSnapshot().value).toEqual({ alive: 'busy' });
    expect(inFlight(actor)).toEqual([2]);
    // The cancelled call's answer is not passed on: its caller had its answer when it gave up.
    expect(results[0]).toEqual([]);
    reply({ t: 'ok', id: 2, v: 2 });
    expect(results[1]).toEqual([2]);
    actor.stop();
  });

  it('does not take a call when it must retire, or for a reply with a wrong id', () => {
    const results: unknown[][] = [[], [], []];
    const waiting = [call(2, results[1]!)];
    const { actor, reply } = harness(waiting);
    actor.send({ type: 'call.start', call: call(1, results[0]!) });
    actor.send({ type: 'worker.stop', reason: 'recycle' });
    reply({ t: 'ok', id: 1, v: 1 });
    expect(actor.getSnapshot().value).toEqual({ alive: { stopping: 'asking' } });
    expect(waiting).toHaveLength(1);
    actor.stop();
    const second = harness(waiting);
    second.actor.send({ type: 'call.start', call: call(5, results[2]!) });
    second.reply({ t: 'ok', id: 99, v: 1 });
    expect(second.actor.getSnapshot().value).toEqual({ alive: 'killing' });
    expect(waiting).toHaveLength(1);
    second.actor.stop();
  });
});

describe('worker machine: calls in flight, cancels and health checks as data', () => {
  /** A worker on a simulated clock with a scripted process; timers in ms. */
  function worker(options: { maxInFlight?: number; serial?: boolean; calls?: CallSource } = {}) {
    let handlers: Handlers | null = null;
    const sent: Array<{ t: string; id?: number }> = [];
    const signals: NodeJS.Signals[] = [];
    const clock = new SimulatedClock();
    const actor = createActor(workerMachine, {
      clock,
      input: {
        workerId: 4,
        generation: 1,
        spec: { command: 'x', args: [], env: {}, cwd: '.', maxMessageSize: 1024, outputLines: 1 },
        spawn: (_spec, h) => {
          handlers = h;
          return {
            pid: 7,
            send: (frame: Buffer) => sent.push(JSON.parse(frame.subarray(4).toString())),
            kill: (signal: NodeJS.Signals) => signals.push(signal),
            outputTail: () => '',
          };
        },
        initTimeout: 1000,
        cancelGrace: 300,
        healthTimeout: 200,
        stopTimeout: 1000,
        maxCalls: 100,
        ...options,
      },
    });
    const emitted: Array<{ type: string; inFlight?: number; gone?: boolean; call?: WorkerCall }> =
      [];
    actor.on('*', (e) => emitted.push(e));
    actor.start();
    handlers!.message(READY);
    const reply = (m: PythonMessage) => handlers!.message(m);
    const exit = () => handlers!.exit({ exitCode: null, signal: 'SIGKILL' });
    const flights = () =>
      [...actor.getSnapshot().context.flights.values()].map(
        (f) => `${f.call.id}${f.started ? 's' : 'w'}${f.cancelled ? 'c' : ''}`,
      );
    return { actor, sent, signals, clock, emitted, reply, exit, flights };
  }
  /** A call that records its settlement and when it was dispatched. */
  function call(id: number) {
    const log: string[] = [];
    const c: WorkerCall = {
      ...recordingCall(id, []),
      dispatched: () => log.push('dispatched'),
      resolve: (v) => log.push(`resolve ${v}`),
      reject: (e) => log.push(`reject ${(e as Error).message}`),
    };
    return { call: c, log };
  }
  const err = (id: number) =>
    ({ t: 'err', id, kind: 'cancelled', type: 'Cancelled', message: '', traceback: '' }) as const;

  it('concurrency 2: two calls run at once; a third is bounced; each reply settles its own call', () => {
    const w = worker({ maxInFlight: 2, serial: false });
    const [a, b, c] = [call(1), call(2), call(3)];
    w.actor.send({ type: 'call.start', call: a.call });
    w.actor.send({ type: 'call.start', call: b.call });
    expect(w.flights()).toEqual(['1s', '2s']);
    expect(a.log).toEqual(['dispatched']);
    expect(b.log).toEqual(['dispatched']);
    w.actor.send({ type: 'call.start', call: c.call });
    expect(w.emitted.at(-1)).toMatchObject({ type: 'worker.bounced', call: c.call, gone: false });
    expect(c.log).toEqual([]);
    w.reply({ t: 'ok', id: 2, v: 'two' });
    // A place is free, the worker still busy.
    expect(w.actor.getSnapshot().value).toEqual({ alive: 'busy' });
    expect(w.emitted.at(-1)).toMatchObject({ type: 'worker.free', inFlight: 1 });
    w.reply({ t: 'ok', id: 1, v: 'one' });
    expect(w.actor.getSnapshot().value).toEqual({ alive: 'ready' });
    expect(w.emitted.at(-1)).toMatchObject({ type: 'worker.free', inFlight: 0 });
    expect(a.log).toEqual(['dispatched', 'resolve one']);
    expect(b.log).toEqual(['dispatched', 'resolve two']);
  });

  it('a cancel not obeyed within cancelGrace kills the worker; the other call fails, naming it', () => {
    const w = worker({ maxInFlight: 2, serial: false });
    const [a, b] = [call(1), call(2)];
    w.actor.send({ type: 'call.start', call: a.call });
    w.actor.send({ type: 'call.start', call: b.call });
    w.actor.send({ type: 'call.cancel', callId: 1 });
    expect(w.sent.at(-1)).toEqual({ t: 'cancel', id: 1 });
    expect(w.flights()).toEqual(['1sc', '2s']);
    w.clock.increment(299);
    expect(w.actor.getSnapshot().value).toEqual({ alive: 'busy' });
    w.clock.increment(1);
    expect(w.actor.getSnapshot().value).toEqual({ alive: 'killing' });
    expect(w.signals).toEqual(['SIGKILL']);
    // The cancelled call already had its answer (from the pool); the other one fails.
    expect(a.log).toEqual(['dispatched']);
    expect(b.log).toEqual([
      'dispatched',
      'reject Worker 4 (pid 7) was killed while it ran call 2: call 1 did not stop within 300 ms of its cancel (cancelGrace)',
    ]);
    w.exit();
    expect(w.actor.getSnapshot().output).toMatchObject({ reason: 'killed' });
    expect(w.actor.getSnapshot().output?.error?.message).toMatch(
      /call 1 did not stop within 300 ms/,
    );
  });

  it('a cancel acknowledged in time cancels its timer; the answer is not passed on', () => {
    const w = worker();
    const a = call(1);
    w.actor.send({ type: 'call.start', call: a.call });
    w.actor.send({ type: 'call.cancel', callId: 1 });
    // A second cancel (timeout and abort racing) sends nothing more.
    w.actor.send({ type: 'call.cancel', callId: 1 });
    expect(w.sent.filter((m) => m.t === 'cancel')).toHaveLength(1);
    w.reply(err(1));
    expect(w.actor.getSnapshot().value).toEqual({ alive: 'ready' });
    w.clock.increment(10_000);
    expect(w.actor.getSnapshot().value).toEqual({ alive: 'ready' });
    expect(a.log).toEqual(['dispatched']);
    // A stale timer (sent by hand: the real one was cancelled) changes nothing.
    w.actor.send({ type: 'cancel.expired', callId: 1 });
    expect(w.actor.getSnapshot().value).toEqual({ alive: 'ready' });
  });

  it('health checks while ready and while busy: one ping at a time; the pong ends it; its timeout kills', () => {
    const w = worker();
    w.actor.send({ type: 'health.check' });
    w.actor.send({ type: 'health.check' });
    expect(w.sent.filter((m) => m.t === 'ping')).toEqual([{ t: 'ping', id: 1 }]);
    expect(w.actor.getSnapshot().context.checking).toBe(true);
    // A pong for another check changes nothing; the right one ends the check and its timer.
    w.reply({ t: 'pong', id: 7 });
    expect(w.actor.getSnapshot().context.checking).toBe(true);
    w.reply({ t: 'pong', id: 1 });
    expect(w.actor.getSnapshot().context.checking).toBe(false);
    w.clock.increment(1000);
    expect(w.actor.getSnapshot().value).toEqual({ alive: 'ready' });
    // While busy: the timer kills the worker, and the call fails.
    const a = call(1);
    w.actor.send({ type: 'call.start', call: a.call });
    w.actor.send({ type: 'health.check' });
    expect(w.sent.at(-1)).toEqual({ t: 'ping', id: 2 });
    // A timer of an earlier check (sent by hand) changes nothing.
    w.actor.send({ type: 'health.timeout', pingId: 1 });
    expect(w.actor.getSnapshot().value).toEqual({ alive: 'busy' });
    w.clock.increment(200);
    expect(w.actor.getSnapshot().value).toEqual({ alive: 'killing' });
    expect(w.emitted.map((e) => e.type)).toContain('health.failed');
    expect(a.log[1]).toMatch(/did not answer a health check within 200 ms/);
    w.exit();
    expect(w.actor.getSnapshot().output).toMatchObject({ reason: 'unresponsive' });
  });

  it('pipelining: a call handed early waits; it starts (and the source is told) when the one before it ends', () => {
    const started: number[] = [];
    const source: CallSource = {
      waiting: () => false,
      take: () => undefined,
      started: (_w, _g, c) => started.push(c.id),
    };
    const w = worker({ maxInFlight: 2, calls: source });
    const [a, b] = [call(1), call(2)];
    w.actor.send({ type: 'call.start', call: a.call });
    w.actor.send({ type: 'call.start', call: b.call });
    // Both frames are sent; the second call waits in the process.
    expect(w.sent.filter((m) => m.t === 'call').map((m) => m.id)).toEqual([1, 2]);
    expect(w.flights()).toEqual(['1s', '2w']);
    expect(b.log).toEqual([]);
    w.reply({ t: 'ok', id: 1, v: 'one' });
    expect(w.flights()).toEqual(['2s']);
    expect(b.log).toEqual(['dispatched']);
    expect(started).toEqual([2]);
  });

  it('pipelining: a call cancelled before it starts never starts; Python answers its cancel', () => {
    const w = worker({ maxInFlight: 2 });
    const [a, b] = [call(1), call(2)];
    w.actor.send({ type: 'call.start', call: a.call });
    w.actor.send({ type: 'call.start', call: b.call });
    w.actor.send({ type: 'call.cancel', callId: 2 });
    expect(w.flights()).toEqual(['1s', '2wc']);
    w.reply(err(2));
    expect(w.flights()).toEqual(['1s']);
    w.reply({ t: 'ok', id: 1, v: 'one' });
    expect(w.actor.getSnapshot().value).toEqual({ alive: 'ready' });
    expect(b.log).toEqual([]);
  });

  it('pipelining: when the process dies, the running call fails and the waiting one is handed back (gone)', () => {
    const w = worker({ maxInFlight: 2 });
    const [a, b] = [call(1), call(2)];
    w.actor.send({ type: 'call.start', call: a.call });
    w.actor.send({ type: 'call.start', call: b.call });
    w.exit();
    expect(w.actor.getSnapshot().value).toBe('crashed');
    expect(a.log[1]).toMatch(/^reject Worker 4 \(pid 7\)/);
    expect(b.log).toEqual([]);
    expect(w.emitted.at(-1)).toMatchObject({ type: 'worker.bounced', call: b.call, gone: true });
  });
});

describe('worker machine: a transport that throws ends the worker, never the actor', () => {
  /** The worker's `killWait`: how long it waits for the exit of a SIGKILLed process. */
  const KILL_WAIT = 5000;
  /** How the process ends after the worker tried to kill it. */
  type Ending = 'exits' | 'survives killWait';
  const ENDINGS: Ending[] = ['exits', 'survives killWait'];

  /** A scripted process whose transport throws where told to. */
  class FakeProcess {
    handlers: Handlers | null = null;
    /** Types of the frames the machine tried to send, and the signals, in order. */
    readonly sent: string[] = [];
    readonly signals: NodeJS.Signals[] = [];
    readonly boom = new Error('the transport broke');
    spawnError: unknown = undefined;
    /** Frame types (`call`, `ping`, ...) and signals whose `send` / `kill` throws `boom`. */
    readonly failOn = new Set<string>();
    readonly transport: WorkerTransport = {
      pid: 7,
      send: (frame) => {
        const t = JSON.parse((frame as Buffer).subarray(4).toString()).t as string;
        this.sent.push(t);
        if (this.failOn.has(t)) throw this.boom;
      },
      kill: (signal) => {
        this.signals.push(signal);
        if (this.failOn.has(signal)) throw this.boom;
      },
      outputTail: () => 'last words',
    };
    readonly spawn: SpawnTransport = (_spec, handlers) => {
      if (this.spawnError !== undefined) throw this.spawnError;
      this.handlers = handlers;
      return this.transport;
    };
    ready(): void {
      this.handlers!.message(READY);
    }
    /** The process dies (as the transport reports it, after the fact). */
    exit(exitCode: number | null = null, signal: NodeJS.Signals | null = 'SIGKILL'): void {
      this.handlers!.exit({ exitCode, signal });
    }
  }

  function input(spawn: SpawnTransport): WorkerInput {
    return {
      workerId: 3,
      generation: 1,
      spec: { command: 'x', args: [], env: {}, cwd: '.', maxMessageSize: 1024, outputLines: 1 },
      spawn,
      initTimeout: 1000,
      cancelGrace: 1000,
      healthTimeout: 1000,
      stopTimeout: 1000,
      maxCalls: 100,
    };
  }
  function start(fake: FakeProcess, machine = workerMachine, time = new SimulatedClock()) {
    const actor = createActor(machine, { input: input(fake.spawn), clock: time });
    const errors: unknown[] = [];
    actor.subscribe({ error: (error) => errors.push(error) });
    actor.start();
    return { actor, errors, time };
  }
  /** A call that counts how often it was settled. */
  function call(id: number, stream = false) {
    const settled: Array<{ how: string; value: unknown }> = [];
    const c: WorkerCall = {
      id,
      fn: 'f',
      frame: encodeFrame(JSON.stringify({ t: 'call', id })),
      stream,
      get settled() {
        return settled.length > 0;
      },
      dispatched() {},
      resolve: (value) => settled.push({ how: 'resolve', value }),
      reject: (value) => settled.push({ how: 'reject', value }),
      item() {},
      end: () => settled.push({ how: 'end', value: undefined }),
    };
    return { call: c, settled };
  }
  type Started = ReturnType<typeof start>;
  function done(actor: Started['actor'], errors: unknown[]) {
    const snapshot = actor.getSnapshot();
    expect(errors).toEqual([]);
    expect(snapshot.status).toBe('done');
    return { value: snapshot.value, output: snapshot.output! };
  }
  /** Still alive, killing its process: the slot is not released yet. */
  function killing(actor: Started['actor'], errors: unknown[]) {
    expect(errors).toEqual([]);
    expect(actor.getSnapshot().status).toBe('active');
    expect(actor.getSnapshot().value).toEqual({ alive: 'killing' });
  }
  /**
   * Ends a killing worker: the process exits (reported by the transport), or it never does and
   * killWait passes (not a moment earlier).
   */
  function finish(ending: Ending, fake: FakeProcess, { actor, errors, time }: Started) {
    if (ending === 'exits') {
      fake.exit();
    } else {
      time.increment(KILL_WAIT - 1);
      killing(actor, errors);
      time.increment(1);
    }
    return done(actor, errors);
  }
  /** The exit in the output, and the SIGKILLs sent: the cleanup tries again after killWait. */
  function expectGone(
    ending: Ending,
    fake: FakeProcess,
    output: { exitCode: number | null; signal: NodeJS.Signals | null },
    signalsBefore: NodeJS.Signals[],
  ) {
    if (ending === 'exits') {
      expect(output).toMatchObject({ exitCode: null, signal: 'SIGKILL' });
      expect(fake.signals).toEqual(signalsBefore);
    } else {
      expect(output).toMatchObject({ exitCode: null, signal: null });
      expect(fake.signals).toEqual([...signalsBefore, 'SIGKILL']);
    }
  }

  it('a spawn that throws: initFailed, a WorkerInitError (spawn) with the thrown error as cause', () => {
    const fake = new FakeProcess();
    fake.spawnError = new TypeError('The property options.env contains null bytes');
    const { actor, errors } = start(fake);
    const { value, output } = done(actor, errors);
    expect(value).toBe('initFailed');
    expect(output.reason).toBe('initFailed');
    expect(output.wasReady).toBe(false);
    expect(output.pid).toBe(null);
    expect(output.error).toBeInstanceOf(WorkerInitError);
    expect((output.error as WorkerInitError).reason).toBe('spawn');
    expect(output.error?.code).toBe('ERR_WORKER_INIT');
    expect(output.error?.cause).toBe(fake.spawnError);
    expect(fake.signals).toEqual([]);
  });

  it('a stop before the spawn was reported, then the spawn throws: the recorded ending, at once', () => {
    // Nothing was started, so there is no exit to wait for.
    const fake = new FakeProcess();
    fake.spawnError = new TypeError('The property options.env contains null bytes');
    const actor = createActor(workerMachine, { input: input(fake.spawn) });
    actor.send({ type: 'worker.stop', reason: 'close' });
    actor.start();
    const { value, output } = done(actor, []);
    expect(value).toBe('stopped');
    expect(output).toMatchObject({ reason: 'stopped', stopReason: 'close', pid: null });
    expect(output).toMatchObject({ exitCode: null, signal: null });
    expect(output.error).toBeInstanceOf(WorkerCrashedError);
    expect(output.error?.cause).toBe(fake.spawnError);
    expect(fake.signals).toEqual([]);
  });

  describe.each(ENDINGS)('when the process, killed, %s', (ending) => {
    it.each([
      ['call', [], true],
      // A cancelled call is not rejected: its caller had its answer when it gave up.
      ['cancel', [{ type: 'call.cancel', callId: 1 }], false],
      ['credit', [{ type: 'stream.credit', callId: 1, n: 4 }], true],
    ] as const)(
      'sending the %s frame throws: the call (unless cancelled) rejected at once with the cause; crashed once the process is gone',
      (frame, then, rejected) => {
        const fake = new FakeProcess();
        fake.failOn.add(frame);
        const started = start(fake);
        const { actor, errors } = started;
        fake.ready();
        const { call: c, settled } = call(1, true);
        actor.send({ type: 'call.start', call: c });
        for (const event of then) actor.send(event);
        // The call is rejected now; the process, which may still run, is being killed.
        killing(actor, errors);
        expect(settled).toHaveLength(rejected ? 1 : 0);
        if (rejected) expect(settled[0]!.how).toBe('reject');
        expect(fake.signals).toEqual(['SIGKILL']);
        const { value, output } = finish(ending, fake, started);
        expect(value).toBe('crashed');
        expect(output.reason).toBe('crashed');
        expect(output.calls).toBe(1);
        expect(output.error).toBeInstanceOf(WorkerCrashedError);
        expect(output.error?.code).toBe('ERR_WORKER_CRASHED');
        expect(output.error?.message).toMatch(
          /^Worker 3 \(pid 7\) .*transport failed.*the transport broke/,
        );
        expect(output.error?.cause).toBe(fake.boom);
        expect(settled).toEqual(rejected ? [{ how: 'reject', value: output.error }] : []);
        expectGone(ending, fake, output, ['SIGKILL']);
      },
    );

    it('sending the health-check ping throws: crashed once the process is gone', () => {
      const fake = new FakeProcess();
      fake.failOn.add('ping');
      const started = start(fake);
      fake.ready();
      started.actor.send({ type: 'health.check' });
      killing(started.actor, started.errors);
      const { value, output } = finish(ending, fake, started);
      expect(value).toBe('crashed');
      expect(output.reason).toBe('crashed');
      expect(output.error).toBeInstanceOf(WorkerCrashedError);
      expect(output.error?.cause).toBe(fake.boom);
      expectGone(ending, fake, output, ['SIGKILL']);
    });

    it('a send or kill that throws while stopping: stopped, with the failure as its error', () => {
      // The exit frame cannot be sent.
      const exit = new FakeProcess();
      exit.failOn.add('exit');
      const a = start(exit);
      exit.ready();
      a.actor.send({ type: 'worker.stop', reason: 'recycle' });
      killing(a.actor, a.errors);
      const first = finish(ending, exit, a);
      expect(first.value).toBe('stopped');
      expect(first.output.reason).toBe('stopped');
      expect(first.output.stopReason).toBe('recycle');
      expect(first.output.error).toBeInstanceOf(WorkerCrashedError);
      expect(first.output.error?.cause).toBe(exit.boom);
      expectGone(ending, exit, first.output, ['SIGKILL']);

      // SIGTERM cannot be sent (the exit frame was, and the process did not exit in time).
      const term = new FakeProcess();
      term.failOn.add('SIGTERM');
      const b = start(term);
      term.ready();
      b.actor.send({ type: 'worker.stop', reason: 'close' });
      b.time.increment(1000);
      killing(b.actor, b.errors);
      const second = finish(ending, term, b);
      expect(second.value).toBe('stopped');
      expect(second.output.stopReason).toBe('close');
      expect(second.output.error?.cause).toBe(term.boom);
      expect(term.sent).toEqual(['exit']);
      expectGone(ending, term, second.output, ['SIGTERM', 'SIGKILL']);
    });

    it('a kill that throws during start-up: the recorded ending, once the process is gone', () => {
      // Stopped while initializing; the SIGKILL throws: stopped, with the failure as its error.
      const stopped = new FakeProcess();
      stopped.failOn.add('SIGKILL');
      const a = start(stopped);
      a.actor.send({ type: 'worker.stop', reason: 'close' });
      killing(a.actor, a.errors);
      const first = finish(ending, stopped, a);
      expect(first.value).toBe('stopped');
      expect(first.output.stopReason).toBe('close');
      expect(first.output.error).toBeInstanceOf(WorkerCrashedError);
      expect(first.output.error?.cause).toBe(stopped.boom);
      expectGone(ending, stopped, first.output, ['SIGKILL']);

      // Killed before the spawn was reported: the SIGKILL sent on process.spawned throws.
      const early = new FakeProcess();
      early.failOn.add('SIGKILL');
      const kill = new PyvisorError('ERR_POOL_CLOSED', 'closing');
      const time = new SimulatedClock();
      const actor = createActor(workerMachine, { input: input(early.spawn), clock: time });
      const errors: unknown[] = [];
      actor.subscribe({ error: (error) => errors.push(error) });
      actor.send({ type: 'worker.kill', error: kill });
      actor.start();
      killing(actor, errors);
      const second = finish(ending, early, { actor, errors, time });
      expect(second.value).toBe('killed');
      expect(second.output.error).toBe(kill);
      expectGone(ending, early, second.output, ['SIGKILL']);

      // The init reply is an error; the SIGKILL throws: initFailed with the init error, not the
      // transport's (the first reason wins).
      const failing = new FakeProcess();
      failing.failOn.add('SIGKILL');
      const b = start(failing);
      failing.handlers!.message({ t: 'init_error', type: 'E', message: 'bad', traceback: '' });
      killing(b.actor, b.errors);
      const third = finish(ending, failing, b);
      expect(third.value).toBe('initFailed');
      expect((third.output.error as WorkerInitError).reason).toBe('error');
      expectGone(ending, failing, third.output, ['SIGKILL']);

      // The init timer fires; the SIGKILL throws: initTimedOut.
      const slow = new FakeProcess();
      slow.failOn.add('SIGKILL');
      const c = start(slow);
      c.time.increment(1000);
      killing(c.actor, c.errors);
      const fourth = finish(ending, slow, c);
      expect(fourth.value).toBe('initTimedOut');
      expect((fourth.output.error as WorkerInitError).reason).toBe('timeout');
      expectGone(ending, slow, fourth.output, ['SIGKILL']);
    });

    it('a kill that throws while killing: the recorded ending, with its own error', () => {
      const fake = new FakeProcess();
      fake.failOn.add('SIGKILL');
      const started = start(fake);
      const { actor, errors } = started;
      fake.ready();
      const { call: c, settled } = call(1);
      actor.send({ type: 'call.start', call: c });
      const kill = new PyvisorError('ERR_POOL_CLOSED', 'killed by close()');
      actor.send({ type: 'worker.kill', error: kill });
      // The call is rejected at once; the worker waits for the process it could not kill.
      killing(actor, errors);
      expect(settled).toEqual([{ how: 'reject', value: kill }]);
      const { value, output } = finish(ending, fake, started);
      expect(value).toBe('killed');
      expect(output.reason).toBe('killed');
      expect(output.error).toBe(kill);
      expect(settled).toEqual([{ how: 'reject', value: kill }]);
      // Once on entering killing; after killWait, once more in the cleanup.
      expectGone(ending, fake, output, ['SIGKILL']);
    });
  });

  it('any other failure of the process actor (onError) is handled the same way', () => {
    // It throws as it starts.
    const boom = new Error('process actor failed');
    const throwing = workerMachine.provide({
      actors: {
        'python process': fromCallback(() => {
          throw boom;
        }) as never,
      },
    });
    const a = start(new FakeProcess(), throwing);
    const first = done(a.actor, a.errors);
    expect(first.value).toBe('initFailed');
    expect((first.output.error as WorkerInitError).reason).toBe('spawn');
    expect(first.output.error?.cause).toBe(boom);

    // It throws as it starts, after a stop: nothing was spawned, so the worker ends at once.
    const early = createActor(throwing, { input: input(new FakeProcess().spawn) });
    early.send({ type: 'worker.stop', reason: 'close' });
    early.start();
    const stopped = done(early, []);
    expect(stopped.value).toBe('stopped');
    expect(stopped.output.error?.cause).toBe(boom);

    // It fails after the worker reported ready, while a call runs.
    const fake = new FakeProcess();
    let fail: (error: unknown) => void = () => {};
    const events: Subscribable<WorkerEvent> = {
      subscribe(observer: unknown) {
        const o = observer as { next(e: WorkerEvent): void; error(e: unknown): void };
        o.next({ type: 'process.spawned', transport: fake.transport });
        o.next({ type: 'python.ready', message: READY });
        fail = (error) => o.error(error);
        return { unsubscribe() {} };
      },
    };
    const failingLater = workerMachine.provide({
      actors: { 'python process': fromEventObservable(() => events) as never },
    });
    const b = start(fake, failingLater);
    expect(b.actor.getSnapshot().value).toEqual({ alive: 'ready' });
    const { call: c, settled } = call(1);
    b.actor.send({ type: 'call.start', call: c });
    fail(boom);
    // The call is rejected at once, and the process is killed; with the actor gone, no exit can
    // be reported, so the worker ends when killWait passes.
    killing(b.actor, b.errors);
    expect(settled).toHaveLength(1);
    expect(fake.signals).toEqual(['SIGKILL']);
    b.time.increment(KILL_WAIT);
    const second = done(b.actor, b.errors);
    expect(second.value).toBe('crashed');
    expect(second.output.error).toBeInstanceOf(WorkerCrashedError);
    expect(second.output.error?.cause).toBe(boom);
    expect(settled).toEqual([{ how: 'reject', value: second.output.error }]);
  });

  it('keeps working with a transport that does not throw (the wrapper passes everything on)', () => {
    const fake = new FakeProcess();
    const { actor } = start(fake);
    fake.ready();
    const { call: c, settled } = call(1);
    actor.send({ type: 'call.start', call: c });
    fake.handlers!.message({ t: 'ok', id: 1, v: 42 });
    actor.send({ type: 'worker.stop', reason: 'close' });
    fake.handlers!.exit({ exitCode: 0, signal: null });
    expect(settled).toEqual([{ how: 'resolve', value: 42 }]);
    expect(fake.sent).toEqual(['call', 'exit']);
    expect(actor.getSnapshot().output).toMatchObject({ reason: 'stopped', error: null, pid: 7 });
    expect(actor.getSnapshot().output?.stderr).toBe('last words');
  });
});
