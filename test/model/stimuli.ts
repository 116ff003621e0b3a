/**
 * How each model event is produced in the real world, for a real worker actor driving a real
 * `python3` running test/fixtures/mbt.py. `planPath` turns a replayed path into a list of
 * stimuli (what to do before each step and what triggers it), or says why the path cannot be
 * driven.
 *
 * The plan follows the process along the path: which calls it holds (running, or waiting behind
 * the running one in serial mode), and what it will write on its own, without being told (a pong,
 * the answer to a cancel, its exit once asked to stop). Such an answer must be the path's next
 * event, or be held back first: the fixture takes the runtime's write lock (`hold`), so the process
 * writes nothing until the test releases it.
 */
import { encodeFrame } from '../../src/protocol/index.js';
import {
  dedupe,
  describePath,
  lastTransitionKey,
  type ModelConfig,
  type Replay,
  type ReplayStep,
  stateKey,
  stateOf,
  transitionKey,
  transitionsOf,
  type WorkerModel,
  type WorkerPath,
} from './worker-model.js';

/** A command for one of the fixture's channels (see test/fixtures/mbt.py). */
export type Command =
  | { op: 'ok'; v?: unknown }
  | { op: 'fail' }
  | { op: 'crash' }
  | { op: 'raise' }
  | { op: 'item'; v: unknown }
  | { op: 'end' }
  | { op: 'exit'; code: number };

export type Stimulus =
  /** An actor-side event sent before `actor.start()`: it is processed before `process.spawned`. */
  | { kind: 'prestart' }
  /** Nothing to do: it happens by itself (the spawn report, a timer, an answer, an exit). */
  | { kind: 'natural'; why: string }
  /** An event sent to the actor now (from the supervisor's side, or a stale timer's). */
  | { kind: 'send' }
  /** A command for the fixture's `@on_init`. */
  | { kind: 'init'; command: Command }
  /** A command for the handler running call `callId`. */
  | { kind: 'call'; callId: number; command: Command }
  /** Bytes written to the reply pipe by the fixture's injection thread (`raw_write`). */
  | { kind: 'inject'; bytes: Buffer[] }
  /**
   * Bytes written by the injection thread while it holds the write lock, which it then drops; or,
   * with `command`, a handler told to answer first (its answer waits for the lock).
   */
  | { kind: 'release'; bytes: Buffer[]; command?: { callId: number; command: Command } }
  /** A signal the test sends to the process. */
  | { kind: 'signal'; signal: NodeJS.Signals }
  /** Written together with the previous step's bytes, in the same write. */
  | { kind: 'chunked' };

/**
 * Done before a step, while the worker is still in a stable state:
 * `hold`: the fixture's injection thread takes the runtime's write lock, so the process can write
 * nothing (no pong, no reply, no answer to a cancel) and does not finish exiting until a
 * `release`;
 * `fault`: the next `send` or `kill` the machine makes throws, once (the test's wrapper around the
 * real transport throws instead of passing it on), so the step's transport call fails.
 */
export type Prep = 'hold' | 'fault';

export interface PlannedStep {
  step: ReplayStep;
  prep: Prep[];
  stimulus: Stimulus;
  /** After the step, wait until the handler of this call acknowledged (swallowed) its cancel. */
  awaitCancelAck: number | null;
  /** After the step, wait until the handlers of these calls started. */
  awaitStarted: number[];
}

export interface CallPlan {
  /** The handler: `wait` / `wait_stream`, or their async twins with concurrency > 1. */
  fn: string;
  /** A streaming call, because the path streams items or credit. */
  stream: boolean;
  /** What the handler does with a cancel (`pyvisor.Cancelled`, or asyncio's CancelledError). */
  onCancel: 'raise' | 'swallow';
}

export interface RunConfig {
  initTimeout: number;
  cancelGrace: number;
  healthTimeout: number;
  stopTimeout: number;
  /** The fixture ignores SIGTERM (MBT_IGNORE_TERM=1). */
  ignoreTerm: boolean;
  /** The spawn throws: the spec's env has a value with a NUL byte, which node's spawn rejects. */
  spawnFails: boolean;
  /** The worker's maxInFlight and serial (from the model). */
  maxInFlight: number;
  serial: boolean;
  /** PYVISOR_CONCURRENCY of the process: 1 when serial, else maxInFlight. */
  concurrency: number;
}

export interface ExitExpectation {
  exitCode: number | null;
  signal: NodeJS.Signals | null;
}

export interface Plan {
  steps: PlannedStep[];
  config: RunConfig;
  calls: Map<number, CallPlan>;
  /** How the process may end, for a path ending in a final state. */
  exit: ExitExpectation[] | null;
}

