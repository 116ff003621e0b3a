/**
 * Which free worker takes a call: sequential calls on a pool of 8 against a pool of 1, for one or
 * more builds of pyvisor side by side in one run (so the machine's noise hits them alike).
 *
 *   node --import tsx bench/idle-order.ts [--calls N] [--reps N] [--lib LABEL=/path/to/index.js ...]
 *
 * Without --lib it measures src/ (through tsx). A pool that hands each call to the worker idle
 * longest (FIFO) rotates sequential calls over all 8 processes and wakes a cold one every time; a
 * pool that picks the most recently used one (LIFO) keeps one process warm, so its 8/1 ratio
 * should be ~1.0. Reported: median µs per call for each size, and the median of the paired 8/1
 * ratios over the repetitions.
 */
import { parseArgs } from 'node:util';
import type { createPool as CreatePool } from '../src/index.js';
import { fmt, fmtRatio, median, ratioSummary } from './stats.js';

const { values } = parseArgs({
  options: {
    calls: { type: 'string', default: '3000' },
    reps: { type: 'string', default: '7' },
    lib: { type: 'string', multiple: true },
  },
});
const CALLS = Number(values.calls);
const REPS = Number(values.reps);
const SCRIPT = new URL('./handlers.py', import.meta.url).pathname;

interface Lib {
  label: string;
  createPool: typeof CreatePool;
}

async function load(): Promise<Lib[]> {
  if (!values.lib?.length) {
    const { createPool } = await import('../src/index.js');
    return [{ label: 'src', createPool }];
  }
  return Promise.all(
    values.lib.map(async (spec) => {
      const [label, path] = spec.includes('=') ? spec.split('=', 2) : [spec, spec];
      const mod = (await import(path!)) as { createPool: typeof CreatePool };
      return { label: label!, createPool: mod.createPool };
    }),
  );
}

/** µs per call for CALLS sequential calls (after a warm-up) on a ready pool of `size`. */
async function measure(lib: Lib, size: number): Promise<number> {
  const pool = lib.createPool({ script: SCRIPT, size, healthCheck: false });
  try {
    await pool.ready();
    for (let i = 0; i < 200; i++) await pool.call('add', [i, 1]);
    const t0 = performance.now();
    for (let i = 0; i < CALLS; i++) await pool.call('add', [i, 1]);
    return ((performance.now() - t0) * 1000) / CALLS;
  } finally {
    await pool.close();
  }
}

const libs = await load();
const results = new Map<string, { one: number[]; eight: number[]; ratios: number[] }>();
for (const lib of libs) results.set(lib.label, { one: [], eight: [], ratios: [] });
for (let rep = 0; rep < REPS; rep++) {
  // Alternate the order so neither build always runs first.
  const order = rep % 2 === 0 ? libs : [...libs].reverse();
  for (const lib of order) {
    const r = results.get(lib.label)!;
    const sizes = rep % 2 === 0 ? [1, 8] : [8, 1];
    const us: Record<number, number> = {};
    for (const size of sizes) us[size] = await measure(lib, size);
    r.one.push(us[1]!);
    r.eight.push(us[8]!);
    r.ratios.push(us[8]! / us[1]!);
  }
}
console.log(`sequential 'add' calls, ${CALLS} per run, ${REPS} runs per build and size`);
console.log(
  'build | size 1, µs/call | size 8, µs/call | size 8 / size 1 (median of paired ratios)',
);
for (const [label, r] of results) {
  console.log(
    `${label} | ${fmt(median(r.one))} | ${fmt(median(r.eight))} | ${fmtRatio(ratioSummary(r.ratios).median)} (${r.ratios.map((x) => x.toFixed(2)).join(', ')})`,
  );
}
