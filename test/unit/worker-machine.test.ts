import { describe, expect, it } from 'vitest';
import type { AnyStateNode } from 'xstate';
import { circuitMachine, WORKER_EVENT_TYPES, workerMachine } from '../../src/machines/index.js';

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
