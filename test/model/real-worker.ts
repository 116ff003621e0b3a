/**
 * The concrete side of the model-based tests: a real worker actor (`workerMachine` with the real
 * `spawnChildProcess` transport) running test/fixtures/mbt.py in a real Python process (with
 * PYVISOR_CONCURRENCY set as the model's configuration says), driven step by step through a
 * planned path.
 *
 * Every event the actor processes is recorded through XState's inspection API (event, state
 * before and after, the state value of each microstep, the events emitted), so each step is
 * checked against the model exactly: the expected event (with the same guard variant) must come
 * from the expected state (the calls in flight and a health check out included) and produce the
 * same microsteps; an event the path does not mention is tolerated only if it leaves that state as
 * it is (e.g. a frame that reaches a worker that is killing its process).
 *
 * The transport is the real one behind a thin wrapper that records what the machine does to the
 * process and, for a `fault` prep, throws on the next `send` or `kill` instead (process.failed).
 */
import { existsSync, mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { type AnyEventObject, createActor, type InspectionEvent, type StateValue } from 'xstate';
import { PyvisorError } from '../../src/errors.js';
import {
  type WorkerActor,
  type WorkerEmitted,
  type WorkerExit,
  workerMachine,
} from '../../src/machines/worker.machine.js';
import { PendingCall, STREAM_WINDOW } from '../../src/pool/call.js';
import { encodeFrame, type NodeMessage } from '../../src/protocol/index.js';
import { spawnChildProcess } from '../../src/transport/child-process.js';
import type { SpawnTransport } from '../../src/transport/transport.js';
import type { Command, Plan, PlannedStep, Prep } from './stimuli.js';
import {
  emittedName,
  fullKey,
  labelIn,
  modelInput,
  type ReplayStep,
  Stubs,
  valueName,
  type WorkerSnapshot,
} from './worker-model.js';

const REPO = fileURLToPath(new URL('../../', import.meta.url));
const FIXTURE = fileURLToPath(new URL('../fixtures/mbt.py', import.meta.url));
const PYTHON_DIR = join(REPO, 'python');

/** What the test's transport wrapper throws for a `fault` prep. */
export const INJECTED_FAULT = new Error('injected transport fault (model-based test)');

/** How long any single step may take: generous, it is a bound, not a delay. */
export const STEP_TIMEOUT = 10_000;

// ------------------------------------------------------------------------------------------
// Processes.

/** True while a process with that pid exists and is not a zombie. */
export function isAlive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z';
  } catch {
    return false;
  }
}

/** Polls `check` every few ms until it holds; rejects after `timeout` ms. */
export async function until(check: () => boolean, what: string, timeout = STEP_TIMEOUT) {
  const deadline = Date.now() + timeout;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeout} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 3));
  }
}

// ------------------------------------------------------------------------------------------
// The control directory the fixture reads its commands from.

export class Control {
  readonly dir = mkdtempSync(join(tmpdir(), 'pyvisor-mbt-'));
  readonly #next = new Map<string, number>();

  /** Writes the next command of `channel`, atomically (synchronous: no event-loop turn). */
  send(channel: string, command: object): void {
    const n = this.#next.get(channel) ?? 0;
    this.#next.set(channel, n + 1);
    const tmp = join(this.dir, `.${channel}.${n}.tmp`);
    writeFileSync(tmp, JSON.stringify(command));
    renameSync(tmp, join(this.dir, `${channel}.${n}`));
  }

  has(name: string): boolean {
    return existsSync(join(this.dir, name));
  }

  remove(): void {
    rmSync(this.dir, { recursive: true, force: true });
  }
}

// ------------------------------------------------------------------------------------------
// The trace.

export interface TraceEntry {
  event: AnyEventObject;
  label: string;
  from: string;
  to: string;
  micro: string[];
  emitted: string[];
  effects: string[];
}

interface TrackedCall {
  call: PendingCall;
  controller: AbortController;
  outcome:
    | { kind: 'pending' }
    | { kind: 'resolved'; value: unknown }
    | { kind: 'rejected'; error: unknown };
}

export interface RealRunOptions {
  python: string;
  plan: Plan;
  /** Records a pid so the test can kill it whatever happens. */
  onPid(pid: number): void;
  /** The machine to run (default `workerMachine`), e.g. one with `.provide()`d implementations. */
  machine?: typeof workerMachine;
}

