import { type ChildProcess, spawn } from 'node:child_process';
import type { Readable, Writable } from 'node:stream';
import { encodeFrame } from '../protocol/frame.js';
import { LineSplitter } from './line-splitter.js';
import { afterDrain } from './pipes.js';
import type { ProcessExit, SpawnSpec } from './transport.js';

/** What the template process says on its control channel (python/pyvisor/_forkserver.py). */
export type TemplateMessage =
  | { t: 'hello'; pid: number; importMs: number; threads: string[]; osThreads: number }
  | { t: 'init_error'; type: string; message: string; traceback: string }
  | { t: 'forked'; id: number; pid: number }
  | { t: 'fork_failed'; id: number; message: string }
  | { t: 'exited'; id: number; pid: number; code: number | null; signal: number | null };

/** Callbacks of a {@link TemplateProcess}, called on the event loop. */
export interface TemplateHandlers {
  message(message: TemplateMessage): void;
  /** One line of the template's own stdout or stderr (what the script printed at import). */
  output(stream: 'stdout' | 'stderr', line: string): void;
  /** The template is gone and its control channel drained. Called exactly once. */
  exit(exit: ProcessExit): void;
}

// Control messages are a few hundred bytes; anything this large is not one.
const MAX_CONTROL_FRAME = 16 * 1024 * 1024;

/**
 * The fork server's template: a Python process that imported the script once and forks workers
 * on request. Its control channel is fds 3 (requests) and 4 (replies), framed like the worker
 * protocol (4-byte big-endian length, JSON).
 */
export class TemplateProcess {
  readonly #child: ChildProcess;
  readonly #handlers: TemplateHandlers;
  readonly #requests: Writable;
  readonly #stderr: LineSplitter;
  #buffer: Buffer = Buffer.alloc(0);
  #exit: ProcessExit | null = null;
  #open = 3;
  #reported = false;
  #drainTimer: NodeJS.Timeout | null = null;

  constructor(spec: SpawnSpec, socketPath: string, handlers: TemplateHandlers) {
    this.#handlers = handlers;
    this.#stderr = new LineSplitter(spec.outputLines, (line) => handlers.output('stderr', line));
    const stdout = new LineSplitter(0, (line) => handlers.output('stdout', line));
    this.#child = spawn(spec.command, spec.args as string[], {
      cwd: spec.cwd,
      env: { ...spec.env, PYVISOR_FORKSERVER: socketPath },
      stdio: ['ignore', 'pipe', 'pipe', 'pipe', 'pipe'],
      windowsHide: true,
    });
    const child = this.#child;
    const stdio = child.stdio as unknown as [null, Readable, Readable, Writable, Readable];
    // Like a worker, the template never holds Node's event loop open (the pool decides).
    child.unref();
    for (const stream of stdio) (stream as { unref?: () => void } | null)?.unref?.();
    this.#requests = stdio[3];
    this.#requests.on('error', () => {});
    const replies = stdio[4];
    replies.on('error', () => {});
    replies.on('data', (chunk: Buffer) => this.#onData(chunk));
    replies.on('close', () => this.#closed());
    for (const [stream, splitter] of [
      [stdio[1], stdout],
      [stdio[2], this.#stderr],
    ] as const) {
      stream.setEncoding('utf8');
      stream.on('data', (text: string) => splitter.push(text));
      stream.on('error', () => {});
      stream.on('close', () => {
        splitter.flush();
        this.#closed();
      });
    }
    child.on('error', (error) => {
      if (child.pid === undefined && !this.#exit) {
        this.#exit = { exitCode: null, signal: null, spawnError: error };
        this.#open = 0;
        this.#maybeReport();
      }
    });
    child.on('exit', (exitCode, signal) => {
      this.#exit = { exitCode, signal };
      this.#drainTimer = afterDrain(() => {
        this.#open = 0;
        this.#maybeReport();
      });
      this.#maybeReport();
    });
  }

  get pid(): number | undefined {
    return this.#child.pid;
  }

  /** The exit, once the process is gone (the report may still wait for its pipes). */
  get exited(): boolean {
    return this.#exit !== null;
  }

  /** Asks for a worker: `token` is what the child must present on Node's socket. */
  fork(id: number, token: string): void {
    this.#send({ t: 'fork', id, token });
  }

  /** Signals worker `id` (the template only signals a child it has not reaped). */
  killWorker(id: number, signal: number): void {
    this.#send({ t: 'kill', id, sig: signal });
  }

  /** Closes the control channel: the template exits (and its workers with it). */
  end(): void {
    this.#requests.end();
  }

  /** Signals the template itself. */
  kill(signal: NodeJS.Signals): void {
    if (this.#exit || this.#child.pid === undefined) return;
    try {
      this.#child.kill(signal);
    } catch {
      // Already gone: its exit event follows.
    }
  }

  /** The last lines of the template's stderr, oldest first. */
  outputTail(): string[] {
    return this.#stderr.tail();
  }

  #send(message: object): void {
    if (this.#exit || this.#requests.destroyed || this.#requests.writableEnded) return;
    this.#requests.write(encodeFrame(JSON.stringify(message)));
  }

  #onData(chunk: Buffer): void {
    this.#buffer = this.#buffer.length ? Buffer.concat([this.#buffer, chunk]) : chunk;
    while (this.#buffer.length >= 4) {
      const length = this.#buffer.readUInt32BE(0);
      if (length > MAX_CONTROL_FRAME) {
        this.#broken();
        return;
      }
      if (this.#buffer.length < 4 + length) return;
      const body = this.#buffer.subarray(4, 4 + length).toString('utf8');
      this.#buffer = this.#buffer.subarray(4 + length);
      let message: TemplateMessage;
      try {
        message = JSON.parse(body) as TemplateMessage;
      } catch {
        this.#broken();
        return;
      }
      this.#handlers.message(message);
    }
  }

  /** The template wrote something that is not a control frame: it cannot be trusted any more. */
  #broken(): void {
    this.#buffer = Buffer.alloc(0);
    this.kill('SIGKILL');
  }

  #closed(): void {
    this.#open--;
    this.#maybeReport();
  }

  #maybeReport(): void {
    if (this.#reported || !this.#exit || this.#open > 0) return;
    this.#reported = true;
    if (this.#drainTimer) clearTimeout(this.#drainTimer);
    this.#handlers.exit(this.#exit);
  }
}
