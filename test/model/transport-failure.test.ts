/**
 * A transport that throws, with a real python3: the worker ends in a final state with the error in
 * its output (never an actor in error status), once its process is gone, and no process is left
 * running.
 */
import { fileURLToPath } from 'node:url';
import { beforeAll, describe, expect, it, onTestFinished } from 'vitest';
import { createActor, SimulatedClock, waitFor } from 'xstate';
import { PyvisorError, WorkerCrashedError, WorkerInitError } from '../../src/errors.js';
import { type WorkerEvent, workerMachine } from '../../src/machines/worker.machine.js';
import { spawnChildProcess } from '../../src/transport/child-process.js';
import { resolveInterpreter } from '../../src/transport/interpreter.js';
import type { SpawnTransport } from '../../src/transport/transport.js';
import { recordingCall } from '../unit/recording-call.js';
import { isAlive, STEP_TIMEOUT, until } from './real-worker.js';

const REPO = fileURLToPath(new URL('../../', import.meta.url));
const FIXTURE = fileURLToPath(new URL('../fixtures/handlers.py', import.meta.url));
const PYTHON_DIR = fileURLToPath(new URL('../../python', import.meta.url));

let python = '';
beforeAll(async () => {
  python = await resolveInterpreter(process.env.PYVISOR_PYTHON ?? 'python3', process.env, REPO);
});

/** The worker's `killWait`: how long it waits for the exit of a SIGKILLed process. */
const KILL_WAIT = 5000;

/**
 * A real worker whose transport throws `fault` on the named frame type or signal, once. `before`
 * is sent before the actor starts (so before the spawn is reported); `clock` runs its timers.
 */
function realWorker(options: {
  env?: NodeJS.ProcessEnv;
  failOn?: string;
  before?: WorkerEvent;
  clock?: SimulatedClock;
}) {
  const pids: number[] = [];
  const fault = new Error('injected transport fault');
  let failOn = options.failOn;
  const spawn: SpawnTransport = (spec, handlers) => {
    const transport = spawnChildProcess(spec, handlers);
    if (transport.pid !== undefined) pids.push(transport.pid);
    const maybeFail = (what: string) => {
      if (what !== failOn) return;
      failOn = undefined;
      throw fault;
    };
    return {
      get pid() {
        return transport.pid;
      },
      send(frame) {
        maybeFail(JSON.parse((frame as Buffer).subarray(4).toString('utf8')).t);
        transport.send(frame);
      },
      kill(signal) {
        maybeFail(signal);
        transport.kill(signal);
      },
      outputTail: () => transport.outputTail(),
    };
  };
  const actor = createActor(workerMachine, {
    input: {
      workerId: 0,
      generation: 1,
      spec: {
        command: python,
        args: ['-u', '-m', 'pyvisor', FIXTURE],
        env: {
          ...process.env,
          PYTHONPATH: PYTHON_DIR,
          PYVISOR_PARENT_PID: String(process.pid),
          ...options.env,
        },
        cwd: REPO,
        maxMessageSize: 1 << 20,
        outputLines: 20,
      },
      spawn,
      initTimeout: STEP_TIMEOUT,
      cancelGrace: STEP_TIMEOUT,
      healthTimeout: STEP_TIMEOUT,
      stopTimeout: STEP_TIMEOUT,
      maxCalls: 100,
    },
    ...(options.clock ? { clock: options.clock } : {}),
  });
  const errors: unknown[] = [];
  actor.subscribe({ error: (error) => errors.push(error) });
  onTestFinished(() => {
    actor.stop();
    for (const pid of pids.filter(isAlive)) process.kill(pid, 'SIGKILL');
  });
  if (options.before) actor.send(options.before);
  actor.start();
  return { actor, pids, fault, errors };
}

/** A call that records how it was settled; `sleep` runs for a minute unless killed. */
function call(id: number, fn: 'echo' | 'sleep' = 'echo') {
  const settled: unknown[] = [];
  const args = fn === 'echo' ? [1] : [60];
  return { call: recordingCall(id, settled, { fn, args }), settled };
}