export interface Infeasible {
  /** Index of the step that cannot be driven. */
  at: number;
  reason: string;
  /**
   * `transition`: no real-world stimulus can produce this transition at all; `prefix`: it can,
   * but not after the steps this path took to get there (another prefix may work).
   */
  scope: 'transition' | 'prefix';
}

export const NEVER = 60_000;

// Why some transitions of the machine cannot be driven by a real process. The tests assert that
// exactly these are excluded.
export const SPAWN_EXIT =
  'process.exited before process.spawned: spawnChildProcess returns the transport synchronously ' +
  'and the process actor reports process.spawned at once, while ChildProcess reports a failed ' +
  "spawn ('error') or an exit only asynchronously, so the worker is always initializing by then";
export const SPAWN_TIMEOUT =
  'the init timer cannot fire before process.spawned, which is processed in the same tick as ' +
  'actor.start(), before any timer';
export const KILL_WAIT =
  'killWait (5 s, not configurable) only fires for a process still there 5 s after SIGKILL: one ' +
  'stuck in uninterruptible sleep (the fixture always dies, and the transport reports the exit at ' +
  'most 100 ms later), or one whose SIGKILL threw (a fault), which would make each such path last ' +
  '5 s of real time; the unit tests and test/model/transport-failure.test.ts (a real process, a ' +
  'simulated clock) cover it';
export const NO_TRANSPORT_CALL =
  'process.failed in a state where the worker makes no transport call (no send, no kill): it can ' +
  'only come from a failure of the process actor itself, which the real one never has (it catches ' +
  'what the spawn throws, and its transport wrapper what send and kill throw); the unit tests ' +
  'cover it with a failing actor';
export const ANSWERED_BEFORE_START =
  'a reply other than its answer for a call cancelled before it started: the process answers ' +
  'such a cancel itself, at once (err, kind cancelled), and never runs the call; any other reply ' +
  'could only be injected, and the real answer would then follow as a reply for an unknown id';

/** The output's exit when no process was started (the spawn threw). */
const NO_PROCESS: ExitExpectation = { exitCode: null, signal: null };
const SIGKILLED: ExitExpectation = { exitCode: null, signal: 'SIGKILL' };
const EXIT_0: ExitExpectation = { exitCode: 0, signal: null };

const ACTOR_SIDE = new Set([
  'call.start',
  'call.cancel',
  'stream.credit',
  'health.check',
  'worker.stop',
  'worker.kill',
]);
const REPLIES = new Set(['python.ok', 'python.err', 'python.end', 'python.item']);
const TERMINAL = new Set(['python.ok', 'python.err', 'python.end']);
const STREAMING = new Set(['python.item', 'python.end', 'stream.credit']);

/** A frame the transport cannot decode (its body is not JSON): a protocol error. */
export const GARBAGE = encodeFrame('this is not JSON');

/**
 * A timer event the machine cannot receive from its own timers (`cancel.expired` for a call no
 * longer in flight, `health.timeout` of a check that is over, either of them once the worker is
 * stopping or killing): each is cancelled as its call or check is answered, in the same
 * macrotask. They are sent to the actor, which must ignore them.
 */
export function isStaleTimer(step: ReplayStep): boolean {
  const type = step.event.type;
  if (type !== 'cancel.expired' && type !== 'health.timeout') return false;
  const state = stateOf(step.from);
  // Outside ready and busy no call or check is in progress any more (in killing the process is
  // gone long before a timer could fire).
  if (state !== 'ready' && state !== 'busy') return true;
  return step.label === 'cancel.expired(unknown)' || step.label === 'health.timeout(stale)';
}

/** Sent to the actor by the test: supervisor-side events, and stale timers. */
export function isActorSide(step: ReplayStep): boolean {
  return ACTOR_SIDE.has(step.event.type) || isStaleTimer(step);
}

/** Events that are bytes on the reply pipe: frames, and undecodable bytes (protocol errors). */
export function isBytes(step: ReplayStep): boolean {
  return step.event.type.startsWith('python.') || step.event.type === 'process.protocolError';
}

export function bytesOf(step: ReplayStep): Buffer {
  const event = step.event;
  if (event.type === 'process.protocolError') return GARBAGE;
  if ('message' in event) return encodeFrame(JSON.stringify(event.message));
  throw new Error(`${step.label} is not a frame`);
}

/** Something the process will write (or do) on its own, as soon as it can. */
interface Due {
  type: 'python.pong' | 'python.err' | 'process.exited';
  id?: number;
  why: string;
}

function matches(step: ReplayStep, due: Due): boolean {
  if (step.event.type !== due.type) return false;
  if (due.id === undefined) return true;
  const id = (step.event as { message?: { id?: number } }).message?.id;
  return id === due.id;
}

