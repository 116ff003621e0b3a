import { describe, expect, it } from 'vitest';
import { type AnyStateNode, createActor } from 'xstate';
import { circuitMachine, WORKER_EVENT_TYPES, workerMachine } from '../../src/machines/index.js';
import type { CallSource, WorkerCall } from '../../src/machines/worker.machine.js';
import { encodeFrame, type PythonMessage } from '../../src/protocol/index.js';
import type { SpawnTransport } from '../../src/transport/transport.js';

const EVENT_TYPES = WORKER_EVENT_TYPES;

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

function atomicStates(node: AnyStateNode): AnyStateNode[] {
  const children = Object.values(node.states);
  if (children.length === 0) return [node];
  return children.flatMap(atomicStates);
}

function handles(node: AnyStateNode, type: string): boolean {
  for (let n: AnyStateNode | undefined = node; n; n = n.parent) {
    if (n.transitions.has(type)) return true;
  }
  return false;
}

describe('worker machine', () => {
  const states = atomicStates(workerMachine.root);

  it('has the states the contract names, with final states for every way a process ends', () => {
    const ids = states.map((s) => s.id);
    for (const id of [
      'worker.alive.starting.spawning',
      'worker.alive.starting.initializing',
      'worker.alive.ready.idle',
      'worker.alive.busy',
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
    const missing: string[] = [];
    for (const state of states) {
      if (state.type === 'final') continue;
      // Transient states are left by `always` in the same macrostep: no event can reach them.
      if (state.always && state.always.length > 0) continue;
      for (const type of EVENT_TYPES) {
        if (UNREACHABLE[state.id]?.[type]) continue;
        if (type === 'process.spawned' && !SPAWNED_REACHES.has(state.id)) continue;
        if (!handles(state, type)) missing.push(`${state.id} <- ${type}`);
      }
    }
    expect(missing).toEqual([]);
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

describe('worker machine: the next call comes with the reply', () => {
  type Handlers = Parameters<SpawnTransport>[1];
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
    actor.on('worker.idle', () => idle.push(1));
    handlers!.message({
      t: 'ready',
      pid: 7,
      version: '3',
      executable: 'p',
      handlers: [],
      initMs: 1,
    });
    return { actor, sent, idle, reply: (m: PythonMessage) => handlers!.message(m) };
  }
  function call(id: number, settled: unknown[]): WorkerCall {
    return {
      id,
      fn: 'f',
      frame: encodeFrame(JSON.stringify({ t: 'call', id })),
      stream: false,
      get settled() {
        return settled.length > 0;
      },
      dispatched() {},
      resolve: (v) => settled.push(v),
      reject: (e) => settled.push(e),
      item() {},
      end() {},
    };
  }

  it('stays busy and starts the waiting call in the reply event; goes idle when none waits', () => {
    const results: unknown[][] = [[], [], []];
    const waiting = [call(2, results[1]!), call(3, results[2]!)];
    const { actor, sent, idle, reply } = harness(waiting);
    expect(idle).toHaveLength(1);
    actor.send({ type: 'call.start', call: call(1, results[0]!) });
    reply({ t: 'ok', id: 1, v: 'one' });
    expect(actor.getSnapshot().value).toEqual({ alive: 'busy' });
    expect(actor.getSnapshot().context.call?.id).toBe(2);
    reply({ t: 'err', id: 2, kind: 'python', type: 'E', message: 'two', traceback: '' });
    expect(actor.getSnapshot().context.call?.id).toBe(3);
    reply({ t: 'ok', id: 3, v: 'three' });
    expect(actor.getSnapshot().value).toEqual({ alive: { ready: 'idle' } });
    expect(sent.map((s) => JSON.parse(s).id)).toEqual([1, 2, 3]);
    expect(results[0]).toEqual(['one']);
    expect((results[1]![0] as Error).message).toContain('two');
    expect(results[2]).toEqual(['three']);
    expect(actor.getSnapshot().context.calls).toBe(3);
    // Idle once after start-up and once at the end, never between the three calls.
    expect(idle).toHaveLength(2);
    actor.stop();
  });

  it('after a cancel, the late reply hands the worker the waiting call too', () => {
    const results: unknown[][] = [[], []];
    const { actor, reply } = harness([call(2, results[1]!)]);
    actor.send({ type: 'call.start', call: call(1, results[0]!) });
    actor.send({ type: 'call.cancel', callId: 1 });
    expect(actor.getSnapshot().value).toEqual({ alive: 'cancelling' });
    reply({ t: 'err', id: 1, kind: 'cancelled', type: 'Cancelled', message: 'c', traceback: '' });
    expect(actor.getSnapshot().value).toEqual({ alive: 'busy' });
    expect(actor.getSnapshot().context.call?.id).toBe(2);
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
