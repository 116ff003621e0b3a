/**
 * How each model event is produced in the real world, for a real worker actor driving a real
 * `python3` running test/fixtures/mbt.py. `planPath` turns a replayed path into a list of
 * stimuli (what to do before each step and what triggers it), or says why the path cannot be
 * driven.
 *
 * The stimulus of an event depends on the state it arrives in, and sometimes on what comes next:
 * a state that the real process would leave on its own (a health check is answered within
 * microseconds, a stopping worker exits, a killed one dies) must be held still first when the
 * path wants something else to happen there.
 */
import { encodeFrame } from '../../src/protocol/index.js';
import {
  dedupe,
  describePath,
  extendPath,
  lastTransitionKey,
  leaf,
  type Replay,
  type ReplayStep,
  replay,
  transitionsOf,
  valueName,
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
  /** Nothing to do: it happens by itself (the spawn report, a timer, a reply, an exit). */
  | { kind: 'natural'; why: string }
  /** An actor-side event (from the supervisor's side) sent to the actor now. */
  | { kind: 'send' }
  /** A command for the fixture's `@on_init`. */
  | { kind: 'init'; command: Command }
  /** A command for the handler running the current call. */
  | { kind: 'call'; command: Command }
  /** Bytes written to the reply pipe by the fixture's injection thread (`raw_write`). */
  | { kind: 'inject'; bytes: Buffer[] }
  /** Bytes written by the injection thread while it holds the write lock, which it then drops. */
  | { kind: 'release'; bytes: Buffer[] }
  /** A signal the test sends to the process. */
  | { kind: 'signal'; signal: NodeJS.Signals }
  /** Written together with the previous step's bytes, in the same write. */
  | { kind: 'chunked' };

/**
 * Done before a step, while the worker is still in a stable state:
 * `hold`: the fixture's injection thread takes the runtime's write lock, so the process can write
 * nothing (no pong, no reply) and does not finish exiting until a `release`;
 * `sigstop`: the test freezes the process (SIGSTOP), so it cannot answer a health check;
 * `fault`: the next `send` or `kill` the machine makes throws, once (the test's wrapper around the
 * real transport throws instead of passing it on), so the step's transport call fails.
 */
export type Prep = 'hold' | 'sigstop' | 'fault';

export interface PlannedStep {
  step: ReplayStep;
  prep: Prep[];
  stimulus: Stimulus;
  /** After the step, wait until the handler acknowledged (swallowed) the cancel. */
  awaitCancelAck: boolean;
}

export interface CallPlan {
  /** A streaming call (handler `wait_stream`), because the path streams items or credit. */
  stream: boolean;
  /** What the handler does with `pyvisor.Cancelled`. */
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

// Why some transitions of the machine cannot be driven by a real process. The test asserts that
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

/** The output's exit when no process was started (the spawn threw). */
const NO_PROCESS: ExitExpectation = { exitCode: null, signal: null };

const ACTOR_SIDE = new Set([
  'call.start',
  'call.cancel',
  'stream.credit',
  'health.check',
  'worker.stop',
  'worker.kill',
]);
const STREAMING = new Set([
  'python.item(running)',
  'python.end(running)',
  'stream.credit(running)',
]);
const TERMINAL_REPLIES = new Set([
  'python.ok(running)',
  'python.err(running)',
  'python.end(running)',
]);

/** A frame the transport cannot decode (its body is not JSON): a protocol error. */
export const GARBAGE = encodeFrame('this is not JSON');

export function isActorSide(step: ReplayStep): boolean {
  return ACTOR_SIDE.has(step.event.type);
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

const SIGKILLED: ExitExpectation = { exitCode: null, signal: 'SIGKILL' };

export function planPath(steps: ReplayStep[]): Plan | Infeasible {
  const n = steps.length;
  const from = (i: number) => leaf(steps[i]!.from);
  const later = (i: number, test: (s: ReplayStep) => boolean) => steps.slice(i).some(test);

  const config: RunConfig = {
    initTimeout: later(0, (s) => s.label === 'after(initTimeout)') ? 300 : NEVER,
    cancelGrace: later(0, (s) => s.label === 'after(cancelGrace)') ? 250 : NEVER,
    healthTimeout: later(0, (s) => s.label === 'after(healthTimeout)') ? 250 : NEVER,
    stopTimeout: NEVER,
    ignoreTerm: later(0, (s) => leaf(s.from) === 'terminating' && s.label !== 'process.exited'),
    // process.failed before the spawn was reported: while spawning, or killing after a stop.
    spawnFails: later(0, (s) => !s.spawned && s.label === 'process.failed'),
  };
  if (later(0, (s) => s.label === 'after(stopTimeout)')) {
    // While terminating something must happen before the second stopTimeout: leave it time.
    const busyTerminating = later(
      0,
      (s) =>
        leaf(s.from) === 'terminating' &&
        s.label !== 'process.exited' &&
        s.label !== 'after(stopTimeout)',
    );
    config.stopTimeout = busyTerminating ? 1000 : 300;
  }

  // Which handler runs each call, and how it treats a cancel.
  const calls = new Map<number, CallPlan>();
  for (const s of steps) {
    if (s.event.type !== 'call.start' || s.callBefore !== null || s.callAfter === null) continue;
    const id = s.callAfter;
    const life = steps.filter((x) => x.index > s.index && x.callBefore === id);
    calls.set(id, { stream: life.some((x) => STREAMING.has(x.label)), onCancel: 'swallow' });
  }
  // A reply that ends the call and retires the worker (it was asked to stop meanwhile): if the path
  // then wants the worker to stay in `stopping`, the reply is injected while the handler keeps
  // running, so the process does not exit (the runtime finishes the call before it obeys `exit`).
  const replyKeepsHandler = (i: number) => {
    const s = steps[i]!;
    const next = steps[i + 1];
    return (
      TERMINAL_REPLIES.has(s.label) &&
      leaf(s.to) === 'asking' &&
      next !== undefined &&
      next.label !== 'process.exited'
    );
  };
  steps.forEach((s, i) => {
    if (from(i) === 'cancelling' && s.label === 'python.err(running)' && !replyKeepsHandler(i)) {
      calls.get(s.callBefore!)!.onCancel = 'raise';
    }
  });

  const planned: PlannedStep[] = steps.map((step) => ({
    step,
    prep: [],
    stimulus: { kind: 'natural', why: '' },
    awaitCancelAck: false,
  }));
  let hold = false; // the fixture holds the write lock
  let handler = false; // a handler is running (it keeps the process from exiting)
  let exit: ExitExpectation[] | null = null;
  // Killing entered through a natural init_error: the runtime may exit(1) before SIGKILL lands.
  let killingByInitError = false;
  let killingFromStopping = false;
  // The SIGKILL sent while killing threw: the process lives on until the test kills it.
  let killThrew = false;

  const fail = (at: number, reason: string, scope: Infeasible['scope']): Infeasible => ({
    at,
    reason,
    scope,
  });

  /** The step that entered the state step i starts from, taken back to before `checking`. */
  const enteredBy = (i: number) => {
    let j = i - 1;
    // `checking` lasts only until the pong arrives (microseconds): whatever must be in place while
    // the worker is there must be in place before the health check.
    while (j > 0 && from(j) === 'checking') j--;
    return j;
  };
  /** Step i needs its source state held still: take the lock before the step that entered it. */
  const requireHold = (i: number) => {
    if (hold) return;
    planned[enteredBy(i)]!.prep.push('hold');
    hold = true;
  };
  const nextIsBytesInKilling = (i: number) => {
    const next = steps[i + 1];
    return next !== undefined && leaf(next.from) === 'killing' && isBytes(next);
  };
  const set = (i: number, stimulus: Stimulus) => {
    planned[i]!.stimulus = stimulus;
  };

  for (let i = 0; i < n; i++) {
    const s = steps[i]!;
    const state = from(i);
    const label = s.label;
    const last = i === n - 1;
    const enteringKilling = leaf(s.to) === 'killing' && state !== 'killing';
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
      } else if (state === 'initializing' || state === 'idle') {
        return fail(i, NO_TRANSPORT_CALL, 'transition');
      } else if (i > 0 && steps[i - 1]!.effects.length > 0) {
        // The spawn reported in `killing` (after a stop that came first) happens inside
        // actor.start(): its SIGKILL can only be made to throw by a prep made before the start.
        const carrier = steps[i - 1]!.label === 'process.spawned' ? 0 : i - 1;
        planned[carrier]!.prep.push('fault');
        set(i, { kind: 'natural', why: 'the transport call of the previous step throws' });
        // From ready, busy, cancelling or stopping, the worker now kills the process (that
        // SIGKILL goes through: a fault is for one call), and its exit ends the worker. In
        // killing, the SIGKILL that threw was the one meant to end the process.
        if (state === 'killing') killThrew = true;
      } else {
        return fail(i, 'the step before it makes no transport call that could throw', 'prefix');
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

    if (isActorSide(s)) {
      set(i, { kind: 'send' });
      if (s.event.type === 'call.start' && s.callAfter === s.event.call.id) handler = true;
      if (label === 'call.cancel(running)' && state === 'busy') {
        planned[i]!.awaitCancelAck = calls.get(s.callBefore!)!.onCancel === 'swallow';
      }
      // SIGKILL races with an exit the process was already making.
      if (enteringKilling) killingFromStopping = state === 'asking' || state === 'terminating';
      continue;
    }

    switch (state) {
      case 'initializing':
        if (label === 'python.ready') set(i, { kind: 'init', command: { op: 'ok' } });
        else if (label === 'python.initError') {
          if (nextIsBytesInKilling(i)) set(i, { kind: 'inject', bytes: [bytesOf(s)] });
          else {
            set(i, { kind: 'init', command: { op: 'fail' } });
            killingByInitError = true;
          }
        } else if (label === 'process.exited') {
          set(i, { kind: 'init', command: { op: 'crash' } });
          exit = [{ exitCode: 3, signal: null }];
        } else if (label === 'after(initTimeout)') {
          set(i, { kind: 'natural', why: 'no init command: the init timer fires' });
        } else if (isBytes(s)) set(i, { kind: 'inject', bytes: [bytesOf(s)] });
        else return fail(i, `no stimulus for ${label} in ${state}`, 'transition');
        break;

      case 'idle':
        if (label === 'process.exited') {
          set(i, { kind: 'signal', signal: 'SIGKILL' });
          exit = [SIGKILLED];
        } else if (isBytes(s)) set(i, { kind: 'inject', bytes: [bytesOf(s)] });
        else return fail(i, `no stimulus for ${label} in ${state}`, 'transition');
        break;

      case 'checking':
        if (label === 'python.pong(answer)') {
          if (hold) return fail(i, 'the pong is held back', 'prefix');
          set(i, { kind: 'natural', why: 'the runtime answers the ping' });
        } else if (label === 'after(healthTimeout)') {
          if (hold) return fail(i, 'a held worker cannot be frozen as well', 'prefix');
          planned[enteredBy(i)]!.prep.push('sigstop');
          set(i, { kind: 'natural', why: 'the frozen process never answers the ping' });
        } else if (label === 'process.exited') {
          requireHold(i);
          set(i, { kind: 'signal', signal: 'SIGKILL' });
          exit = [SIGKILLED];
        } else if (isBytes(s)) {
          requireHold(i);
          set(i, { kind: 'release', bytes: [bytesOf(s)] });
          hold = false;
        } else return fail(i, `no stimulus for ${label} in ${state}`, 'transition');
        break;

      case 'busy':
      case 'cancelling': {
        const plan = s.callBefore === null ? undefined : calls.get(s.callBefore);
        if (TERMINAL_REPLIES.has(label) && replyKeepsHandler(i)) {
          set(i, { kind: 'inject', bytes: [bytesOf(s)] });
        } else if (label === 'python.ok(running)') {
          const v = (s.event as { message: { v: unknown } }).message.v;
          set(i, { kind: 'call', command: { op: 'ok', v } });
          handler = false;
        } else if (label === 'python.err(running)') {
          if (state === 'busy') set(i, { kind: 'call', command: { op: 'raise' } });
          else set(i, { kind: 'natural', why: 'the handler lets pyvisor.Cancelled end the call' });
          handler = false;
        } else if (label === 'python.end(running)') {
          set(i, { kind: 'call', command: { op: 'end' } });
          handler = false;
        } else if (label === 'python.item(running)') {
          const v = (s.event as { message: { v: unknown } }).message.v;
          set(i, { kind: 'call', command: { op: 'item', v } });
        } else if (label === 'after(cancelGrace)') {
          if (plan?.onCancel !== 'swallow')
            return fail(i, 'the handler obeyed the cancel', 'prefix');
          set(i, { kind: 'natural', why: 'the handler swallows the cancel: cancelGrace fires' });
        } else if (label === 'process.exited') {
          if (state === 'busy') {
            set(i, { kind: 'call', command: { op: 'exit', code: 7 } });
            exit = [{ exitCode: 7, signal: null }];
          } else {
            set(i, { kind: 'signal', signal: 'SIGKILL' });
            exit = [SIGKILLED];
          }
          handler = false;
        } else if (isBytes(s)) set(i, { kind: 'inject', bytes: [bytesOf(s)] });
        else return fail(i, `no stimulus for ${label} in ${state}`, 'transition');
        break;
      }

      case 'asking':
      case 'terminating':
        if (label === 'process.exited') {
          if (state === 'terminating' && !config.ignoreTerm) {
            set(i, { kind: 'natural', why: 'SIGTERM ends the process' });
            exit = [{ exitCode: null, signal: 'SIGTERM' }];
          } else if (hold) {
            set(i, { kind: 'release', bytes: [] });
            hold = false;
            exit = [{ exitCode: 0, signal: null }];
          } else if (handler) {
            set(i, { kind: 'call', command: { op: 'ok', v: null } });
            handler = false;
            exit = [{ exitCode: 0, signal: null }];
          } else {
            set(i, { kind: 'natural', why: 'the runtime obeys exit' });
            exit = [{ exitCode: 0, signal: null }];
          }
        } else if (label === 'after(stopTimeout)') {
          if (state === 'asking' && !hold && !handler) requireHold(i);
          set(i, {
            kind: 'natural',
            why:
              state === 'asking'
                ? 'the process does not exit in time'
                : 'the process ignores SIGTERM',
          });
        } else if (isBytes(s)) {
          if (handler && !hold) set(i, { kind: 'inject', bytes: [bytesOf(s)] });
          else {
            requireHold(i);
            set(i, { kind: 'release', bytes: [bytesOf(s)] });
            hold = false;
          }
        } else return fail(i, `no stimulus for ${label} in ${state}`, 'transition');
        break;

      case 'killing':
        if (label === 'process.exited') {
          if (killThrew) {
            // Unless the process was exiting anyway (below), it survives the SIGKILL that threw.
            set(i, { kind: 'signal', signal: 'SIGKILL' });
          } else {
            set(i, { kind: 'natural', why: 'the SIGKILL sent on entering killing' });
          }
          exit = [SIGKILLED];
          if (killingByInitError) exit.push({ exitCode: 1, signal: null });
          if (killingFromStopping) exit.push({ exitCode: 0, signal: null });
        } else if (label === 'after(killWait)') {
          return fail(i, KILL_WAIT, 'transition');
        } else if (isBytes(s)) {
          const previous = planned[i - 1]!;
          const prior = steps[i - 1]!;
          const carrier = previous.stimulus;
          if (
            (carrier.kind === 'inject' || carrier.kind === 'release') &&
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
        } else return fail(i, `${label} cannot happen twice`, 'prefix');
        break;

      default:
        return fail(i, `no stimulus for ${label} in ${state}`, 'transition');
    }
  }
  // A swallowed cancel must have been swallowed before the handler gets its next command (else the
  // cancel could land while it carries the command out); without a next command there is nothing
  // to wait for, and waiting could outlast a short cancelGrace.
  planned.forEach((p, i) => {
    if (!p.awaitCancelAck) return;
    const call = p.step.callBefore;
    p.awaitCancelAck = planned
      .slice(i + 1)
      .some((q) => q.step.callBefore === call && q.stimulus.kind === 'call');
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
}

export interface Exclusion {
  /** The transition no real-world stimulus can produce: `from --event--> to`. */
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
 * exclusion. Paths that are a prefix of another one are then dropped.
 */
export function planSuite(generated: WorkerPath[]): Suite {
  const byLength = [...generated].sort((a, b) => a.steps.length - b.steps.length);
  const feasible: Run[] = [];
  const exclusions: Exclusion[] = [];
  for (const path of generated) {
    const first = replay(path);
    const result = planPath(first.steps);
    if (!('reason' in result)) {
      feasible.push({ path, replay: first, plan: result, reroutedFrom: null });
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
        if (valueName(head.state.value) !== valueName(last.from.value)) continue;
        const extended = extendPath(head, last.label);
        if (!extended || lastTransitionKey(extended) !== lastTransitionKey(path)) continue;
        const again = replay(extended);
        const plan = planPath(again.steps);
        if ('reason' in plan) {
          if (plan.scope === 'transition' && plan.at === again.steps.length - 1) {
            reason = plan.reason;
          }
          continue;
        }
        rerouted = { path: extended, replay: again, plan, reroutedFrom: describePath(path) };
        break;
      }
    }
    if (rerouted) feasible.push(rerouted);
    else exclusions.push({ transition: lastTransitionKey(path), reason });
  }
  // A path that ends while the worker is killing its process stops short of the outcome: let it
  // run on to the exit the SIGKILL causes, so the output (reason, error, exit) is checked too.
  for (const [i, run] of feasible.entries()) {
    if (leaf(valueName(run.path.state.value)) !== 'killing') continue;
    const extended = extendPath(run.path, 'process.exited');
    if (!extended) continue;
    const again = replay(extended);
    const plan = planPath(again.steps);
    if (!('reason' in plan)) feasible[i] = { ...run, path: extended, replay: again, plan };
  }
  const kept = new Set(dedupe(feasible.map((run) => run.path)));
  return { generated, runs: feasible.filter((run) => kept.has(run.path)), exclusions };
}