/** A reply event's command for the handler of its call. */
function commandFor(step: ReplayStep): Command {
  const message = (step.event as { message: { v?: unknown } }).message;
  switch (step.event.type) {
    case 'python.ok':
      return { op: 'ok', v: message.v };
    case 'python.item':
      return { op: 'item', v: message.v };
    case 'python.end':
      return { op: 'end' };
    default:
      return { op: 'raise' };
  }
}

export function planPath(steps: ReplayStep[], model: ModelConfig): Plan | Infeasible {
  const n = steps.length;
  const loop = !model.serial;
  const from = (i: number) => stateOf(steps[i]!.from);
  const later = (i: number, test: (s: ReplayStep) => boolean) => steps.slice(i).some(test);

  const config: RunConfig = {
    initTimeout: later(0, (s) => s.label === 'after(initTimeout)') ? 300 : NEVER,
    cancelGrace: later(0, (s) => /^cancel\.expired\(\d+\)$/.test(s.label)) ? 250 : NEVER,
    healthTimeout: later(0, (s) => s.label === 'health.timeout(current)') ? 250 : NEVER,
    stopTimeout: NEVER,
    ignoreTerm: later(0, (s) => stateOf(s.from) === 'terminating' && s.label !== 'process.exited'),
    // process.failed before the spawn was reported: while spawning, or killing after a stop.
    spawnFails: later(0, (s) => !s.spawned && s.label === 'process.failed'),
    maxInFlight: model.maxInFlight,
    serial: model.serial,
    concurrency: model.serial ? 1 : model.maxInFlight,
  };
  if (later(0, (s) => s.label === 'after(stopTimeout)')) {
    // While terminating something must happen before the second stopTimeout: leave it time.
    const busyTerminating = later(
      0,
      (s) =>
        stateOf(s.from) === 'terminating' &&
        s.label !== 'process.exited' &&
        s.label !== 'after(stopTimeout)',
    );
    config.stopTimeout = busyTerminating ? 1000 : 300;
  }

  // Which handler runs each call the worker accepts.
  const calls = new Map<number, CallPlan>();
  for (const s of steps) {
    if (s.event.type !== 'call.start') continue;
    const id = s.event.call.id;
    if (!s.after.some((f) => f.id === id) || s.before.some((f) => f.id === id)) continue;
    const stream = steps.some(
      (x) => x.index > s.index && x.target === id && STREAMING.has(x.event.type),
    );
    const fn = (loop ? 'await_' : '') + (stream ? 'wait_stream' : 'wait');
    calls.set(id, { fn, stream, onCancel: 'swallow' });
  }

  const planned: PlannedStep[] = steps.map((step) => ({
    step,
    prep: [],
    stimulus: { kind: 'natural', why: '' },
    awaitCancelAck: null,
    awaitStarted: [],
  }));
  const fail = (at: number, reason: string, scope: Infeasible['scope']): Infeasible => ({
    at,
    reason,
    scope,
  });
  const set = (i: number, stimulus: Stimulus) => {
    planned[i]!.stimulus = stimulus;
  };

  // The process, as the plan follows it.
  let held = false; // the fixture holds the write lock
  let released = false; // the previous step released it
  let due: Due[] = []; // what the process writes (or does) on its own, in order
  const py: number[] = []; // calls it holds (not answered), in the order they were sent
  const ghosts = new Set<number>(); // held by it, though their reply was injected
  const raising = new Set<number>(); // let their cancel end them: the answer is due
  const deaf = new Set<number>(); // their cancel is read only after a release
  let exitAsked = false; // the exit frame was sent
  const cancelTimers: number[] = []; // calls whose cancel.expired is scheduled, in that order
  let exit: ExitExpectation[] | null = null;
  // Killing entered through a natural init_error: the runtime may exit(1) before SIGKILL lands.
  let killingByInitError = false;
  let killingFromStopping = false;
  // The SIGKILL sent while killing threw: the process lives on until the test kills it.
  let killThrew = false;

  const runningInPython = (): number[] => (loop ? [...py] : py.slice(0, 1));
  /** The step may wait for the process (an acknowledgement) after it is matched. */
  const mayAwait = (j: number) => {
    const s = steps[j]!;
    if (s.started.length > 0) return true;
    // A handler acknowledges a cancel it swallows.
    return s.event.type === 'call.cancel' && s.before.some((f) => f.id === s.target && f.started);
  };
  /** Sent to the actor in the same tick as the previous step was matched: nothing comes between. */
  const instant = (j: number) =>
    isActorSide(steps[j]!) && j > 0 && !mayAwait(j - 1) && !planned[j]!.prep.includes('hold');
  /** The step's transport call throws (the next step is its process.failed): nothing is sent. */
  const faulted = (i: number) => {
    const next = steps[i + 1];
    return next !== undefined && next.label === 'process.failed' && next.spawned;
  };
  /**
   * The process would write what is due (in that order) before the path wants it: it must be held
   * back from step i on.
   */
  const needsHold = (i: number) => {
    const queue = [...due];
    for (let j = i + 1; j < n && queue.length > 0; j++) {
      if (matches(steps[j]!, queue[0]!)) queue.shift();
      else if (!instant(j)) return true;
    }
    return false;
  };
  /** `d` is now due; holds the process back from step i on if the path wants something else. */
  const expect = (i: number, d: Due): boolean => {
    due.push(d);
    if (!held && needsHold(i)) {
      // Taking the lock waits for the fixture: what was due before could come out meanwhile.
      if (due.length > 1) return false;
      planned[i]!.prep.push('hold');
      held = true;
    }
    return true;
  };
  const cannotHold = (i: number) =>
    fail(i, 'the process answers first: it cannot be held back in time', 'prefix');
  /** The call's answer is out: the process no longer holds it. */
  const answered = (id: number) => {
    const k = py.indexOf(id);
    if (k >= 0) py.splice(k, 1);
    raising.delete(id);
    ghosts.delete(id);
  };
  const nextIsBytesInKilling = (i: number) => {
    const next = steps[i + 1];
    return next !== undefined && stateOf(next.from) === 'killing' && isBytes(next);
  };
  // A reply that ends the call and retires the worker (it was asked to stop meanwhile): if the
  // path then wants the worker to stay in `stopping`, the reply is injected while the handler
  // keeps running, so the process does not exit (the runtime finishes its calls before it obeys
  // `exit`).
  const replyKeepsHandler = (i: number) => {
    const s = steps[i]!;
    const next = steps[i + 1];
    return (
      TERMINAL.has(s.event.type) &&
      stateOf(s.to) === 'asking' &&
      next !== undefined &&
      next.label !== 'process.exited'
    );
  };

  for (let i = 0; i < n; i++) {
    const s = steps[i]!;
    const state = from(i);
    const to = stateOf(s.to);
    const label = s.label;
    const last = i === n - 1;
    const runningBefore = runningInPython();
    const enteringKilling = to === 'killing' && state !== 'killing';
    if (enteringKilling) {
      killingByInitError = false;
      killingFromStopping = false;
      killThrew = false;
    }

    if (label === 'process.failed') {
      if (!s.spawned) {
        // While spawning, or killing after a stop that came before the spawn: the spawn throws,
        // nothing is started, and the worker ends at once.
        set(i, { kind: 'natural', why: 'the spawn throws (config.spawnFails)' });
        exit = [NO_PROCESS];
      } else if (state === 'initializing' || (state === 'ready' && !s.checking)) {
        return fail(i, NO_TRANSPORT_CALL, 'transition');
      } else if (i > 0 && steps[i - 1]!.effects.length > 0) {
        // The spawn reported in `killing` (after a stop that came first) happens inside
        // actor.start(): its SIGKILL can only be made to throw by a prep made before the start.
        const carrier = steps[i - 1]!.label === 'process.spawned' ? 0 : i - 1;
        planned[carrier]!.prep.push('fault');
        // The frame of the previous step never reached the process (see `faulted`).
        planned[i - 1]!.awaitStarted = [];
        set(i, { kind: 'natural', why: 'the transport call of the previous step throws' });
        // From ready, busy or stopping, the worker now kills the process (that SIGKILL goes
        // through: a fault is for one call), and its exit ends the worker. In killing, the
        // SIGKILL that threw was the one meant to end the process.
        if (state === 'killing') killThrew = true;
      } else {
        return fail(i, 'the step before it makes no transport call that could throw', 'prefix');
      }
      if (enteringKilling) {
        due = [];
        held = false;
      }
      continue;
    }

    if (!s.spawned) {
      // No process reported yet: spawning, or killing after a stop that came first.
      if (isActorSide(s)) {
        if (planned.slice(0, i).some((p) => p.stimulus.kind !== 'prestart')) {
          return fail(i, 'an actor-side event before the spawn must come first', 'prefix');
        }
        set(i, { kind: 'prestart' });
      } else if (label === 'process.spawned') {
        set(i, { kind: 'natural', why: 'the process actor reports the spawn on start' });
      } else if (state === 'spawning') {
        return fail(i, label === 'process.exited' ? SPAWN_EXIT : SPAWN_TIMEOUT, 'transition');
      } else if (label === 'process.exited') {
        set(i, { kind: 'natural', why: 'the process is SIGKILLed as soon as it is spawned' });
        if (last) exit = [SIGKILLED];
      } else if (label === 'after(killWait)') {
        return fail(i, KILL_WAIT, 'transition');
      } else {
        return fail(i, 'the process is SIGKILLed as it is spawned: it sends nothing', 'prefix');
      }
      continue;
    }

    // The process writes what is due on its own before anything else the path wants, unless the
    // event is sent to the actor in the same tick as the previous one was matched (not after a
    // release: what it lets out may come in the same read as the released bytes).
    const first = due[0];
    if (
      first &&
      !held &&
      state !== 'killing' &&
      !matches(s, first) &&
      !(isActorSide(s) && instant(i) && !released)
    ) {
      return fail(i, `the process answers first: ${first.why}`, 'prefix');
    }
    released = false;
    // Once the process holds a blocked write, it reads nothing more until the release.
    const blocked = held && due.some((d) => d.type !== 'process.exited');

    if (isActorSide(s)) {
      if (state === 'killing' && !instant(i)) {
        return fail(i, 'the SIGKILLed process would be gone before it', 'prefix');
      }
      set(i, { kind: 'send' });
      const event = s.event;
      if (faulted(i)) {
        // Nothing reaches the process.
      } else if (event.type === 'call.start') {
        const id = event.call.id;
        const accepted = s.after.some((f) => f.id === id) && !s.before.some((f) => f.id === id);
        if (accepted) {
          py.push(id);
          const runs = runningInPython().includes(id);
          if (s.started.includes(id) !== runs) {
            return fail(
              i,
              'the process would not run the call when the worker says it starts ' +
                '(a handler whose reply was injected still runs)',
              'prefix',
            );
          }
          if (runs && blocked) {
            return fail(i, 'the process reads nothing while its write is held back', 'prefix');
          }
        }
      } else if (event.type === 'call.cancel' && s.effects.includes('frame:cancel')) {
        const id = s.target!;
        cancelTimers.push(id);
        if (py.includes(id) && !ghosts.has(id)) {
          if (runningInPython().includes(id) && blocked) {
            // The process reads the cancel only once released: the handler must not be told
            // anything meanwhile, and it swallows the cancel whenever that comes.
            deaf.add(id);
          } else if (runningInPython().includes(id)) {
            // The handler lets the cancel end it only if its answer is what the path wants next.
            let j = i + 1;
            while (j < n && instant(j) && !matches(steps[j]!, { type: 'python.err', id, why: '' }))
              j++;
            const raise = j < n && matches(steps[j]!, { type: 'python.err', id, why: '' }) && !held;
            calls.get(id)!.onCancel = raise ? 'raise' : 'swallow';
            if (raise) {
              raising.add(id);
              due.push({ type: 'python.err', id, why: `the handler of call ${id} ends on cancel` });
            } else {
              planned[i]!.awaitCancelAck = id;
            }
          } else {
            // Waiting behind the running call: the process drops it and answers at once.
            answered(id);
            const d: Due = {
              type: 'python.err',
              id,
              why: `call ${id} was cancelled before it started`,
            };
            if (!expect(i, d)) return cannotHold(i);
          }
        }
      } else if (event.type === 'health.check' && s.effects.includes('frame:ping')) {
        const d: Due = {
          type: 'python.pong',
          id: s.next.context.pingId,
          why: 'the runtime answers the ping',
        };
        if (!expect(i, d)) return cannotHold(i);
      } else if (event.type === 'worker.stop' && s.effects.includes('frame:exit')) {
        exitAsked = true;
      }
      // SIGKILL races with an exit the process was already making.
      if (enteringKilling) killingFromStopping = state === 'asking' || state === 'terminating';
    } else if (label === 'process.exited') {
      if (state === 'initializing') {
        set(i, { kind: 'init', command: { op: 'crash' } });
        exit = [{ exitCode: 3, signal: null }];
      } else if (state === 'ready' || state === 'busy') {
        const runner = runningInPython().find((id) => !raising.has(id));
        if (runner !== undefined) {
          set(i, { kind: 'call', callId: runner, command: { op: 'exit', code: 7 } });
          exit = [{ exitCode: 7, signal: null }];
        } else {
          set(i, { kind: 'signal', signal: 'SIGKILL' });
          exit = [SIGKILLED];
        }
      } else if (state === 'asking' || state === 'terminating') {
        const ghost = runningInPython().find((id) => ghosts.has(id));
        if (state === 'terminating' && !config.ignoreTerm) {
          set(i, { kind: 'natural', why: 'SIGTERM ends the process' });
          exit = [{ exitCode: null, signal: 'SIGTERM' }];
        } else if (held) {
          if (py.length > 0) return fail(i, 'a handler still runs', 'prefix');
          set(i, { kind: 'release', bytes: [] });
          held = false;
          released = true;
          exit = [EXIT_0];
        } else if (ghost !== undefined && py.length === 1) {
          // Its reply is ignored: the worker is stopping.
          set(i, { kind: 'call', callId: ghost, command: { op: 'ok', v: null } });
          answered(ghost);
          exit = [EXIT_0];
        } else if (py.length === 0) {
          set(i, { kind: 'natural', why: 'the runtime obeys exit' });
          exit = [EXIT_0];
        } else {
          return fail(i, 'calls still run in the process', 'prefix');
        }
        due = due.filter((d) => d.type !== 'process.exited');
      } else if (state === 'killing') {
        if (killThrew) {
          // Unless the process was exiting anyway (below), it survives the SIGKILL that threw.
          set(i, { kind: 'signal', signal: 'SIGKILL' });
        } else {
          set(i, { kind: 'natural', why: 'the SIGKILL sent on entering killing' });
        }
        exit = [SIGKILLED];
        if (killingByInitError) exit.push({ exitCode: 1, signal: null });
        if (killingFromStopping) exit.push(EXIT_0);
      } else {
        return fail(i, `no stimulus for ${label} in ${state}`, 'transition');
      }
    } else if (label.startsWith('after(')) {
      if (label === 'after(initTimeout)' && state === 'initializing') {
        set(i, { kind: 'natural', why: 'no init command: the init timer fires' });
      } else if (label === 'after(stopTimeout)') {
        if (!held && py.length === 0) {
          return fail(i, 'the process exits before the stop timer fires', 'prefix');
        }
        set(i, {
          kind: 'natural',
          why:
            state === 'asking'
              ? 'the process does not exit in time'
              : 'the process ignores SIGTERM',
        });
      } else if (label === 'after(killWait)') {
        return fail(i, KILL_WAIT, 'transition');
      } else {
        return fail(i, `no stimulus for ${label} in ${state}`, 'transition');
      }
    } else if (label === 'health.timeout(current)') {
      if (!held) return fail(i, 'the pong is not held back', 'prefix');
      set(i, { kind: 'natural', why: 'the pong is held back: healthTimeout fires' });
    } else if (s.event.type === 'cancel.expired') {
      const id = s.target!;
      const live = cancelTimers.filter((c) => s.before.some((f) => f.id === c && f.cancelled));
      if (live[0] !== id) return fail(i, 'the timer of another cancel fires first', 'prefix');
      const swallowing = py.includes(id) && !raising.has(id);
      const withheld = held && due.some((d) => d.type === 'python.err' && d.id === id);
      if (!swallowing && !withheld) {
        return fail(i, `the cancel of call ${id} is answered before cancelGrace`, 'prefix');
      }
      set(i, { kind: 'natural', why: 'the cancel is not answered: cancelGrace fires' });
    } else if (isBytes(s)) {
      const id = s.target;
      const event = s.event.type;
      const forCall = id !== null && REPLIES.has(event);
      // With concurrency > 1 the runtime ends a stream whose handler swallowed its cancel and
      // yields again (an err, cancelled): an item after a cancel can only be injected there.
      const cancelledStream =
        loop && event === 'python.item' && s.before.some((f) => f.id === id && f.cancelled);
      const handlerRuns =
        forCall &&
        runningInPython().includes(id) &&
        !ghosts.has(id) &&
        !raising.has(id) &&
        !cancelledStream;
      if (first && !held && matches(s, first)) {
        set(i, { kind: 'natural', why: first.why });
        due.shift();
        if (first.id !== undefined) answered(first.id);
      } else if (state === 'killing') {
        const previous = planned[i - 1]!;
        const prior = steps[i - 1]!;
        const carrier = previous.stimulus;
        if (
          (carrier.kind === 'inject' || (carrier.kind === 'release' && !carrier.command)) &&
          prior.event.type !== 'process.protocolError'
        ) {
          carrier.bytes.push(bytesOf(s));
          set(i, { kind: 'chunked' });
        } else {
          return fail(
            i,
            'bytes can only reach a killing worker in the same write as the frame that made it ' +
              'kill (the process dies at once, and after undecodable bytes nothing is read)',
            'prefix',
          );
        }
      } else if (
        forCall &&
        !py.includes(id) &&
        due.some((d) => d.type === 'python.err' && d.id === id)
      ) {
        return fail(i, ANSWERED_BEFORE_START, 'transition');
      } else if (held) {
        const d = due[0];
        if (d && matches(s, d)) {
          set(i, { kind: 'release', bytes: [] });
          due.shift();
          if (d.id !== undefined) answered(d.id);
        } else if (handlerRuns && due.length === 0 && !replyKeepsHandler(i)) {
          // The handler answers; its write waits for the lock, which the fixture then drops.
          set(i, { kind: 'release', bytes: [], command: { callId: id, command: commandFor(s) } });
          if (TERMINAL.has(event)) answered(id);
        } else {
          set(i, { kind: 'release', bytes: [bytesOf(s)] });
          if (forCall && TERMINAL.has(event) && py.includes(id)) ghosts.add(id);
        }
        held = false;
        released = true;
        if (due.length > 1) return fail(i, 'two answers come out in either order', 'prefix');
      } else if (state === 'initializing') {
        if (label === 'python.ready') set(i, { kind: 'init', command: { op: 'ok' } });
        else if (label === 'python.initError' && !nextIsBytesInKilling(i)) {
          set(i, { kind: 'init', command: { op: 'fail' } });
          killingByInitError = true;
        } else set(i, { kind: 'inject', bytes: [bytesOf(s)] });
      } else if (handlerRuns && !replyKeepsHandler(i)) {
        set(i, { kind: 'call', callId: id, command: commandFor(s) });
        if (TERMINAL.has(event)) answered(id);
      } else {
        if ((state === 'asking' || state === 'terminating') && py.length === 0) {
          return fail(i, 'the process exits first', 'prefix');
        }
        set(i, { kind: 'inject', bytes: [bytesOf(s)] });
        if (forCall && TERMINAL.has(event) && py.includes(id)) ghosts.add(id);
      }
    } else {
      return fail(i, `no stimulus for ${label} in ${state}`, 'transition');
    }

    if (to === 'killing' || !s.to.startsWith('alive.')) {
      // The process is being killed (or is gone): what it would still write no longer matters.
      due = [];
      held = false;
      py.length = 0;
      continue;
    }
    // A call that starts in this step: the worker says it started, and so must the process.
    const runningAfter = runningInPython();
    for (const id of faulted(i) ? [] : s.started) {
      if (!runningAfter.includes(id) || ghosts.has(id)) {
        return fail(
          i,
          `call ${id} does not start in the process (a handler whose reply was injected still runs)`,
          'prefix',
        );
      }
    }
    planned[i]!.awaitStarted = runningAfter.filter(
      (id) => !runningBefore.includes(id) && !ghosts.has(id),
    );
    // Asked to stop and holding no call: it exits (unless held back: the atexit hook waits).
    if (exitAsked && py.length === 0 && !due.some((d) => d.type === 'process.exited')) {
      if (!expect(i, { type: 'process.exited', why: 'the runtime obeys exit' }))
        return cannotHold(i);
    }
  }
  // A cancel read only after a release could land while the handler carries out a command.
  const commandedLater = planned.some(
    (p) =>
      (p.stimulus.kind === 'call' && deaf.has(p.stimulus.callId)) ||
      (p.stimulus.kind === 'release' && p.stimulus.command && deaf.has(p.stimulus.command.callId)),
  );
  if (commandedLater) {
    return fail(n - 1, 'a handler is told something before it has seen its cancel', 'prefix');
  }
  // A swallowed cancel must have been swallowed before the handler gets its next command (else the
  // cancel could land while it carries the command out); without a next command there is nothing
  // to wait for, and waiting could outlast a short cancelGrace.
  planned.forEach((p, i) => {
    const id = p.awaitCancelAck;
    if (id === null) return;
    const commanded = planned.slice(i + 1).some((q) => {
      const st = q.stimulus;
      return (
        (st.kind === 'call' && st.callId === id) ||
        (st.kind === 'release' && st.command?.callId === id)
      );
    });
    if (!commanded) p.awaitCancelAck = null;
  });
  return { steps: planned, config, calls, exit };
}

