/**
 * startMethod 'forkserver' against 'spawn' (issue 12): the time to replace a worker killed with
 * SIGKILL, and the memory of 4 workers, with a script whose import takes ~2 s and allocates
 * ~300 MB (bench/heavy_import.py).
 *
 *   node --import tsx bench/forkserver.ts [--reps 5] [--size 4]
 *
 * Replacement: SIGKILL an idle worker, then time until its slot has a ready worker again (the
 * `worker.ready` event), with `restart.minDelay: 0` so the figure is the start itself, not the
 * backoff (the default backoff adds 50–100 ms to both methods). Memory: PSS (proportional set
 * size: a page shared by N processes counts 1/N in each) from /proc/<pid>/smaps_rollup, summed
 * over the workers, and over the workers plus the template for 'forkserver'. Both measured after
 * one call per worker, idle.
 */
import { readFileSync } from 'node:fs';
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
  const templatePss = template ? pssKb(template) : 0;
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
    `${method.padEnd(10)} ready ${r.readyMs.toFixed(0)} ms | replacement median ${median(r.replace).toFixed(1)} ms (${r.replace.map((x) => x.toFixed(1)).join(', ')}) | PSS workers ${mb(r.workersPss)}${r.templatePss ? `, + template ${mb(r.templatePss)} = ${mb(r.workersPss + r.templatePss)}` : ''} | RSS workers ${mb(r.workersRss)}`,
  );
}
const [spawned, forked] = results as [(typeof results)[0], (typeof results)[0]];
console.log(
  `forkserver / spawn: replacement ${(median(forked.replace) / median(spawned.replace)).toFixed(3)}x, PSS (workers + template) ${((forked.workersPss + forked.templatePss) / spawned.workersPss).toFixed(3)}x, PSS (workers) ${(forked.workersPss / spawned.workersPss).toFixed(3)}x`,
);
console.log(JSON.stringify(results));
