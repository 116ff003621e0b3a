import type { ProtocolError } from '../errors.js';
import type { PythonMessage } from '../protocol/index.js';

/** How a worker process ended. */
export interface ProcessExit {
  exitCode: number | null;
  signal: NodeJS.Signals | null;
  /** Set when the process could not be started at all (e.g. ENOENT). */
  spawnError?: Error;
}

/** Callbacks a transport reports to. Each is called on the event loop, never re-entrantly. */
export interface TransportHandlers {
  message(message: PythonMessage): void;
  /** The peer sent bytes that are not a valid frame; the transport stops reading. */
  protocolError(error: ProtocolError): void;
  /** One line of the worker's stdout or stderr (without the newline). */
  output(stream: 'stdout' | 'stderr', line: string): void;
  /** The process is gone and its protocol pipe drained. Called exactly once. */
  exit(exit: ProcessExit): void;
}

/** What to start: an interpreter, its arguments and environment. */
export interface SpawnSpec {
  command: string;
  args: readonly string[];
  env: NodeJS.ProcessEnv;
  cwd: string;
  maxMessageSize: number;
  outputLines: number;
}

/**
 * The process boundary. The worker machine only talks to this interface, so another transport (a
 * socket to a remote worker, a fake in tests) can be plugged in without touching the machines.
 */
export interface WorkerTransport {
  readonly pid: number | undefined;
  /**
   * Writes one encoded frame, or a frame and its attachments (several buffers, written in order and
   * never interleaved with another `send`).
   */
  send(frame: Buffer | readonly Buffer[]): void;
  /** Sends a signal to the process (no-op once it exited). */
  kill(signal: NodeJS.Signals): void;
  /** The last `outputLines` lines of stdout/stderr, oldest first. */
  outputTail(): string;
  /**
   * True once the process died because the process it was forked from died (a fork server's
   * template): the supervisor counts that death once, not once per worker.
   */
  readonly hostLost?: boolean;
}

/** Starts a worker process and reports to `handlers`. */
export type SpawnTransport = (spec: SpawnSpec, handlers: TransportHandlers) => WorkerTransport;
