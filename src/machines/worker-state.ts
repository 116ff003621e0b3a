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
  if (typeof alive === 'string') {
    if (alive === 'ready') return 'ready';
    return alive === 'busy' ? 'busy' : 'stopping';
  }
  if ('starting' in alive) return alive.starting === 'spawning' ? 'starting' : 'initializing';
  return 'stopping';
}

/**
 * Whether the worker takes calls (it is `ready` or `busy` and was not asked to stop); whether it
 * has room for one more is the router's count. Read on every routed call, so it does not parse a
 * state path.
 */
export function isAccepting(snapshot: WorkerSnapshot): boolean {
  if (snapshot.status !== 'active' || snapshot.context.stopReason !== null) return false;
  const value = snapshot.value as AliveValue;
  if (typeof value !== 'object') return false;
  const alive = value.alive;
  return alive === 'ready' || alive === 'busy';
}

/**
 * Calls running on the worker now (a cancelled one until Python acknowledges it); a call handed
 * early by pipelining counts once it starts.
 */
export function inFlightOf(snapshot: WorkerSnapshot): number {
  if (snapshot.status !== 'active') return 0;
  let n = 0;
  for (const flight of snapshot.context.flights.values()) if (flight.started) n++;
  return n;
}
