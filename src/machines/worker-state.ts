import type { SnapshotFrom } from 'xstate';
import type { workerMachine } from './worker.machine.js';

/**
 * Public state of one worker slot. `restarting`: the slot's process ended and a replacement is
 * scheduled (backoff) or waiting for the circuit breaker.
 */
export type WorkerState =
  | 'starting'
  | 'initializing'
  | 'ready'
  | 'busy'
  | 'stopping'
  | 'stopped'
  | 'restarting';

type WorkerSnapshot = SnapshotFrom<typeof workerMachine>;
type AliveValue = { alive?: string | Record<string, string> } | string;

/**
 * The public state of a worker, from its machine's snapshot: the one place that decodes worker
 * state values (stats, events, the router and the CLI all go through it).
 */
export function workerStateOf(snapshot: WorkerSnapshot): WorkerState {
  if (snapshot.status !== 'active') return 'stopped';
  const value = snapshot.value as AliveValue;
  if (typeof value === 'string') return 'stopped';
  const alive = value.alive;
  if (alive === undefined) return 'stopped';
  if (typeof alive === 'string')
    return alive === 'busy' || alive === 'cancelling' ? 'busy' : 'stopping';
  if ('starting' in alive) return alive.starting === 'spawning' ? 'starting' : 'initializing';
  if ('ready' in alive) return 'ready';
  return 'stopping';
}

/**
 * Whether the worker can take a call now (`alive.ready.idle`; `ready.checking` cannot). Read on
 * every routed call, so it does not parse a state path.
 */
export function isIdle(snapshot: WorkerSnapshot): boolean {
  const value = snapshot.value as AliveValue;
  return (
    snapshot.status === 'active' &&
    typeof value === 'object' &&
    typeof value.alive === 'object' &&
    value.alive.ready === 'idle'
  );
}
