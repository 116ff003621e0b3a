import { randomBytes } from 'node:crypto';
import { createServer, type Server, type Socket } from 'node:net';
import { constants } from 'node:os';
import { StringDecoder } from 'node:string_decoder';
import { ProtocolError } from '../errors.js';
import type { InitErrorMessage } from '../protocol/index.js';
import { spawnChildProcess } from './child-process.js';
import { LineSplitter } from './line-splitter.js';
import { afterDrain, writeFrame } from './pipes.js';
import { ReplyReader } from './reply-reader.js';
import { createSocketDir, removeSocketDir } from './socket-dir.js';
import { type TemplateMessage, TemplateProcess } from './template.js';
import type {
  ProcessExit,
  SpawnSpec,
  SpawnTransport,
  TransportHandlers,
  WorkerTransport,
} from './transport.js';

/** A `warning` of a pool with `startMethod: 'forkserver'`. */
export interface ForkServerWarning {
  /**
   * `WARN_FORK_UNSUPPORTED`: not Linux, workers are spawned; `WARN_FORK_FAILED`: the template
   * could not start, workers are spawned; `WARN_FORK_THREADS`: the script left Python threads
   * running after import (named in `threads`), workers are spawned; `WARN_FORK_NATIVE_THREADS`:
   * the script left native threads running (`osThreads` counts the template's OS threads),
   * workers are forked anyway.
   */
  code:
    | 'WARN_FORK_UNSUPPORTED'
    | 'WARN_FORK_FAILED'
    | 'WARN_FORK_THREADS'
    | 'WARN_FORK_NATIVE_THREADS';
  message: string;
  /** `WARN_FORK_THREADS`: the names of the Python threads running after import. */
  threads?: string[];
  /** `WARN_FORK_NATIVE_THREADS`: the template's OS thread count, the main thread included. */
  osThreads?: number;
}

/** The template died after it was ready: every worker forked from it died with it. */
export interface TemplateExit {
  pid: number | null;
  exitCode: number | null;
  signal: NodeJS.Signals | null;
  /** Its last stderr lines. */
  stderr: string;
}

export interface ForkServerOptions {
  /** A warning for the pool's `warning` event (called on the event loop, never inside a spawn). */
  onWarning(warning: ForkServerWarning): void;
  /** See {@link TemplateExit}; the pool counts it as one crash. */
  onTemplateExit(exit: TemplateExit): void;
  /** A line the template wrote itself (at import). */
  onOutput?(stream: 'stdout' | 'stderr', line: string): void;
  /** Where the server runs; anything but `linux` spawns (tests pass another to force that). */
  platform?: NodeJS.Platform;
  /** How workers are started when forking is not possible. Default: spawned child processes. */
  fallback?: SpawnTransport;
}

// A child that connects and says nothing for this long is dropped.
const HELLO_TIMEOUT_MS = 10_000;
const TOKEN_BYTES = 16;
const HELLO_LENGTH = TOKEN_BYTES * 2 + 1;
// See child-process.ts: how long the exit event gets to follow a reply pipe that closed.
const REPLY_EOF_GRACE_MS = 250;
// How long a template gets to exit after its control channel is closed, before SIGKILL.
const TEMPLATE_STOP_MS = 1000;

type Mode = 'idle' | 'starting' | 'ready' | 'fallback' | 'closed';

/**
 * Starts workers by forking them from a template process that imported the script once
 * (`startMethod: 'forkserver'`). `spawn` is a {@link SpawnTransport}: the workers it returns
 * behave like spawned ones (frames, output lines, exit code and signal), so the worker machine
 * and the supervisor do not know the difference. The only new fact is the template's death, which
 * kills every worker forked from it: those workers' transports say so (`hostLost`), and
 * `onTemplateExit` reports it once.
 *
 * The protocol pipes of each worker are a Unix socket it connects back on (in a private 0700
 * directory), proving itself with a per-worker random token; its stdout and stderr are two more
 * such connections. When forking is not possible (not Linux, the template cannot start, Python
 * threads running after import), workers are spawned instead, with one warning.
 */
