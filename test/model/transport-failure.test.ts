/**
 * A transport that throws, with a real python3: the worker ends in a final state with the error in
 * its output (never an actor in error status), and no process is left running.
 */
import { fileURLToPath } from 'node:url';
import { beforeAll, describe, expect, it, onTestFinished } from 'vitest';
import { createActor, waitFor } from 'xstate';
import { PyvisorError, WorkerCrashedError, WorkerInitError } from '../../src/errors.js';
import { type WorkerCall, workerMachine } from '../../src/machines/worker.machine.js';
import { encodeFrame } from '../../src/protocol/index.js';
import { spawnChildProcess } from '../../src/transport/child-process.js';
import { resolveInterpreter } from '../../src/transport/interpreter.js';
import type { SpawnTransport } from '../../src/transport/transport.js';
import { isAlive, STEP_TIMEOUT, until } from './real-worker.js';

const REPO = fileURLToPath(new URL('../../', import.meta.url));
const FIXTURE = fileURLToPath(new URL('../fixtures/handlers.py', import.meta.url));
const PYTHON_DIR = fileURLToPath(new URL('../../python', import.meta.url));

let python = '';
beforeAll(async () => {
  python = await resolveInterpreter(process.env.PYVISOR_PYTHON ?? 'python3', process.env, REPO);
});

/** A real worker whose transport throws `fault` on the named frame type or signal, once. */
function realWorker(options: { env?: NodeJS.ProcessEnv; failOn?: string }) {
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
  });
  const errors: unknown[] = [];
  actor.subscribe({ error: (error) => errors.push(error) });
  onTestFinished(() => {
    actor.stop();
    for (const pid of pids.filter(isAlive)) process.kill(pid, 'SIGKILL');
  });
  actor.start();
  return { actor, pids, fault, errors };
}

function call(id: number) {
  const settled: unknown[] = [];
  const c: WorkerCall = {
    id,
    fn: 'echo',
    frame: encodeFrame(JSON.stringify({ t: 'call', id, fn: 'echo', args: [1] })),
    stream: false,
    get settled() {
      return settled.length > 0;
    },
    dispatched() {},
    resolve: (v) => settled.push(v),
    reject: (e) => settled.push(e),
    item() {},
    end() {},
  };
  return { call: c, settled };
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

  it('the call frame cannot be sent: crashed, the call rejected with the cause, the process gone', async () => {
    const { actor, pids, fault, errors } = realWorker({ failOn: 'call' });
    await waitFor(actor, (s) => s.matches({ alive: { ready: 'idle' } }), {
      timeout: STEP_TIMEOUT,
    });
    const { call: c, settled } = call(1);
    actor.send({ type: 'call.start', call: c });
    const snapshot = actor.getSnapshot();
    expect(errors).toEqual([]);
    expect(snapshot.status).toBe('done');
    expect(snapshot.value).toBe('crashed');
    const error = snapshot.output!.error as WorkerCrashedError;
    expect(error).toBeInstanceOf(WorkerCrashedError);
    expect(error.code).toBe('ERR_WORKER_CRASHED');
    expect(error.cause).toBe(fault);
    expect(settled).toEqual([error]);
    expect(pids).toHaveLength(1);
    await until(() => !isAlive(pids[0]!), `pid ${pids[0]} to be gone`);
  });

  it('SIGKILL throws while killing: the recorded ending at once, and the cleanup kills it', async () => {
    const { actor, pids, errors } = realWorker({ failOn: 'SIGKILL' });
    await waitFor(actor, (s) => s.matches({ alive: { ready: 'idle' } }), {
      timeout: STEP_TIMEOUT,
    });
    const kill = new PyvisorError('ERR_POOL_CLOSED', 'killed by the test');
    actor.send({ type: 'worker.kill', error: kill });
    const snapshot = actor.getSnapshot();
    expect(errors).toEqual([]);
    expect(snapshot.status).toBe('done');
    expect(snapshot.value).toBe('killed');
    expect(snapshot.output!.error).toBe(kill);
    await until(() => !isAlive(pids[0]!), `pid ${pids[0]} to be gone`);
  });
});
