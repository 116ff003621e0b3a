/**
 * pyvisor's Node-side cost per call without any process or pipe: the pool runs on a fake
 * transport that answers every `call` frame on the next turn of the event loop (setImmediate,
 * like a pipe read would). The baseline does the same work a bare client does: encode a frame,
 * wait for the immediate, parse the id, resolve a promise. What is left is the library: call
 * validation, PendingCall, the supervisor and worker machines (XState), the checkout queue.
 *
 *   node --import tsx bench/overhead.ts [--calls 200000] [--size 1] [--concurrency 1]
 *        [--lib ../src/index.js,/path/to/another/build/index.js] [--rounds 5]
 *   node --cpu-prof --cpu-prof-dir=/tmp/prof --import tsx bench/overhead.ts --only pyvisor
 *
 * Prints µs of Node CPU and wall time per call for each, interleaved over --rounds. Several
 * comma-separated --lib values are interleaved in one process: the way to A/B a change to src/
 * on a noisy machine (build the change elsewhere with tsc, keep a `python` symlink beside it).
 * PYVISOR_BENCH_OPTIONS='{"pipeline":false}' adds pool options (JSON) to every pyvisor pool.
 * --also '{"callSiteStacks":false}' adds a pool of the first --lib with those options, interleaved
 * with the others: the cost of one option, side by side.
 */
import { parseArgs } from 'node:util';
import type { PythonMessage } from '../src/protocol/index.js';
import type { SpawnTransport } from '../src/transport/transport.js';
import { median, min, nodeCpuUs } from './stats.js';

const { values } = parseArgs({
  options: {
    calls: { type: 'string', default: '100000' },
    size: { type: 'string', default: '1' },
    concurrency: { type: 'string', default: '1' },
    rounds: { type: 'string', default: '5' },
    lib: { type: 'string', default: '../src/index.js' },
    only: { type: 'string' },
    also: { type: 'string' },
  },
});
const calls = Number(values.calls);
const size = Number(values.size);
const concurrency = Number(values.concurrency);
const rounds = Number(values.rounds);
const libs = values.lib!.split(',');
type Lib = typeof import('../src/index.js');
const loaded = await Promise.all(libs.map(async (lib) => (await import(lib)) as Lib));

let nextPid = 1_000_000;
/** A worker that answers `call` with `ok` (v = the call's id) on the next immediate. */
const fakeSpawn: SpawnTransport = (_spec, handlers) => {
  const pid = nextPid++;
  let dead = false;
  setImmediate(() =>
    handlers.message({
      t: 'ready',
      pid,
      version: '3.11.7',
      executable: 'fake',
      handlers: [{ name: 'add', stream: false }],
      initMs: 0,
    }),
  );
  return {
    pid,
    send(frame: Buffer) {
      const msg = JSON.parse(frame.toString('utf8', 4)) as { t: string; id: number };
      if (msg.t === 'call') {
        setImmediate(() => {
          if (!dead) handlers.message({ t: 'ok', id: msg.id, v: 3 } as PythonMessage);
        });
      } else if (msg.t === 'exit') {
        this.kill('SIGTERM');
      } else if (msg.t === 'ping') {
        setImmediate(() => handlers.message({ t: 'pong', id: msg.id }));
      }
    },
    kill(signal: NodeJS.Signals) {
      if (dead) return;
      dead = true;
      setImmediate(() => handlers.exit({ exitCode: null, signal }));
    },
    outputTail: () => '',
  };
};

/** The bare equivalent: one in flight per fake worker, a FIFO in front. */
function barePool(n: number) {
  const idle: number[] = Array.from({ length: n }, (_, i) => i);
  const queue: (() => void)[] = [];
  let id = 0;
  const run = (resolve: (v: unknown) => void, worker: number) => {
    const json = JSON.stringify({ t: 'call', id: ++id, fn: 'add', args: [1, 2] });
    const frame = Buffer.allocUnsafe(4 + Buffer.byteLength(json));
    frame.writeUInt32BE(frame.length - 4, 0);
    frame.write(json, 4, 'utf8');
    const msg = JSON.parse(frame.toString('utf8', 4)) as { id: number };
    setImmediate(() => {
      const reply = JSON.parse(`{"t":"ok","id":${msg.id},"v":3}`) as { v: unknown };
      const next = queue.shift();
      if (next) {
        idle.push(worker);
        next();
      } else idle.push(worker);
      resolve(reply.v);
    });
  };
  return (): Promise<unknown> =>
    new Promise((resolve) => {
      const w = idle.pop();
      if (w !== undefined) run(resolve, w);
      else queue.push(() => run(resolve, idle.pop()!));
    });
}

const poolOf = ({ createPool }: Lib, extra: object = {}) =>
  createPool({
    script: new URL('./handlers.py', import.meta.url).pathname,
    size,
    spawn: fakeSpawn,
    healthCheck: false,
    ...(process.env.PYVISOR_BENCH_OPTIONS ? JSON.parse(process.env.PYVISOR_BENCH_OPTIONS) : {}),
    ...extra,
  });
const pools = loaded.map((lib) => poolOf(lib));
const names = libs.map((lib) => (libs.length > 1 ? `pyvisor[${lib}]` : 'pyvisor'));
if (values.also) {
  pools.push(poolOf(loaded[0]!, JSON.parse(values.also) as object));
  names.push(`pyvisor+${values.also}`);
}
await Promise.all(pools.map((p) => p.ready()));
const bare = barePool(size);
type Variant = [string, () => Promise<unknown>];
const variants: Variant[] = [
  ['bare', bare] as Variant,
  ...pools.map((pool, i): Variant => [names[i]!, () => pool.call('add', [1, 2])]),
].filter(([name]) => !values.only || name.startsWith(values.only));

async function block(call: () => Promise<unknown>, n: number) {
  let left = n;
  const loop = async () => {
    while (left-- > 0) await call();
  };
  const c0 = nodeCpuUs();
  const t0 = performance.now();
  await Promise.all(Array.from({ length: concurrency }, loop));
  return { wall: ((performance.now() - t0) * 1000) / n, cpu: (nodeCpuUs() - c0) / n };
}

for (const [, call] of variants) await block(call, Math.min(20_000, calls));
const res: Record<string, { wall: number; cpu: number }[]> = {};
for (let r = 0; r < rounds; r++) {
  for (const [name, call] of r % 2 ? [...variants].reverse() : variants) {
    const list = res[name] ?? [];
    res[name] = list;
    list.push(await block(call, calls));
  }
}
for (const [name, list] of Object.entries(res)) {
  const cpu = list.map((x) => x.cpu);
  const wall = list.map((x) => x.wall);
  console.log(
    `${name.padEnd(names.length > 1 ? 40 : 8)} Node CPU ${median(cpu).toFixed(2)} µs/call (min ${min(cpu).toFixed(2)}), wall ${median(wall).toFixed(2)} µs/call (min ${min(wall).toFixed(2)})  [size ${size}, concurrency ${concurrency}, ${calls} calls × ${rounds}]`,
  );
}
await Promise.all(pools.map((p) => p.close()));
