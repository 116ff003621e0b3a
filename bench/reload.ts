/**
 * pool.reload() under load: how long a rolling reload of N workers takes next to a cold start of
 * the same pool, how many calls were served meanwhile and how many failed (must be 0).
 *
 *   node --import tsx bench/reload.ts [--size 4] [--callers 8] [--rounds 3]
 */
import { parseArgs } from 'node:util';
import { createPool } from '../src/index.js';
import { median } from './stats.js';

const { values } = parseArgs({
  options: {
    size: { type: 'string', default: '4' },
    callers: { type: 'string', default: '8' },
    rounds: { type: 'string', default: '3' },
  },
});
const size = Number(values.size);
const callers = Number(values.callers);
const rounds = Number(values.rounds);
const script = new URL('./handlers.py', import.meta.url).pathname;

const starts: number[] = [];
const reloads: number[] = [];
let served = 0;
let failed = 0;
for (let r = 0; r < rounds; r++) {
  const t0 = performance.now();
  const pool = createPool({ script, size });
  await pool.ready();
  starts.push(performance.now() - t0);
  let stop = false;
  const load = Array.from({ length: callers }, async () => {
    while (!stop) {
      await pool.call('add', [1, 2]).then(
        () => served++,
        () => failed++,
      );
    }
  });
  const t1 = performance.now();
  await pool.reload();
  reloads.push(performance.now() - t1);
  stop = true;
  await Promise.all(load);
  await pool.close();
}
console.log(
  `size ${size}: cold start ${median(starts).toFixed(0)} ms; rolling reload ${median(reloads).toFixed(0)} ms (${(median(reloads) / median(starts)).toFixed(2)}× a cold start, one slot at a time) with ${callers} callers: ${served} calls served during the reloads, ${failed} failed  [median of ${rounds}]`,
);
