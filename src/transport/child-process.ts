import { type ChildProcess, spawn } from 'node:child_process';
import type { Readable, Writable } from 'node:stream';
import { ProtocolError } from '../errors.js';
import { LineSplitter } from './line-splitter.js';
import { afterDrain, writeFrame } from './pipes.js';
import { ReplyReader } from './reply-reader.js';
import type {
  ProcessExit,
  SpawnSpec,
  SpawnTransport,
  TransportHandlers,
  WorkerTransport,
} from './transport.js';

// A reply pipe that closed while the process lives: how long its exit event gets to follow.
const REPLY_EOF_GRACE_MS = 250;

/**
 * Spawns a local Python process with the protocol on fds 3 (requests) and 4 (replies).
 * node:child_process is used directly rather than execa: the worker needs two extra raw pipes,
 * streaming reads and no output buffering, which is all below what execa adds.
 */
export const spawnChildProcess: SpawnTransport = (spec, handlers) =>
  new ChildProcessTransport(spec, handlers);

class ChildProcessTransport implements WorkerTransport {
  readonly #child: ChildProcess;
  readonly #handlers: TransportHandlers;
  readonly #reader: ReplyReader;
  readonly #stderr: LineSplitter;
  readonly #stdout: LineSplitter;
  readonly #requests: Writable;
  #exit: ProcessExit | null = null;
  #reported = false;
  #protocolOpen = true;
  #outputOpen = 2;
  #drainTimer: NodeJS.Timeout | null = null;
  #eofTimer: NodeJS.Timeout | null = null;

  constructor(spec: SpawnSpec, handlers: TransportHandlers) {
    this.#handlers = handlers;
    this.#reader = new ReplyReader(
      spec.maxMessageSize,
      (message) => handlers.message(message),
      (error) => handlers.protocolError(error),
      () => this.#exit !== null,
    );
    this.#stderr = new LineSplitter(spec.outputLines, (line) => handlers.output('stderr', line));
    this.#stdout = new LineSplitter(0, (line) => handlers.output('stdout', line));
    this.#child = spawn(spec.command, spec.args as string[], {
      cwd: spec.cwd,
      env: spec.env,
      stdio: ['ignore', 'pipe', 'pipe', 'pipe', 'pipe'],
      windowsHide: true,
    });
    const child = this.#child;
    const stdio = child.stdio as unknown as [null, Readable, Readable, Writable, Readable];
    // Whether Node stays alive is the pool's decision (src/pool/loop-hold.ts): neither the
    // process nor its pipes hold the event loop open.
    child.unref();
    for (const stream of stdio) (stream as { unref?: () => void } | null)?.unref?.();
    this.#requests = stdio[3];
    const replies = stdio[4];
    // A worker that dies mid-write gives EPIPE on the request pipe; the exit event reports it.
    this.#requests.on('error', () => {});
    replies.on('error', () => {});
    replies.on('data', (chunk: Buffer) => this.#reader.push(chunk));
    replies.on('close', () => {
      this.#protocolOpen = false;
      if (!this.#exit) {
        // EOF usually means the process is exiting and its exit event is on the way; a worker
        // that is still alive after a grace period closed its reply pipe and can never answer.
        this.#eofTimer = setTimeout(() => {
          if (!this.#exit)
            this.#reader.fail(new ProtocolError('Worker closed its reply pipe (fd 4)'));
        }, REPLY_EOF_GRACE_MS).unref();
      }
      this.#maybeReport();
    });
    for (const [stream, splitter] of [
      [stdio[1], this.#stdout],
      [stdio[2], this.#stderr],
    ] as const) {
      stream.setEncoding('utf8');
      stream.on('data', (text: string) => splitter.push(text));
      stream.on('error', () => {});
      stream.on('close', () => {
        splitter.flush();
        this.#outputOpen--;
        this.#maybeReport();
      });
    }
    child.on('error', (error) => {
      // 'error' without a pid: the process never started; no 'exit' follows.
      if (child.pid === undefined && !this.#exit) {
        this.#exit = { exitCode: null, signal: null, spawnError: error };
        this.#protocolOpen = false;
        this.#outputOpen = 0;
        this.#maybeReport();
      }
    });
    child.on('exit', (exitCode, signal) => {
      this.#exit = { exitCode, signal };
      this.#drainTimer = afterDrain(() => {
        this.#protocolOpen = false;
        this.#outputOpen = 0;
        this.#maybeReport();
      });
      this.#maybeReport();
    });
  }

  get pid(): number | undefined {
    return this.#child.pid;
  }

  send(frame: Buffer | readonly Buffer[]): void {
    if (this.#exit || this.#requests.destroyed) return;
    writeFrame(this.#requests, frame);
  }

  kill(signal: NodeJS.Signals): void {
    if (this.#exit || this.#child.pid === undefined) return;
    try {
      this.#child.kill(signal);
    } catch {
      // ESRCH: it is already gone; the exit event follows.
    }
  }

  outputTail(): string {
    return this.#stderr.tail().join('\n');
  }

  #maybeReport(): void {
    if (this.#reported || !this.#exit || this.#protocolOpen || this.#outputOpen > 0) return;
    this.#reported = true;
    if (this.#drainTimer) clearTimeout(this.#drainTimer);
    if (this.#eofTimer) clearTimeout(this.#eofTimer);
    this.#reader.finish();
    this.#handlers.exit(this.#exit);
  }
}
