/**
 * startMethod 'forkserver' against 'spawn' (issue 12): the time to replace a worker killed with
 * SIGKILL, and the memory of 4 workers, with a script whose import takes ~2 s and allocates
 * ~300 MB (bench/heavy_import.py).
 *
 *   node --import tsx bench/forkserver.ts [--reps 5] [--size 4]
 *
 * Replacement: SIGKILL an idle worker, then time until its slot has a ready worker again (the
 * `worker.ready` event), with `restart.minDelay: 0` so the figure is the start itself, not the
 * backoff (the default backoff adds 50–100 ms to both methods). Each kill comes in a steady state:
 * 200 ms after the previous replacement, and for 'forkserver' once the template has forked its
 * spare again. Memory: PSS (proportional set
 * size: a page shared by N processes counts 1/N in each) from /proc/<pid>/smaps_rollup, summed
 * over the workers, and over the workers plus the template and its spare for 'forkserver'. Both
 * measured after two calls per worker, idle.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { createPool, type Pool, type StartMethod } from '../src/index.js';

const SCRIPT = fileURLToPath(new URL('./heavy_import.py', import.meta.url));
const { values } = parseArgs({
  options: { reps: { type: 'string', default: '5' }, size: { type: 'string', default: '4' } },
});
const REPS = Number(values.reps);
const SIZE = Number(values.size);

function pssKb(pid: number): number {
  const text = readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8');
  return Number(/^Pss:\s+(\d+) kB/m.exec(text)?.[1] ?? Number.NaN);
}

function rssKb(pid: number): number {
  const text = readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8');
  return Number(/^Rss:\s+(\d+) kB/m.exec(text)?.[1] ?? Number.NaN);
}

function ppidOf(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

function childrenOf(pid: number): number[] {
  const out: number[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      if (ppidOf(Number(name)) === pid) out.push(Number(name));
    } catch {
      // Gone meanwhile.
    }
  }
  return out;
}

/** Waits until the template (if any) has its spare again, then 200 ms more. */
async function settle(template: number | null, size: number): Promise<void> {
  if (template !== null) {
    const deadline = performance.now() + 10_000;
    while (childrenOf(template).length < size + 1 && performance.now() < deadline) await sleep(5);
  }
  await sleep(200);
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};

function workerPids(pool: Pool): number[] {
  return pool.stats().workers.map((w) => w.pid!);
}

async function measure(startMethod: StartMethod) {
  const t0 = performance.now();
  const pool = createPool({
    script: SCRIPT,
    size: SIZE,
    startMethod,
    restart: { minDelay: 0, maxDelay: 10 },
    initTimeout: 60_000,
    keepAlive: true,
  });
  pool.on('warning', (w) => console.log(`  warning ${w.code}: ${w.message.split('\n')[0]}`));
  await pool.ready();
  const readyMs = performance.now() - t0;
  for (let i = 0; i < SIZE * 2; i++) await pool.call('checksum', [1 << 20]);
  const pids = workerPids(pool);
  const template = startMethod === 'forkserver' ? ppidOf(pids[0]!) : null;
  const workersPss = pids.reduce((sum, pid) => sum + pssKb(pid), 0);
  const workersRss = pids.reduce((sum, pid) => sum + rssKb(pid), 0);
  // The template and its spare (a child forked ahead of time) count too.
  await settle(template, SIZE);
  const extra = template
    ? [template, ...childrenOf(template).filter((p) => !pids.includes(p))]
    : [];
  const templatePss = extra.reduce((sum, pid) => sum + pssKb(pid), 0);
  const replace: number[] = [];
  for (let rep = 0; rep < REPS; rep++) {
    const slot = rep % SIZE;
    const victim = pool.stats().workers[slot]!.pid!;
    const back = new Promise<number>((resolve) => {
      const onReady = (e: { workerId: number }) => {
        if (e.workerId !== slot) return;
        pool.off('worker.ready', onReady);
        resolve(performance.now());
      };
      pool.on('worker.ready', onReady);
    });
    // Steady state before each kill: the previous replacement's work is over (for 'forkserver'
    // the template forked its spare again: it has one child more than the pool has workers).
    await settle(template, SIZE);
    const killedAt = performance.now();
    process.kill(victim, 'SIGKILL');
    replace.push((await back) - killedAt);
    await pool.ready();
  }
  await pool.close();
  return { startMethod, readyMs, replace, workersPss, workersRss, templatePss };
}

console.log(
  `bench/forkserver.ts: ${SIZE} workers, ${REPS} replacements each; ${cpus().length} cores, load ${loadavg()
    .map((l) => l.toFixed(2))
    .join(' ')}`,
);
const results = [];
for (const method of ['spawn', 'forkserver'] as const) {
  const r = await measure(method);
  results.push(r);
  const mb = (kb: number) => `${(kb / 1024).toFixed(0)} MB`;
  console.log(
    `${method.padEnd(10)} ready ${r.readyMs.toFixed(0)} ms | replacement median ${median(r.replace).toFixed(1)} ms (${r.replace.map((x) => x.toFixed(1)).join(', ')}) | PSS workers ${mb(r.workersPss)}${r.templatePss ? `, + template and spare ${mb(r.templatePss)} = ${mb(r.workersPss + r.templatePss)}` : ''} | RSS workers ${mb(r.workersRss)}`,
  );
}
const [spawned, forked] = results as [(typeof results)[0], (typeof results)[0]];
console.log(
  `forkserver / spawn: replacement ${(median(forked.replace) / median(spawned.replace)).toFixed(3)}x, PSS (workers + template + spare) ${((forked.workersPss + forked.templatePss) / spawned.workersPss).toFixed(3)}x, PSS (workers) ${(forked.workersPss / spawned.workersPss).toFixed(3)}x`,
);
console.log(JSON.stringify(results));