// ------------------------------------------------------------------------------------------
// All paths.

export interface Run {
  path: WorkerPath;
  replay: Replay;
  plan: Plan;
  /** The generated path could not be driven as is; this one reaches its last transition otherwise. */
  reroutedFrom: string | null;
  /** Other generated paths whose last transition (an ignored event) this run takes too. */
  merged: number;
}

export interface Exclusion {
  /** The transition no real-world stimulus can produce: `from --event--> to` (state keys). */
  transition: string;
  reason: string;
}

export interface Suite {
  generated: WorkerPath[];
  runs: Run[];
  exclusions: Exclusion[];
}

/**
 * Plans every generated path. A path whose prefix cannot be driven is rerouted: its last
 * transition is appended (with xstate/graph) to another generated path that ends in the same
 * state, the shortest one that can be driven. A transition that no path can drive is an
 * exclusion. Paths that end with an ignored event after the same prefix are merged into one run
 * (as many of those events as can be driven one after another), and paths that are a prefix of
 * another one are then dropped.
 */
export function planSuite(model: WorkerModel): Suite {
  const all = model.generatePaths();
  const keep = model.config.paths;
  const generated = keep ? all.filter(keep) : all;
  const plan = (path: WorkerPath) => {
    const again = model.replay(path);
    return { replay: again, plan: planPath(again.steps, model.config) };
  };
  const byLength = [...all].sort((a, b) => a.steps.length - b.steps.length);
  const feasible: Run[] = [];
  const exclusions: Exclusion[] = [];
  for (const path of generated) {
    const first = plan(path);
    const result = first.plan;
    if (!('reason' in result)) {
      feasible.push({ path, replay: first.replay, plan: result, reroutedFrom: null, merged: 0 });
      continue;
    }
    const steps = transitionsOf(path);
    const last = steps[steps.length - 1]!;
    let rerouted: Run | null = null;
    // Why the transition is excluded: its own reason if some prefix reaches it but it cannot be
    // driven from there, else why this path's prefix cannot be driven.
    let reason = result.reason;
    if (!(result.scope === 'transition' && result.at === steps.length - 1)) {
      for (const head of byLength) {
        if (stateKey(head.state) !== stateKey(last.from)) continue;
        const extended = model.extendPath(head, last.label);
        if (!extended || lastTransitionKey(extended) !== lastTransitionKey(path)) continue;
        const again = plan(extended);
        if ('reason' in again.plan) {
          if (
            again.plan.scope === 'transition' &&
            again.plan.at === again.replay.steps.length - 1
          ) {
            reason = again.plan.reason;
          }
          continue;
        }
        rerouted = {
          path: extended,
          replay: again.replay,
          plan: again.plan,
          reroutedFrom: describePath(path),
          merged: 0,
        };
        break;
      }
    }
    if (rerouted) feasible.push(rerouted);
    else exclusions.push({ transition: lastTransitionKey(path), reason });
  }
  // A path that ends while the worker is killing its process stops short of the outcome: let it
  // run on to the exit the SIGKILL causes, so the output (reason, error, exit) is checked too.
  for (const [i, run] of feasible.entries()) {
    if (stateOf(stateKey(run.path.state)) !== 'killing') continue;
    const extended = model.extendPath(run.path, 'process.exited');
    if (!extended) continue;
    const again = plan(extended);
    if (!('reason' in again.plan)) {
      feasible[i] = { ...run, path: extended, replay: again.replay, plan: again.plan };
    }
  }
  const merged = mergeIgnored(model, feasible, plan);
  const kept = new Set(dedupe(merged.map((run) => run.path)));
  return { generated, runs: merged.filter((run) => kept.has(run.path)), exclusions };
}

