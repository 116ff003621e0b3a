// Every machine names every event it can receive in every state (the worker's own, with its
// documented exclusions, is in worker-machine.test.ts).
import { describe, expect, it } from 'vitest';
import {
  CIRCUIT_EVENT_TYPES,
  circuitMachine,
  SUPERVISOR_EVENT_TYPES,
  supervisorMachine,
} from '../../src/machines/index.js';
import { atomicStates, missingTransitions } from './completeness.js';

describe('every event has an explicit transition in every state', () => {
  it('supervisor: up (resolving, starting, running), failed (forGood, coolingDown, waitingForExits), closing', () => {
    const ids = atomicStates(supervisorMachine.root).map((s) => s.id);
    expect(ids.sort()).toEqual(
      [
        'supervisor.up.resolving',
        'supervisor.up.starting',
        'supervisor.up.running',
        'supervisor.failed.forGood',
        'supervisor.failed.coolingDown',
        'supervisor.failed.waitingForExits',
        'supervisor.closing',
        'supervisor.closed',
      ].sort(),
    );
    expect(SUPERVISOR_EVENT_TYPES).toContain('xstate.error.actor.*');
    expect(SUPERVISOR_EVENT_TYPES).toContain('xstate.done.actor.*');
    expect(missingTransitions(supervisorMachine, SUPERVISOR_EVENT_TYPES)).toEqual([]);
  });

  it('circuit breaker: closed, open, halfOpen', () => {
    expect(CIRCUIT_EVENT_TYPES.sort()).toEqual(['start.failed', 'start.succeeded']);
    expect(missingTransitions(circuitMachine, CIRCUIT_EVENT_TYPES)).toEqual([]);
  });

  it('the check finds a gap when there is one', () => {
    expect(missingTransitions(circuitMachine, [...CIRCUIT_EVENT_TYPES, 'made.up'])).toEqual([
      'circuit.closed: made.up',
      'circuit.open: made.up',
      'circuit.halfOpen: made.up',
    ]);
  });
});
