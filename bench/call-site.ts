/**
 * What `callSiteStacks` (default on) adds to a call that succeeds: the call's promise is awaited
 * in one more async function (src/pool/call-site.ts). Measured in isolation, interleaved, as ns
 * per awaited call; the pool-level view is
 * `node --import tsx bench/overhead.ts --also '{"callSiteStacks":false}'`.
 *
 *   node --import tsx bench/call-site.ts [--calls 1000000] [--rounds 9]
 */
import { parseArgs } from 'node:util';
import { withCallSite } from '../src/pool/call-site.js';
import { median } from './stats.js';

const { values } = parseArgs({
  options: {
    calls: { type: 'string', default: '1000000' },
    rounds: { type: 'string', default: '9' },
  },
});
const calls = Number(values.calls);
const rounds = Number(values.rounds);

// A promise settled later, like a call's: resolved from a microtask after it is awaited.
function reply(i: number): Promise<number> {
  return new Promise((resolve) => queueMicrotask(() => resolve(i)));
}

async function plain(n: number): Promise<number> {
  let sum = 0;
  for (let i = 0; i < n; i++) sum += await reply(i);
  return sum;
}

async function sited(n: number): Promise<number> {
  let sum = 0;
  for (let i = 0; i < n; i++) sum += await withCallSite(reply(i));
  return sum;
}

async function time(run: (n: number) => Promise<number>): Promise<number> {
  const t0 = performance.now();
  await run(calls);
  return ((performance.now() - t0) * 1e6) / calls;
}

await plain(100_000);
await sited(100_000);
const a: number[] = [];
const b: number[] = [];
for (let r = 0; r < rounds; r++) {
  if (r % 2) {
    b.push(await time(sited));
    a.push(await time(plain));
  } else {
    a.push(await time(plain));
    b.push(await time(sited));
  }
}
const added = b.map((x, i) => x - a[i]!);
console.log(
  `await call: ${median(a).toFixed(0)} ns; with callSiteStacks: ${median(b).toFixed(0)} ns; added ${median(added).toFixed(0)} ns per call (median of ${rounds} interleaved rounds × ${calls} calls)`,
);