/** One real worker, driven through one planned path. */
export class RealWorker {
  readonly ctl = new Control();
  readonly actor: WorkerActor;
  readonly trace: TraceEntry[] = [];
  /** The entry each step of the path was matched with, in order. */
  readonly matched: TraceEntry[] = [];
  /** Entries the path did not mention (self-transitions only). */
  readonly tolerated: TraceEntry[] = [];
  /** Frames the machine wrote to the process. */
  readonly sent: NodeMessage[] = [];
  readonly emitted: WorkerEmitted[] = [];
  readonly calls = new Map<number, TrackedCall>();
  readonly killError = new PyvisorError('ERR_POOL_CLOSED', 'killed by the model-based test');
  pid: number | null = null;
  readonly #plan: Plan;
  #cursor = 0;
  #last: WorkerSnapshot | null = null;
  #micro: string[] = [];
  #pendingEmitted: string[] = [];
  #pendingEffects: string[] = [];
  #wake: (() => void) | null = null;
  /** The next `send` or `kill` throws {@link INJECTED_FAULT} (a `fault` prep). */
  #fault = false;
  /** Holds taken so far (the fixture acknowledges the n-th with file `held.<n>`). */
  #holds = 0;
  /** Calls the worker told its call source had started (pipelined calls). */
  readonly startedLater: number[] = [];

  constructor(options: RealRunOptions) {
    this.#plan = options.plan;
    const { config } = options.plan;
    const ctl = this.ctl;
    const sent = this.sent;
    const effects = (effect: string) => this.#pendingEffects.push(effect);
    const fault = () => {
      if (!this.#fault) return;
      this.#fault = false;
      throw INJECTED_FAULT;
    };
    const spawn: SpawnTransport = (spec, handlers) => {
      const transport = spawnChildProcess(spec, handlers);
      if (transport.pid !== undefined) {
        this.pid = transport.pid;
        options.onPid(transport.pid);
      }
      // Observe what the machine writes; everything goes to the real transport.
      return {
        get pid() {
          return transport.pid;
        },
        send(frame: Buffer) {
          const message = JSON.parse(frame.subarray(4).toString('utf8')) as NodeMessage;
          sent.push(message);
          effects(`frame:${message.t}`);
          fault();
          transport.send(frame);
        },
        kill(signal: NodeJS.Signals) {
          effects(`kill:${signal}`);
          fault();
          transport.kill(signal);
        },
        outputTail: () => transport.outputTail(),
      };
    };
    const startedLater = this.startedLater;
    const input = {
      ...modelInput(new Stubs(), {
        name: '',
        maxInFlight: config.maxInFlight,
        serial: config.serial,
      }),
      calls: {
        waiting: () => false,
        take: () => undefined,
        started: (_w: number, _g: number, call: { id: number }) => startedLater.push(call.id),
      },
      spec: {
        command: options.python,
        // -S: no site-packages (the fixture needs none, and a .pth file there can cost more than
        // the whole worker's start-up).
        args: ['-S', '-u', '-m', 'pyvisor', FIXTURE],
        env: {
          ...process.env,
          PYTHONPATH: PYTHON_DIR,
          PYVISOR_PARENT_PID: String(process.pid),
          MBT_CTL: ctl.dir,
          MBT_IGNORE_TERM: config.ignoreTerm ? '1' : '0',
          PYVISOR_CONCURRENCY: String(config.concurrency),
          // Node's spawn throws for a NUL byte in the environment, before it forks.
          ...(config.spawnFails ? { MBT_BROKEN: 'a\0b' } : {}),
        },
        cwd: REPO,
        maxMessageSize: 1 << 20,
        outputLines: 20,
      },
      spawn,
      initTimeout: config.initTimeout,
      cancelGrace: config.cancelGrace,
      healthTimeout: config.healthTimeout,
      stopTimeout: config.stopTimeout,
    };
    this.actor = createActor(options.machine ?? workerMachine, {
      input,
      inspect: (e) => this.#inspect(e),
    });
    this.actor.on('*', (event) => {
      this.emitted.push(event);
      this.#pendingEmitted.push(emittedName(event as { type: string; gone?: boolean }));
    });
  }

  #inspect(e: InspectionEvent): void {
    if (e.rootId !== e.actorRef.sessionId) return; // the process actor, not the worker
    if (e.type === '@xstate.microstep') {
      this.#micro.push(valueName((e.snapshot as WorkerSnapshot).value as StateValue));
    } else if (e.type === '@xstate.snapshot') {
      const snapshot = e.snapshot as WorkerSnapshot;
      const before = this.#last;
      this.#last = snapshot;
      const micro = this.#micro;
      const emitted = this.#pendingEmitted;
      const effects = this.#pendingEffects;
      this.#micro = [];
      this.#pendingEmitted = [];
      this.#pendingEffects = [];
      if (!before || e.event.type === 'xstate.init' || e.event.type === 'xstate.stop') return;
      this.trace.push({
        event: e.event,
        label: labelIn(before, e.event),
        from: fullKey(before),
        to: fullKey(snapshot),
        micro,
        emitted,
        effects,
      });
      const wake = this.#wake;
      this.#wake = null;
      wake?.();
    }
  }