export class ForkServer {
  readonly #options: ForkServerOptions;
  readonly #fallback: SpawnTransport;
  #mode: Mode = 'idle';
  #dir: string | null = null;
  #socketPath: string | null = null;
  #server: Server | null = null;
  #template: TemplateProcess | null = null;
  #templateExited: Promise<void> | null = null;
  /** Each template's exit, for close(): the current one, a renewal's, and retiring ones. */
  readonly #exits = new Map<TemplateProcess, Promise<void>>();
  /** The template each forked worker came from (a reload may leave several for a while). */
  readonly #hostOf = new Map<number, TemplateProcess>();
  /** Templates a renewal replaced: each ends once its last worker is gone. */
  readonly #retiring = new Set<TemplateProcess>();
  /** A new template importing the code on disk now, for a reload (see {@link renew}). */
  #renewal: {
    template: TemplateProcess;
    initError: InitErrorMessage | null;
    resolve: () => void;
    reject: (error: Error) => void;
  } | null = null;
  /**
   * Every worker that waited for the starting template gave up (each has its own `initTimeout`,
   * which covers the template's import): it was killed, and is not a failure of forking.
   */
  #abandoned = false;
  #initError: InitErrorMessage | null = null;
  /** Workers waiting for the template to be ready. */
  #pending: ForkedTransport[] = [];
  /** Workers the template was asked to fork, by id, until they are gone. */
  readonly #forked = new Map<number, ForkedTransport>();
  readonly #byToken = new Map<string, ForkedTransport>();
  readonly #warned = new Set<ForkServerWarning['code']>();
  /** The spec of the first worker: the template runs the same command. */
  #spec: SpawnSpec | null = null;
  #nextId = 0;

  constructor(options: ForkServerOptions) {
    this.#options = options;
    this.#fallback = options.fallback ?? spawnChildProcess;
  }

  /** The {@link SpawnTransport} of this server. */
  readonly spawn: SpawnTransport = (spec, handlers) => {
    this.#spec ??= spec;
    if (this.#mode === 'idle' && (this.#options.platform ?? process.platform) !== 'linux') {
      this.#fallBack(
        'WARN_FORK_UNSUPPORTED',
        `startMethod 'forkserver' needs Linux (this is ${this.#options.platform ?? process.platform}); workers are spawned instead`,
      );
    }
    if (this.#mode === 'fallback' || this.#mode === 'closed') return this.#fallback(spec, handlers);
    const transport = new ForkedTransport(this, ++this.#nextId, spec, handlers);
    this.#byToken.set(transport.token, transport);
    if (this.#mode === 'ready') this.#requestFork(transport);
    else {
      this.#pending.push(transport);
      if (this.#mode === 'idle') this.#start();
    }
    return transport;
  };

  /** The template's pid while one runs. */
  get templatePid(): number | null {
    return this.#template?.pid ?? null;
  }

  /** The socket children connect to (for tests), or null before the first start. */
  get socketPath(): string | null {
    return this.#socketPath;
  }

  /** Whether workers are spawned instead of forked, for good. */
  get fellBack(): boolean {
    return this.#mode === 'fallback';
  }

  /**
   * Ends the template (its workers should be gone by now: any left die with it) and removes the
   * socket and its directory. Resolves once the template has exited.
   */
  async close(): Promise<void> {
    if (this.#mode !== 'closed') {
      const ready = this.#mode === 'ready';
      this.#mode = 'closed';
      for (const transport of this.#pending.splice(0)) {
        transport.failToStart(new Error('The pool closed before the fork server was ready'));
      }
      const template = this.#template;
      if (template && !template.exited) {
        if (ready) {
          // Idle in its loop: it exits when its channel closes.
          template.end();
          setTimeout(() => template.kill('SIGKILL'), TEMPLATE_STOP_MS).unref();
        } else {
          // Importing (it does not read its channel yet), or already told to go.
          template.kill('SIGKILL');
        }
      }
    }
    for (const template of this.#retiring) stopTemplate(template);
    if (this.#renewal) {
      this.#renewal.template.kill('SIGKILL');
      this.#renewal.reject(new Error('The pool closed before the new template was ready'));
      this.#renewal = null;
    }
    await Promise.all([this.#templateExited, ...this.#exits.values()]);
    this.#server?.close();
    this.#server = null;
    if (this.#dir) removeSocketDir(this.#dir);
    this.#dir = null;
  }

  // ----------------------------------------------------------------------------------------
  // For ForkedTransport.

  /** Signals a worker that was asked for but whose pid is not known yet. */
  killPending(transport: ForkedTransport, signal: NodeJS.Signals): void {
    const index = this.#pending.indexOf(transport);
    if (index >= 0) {
      // Not forked yet: it never will be.
      this.#pending.splice(index, 1);
      transport.exitNow({ exitCode: null, signal });
      if (this.#pending.length === 0 && this.#mode === 'starting' && this.#template) {
        // Nobody waits for the template (their initTimeout covered its import): a hung import
        // must not live on. The next worker starts a new one.
        this.#abandoned = true;
        this.#template.kill('SIGKILL');
      }
      return;
    }
    const number = constants.signals[signal];
    const host = this.#hostOf.get(transport.id) ?? this.#template;
    if (number !== undefined) host?.killWorker(transport.id, number);
  }

  /** The transport reported its exit: it is forgotten. */
  forget(transport: ForkedTransport): void {
    this.#byToken.delete(transport.token);
    this.#forked.delete(transport.id);
    const host = this.#hostOf.get(transport.id);
    this.#hostOf.delete(transport.id);
    if (host && this.#retiring.has(host) && !this.#hosts(host)) stopTemplate(host);
  }

  /**
   * For a reload: starts a new template, which imports the code on disk now, and forks every
   * later worker from it once it is ready; the current template ends once the last worker forked
   * from it is gone (ending it earlier would kill them). Rejects, leaving the current template in
   * place, when the new one cannot import the script (a WorkerInitError-like Error: the caller
   * wraps it). Resolves at once when workers are not forked (spawned ones import anew anyway)
   * or no template runs yet.
   */
  renew(): Promise<void> {
    if (this.#mode !== 'ready' || !this.#template || this.#renewal) return Promise.resolve();
    return new Promise<void>((resolve, reject) => {
      let template: TemplateProcess;
      try {
        template = this.#launch((t, message) => this.#onRenewalMessage(t, message));
      } catch (error) {
        reject(error as Error);
        return;
      }
      this.#renewal = { template, initError: null, resolve, reject };
    });
  }

  /** Whether any worker forked from `template` is still around. */
  #hosts(template: TemplateProcess): boolean {
    for (const host of this.#hostOf.values()) if (host === template) return true;
    return false;
  }

  #launch(
    onMessage: (template: TemplateProcess, message: TemplateMessage) => void,
  ): TemplateProcess {
    let exited!: () => void;
    const done = new Promise<void>((resolve) => {
      exited = resolve;
    });
    const template: TemplateProcess = new TemplateProcess(this.#spec!, this.#socketPath!, {
      message: (message) => onMessage(template, message),
      output: (stream, line) => this.#options.onOutput?.(stream, line),
      exit: (exit) => {
        this.#exits.delete(template);
        this.#onTemplateExit(template, exit);
        exited();
      },
    });
    this.#exits.set(template, done);
    return template;
  }

  #onRenewalMessage(template: TemplateProcess, message: TemplateMessage): void {
    const renewal = this.#renewal;
    if (renewal?.template !== template) {
      this.#onMessage(template, message);
      return;
    }
    if (message.t === 'init_error') {
      renewal.initError = {
        t: 'init_error',
        type: message.type,
        message: message.message,
        traceback: message.traceback,
      };
      return;
    }
    if (message.t !== 'hello') {
      this.#onMessage(template, message);
      return;
    }
    this.#renewal = null;
    if (message.threads.length > 0) {
      stopTemplate(template);
      renewal.reject(
        new Error(
          `The new code left ${message.threads.length} Python thread(s) running after import (${message.threads.join(', ')}); forking from it could deadlock the workers. Start threads in an @on_init function.`,
        ),
      );
      return;
    }
    // The new template serves every later fork; the old one ends with its last worker.
    const old = this.#template;
    this.#template = template;
    if (old) {
      this.#retiring.add(old);
      if (!this.#hosts(old)) stopTemplate(old);
    }
    renewal.resolve();
  }

  // ----------------------------------------------------------------------------------------

  #start(): void {
    this.#mode = 'starting';
    this.#initError = null;
    this.#abandoned = false;
    if (this.#server) {
      this.#startTemplate();
      return;
    }
    try {
      const { dir, socket } = createSocketDir();
      this.#dir = dir;
      this.#socketPath = socket;
      const server = createServer((socket) => this.#onConnection(socket));
      this.#server = server;
      server.on('error', (error) => {
        if (this.#mode === 'starting' && !this.#template) {
          this.#fallBack('WARN_FORK_FAILED', `The fork server could not listen: ${error.message}`);
        }
      });
      server.listen(socket, () => {
        if (this.#mode === 'starting') this.#startTemplate();
      });
      server.unref();
    } catch (error) {
      this.#fallBack(
        'WARN_FORK_FAILED',
        `The fork server could not start: ${(error as Error).message}`,
      );
    }
  }

  #startTemplate(): void {
    const spec = this.#spec!;
    let template: TemplateProcess;
    let exited!: () => void;
    this.#templateExited = new Promise((resolve) => {
      exited = resolve;
    });
    try {
      template = new TemplateProcess(spec, this.#socketPath!, {
        message: (message) => this.#onMessage(template, message),
        output: (stream, line) => this.#options.onOutput?.(stream, line),
        exit: (exit) => {
          this.#onTemplateExit(template, exit);
          exited();
        },
      });
    } catch (error) {
      exited();
      this.#fallBack(
        'WARN_FORK_FAILED',
        `The fork server's template could not be started: ${(error as Error).message}`,
      );
      return;
    }
    this.#template = template;
  }

  #onMessage(template: TemplateProcess, message: TemplateMessage): void {
    // A retiring template still reports on the workers it forked (ids are unique).
    const current = template === this.#template;
    if (!current && (message.t === 'hello' || message.t === 'init_error')) return;
    switch (message.t) {
      case 'hello':
        this.#onHello(template, message);
        break;
      case 'init_error':
        this.#initError = {
          t: 'init_error',
          type: message.type,
          message: message.message,
          traceback: message.traceback,
        };
        break;
      case 'forked':
        this.#forked.get(message.id)?.forked(message.pid);
        break;
      case 'fork_failed':
        this.#forked
          .get(message.id)
          ?.failToStart(new Error(`The fork server could not fork: ${message.message}`));
        break;
      case 'exited': {
        const signal =
          message.signal === null ? null : (signalName(message.signal) ?? ('SIGKILL' as const));
        this.#forked.get(message.id)?.exited({ exitCode: message.code, signal });
        break;
      }
    }
  }

  #onHello(template: TemplateProcess, hello: Extract<TemplateMessage, { t: 'hello' }>): void {
    if (this.#mode !== 'starting') return;
    if (hello.threads.length > 0) {
      this.#fallBack(
        'WARN_FORK_THREADS',
        `The script left ${hello.threads.length} Python thread(s) running after import (${hello.threads.join(', ')}); forking then can deadlock every worker (a thread may hold a lock), so workers are spawned instead. Start threads in an @on_init function.`,
        { threads: hello.threads },
      );
      template.end();
      setTimeout(() => template.kill('SIGKILL'), TEMPLATE_STOP_MS).unref();
      return;
    }
    const native = hello.osThreads - 1;
    if (native > 0) {
      this.#warn({
        code: 'WARN_FORK_NATIVE_THREADS',
        message: `The script left ${native} native thread(s) running after import (${hello.osThreads} OS threads in the template: thread pools of C libraries such as OpenBLAS or torch); the workers are forked anyway, but a library whose threads hold a lock at fork can hang in them. Limit them before import (e.g. torch.set_num_threads(1)) and restore them in @on_init.`,
        osThreads: hello.osThreads,
      });
    }
    this.#mode = 'ready';
    for (const transport of this.#pending.splice(0)) this.#requestFork(transport);
  }

  #onTemplateExit(template: TemplateProcess, exit: ProcessExit): void {
    const renewal = this.#renewal;
    if (renewal?.template === template) {
      // The new code did not import (or the template died first): the current one stays.
      this.#renewal = null;
      const init = renewal.initError;
      const error = new Error(
        init
          ? `${init.type}: ${init.message}`
          : `The new template ${describeExit(exit)} before it was ready`,
      ) as Error & { init?: InitErrorMessage; stderr?: string };
      if (init) error.init = init;
      error.stderr = template.outputTail().join('\n');
      renewal.reject(error);
      return;
    }
    if (this.#retiring.delete(template)) {
      // Ended after its last worker, or died with some still running: those died with it.
      const lost = [...this.#forked.values()].filter((t) => this.#hostOf.get(t.id) === template);
      if (lost.length === 0) return;
      const note = `[pyvisor] the fork server's old template (pid ${template.pid}) ${describeExit(exit)}; this worker died with it`;
      for (const transport of lost) transport.lost(note);
      this.#options.onTemplateExit({
        pid: template.pid ?? null,
        exitCode: exit.exitCode,
        signal: exit.signal,
        stderr: template.outputTail().join('\n'),
      });
      return;
    }
    if (template !== this.#template) return;
    this.#template = null;
    const tail = template.outputTail();
    const mode = this.#mode;
    if (mode === 'closed' || mode === 'fallback') return;
    this.#mode = 'idle';
    if (mode === 'starting') {
      const pending = this.#pending.splice(0);
      if (this.#initError) {
        // The script does not import: each worker fails as a spawned one would, with the traceback.
        for (const transport of pending) transport.initError(this.#initError, exit, tail);
      } else if (this.#abandoned) {
        // Killed because nobody waited for it any more; workers asked for since get a new one.
        this.#pending = pending;
        if (pending.length > 0) this.#start();
      } else {
        this.#pending = pending;
        this.#fallBack(
          'WARN_FORK_FAILED',
          `The fork server's template ${describeExit(exit)} before it was ready; workers are spawned instead${tail.length ? `\n--- template stderr (last lines) ---\n${tail.join('\n')}` : ''}`,
        );
      }
      return;
    }
    // It died after it was ready: its workers died with it (PR_SET_PDEATHSIG).
    const note = `[pyvisor] the fork server's template (pid ${template.pid}) ${describeExit(exit)}; this worker died with it`;
    for (const transport of [...this.#forked.values()]) {
      if (this.#hostOf.get(transport.id) === template) transport.lost(note);
    }
    this.#options.onTemplateExit({
      pid: template.pid ?? null,
      exitCode: exit.exitCode,
      signal: exit.signal,
      stderr: tail.join('\n'),
    });
  }

  #requestFork(transport: ForkedTransport): void {
    this.#forked.set(transport.id, transport);
    this.#hostOf.set(transport.id, this.#template!);
    this.#template!.fork(transport.id, transport.token);
  }

  #onConnection(socket: Socket): void {
    socket.unref();
    socket.on('error', () => {});
    let head: Buffer = Buffer.alloc(0);
    const timer = setTimeout(() => socket.destroy(), HELLO_TIMEOUT_MS).unref();
    const onData = (chunk: Buffer) => {
      head = head.length ? Buffer.concat([head, chunk]) : chunk;
      if (head.length < HELLO_LENGTH) return;
      socket.off('data', onData);
      clearTimeout(timer);
      const token = head.subarray(0, HELLO_LENGTH - 1).toString('latin1');
      const kind = String.fromCharCode(head[HELLO_LENGTH - 1]!);
      const transport = this.#byToken.get(token);
      if (!transport?.attach(kind, socket, head.subarray(HELLO_LENGTH))) socket.destroy();
    };
    socket.on('data', onData);
    socket.on('close', () => clearTimeout(timer));
  }

  /** Workers are spawned from now on; those waiting for the template are spawned now. */
  #fallBack(
    code: ForkServerWarning['code'],
    message: string,
    extra: Partial<ForkServerWarning> = {},
  ): void {
    this.#mode = 'fallback';
    this.#warn({ ...extra, code, message });
    for (const transport of this.#pending.splice(0)) transport.delegate(this.#fallback);
  }

  #warn(warning: ForkServerWarning): void {
    if (this.#warned.has(warning.code)) return;
    this.#warned.add(warning.code);
    // Never inside a spawn (a supervisor transition): listeners are the user's code.
    setImmediate(() => this.#options.onWarning(warning));
  }
}

/** Ends a template (its workers should be gone: any left die with it). */
function stopTemplate(template: TemplateProcess): void {
  if (template.exited) return;
  template.end();
  setTimeout(() => template.kill('SIGKILL'), TEMPLATE_STOP_MS).unref();
}

function signalName(signal: number): NodeJS.Signals | undefined {
  for (const [name, number] of Object.entries(constants.signals)) {
    if (number === signal) return name as NodeJS.Signals;
  }
  return undefined;
}

function describeExit(exit: ProcessExit): string {
  if (exit.spawnError) return `could not be started (${exit.spawnError.message})`;
  if (exit.signal) return `was killed by ${exit.signal}`;
  return `exited with code ${exit.exitCode}`;
}

type Kind = 'p' | 'o' | 'e';

/**
 * One worker forked from the template: its protocol and output sockets, and its exit as the
 * template reported it. Behaves like a spawned child (child-process.ts). Until it is forked it
 * can still become a spawned child (`delegate`), when the server falls back.
 */
class ForkedTransport implements WorkerTransport {
  readonly token = randomBytes(TOKEN_BYTES).toString('hex');
  /** It died because the template died (see {@link ForkServer}). */
  hostLost = false;
  readonly #server: ForkServer;
  readonly id: number;
  readonly #spec: SpawnSpec;
  readonly #handlers: TransportHandlers;
  readonly #reader: ReplyReader;
  readonly #stderr: LineSplitter;
  readonly #stdout: LineSplitter;
  #delegate: WorkerTransport | null = null;
  #pid: number | undefined;
  #exit: ProcessExit | null = null;
  #reported = false;
  /** No socket will connect (it was never forked): report the exit at once. */
  #unforked = false;
  readonly #sockets: Record<Kind, Socket | null> = { p: null, o: null, e: null };
  readonly #closed: Record<Kind, boolean> = { p: false, o: false, e: false };
  #queue: (Buffer | readonly Buffer[])[] = [];
  /**
   * Protocol bytes that arrived before the template said which pid the worker has (the child can
   * run ahead of its parent): read once the pid is known, so the worker is never ready without it.
   */
  #early: Buffer[] = [];
  /** Lines added to the stderr tail by pyvisor (why the worker died). */
  #notes: string[] = [];
  #drainTimer: NodeJS.Timeout | null = null;
  #eofTimer: NodeJS.Timeout | null = null;

  constructor(server: ForkServer, id: number, spec: SpawnSpec, handlers: TransportHandlers) {
    this.#server = server;
    this.id = id;
    this.#spec = spec;
    this.#handlers = handlers;
    this.#reader = new ReplyReader(
      spec.maxMessageSize,
      (message) => handlers.message(message),
      (error) => handlers.protocolError(error),
      () => this.#exit !== null,
    );
    this.#stderr = new LineSplitter(spec.outputLines, (line) => handlers.output('stderr', line));
    this.#stdout = new LineSplitter(0, (line) => handlers.output('stdout', line));
  }

  get pid(): number | undefined {
    return this.#delegate ? this.#delegate.pid : this.#pid;
  }

  send(frame: Buffer | readonly Buffer[]): void {
    if (this.#delegate) {
      this.#delegate.send(frame);
      return;
    }
    if (this.#exit) return;
    const socket = this.#sockets.p;
    if (!socket) {
      this.#queue.push(frame);
      return;
    }
    if (socket.destroyed) return;
    writeFrame(socket, frame);
  }

  kill(signal: NodeJS.Signals): void {
    if (this.#delegate) {
      this.#delegate.kill(signal);
      return;
    }
    if (this.#exit || this.#reported) return;
    if (this.#pid === undefined) {
      this.#server.killPending(this, signal);
      return;
    }
    try {
      process.kill(this.#pid, signal);
    } catch {
      // ESRCH: it is gone; the template reports its exit.
    }
  }

  outputTail(): string {
    if (this.#delegate) return this.#delegate.outputTail();
    return [...this.#stderr.tail(), ...this.#notes].join('\n');
  }

  // ----------------------------------------------------------------------------------------
  // From the server.

  forked(pid: number): void {
    this.#pid = pid;
    const early = this.#early;
    this.#early = [];
    for (const chunk of early) this.#onData(chunk);
  }

  /** The template reaped it. */
  exited(exit: ProcessExit): void {
    if (this.#exit) return;
    this.#exit = exit;
    // Read what is still in the sockets before giving up on them.
    this.#drainTimer = afterDrain(() => {
      for (const kind of ['p', 'o', 'e'] as const) this.#closeKind(kind);
      this.#maybeReport();
    });
    this.#maybeReport();
  }

  /** The template died: so did this worker (its parent-death signal is SIGKILL). */
  lost(note: string): void {
    if (this.#exit) return;
    this.hostLost = true;
    this.#notes.push(note);
    if (this.#pid === undefined) this.#unforked = true;
    this.exited({ exitCode: null, signal: 'SIGKILL' });
  }

  /** It will never run: killed before the fork, or the fork failed. Reported at once. */
  exitNow(exit: ProcessExit): void {
    this.#unforked = true;
    setImmediate(() => this.exited(exit));
  }

  failToStart(error: Error): void {
    this.exitNow({ exitCode: null, signal: null, spawnError: error });
  }

  /** The template could not import the script: the same `init_error` a spawned worker sends. */
  initError(message: InitErrorMessage, exit: ProcessExit, tail: string[]): void {
    this.#notes = tail;
    this.#unforked = true;
    setImmediate(() => {
      if (this.#exit) return;
      this.#handlers.message(message);
      this.exited({ exitCode: exit.exitCode ?? 1, signal: exit.signal });
    });
  }

  /** Workers are spawned after all: this one becomes a spawned child. */
  delegate(spawn: SpawnTransport): void {
    this.#server.forget(this);
    const queued = this.#queue;
    this.#queue = [];
    try {
      this.#delegate = spawn(this.#spec, this.#handlers);
    } catch (error) {
      this.failToStart(error as Error);
      return;
    }
    for (const frame of queued) this.#delegate.send(frame);
  }

  /** A connection from the child, after its token: `p` protocol, `o` stdout, `e` stderr. */
  attach(kind: string, socket: Socket, rest: Buffer): boolean {
    if (kind !== 'p' && kind !== 'o' && kind !== 'e') return false;
    if (this.#reported || this.#delegate || this.#sockets[kind] || this.#closed[kind]) return false;
    this.#sockets[kind] = socket;
    socket.on('close', () => {
      if (kind === 'p') this.#protocolClosed();
      else (kind === 'o' ? this.#stdout : this.#stderr).flush();
      this.#closed[kind] = true;
      this.#maybeReport();
    });
    if (kind === 'p') {
      socket.on('data', (chunk: Buffer) => this.#onData(chunk));
      if (rest.length > 0) this.#onData(rest);
      const queued = this.#queue;
      this.#queue = [];
      for (const frame of queued) this.send(frame);
    } else {
      const splitter = kind === 'o' ? this.#stdout : this.#stderr;
      const decoder = new StringDecoder('utf8');
      socket.on('data', (chunk: Buffer) => splitter.push(decoder.write(chunk)));
      if (rest.length > 0) splitter.push(decoder.write(rest));
    }
    return true;
  }

  // ----------------------------------------------------------------------------------------

  #protocolClosed(): void {
    if (this.#exit) return;
    // EOF usually means the process is exiting and the template's report is on its way; a
    // worker still alive after a grace period closed its reply channel and can never answer.
    this.#eofTimer = setTimeout(() => {
      if (!this.#exit) this.#reader.fail(new ProtocolError('Worker closed its reply pipe (fd 4)'));
    }, REPLY_EOF_GRACE_MS).unref();
  }

  #closeKind(kind: Kind): void {
    this.#closed[kind] = true;
    const socket = this.#sockets[kind];
    if (socket && !socket.destroyed) socket.destroy();
  }

  #onData(chunk: Buffer): void {
    // Frames that arrive before the template said which pid the worker has wait for it.
    if (this.#pid === undefined) {
      this.#early.push(chunk);
      return;
    }
    this.#reader.push(chunk);
  }

  #maybeReport(): void {
    if (this.#reported || !this.#exit) return;
    if (!this.#unforked && !(this.#closed.p && this.#closed.o && this.#closed.e)) return;
    this.#reported = true;
    if (this.#drainTimer) clearTimeout(this.#drainTimer);
    if (this.#eofTimer) clearTimeout(this.#eofTimer);
    for (const kind of ['p', 'o', 'e'] as const) this.#closeKind(kind);
    this.#server.forget(this);
    this.#reader.finish();
    this.#handlers.exit(this.#exit);
  }
}
