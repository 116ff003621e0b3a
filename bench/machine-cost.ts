/**
 * What the worker machine costs per call on its own: the two events of a call
 * (`call.start`, then the `python.ok` reply) sent to a `workerMachine` actor on a stub transport,
 * next to the same two events on a trivial two-state machine. No process, no pipe, no pool: the
 * floor XState sets under pyvisor's per-call path (see docs/benchmarks.md). Also the cost of
 * looking for binary values in small JSON arguments (`mayHoldBinary`), which every call pays.
 *
 *   node --import tsx bench/machine-cost.ts [--calls 200000] [--rounds 5]
 */
import { parseArgs } from 'node:util';
import { createActor, setup } from 'xstate';
import { type WorkerCall, workerMachine } from '../src/machines/worker.machine.js';
import { mayHoldBinary, type PythonMessage } from '../src/protocol/index.js';
import type { SpawnTransport, TransportHandlers } from '../src/transport/transport.js';
import { median } from './stats.js';

const { values } = parseArgs({
  options: {
    calls: { type: 'string', default: '200000' },
    rounds: { type: 'string', default: '5' },
  },
});
const calls = Number(values.calls);
const rounds = Number(values.rounds);

let handlers: TransportHandlers | null = null;
const spawn: SpawnTransport = (_spec, h) => {
  handlers = h;
  return { pid: 1, send() {}, kill() {}, outputTail: () => '' };
};
const worker = createActor(workerMachine, {
  input: {
    workerId: 0,
    generation: 1,
    spec: { command: 'stub', args: [], env: {}, cwd: '.', maxMessageSize: 1, outputLines: 1 },
    spawn,
    initTimeout: 1e9,
    cancelGrace: 1e9,
    healthTimeout: 1e9,
    stopTimeout: 1e9,
    maxCalls: Number.POSITIVE_INFINITY,
  },
});
worker.start();
const reply = (message: PythonMessage) => handlers!.message(message);
reply({ t: 'ready', pid: 1, version: '3', executable: 'python3', handlers: [], initMs: 1 });
// Like the pool: one snapshot observer and one listener for emitted events.
worker.subscribe(() => {});
worker.on('*', () => {});
const frame = Buffer.alloc(0);
const call = (id: number): WorkerCall => ({
  id,
  fn: 'f',
  frame,
  stream: false,
  settled: false,
  dispatched() {},
  resolve() {},
  reject() {},
  item() {},
  end() {},
});

const toggle = createActor(
  setup({}).createMachine({
    initial: 'idle',
    states: { idle: { on: { start: 'busy' } }, busy: { on: { ok: 'idle' } } },
  }),
).start();
toggle.subscribe(() => {});

const smallArgs = [1, 2];
const objectArgs = [{ a: 1, b: 'x', c: [1, 2, 3] }];
let found = 0;

const variants = {
  'workerMachine (call.start + python.ok)': (i: number) => {
    worker.send({ type: 'call.start', call: call(i) });
    reply({ t: 'ok', id: i, v: 3 });
  },
  'mayHoldBinary([1, 2]) + a small object': () => {
    if (mayHoldBinary(smallArgs) || mayHoldBinary(objectArgs)) found++;
  },
  'two-state machine (2 events)': () => {
    toggle.send({ type: 'start' });
    toggle.send({ type: 'ok' });
  },
};
const results: Record<string, number[]> = {};
for (let r = 0; r < rounds; r++) {
  for (const [name, run] of Object.entries(variants)) {
    const t0 = performance.now();
    for (let i = 0; i < calls; i++) run(i);
    const list = results[name] ?? [];
    list.push(((performance.now() - t0) * 1000) / calls);
    results[name] = list;
  }
}
if (!worker.getSnapshot().matches({ alive: 'ready' })) throw new Error('worker not ready');
if (found > 0) throw new Error('mayHoldBinary found binary values in JSON-only arguments');
for (const [name, times] of Object.entries(results)) {
  console.log(`${name.padEnd(42)} ${median(times).toFixed(2)} µs per call (median of ${rounds})`);
}