describe('a transport that throws, with a real python3', () => {
  it('an env value with a NUL byte makes the spawn throw: initFailed with the cause, no process', async () => {
    const { actor, pids, errors } = realWorker({ env: { BROKEN: 'a\0b' } });
    const snapshot = await waitFor(actor, (s) => s.status !== 'active', { timeout: STEP_TIMEOUT });
    expect(errors).toEqual([]);
    expect(snapshot.status).toBe('done');
    expect(snapshot.value).toBe('initFailed');
    const error = snapshot.output!.error as WorkerInitError;
    expect(error).toBeInstanceOf(WorkerInitError);
    expect(error.reason).toBe('spawn');
    expect(error.cause).toBeInstanceOf(TypeError);
    expect((error.cause as { code?: string }).code).toBe('ERR_INVALID_ARG_VALUE');
    expect(pids).toEqual([]);
  });

  it('a stop before the spawn is reported, then the spawn throws: stopped at once, no process', async () => {
    const { actor, pids, errors } = realWorker({
      env: { BROKEN: 'a\0b' },
      before: { type: 'worker.stop', reason: 'close' },
    });
    // Nothing was started, so there is no exit to wait for: it ended inside start().
    const snapshot = actor.getSnapshot();
    expect(errors).toEqual([]);
    expect(snapshot.status).toBe('done');
    expect(snapshot.value).toBe('stopped');
    expect(snapshot.output).toMatchObject({ stopReason: 'close', exitCode: null, signal: null });
    const error = snapshot.output!.error as WorkerCrashedError;
    expect(error).toBeInstanceOf(WorkerCrashedError);
    expect((error.cause as { code?: string }).code).toBe('ERR_INVALID_ARG_VALUE');
    expect(pids).toEqual([]);
  });

  it('the call frame cannot be sent: the call rejected at once with the cause; crashed once the process is gone', async () => {
    const { actor, pids, fault, errors } = realWorker({ failOn: 'call' });
    await waitFor(actor, (s) => s.matches({ alive: 'ready' }), {
      timeout: STEP_TIMEOUT,
    });
    const { call: c, settled } = call(1);
    actor.send({ type: 'call.start', call: c });
    // Rejected now; the process, which may still run, is being killed.
    expect(actor.getSnapshot().value).toEqual({ alive: 'killing' });
    expect(settled).toHaveLength(1);
    expect(settled[0]).toBeInstanceOf(WorkerCrashedError);
    const snapshot = await waitFor(actor, (s) => s.status !== 'active', { timeout: STEP_TIMEOUT });
    expect(errors).toEqual([]);
    expect(snapshot.status).toBe('done');
    expect(snapshot.value).toBe('crashed');
    const output = snapshot.output!;
    expect(output).toMatchObject({
      reason: 'crashed',
      calls: 1,
      exitCode: null,
      signal: 'SIGKILL',
    });
    const error = output.error as WorkerCrashedError;
    expect(error).toBeInstanceOf(WorkerCrashedError);
    expect(error.code).toBe('ERR_WORKER_CRASHED');
    expect(error.cause).toBe(fault);
    expect(settled).toEqual([error]);
    expect(pids).toHaveLength(1);
    // The worker ended on the exit: the process is already gone.
    expect(isAlive(pids[0]!)).toBe(false);
  });

  it.each([
    ['exits (the test kills it)', 'exits'],
    ['never exits: the worker gives up after killWait, and its cleanup kills it', 'survives'],
  ] as const)(
    'SIGKILL throws while killing, and the process %s: the recorded ending',
    async (_, how) => {
      // The worker's timers run on a simulated clock (the process, its I/O and exit are real).
      const clock = new SimulatedClock();
      const { actor, pids, errors } = realWorker({ failOn: 'SIGKILL', clock });
      await waitFor(actor, (s) => s.matches({ alive: 'ready' }), {
        timeout: STEP_TIMEOUT,
      });
      const { call: c, settled } = call(1, 'sleep');
      actor.send({ type: 'call.start', call: c });
      const kill = new PyvisorError('ERR_POOL_CLOSED', 'killed by the test');
      actor.send({ type: 'worker.kill', error: kill });
      // The call is rejected at once; the worker waits for the process it could not kill.
      expect(errors).toEqual([]);
      expect(actor.getSnapshot().value).toEqual({ alive: 'killing' });
      expect(settled).toEqual([kill]);
      const pid = pids[0]!;
      expect(isAlive(pid)).toBe(true);
      if (how === 'exits') {
        process.kill(pid, 'SIGKILL');
      } else {
        clock.increment(KILL_WAIT - 1);
        expect(actor.getSnapshot().value).toEqual({ alive: 'killing' });
        clock.increment(1);
      }
      const snapshot = await waitFor(actor, (s) => s.status !== 'active', {
        timeout: STEP_TIMEOUT,
      });
      expect(errors).toEqual([]);
      expect(snapshot.status).toBe('done');
      expect(snapshot.value).toBe('killed');
      expect(snapshot.output!.reason).toBe('killed');
      expect(snapshot.output!.error).toBe(kill);
      expect(settled).toEqual([kill]);
      expect(snapshot.output).toMatchObject(
        how === 'exits' ? { exitCode: null, signal: 'SIGKILL' } : { exitCode: null, signal: null },
      );
      await until(() => !isAlive(pid), `pid ${pid} to be gone`);
    },
  );
});
