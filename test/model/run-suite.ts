/**
 * Runs a planned suite of model paths against real Python (test/fixtures/mbt.py), one real worker
 * per path, and checks each run's outcome against the model: the steps (checked as they come by
 * RealWorker), the actor's output, every call, and that no process is left.
 */
import { fileURLToPath } from 'node:url';
import { beforeAll, describe, type expect, it } from 'vitest';
import { waitFor } from 'xstate';
import { PyvisorError, WorkerInitError } from '../../src/errors.js';
import type { WorkerExit } from '../../src/machines/worker.machine.js';
import type { PendingCall } from '../../src/pool/call.js';
import { resolveInterpreter } from '../../src/transport/interpreter.js';
import { isAlive, PENDING, probe, RealWorker, STEP_TIMEOUT, until } from './real-worker.js';
import type { Run, Suite } from './stimuli.js';
import { describePath } from './worker-model.js';

const REPO = fileURLToPath(new URL('../../', import.meta.url));

type Expect = typeof expect;

/** One concurrent test per run of the suite, each with its own worker, process and directory. */
export function runAgainstPython(title: string, suite: Suite): void {
  describe.concurrent(title, () => {
    let python = '';
    beforeAll(async () => {
      python = await resolveInterpreter(process.env.PYVISOR_PYTHON ?? 'python3', process.env, REPO);
    });

    suite.runs.forEach((run, index) => {
      const name = `#${index + 1} ${describePath(run.path)}`;
      it(name, async ({ expect, onTestFinished }) => {
        const pids: number[] = [];
        const worker = new RealWorker({ python, plan: run.plan, onPid: (pid) => pids.push(pid) });
        onTestFinished(() => {
          worker.dispose();
          for (const pid of pids) {
            try {
              process.kill(pid, 'SIGKILL');
            } catch {
              // Already gone.
            }
          }
          worker.ctl.remove();
        });

        await worker.run();
        // run() checked each step as it came; the states it matched, once more, in one place:
        expect(worker.matched.map((e) => `${e.from} --${e.label}--> ${e.to}`)).toEqual(
          run.replay.steps.map((s) => `${s.from} --${s.label}--> ${s.to}`),
        );
        // The process runs as many calls at once as the worker holds (not serial), or one.
        const info = worker.actor.getSnapshot().context.info;
        if (info) expect(info.concurrency).toBe(run.plan.config.concurrency);
        if (run.replay.final.status === 'done') {
          await waitFor(worker.actor, (s) => s.status === 'done', { timeout: STEP_TIMEOUT });
          checkOutput(run, worker, expect);
        }
        await checkCalls(run, worker, expect);

        worker.dispose();
        // A spawn that throws starts nothing.
        expect(pids).toHaveLength(run.plan.config.spawnFails ? 0 : 1);
        await until(() => pids.every((pid) => !isAlive(pid)), `pids ${pids} to be gone`);
        expect(pids.filter(isAlive)).toEqual([]);
      });
    });
  });
}

function checkOutput(run: Run, worker: RealWorker, expect: Expect): void {
  const real = worker.output!;
  const model = run.replay.final.output as WorkerExit;
  const facts = (out: WorkerExit) => ({
    reason: out.reason,
    stopReason: out.stopReason,
    wasReady: out.wasReady,
    calls: out.calls,
    error: out.error && {
      code: out.error.code,
      name: out.error.name,
      initReason: out.error instanceof WorkerInitError ? out.error.reason : undefined,
      detail: detailOf(out.error),
    },
  });
  expect(facts(real)).toEqual(facts(model));
  expect(real.pid).toBe(worker.pid);
  expect(run.plan.exit).toContainEqual({ exitCode: real.exitCode, signal: real.signal });
  // A worker.kill ends with the very error it was given.
  if (model.error?.code === 'ERR_POOL_CLOSED') expect(real.error).toBe(worker.killError);
  if (real.error && 'pid' in real.error) expect(real.error.pid ?? null).toBe(worker.pid);
}

/** Each call the path made must have been treated as the model treated its stub. */
async function checkCalls(run: Run, worker: RealWorker, expect: Expect): Promise<void> {
  // Pipelined calls the worker said started when the call before them finished.
  expect(worker.startedLater).toEqual(run.replay.stubs.source.started);
  for (const [id, tracked] of worker.calls) {
    const model = run.replay.stubs.calls.get(id)!;
    const call: PendingCall = tracked.call;
    // (A call whose caller gave up is done, dispatched or not.)
    expect(call.workerId !== -1, `call ${id} dispatched`).toBe(
      model.log.some((e) => e.op === 'dispatched'),
    );
    const settled = model.log.find(
      (e) => e.op === 'resolve' || e.op === 'reject' || e.op === 'end',
    );
    const aborted = tracked.controller.signal.aborted;
    if (call.stream) {
      const items: unknown[] = [];
      let end: 'done' | 'pending' | { error: unknown } = 'pending';
      for (;;) {
        const next = call.next().then(
          (r) => r,
          (error: unknown) => ({ error }),
        );
        const r = await probe(next);
        if (r === PENDING) break;
        if ('error' in r) {
          end = { error: r.error };
          break;
        }
        if (r.done) {
          end = 'done';
          break;
        }
        items.push(r.value);
      }
      // The items the model delivered (`deliver item` drops those of a cancelled call).
      const delivered = run.replay.steps
        .filter(
          (s) =>
            s.target === id &&
            s.actions.includes('deliver item') &&
            !s.before.some((f) => f.id === id && f.cancelled),
        )
        .map((s) => (s.event as { message: { v: unknown } }).message.v);
      expect(items, `items of call ${id}`).toEqual(delivered);
      if (aborted) expect((end as { error: Error }).error?.name).toBe('AbortError');
      else if (!settled) expect(end).toBe('pending');
      else if (settled.op === 'end') expect(end).toBe('done');
      else expect(errorFacts((end as { error: unknown }).error)).toEqual(errorFacts(settled.arg));
      continue;
    }
    await probe(call.promise!.catch(() => {}));
    const outcome = tracked.outcome;
    if (aborted) {
      expect(outcome.kind).toBe('rejected');
      expect((outcome as { error: Error }).error.name).toBe('AbortError');
    } else if (!settled) {
      expect(outcome.kind, `call ${id} unsettled`).toBe('pending');
      expect(call.settled).toBe(false);
    } else if (settled.op === 'resolve') {
      expect(outcome).toEqual({ kind: 'resolved', value: settled.arg });
    } else {
      expect(outcome.kind).toBe('rejected');
      expect(errorFacts((outcome as { error: unknown }).error)).toEqual(errorFacts(settled.arg));
    }
  }
}

function errorFacts(error: unknown) {
  if (error instanceof PyvisorError) {
    return { code: error.code, name: error.name, detail: detailOf(error) };
  }
  return { name: (error as Error | undefined)?.name };
}

/**
 * What a worker killed for a cancel that was not obeyed says, without the pid and the times:
 * `Worker 0 (pid _) was killed while it ran call 2: call 1 did not stop within _ ms ...`; for
 * other errors, nothing (their messages describe exits the model only samples).
 */
function detailOf(error: PyvisorError): string | undefined {
  const first = error.message.split('\n')[0]!;
  if (!first.includes('did not stop within')) return undefined;
  return first.replace(/\(pid \d+\)/, '(pid _)').replace(/within \d+ ms/, 'within _ ms');
}