  /** Runs the whole path; throws at the first step where the real worker differs from the model. */
  async run(): Promise<void> {
    const steps = this.#plan.steps;
    let i = 0;
    // Actor-side events before the spawn: queued, so processed before `process.spawned`.
    for (; i < steps.length && steps[i]!.stimulus.kind === 'prestart'; i++) {
      for (const prep of steps[i]!.prep) await this.#prepare(prep);
      this.#sendActorEvent(steps[i]!.step);
    }
    this.actor.start();
    for (const planned of steps) {
      if (planned.stimulus.kind !== 'prestart') {
        for (const prep of planned.prep) await this.#prepare(prep);
      }
      this.#stimulate(planned);
      this.matched.push(await this.#expect(planned.step));
      for (const id of planned.awaitStarted) {
        // Let the handler start before anything else reaches the process. (With the epoll reader,
        // the runtime does not see a cancel that it read in the same read() as its call until the
        // call ends; that is a runtime issue, not what these paths are about.)
        await until(() => this.ctl.has(`started.call${id}`), `call ${id} to start`);
      }
      if (planned.awaitCancelAck !== null) {
        const channel = `call${planned.awaitCancelAck}`;
        await until(() => this.ctl.has(`cancelled.${channel}`), `${channel} to swallow the cancel`);
      }
      this.#checkEffects(planned);
    }
  }

  async #prepare(prep: Prep): Promise<void> {
    if (prep === 'fault') {
      this.#fault = true;
    } else {
      const n = ++this.#holds;
      this.ctl.send('inject', { op: 'hold' });
      await until(() => this.ctl.has(`held.${n}`), 'the fixture to hold the reply pipe');
    }
  }

