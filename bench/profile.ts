/**
 * A hot loop to profile with `node --cpu-prof`: sequential calls on one worker (or a closed loop
 * on `--size` workers with `--concurrency` callers), pyvisor or the bare baseline.
 *
 *   node --cpu-prof --cpu-prof-dir=/tmp/pyvisor-prof --import tsx bench/profile.ts \
 *        [--bare] [--calls 100000] [--size 1] [--concurrency 1] [--bytes 10000000]
 *        [--lib /path/to/dist/index.js]
 *   node --import tsx bench/analyze-profile.ts /tmp/pyvisor-prof/<file>.cpuprofile
 *
 * Prints wall time, Node CPU and worker CPU per call, so a profile can be paired with numbers.
 */
import { parseArgs } from 'node:util';
import { resolveInterpreter } from '../src/transport/interpreter.js';
import { BarePool } from './bare.js';
import { nodeCpuUs, procsCpuNs } from './stats.js';

const { values } = parseArgs({
  options: {
    bare: { type: 'boolean', default: false },
    calls: { type: 'string', default: '100000' },
    size: { type: 'string', default: '1' },
    concurrency: { type: 'string', default: '1' },
    fn: { type: 'string', default: 'add' },
    // Payload of `echo` (an ASCII string of this many bytes); implies --fn echo.
    bytes: { type: 'string' },
    // Another build of pyvisor, e.g. the tsc output (tsx adds esbuild's keepNames helpers).
    lib: { type: 'string', default: '../src/index.js' },
  },
});
const { createPool } = (await import(values.lib!)) as typeof import('../src/index.js');
const calls = Number(values.calls);
const size = Number(values.size);
const concurrency = Number(values.concurrency);
if (values.bytes) values.fn = 'echo';
const args = values.fn === 'add' ? [1, 2] : ['x'.repeat(Number(values.bytes ?? 1))];

const python = await resolveInterpreter(
  process.env.PYVISOR_PYTHON ?? 'python3',
  process.env,
  process.cwd(),
);
let call: () => Promise<unknown>;
let pids: number[];
let close: () => Promise<void>;
if (values.bare) {
  const bare = new BarePool(python, size);
  await bare.ready();
  call = () => bare.call(values.fn!, args);
  pids = bare.workers.map((w) => w.pid!);
  close = () => bare.close();
} else {
  const pool = createPool({
    script: new URL('./handlers.py', import.meta.url).pathname,
    size,
  });
  await pool.ready();
  call = () => pool.call(values.fn!, args);
  pids = pool.stats().workers.map((w) => w.pid!);
  close = () => pool.close();
}

async function run(n: number): Promise<void> {
  let left = n;
  const loop = async () => {
    while (left-- > 0) await call();
  };
  await Promise.all(Array.from({ length: concurrency }, loop));
}

await run(Math.min(5000, calls)); // warm-up
const c0 = nodeCpuUs();
const w0 = procsCpuNs(pids);
const t0 = performance.now();
await run(calls);
const wall = performance.now() - t0;
console.log(
  JSON.stringify({
    variant: values.bare ? 'bare' : 'pyvisor',
    size,
    concurrency,
    calls,
    usPerCall: +((wall * 1000) / calls).toFixed(2),
    callsPerSec: Math.round(calls / (wall / 1000)),
    nodeCpuUsPerCall: +((nodeCpuUs() - c0) / calls).toFixed(2),
    workerCpuUsPerCall: +((procsCpuNs(pids) - w0) / 1000 / calls).toFixed(2),
  }),
);
await close();