/**
 * Runs whose last transition is an ignored event (the state stays as it is) after the same
 * prefix become one run that takes them one after another, as far as the plan can drive them.
 */
function mergeIgnored(
  model: WorkerModel,
  runs: Run[],
  plan: (path: WorkerPath) => { replay: Replay; plan: Plan | Infeasible },
): Run[] {
  const groups = new Map<string, Run[]>();
  const out: Run[] = [];
  for (const run of runs) {
    const steps = transitionsOf(run.path);
    const last = steps.at(-1);
    if (!last || stateKey(last.from) !== stateKey(last.to) || run.reroutedFrom !== null) {
      out.push(run);
      continue;
    }
    const prefix = steps
      .slice(0, -1)
      .map((t) => `${stateKey(t.from)}|${t.label}`)
      .join(' ');
    const group = groups.get(prefix) ?? [];
    group.push(run);
    groups.set(prefix, group);
  }
  for (const group of groups.values()) {
    // First fit: each run goes to the first host that can take its last event after its own.
    const hosts: Run[] = [];
    for (const run of group) {
      const wanted = lastTransitionKey(run.path);
      const event = transitionsOf(run.path).at(-1)!.label;
      let placed = false;
      for (const [k, host] of hosts.entries()) {
        const extended = model.extendPath(host.path, event);
        if (!extended || transitionKey(transitionsOf(extended).at(-1)!) !== wanted) continue;
        const again = plan(extended);
        if ('reason' in again.plan) continue;
        hosts[k] = {
          ...host,
          path: extended,
          replay: again.replay,
          plan: again.plan,
          merged: host.merged + 1,
        };
        placed = true;
        break;
      }
      if (!placed) hosts.push(run);
    }
    out.push(...hosts);
  }
  return out;
}
