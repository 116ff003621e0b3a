import type { WorkerCall } from '../../src/machines/worker.machine.js';
import { encodeFrame } from '../../src/protocol/index.js';

/**
 * A call for a worker machine that records how it was settled in `settled` (resolved values and
 * rejection errors alike). Without `fn`, its frame is a bare `{ t: 'call', id }` (enough for a
 * fake transport); with `fn` and `args`, a frame a real worker runs.
 */
export function recordingCall(
  id: number,
  settled: unknown[],
  run?: { fn: string; args: unknown[] },
): WorkerCall {
  return {
    id,
    fn: run?.fn ?? 'f',
    frame: encodeFrame(JSON.stringify(run ? { t: 'call', id, ...run } : { t: 'call', id })),
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
}
