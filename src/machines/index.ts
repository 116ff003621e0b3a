/**
 * The state machines behind pyvisor, for the Stately visualiser and for model-based tests of your
 * own (`xstate/graph`). Import from `pyvisor/machines`.
 */

export {
  SUPERVISOR_EVENT_TYPES,
  type SupervisorEmitted,
  type SupervisorEvent,
  type SupervisorInput,
  supervisorMachine,
} from '../supervisor/supervisor.machine.js';
export type {
  ProcessExit,
  SpawnSpec,
  SpawnTransport,
  TransportHandlers,
  WorkerTransport,
} from '../transport/transport.js';
export {
  CIRCUIT_EVENT_TYPES,
  type CircuitActor,
  type CircuitEmitted,
  type CircuitEvent,
  type CircuitInput,
  type CircuitState,
  circuitMachine,
} from './circuit.machine.js';
export {
  type CallSource,
  type StopReason,
  WORKER_EVENT_TYPES,
  type WorkerActor,
  type WorkerCall,
  type WorkerContext,
  type WorkerEmitted,
  type WorkerEvent,
  type WorkerExit,
  type WorkerExitReason,
  type WorkerInput,
  workerMachine,
} from './worker.machine.js';