  /** Triggers a step. Synchronous on purpose: no event-loop turn between two steps. */
  #stimulate(planned: PlannedStep): void {
    const { step, stimulus } = planned;
    switch (stimulus.kind) {
      case 'prestart':
      case 'natural':
      case 'chunked':
        return;
      case 'send':
        this.#sendActorEvent(step);
        return;
      case 'init':
        this.ctl.send('init', stimulus.command);
        return;
      case 'call':
        this.ctl.send(`call${stimulus.callId}`, stimulus.command satisfies Command);
        return;
      case 'inject':
        this.ctl.send('inject', { op: 'raw', hex: Buffer.concat(stimulus.bytes).toString('hex') });
        return;
      case 'release':
        if (stimulus.command) {
          const { callId, command } = stimulus.command;
          this.ctl.send(`call${callId}`, command satisfies Command);
        }
        this.ctl.send('inject', {
          op: 'release',
          hex: Buffer.concat(stimulus.bytes).toString('hex'),
        });
        return;
      case 'signal':
        try {
          process.kill(this.pid!, stimulus.signal);
        } catch (error) {
          // Already gone: a process the worker failed to SIGKILL may be exiting by itself (after
          // an init error, or a stop), and the stimulus is then its own exit.
          if ((error as NodeJS.ErrnoException).code !== 'ESRCH') throw error;
        }
        return;
    }
  }

  #sendActorEvent(step: ReplayStep): void {
    const event = step.event;
    switch (event.type) {
      case 'call.start': {
        const id = event.call.id;
        const plan = this.#plan.calls.get(id);
        const stream = plan?.stream ?? false;
        const fn = plan?.fn ?? 'wait';
        const json = JSON.stringify({
          t: 'call',
          id,
          fn,
          args: [`call${id}`, plan?.onCancel ?? 'raise'],
          ...(stream ? { stream: true, credit: STREAM_WINDOW } : {}),
        });
        const controller = new AbortController();
        const call = new PendingCall({
          id,
          fn,
          frame: encodeFrame(json),
          stream,
          session: undefined,
          timeout: undefined,
          checkoutTimeout: undefined,
          signal: controller.signal,
          telemetry: null,
          // What the supervisor does for an abandoned call: cancel it on its worker.
          owner: {
            abandon: (c) => this.actor.send({ type: 'call.cancel', callId: c.id }),
            settled: () => {},
          },
        });
        const tracked: TrackedCall = { call, controller, outcome: { kind: 'pending' } };
        call.promise?.then(
          (value) => {
            tracked.outcome = { kind: 'resolved', value };
          },
          (error: unknown) => {
            tracked.outcome = { kind: 'rejected', error };
          },
        );
        this.calls.set(id, tracked);
        this.actor.send({ type: 'call.start', call });
        return;
      }
      case 'call.cancel': {
        const tracked = this.calls.get(event.callId);
        // The caller gives up (AbortSignal): the call rejects and its owner cancels it.
        if (tracked && !tracked.controller.signal.aborted) tracked.controller.abort();
        else this.actor.send({ type: 'call.cancel', callId: event.callId });
        return;
      }
      case 'stream.credit': {
        const tracked = this.calls.get(event.callId);
        // The worker's own port, as a consuming stream uses it.
        if (tracked?.call.worker) tracked.call.worker.grantCredit(event.callId, event.n);
        else this.actor.send({ type: 'stream.credit', callId: event.callId, n: event.n });
        return;
      }
      case 'health.check':
        this.actor.send({ type: 'health.check' });
        return;
      case 'worker.stop':
        this.actor.send({ type: 'worker.stop', reason: event.reason });
        return;
      case 'worker.kill':
        this.actor.send({ type: 'worker.kill', error: this.killError });
        return;
      // A stale timer: the test sends what the machine's own timer would have.
      case 'cancel.expired':
        this.actor.send({ type: 'cancel.expired', callId: event.callId });
        return;
      case 'health.timeout':
        this.actor.send({ type: 'health.timeout', pingId: event.pingId });
        return;
      default:
        throw new Error(`${step.label} is not an actor-side event`);
    }
  }

  /** Waits for the trace entry of `step` and checks it against the model. */
  async #expect(step: ReplayStep): Promise<TraceEntry> {
    const deadline = Date.now() + STEP_TIMEOUT;
    for (;;) {
      while (this.#cursor < this.trace.length) {
        const entry = this.trace[this.#cursor++]!;
        if (entry.from === step.from && entry.label === step.label) {
          const got = {
            to: entry.to,
            micro: entry.micro,
            emitted: entry.emitted,
            effects: [...entry.effects].sort(),
          };
          const want = {
            to: step.to,
            micro: step.micro,
            emitted: step.emitted,
            effects: [...step.effects].sort(),
          };
          if (JSON.stringify(got) !== JSON.stringify(want)) {
            throw new Error(
              `step ${step.index} (${step.from} --${step.label}-->): the worker did ` +
                `${JSON.stringify(got)}, the model ${JSON.stringify(want)}`,
            );
          }
          return entry;
        }
        if (entry.from !== step.from || entry.to !== entry.from) {
          throw new Error(
            `while waiting for step ${step.index} (${step.from} --${step.label}--> ${step.to}) ` +
              `the worker took ${entry.from} --${entry.label}--> ${entry.to}`,
          );
        }
        this.tolerated.push(entry);
      }
      const snapshot = this.actor.getSnapshot();
      if (snapshot.status === 'error') throw snapshot.error;
      const left = deadline - Date.now();
      if (left <= 0) {
        throw new Error(
          `timed out waiting for step ${step.index} (${step.from} --${step.label}--> ${step.to}); ` +
            `trace: ${this.trace.map((t) => `${t.from} --${t.label}--> ${t.to}`).join(' | ')}`,
        );
      }
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.#wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
    }
  }

  /** Side effects a self-transition is for, which the state value cannot show. */
  #checkEffects(planned: PlannedStep): void {
    const step = planned.step;
    const event = step.event;
    if (event.type === 'call.start' && !step.after.some((f) => f.id === event.call.id)) {
      // Bounced: handed back untouched.
      const tracked = this.calls.get(event.call.id)!;
      const bounced = this.emitted.find(
        (e) => e.type === 'worker.bounced' && e.call === tracked.call,
      );
      if (!bounced || tracked.call.phase !== 'queued') {
        throw new Error(`call ${event.call.id} was not bounced untouched`);
      }
    }
  }

  /** The final snapshot, once the actor is done (xstate's waitFor). */
  get output(): WorkerExit | undefined {
    const snapshot = this.actor.getSnapshot();
    return snapshot.status === 'done' ? snapshot.output : undefined;
  }

  /** Stops the actor (the invoked process actor SIGKILLs its process) and kills any leftover. */
  dispose(): void {
    this.actor.stop();
    if (this.pid !== null && isAlive(this.pid)) {
      try {
        process.kill(this.pid, 'SIGKILL');
      } catch {
        // Gone meanwhile.
      }
    }
  }
}

/** A marker for "still pending" when probing a promise. */
const PENDING = Symbol('pending');

/** Resolves with the promise's value if it settles within one macrotask, else with PENDING. */
export async function probe<T>(promise: Promise<T>): Promise<T | typeof PENDING> {
  return Promise.race([
    promise,
    new Promise<typeof PENDING>((r) => setImmediate(() => r(PENDING))),
  ]);
}

export { PENDING };
