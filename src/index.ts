export type { InitFailureReason, ProcessFacts, PyvisorErrorCode } from './errors.js';
export {
  CallTimeoutError,
  CheckoutTimeoutError,
  CircuitOpenError,
  InvalidOptionError,
  PoolClosedError,
  PoolFailedError,
  ProtocolError,
  PythonError,
  PythonNotFoundError,
  PyvisorError,
  QueueFullError,
  SerializationError,
  UnknownHandlerError,
  WorkerCrashedError,
  WorkerInitError,
} from './errors.js';
export type { WorkerExitReason } from './machines/worker.machine.js';
export {
  type Inspector,
  sanitizeContext,
  sanitizeEvent,
  sanitizeSnapshot,
} from './observe/inspect.js';
export type { Logger } from './observe/logger.js';
export type { PoolEvents, PoolWarning, WorkerState } from './pool/events.js';
export type {
  CircuitOptions,
  HealthCheckOptions,
  PoolOptions,
  RecycleOptions,
  RestartOptions,
  StartMethod,
} from './pool/options.js';
export type {
  CallOptions,
  CloseOptions,
  PoolInternals,
  PoolState,
  PoolStats,
  WorkerStats,
} from './pool/pool.js';
export { createPool, Pool } from './pool/pool.js';
export {
  isNDArray,
  type NDArray,
  type NDArrayData,
  type NDArrayDType,
  type NDArrayDTypeOf,
  type NDArrayTypedArray,
  ndarray,
} from './protocol/ndarray.js';
