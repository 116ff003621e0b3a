import { type ActorRefFrom, assign, emit, setup } from 'xstate';

/** Input of {@link circuitMachine}. */
export interface CircuitInput {
  /** Consecutive start failures that open the breaker. */
  threshold: number;
  /** Time the breaker stays open before allowing one probe start, ms. */
  resetTimeout: number;
}

/** Events the breaker receives from the supervisor. */
export type CircuitEvent = { type: 'start.failed' } | { type: 'start.succeeded' };

/**
 * Every event type the breaker receives, for tools and the completeness test (the `Record` makes
 * the compiler check that it is complete).
 */
export const CIRCUIT_EVENT_TYPES = Object.keys({
  'start.failed': true,
  'start.succeeded': true,
} satisfies Record<CircuitEvent['type'], true>) as CircuitEvent['type'][];

/** Events the breaker emits on every change of state. */
export type CircuitEmitted =
  | { type: 'circuit.opened'; failures: number }
  | { type: 'circuit.halfOpen' }
  | { type: 'circuit.closed' };

/** Public name of a breaker state. */
export type CircuitState = 'closed' | 'open' | 'halfOpen';

/**
 * Circuit breaker on worker start failures: after `threshold` consecutive failures it opens (no
 * spawns), after `resetTimeout` it lets one probe start through (half-open), and a successful
 * start closes it. Handler exceptions and call timeouts never reach it.
 */
export const circuitMachine = setup({
  types: {
    context: {} as { failures: number; input: CircuitInput },
    events: {} as CircuitEvent,
    input: {} as CircuitInput,
    emitted: {} as CircuitEmitted,
  },
  delays: {
    resetTimeout: ({ context }) => context.input.resetTimeout,
  },
  guards: {
    'threshold reached': ({ context }) => context.failures + 1 >= context.input.threshold,
  },
  actions: {
    'count failure': assign({ failures: ({ context }) => context.failures + 1 }),
    'reset failures': assign({ failures: 0 }),
    'announce opened': emit(({ context }) => ({
      type: 'circuit.opened' as const,
      failures: context.failures,
    })),
    'announce half-open': emit({ type: 'circuit.halfOpen' as const }),
    'announce closed': emit({ type: 'circuit.closed' as const }),
  },
}).createMachine({
  id: 'circuit',
  context: ({ input }) => ({ failures: 0, input }),
  initial: 'closed',
  states: {
    closed: {
      on: {
        'start.failed': [
          { guard: 'threshold reached', target: 'open', actions: 'count failure' },
          { actions: 'count failure' },
        ],
        'start.succeeded': { actions: 'reset failures' },
      },
    },
    open: {
      entry: 'announce opened',
      after: { resetTimeout: 'halfOpen' },
      on: {
        // A start that was already under way when the breaker opened.
        'start.failed': { actions: 'count failure' },
        'start.succeeded': { target: 'closed', actions: ['reset failures', 'announce closed'] },
      },
    },
    halfOpen: {
      entry: 'announce half-open',
      on: {
        'start.failed': { target: 'open', actions: 'count failure' },
        'start.succeeded': { target: 'closed', actions: ['reset failures', 'announce closed'] },
      },
    },
  },
});

/** A running circuit breaker actor. */
export type CircuitActor = ActorRefFrom<typeof circuitMachine>;
