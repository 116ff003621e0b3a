/**
 * pyvisor benchmarks, each against a bare baseline measured in the same process run.
 *
 *   node --import tsx bench/run.ts [--quick] [--only latency,throughput,...] [--write|--no-write]
 *        [--reps N] [--build | --lib /path/to/a/build/index.js]
 *
 *   --quick   fewer calls and repetitions (about a minute instead of about five)
 *   --only    some of: latency, throughput, async, startup, payload, values, recovery, peers
 *   --build   measure src/ compiled by tsc (what ships) instead of src/ through tsx
 *   PYVISOR_BENCH_PEERS=DIR  where python-shell / pythonia are installed, if not in node_modules
 *
 * Every benchmark runs pyvisor and the bare baseline (bench/bare.ts + bench/bare_worker.py: a
 * minimal length-prefixed JSON echo over fds 3/4, no library) side by side, interleaved
 * (A B, B A, A B, ...), several repetitions, and reports medians and the median of the paired
 * ratios pyvisor/baseline. The machine is shared and noisy: medians of interleaved runs, not
 * single numbers.
 *
 * A full run writes bench/results/latest.json (merged per benchmark, so `--only` refreshes
 * some sections) and regenerates the generated part of docs/benchmarks.md. A `--quick` run only
 * prints, unless `--write` is given.
 */
import { execFileSync } from 'node:child_process';
import {
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readlinkSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { cpus, loadavg, tmpdir, totalmem } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import type { Pool } from '../src/index.js';
import { resolveInterpreter } from '../src/transport/interpreter.js';
import { BarePool, BareWorker } from './bare.js';
import { type Peer, type PeerFactory, pythoniaFactory, pythonShellFactory } from './peers.js';
import {
  fmt,
  fmtRatio,
  median,
  nodeCpuUs,
  percentile,
  procsCpuNs,
  ratioSummary,
  sleep,
} from './stats.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const SCRIPT = fileURLToPath(new URL('./handlers.py', import.meta.url));
const RESULTS = join(ROOT, 'bench', 'results', 'latest.json');
const DOC = join(ROOT, 'docs', 'benchmarks.md');
const ALL = [
  'latency',
  'throughput',
  'async',
  'startup',
  'payload',
  'values',
  'recovery',
  'peers',
] as const;
type BenchId = (typeof ALL)[number];

const { values: flags } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    only: { type: 'string' },
    write: { type: 'boolean' },
    'no-write': { type: 'boolean', default: false },
    reps: { type: 'string' },
    // Which pyvisor to measure: src/ through tsx (default), a build's index.js, or --build (tsc).
    lib: { type: 'string' },
    build: { type: 'boolean', default: false },
  },
});
const QUICK = flags.quick === true;
const WRITE = flags['no-write'] ? false : (flags.write ?? !QUICK);
const selected: BenchId[] = flags.only
  ? (flags.only.split(',').map((s) => s.trim()) as BenchId[])
  : [...ALL];
for (const id of selected) {
  if (!ALL.includes(id)) throw new Error(`--only: unknown benchmark ${id} (one of ${ALL})`);
}
const REPS = flags.reps ? Number(flags.reps) : QUICK ? 3 : 7;
const COMMAND = `node --import tsx bench/run.ts ${process.argv.slice(2).join(' ')}`.trim();

interface Target {
  name: string;
  target: string;
  measured: string;
  /** null: not applicable (not implemented, or not measured). */
  met: boolean | null;
}

interface Section {
  id: BenchId;
  title: string;
  date: string;
  mode: 'quick' | 'full';
  reps: number;
  /** Command line and load average of the run that produced this section. */
  command?: string;
  load?: string;
  columns: string[];
  rows: string[][];
  notes: string[];
  targets: Target[];
  data: unknown;
}

/** A/B order alternates per repetition: A B, B A, A B, ... */
function order<T>(items: readonly T[], rep: number): T[] {
  return rep % 2 === 0 ? [...items] : [...items].reverse();
}

function section(
  id: BenchId,
  title: string,
  reps: number,
  rest: Pick<Section, 'columns' | 'rows' | 'notes' | 'targets' | 'data'>,
): Section {
  return {
    id,
    title,
    date: new Date().toISOString(),
    mode: QUICK ? 'quick' : 'full',
    reps,
    command: COMMAND,
    load: loadavg()
      .map((x) => x.toFixed(2))
      .join(' '),
    ...rest,
  };
}

function log(message: string): void {
  process.stderr.write(`${message}\n`);
}

function workerPids(pool: Pool): number[] {
  return pool
    .stats()
    .workers.map((w) => w.pid)
    .filter((p): p is number => p !== null);
}

type Lib = typeof import('../src/index.js');
let lib: Lib;
let libLabel = 'src/ through tsx';

/**
 * tsx compiles with esbuild's keepNames, which wraps every named function expression in a
 * `__name()` call; on pyvisor's per-call closures that costs several µs per call. `--build`
 * measures what ships instead: src/ compiled by tsc, in a temporary directory with a `python`
 * symlink beside it (paths.ts finds the runtime at ../python).
 */
async function loadLib(): Promise<void> {
  if (flags.build) {
    const dir = mkdtempSync(join(tmpdir(), 'pyvisor-bench-build-'));
    execFileSync(
      process.execPath,
      [
        join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc'),
        '-p',
        join(ROOT, 'tsconfig.build.json'),
        '--outDir',
        join(dir, 'dist'),
        '--declaration',
        'false',
      ],
      { stdio: 'inherit' },
    );
    symlinkSync(join(ROOT, 'python'), join(dir, 'python'));
    symlinkSync(join(ROOT, 'node_modules'), join(dir, 'node_modules'));
    writeFileSync(join(dir, 'package.json'), '{"type":"module"}\n');
    lib = (await import(join(dir, 'dist', 'index.js'))) as Lib;
    libLabel = 'src/ compiled by tsc (--build)';
    process.once('exit', () => rmSync(dir, { recursive: true, force: true }));
  } else if (flags.lib) {
    lib = (await import(flags.lib)) as Lib;
    libLabel = flags.lib;
  } else {
    lib = await import('../src/index.js');
  }
}

function newPool(size: number, extra: Record<string, unknown> = {}): Pool {
  return lib.createPool({ script: SCRIPT, size, ...extra });
}

// ------------------------------------------------------------------------------------------
// 1. Sequential latency

interface SeqBlock {
  p50: number;
  p99: number;
  mean: number;
  nodeCpu: number;
  workerCpu: number;
}

/** `n` calls one after another; latencies in µs, CPU per call in µs. */
async function sequentialBlock(
  call: () => Promise<unknown>,
  n: number,
  pids: readonly (number | undefined)[],
): Promise<SeqBlock> {
  const lat = new Float64Array(n);
  const c0 = nodeCpuUs();
  const w0 = procsCpuNs(pids);
  const t0 = performance.now();
  for (let i = 0; i < n; i++) {
    const s = performance.now();
    await call();
    lat[i] = (performance.now() - s) * 1000;
  }
  const wall = (performance.now() - t0) * 1000;
  return {
    p50: percentile(lat, 50),
    p99: percentile(lat, 99),
    mean: wall / n,
    nodeCpu: (nodeCpuUs() - c0) / n,
    workerCpu: (procsCpuNs(pids) - w0) / 1000 / n,
  };
}

async function benchLatency(python: string): Promise<Section> {
  const n = QUICK ? 2000 : 5000;
  const reps = Math.max(REPS, QUICK ? 3 : 9);
  const pool = newPool(1);
  const bare = new BareWorker(python);
  await Promise.all([pool.ready(), bare.ready]);
  const variants = [
    { name: 'bare', call: () => bare.call('add', [1, 2]), pids: [bare.pid] },
    { name: 'pyvisor', call: () => pool.call('add', [1, 2]), pids: workerPids(pool) },
  ];
  for (const v of variants) await sequentialBlock(v.call, 2000, v.pids); // warm-up
  const blocks: Record<string, SeqBlock[]> = { bare: [], pyvisor: [] };
  for (let r = 0; r < reps; r++) {
    for (const v of order(variants, r))
      blocks[v.name]!.push(await sequentialBlock(v.call, n, v.pids));
    log(
      `  latency rep ${r + 1}/${reps}: bare p50 ${fmt(blocks.bare!.at(-1)!.p50)} µs, pyvisor p50 ${fmt(blocks.pyvisor!.at(-1)!.p50)} µs`,
    );
  }
  await Promise.all([pool.close(), bare.kill()]);
  const agg = (name: string) => {
    const b = blocks[name]!;
    return {
      p50: median(b.map((x) => x.p50)),
      p99: median(b.map((x) => x.p99)),
      mean: median(b.map((x) => x.mean)),
      nodeCpu: median(b.map((x) => x.nodeCpu)),
      workerCpu: median(b.map((x) => x.workerCpu)),
    };
  };
  const a = agg('bare');
  const p = agg('pyvisor');
  const pair = (k: keyof SeqBlock) =>
    ratioSummary(blocks.pyvisor!.map((x, i) => x[k] / blocks.bare![i]![k]));
  const r50 = pair('p50');
  const row = (name: string, x: ReturnType<typeof agg>) => [
    name,
    fmt(x.p50),
    fmt(x.p99),
    fmt(x.mean),
    fmt(x.nodeCpu),
    fmt(x.workerCpu),
  ];
  return section(
    'latency',
    '1. Sequential latency (one worker, one call in flight, add(1, 2))',
    reps,
    {
      columns: ['', 'p50 µs', 'p99 µs', 'mean µs', 'Node CPU µs/call', 'worker CPU µs/call'],
      rows: [
        row('bare', a),
        row('pyvisor', p),
        [
          'pyvisor / bare',
          r50.text,
          pair('p99').text,
          pair('mean').text,
          fmtRatio(p.nodeCpu / a.nodeCpu),
          fmtRatio(p.workerCpu / a.workerCpu),
        ],
        [
          'pyvisor − bare',
          fmt(p.p50 - a.p50),
          fmt(p.p99 - a.p99),
          fmt(p.mean - a.mean),
          fmt(p.nodeCpu - a.nodeCpu),
          fmt(p.workerCpu - a.workerCpu),
        ],
      ],
      notes: [
        `${reps} interleaved blocks of ${n} calls per variant (after 2000 warm-up calls each); medians over blocks, ratios are medians of the per-block pairs (range in parentheses).`,
        'CPU per call: Node from process.cpuUsage() (all Node threads, GC included), worker from /proc/<pid>/task/*/schedstat.',
      ],
      targets: [
        {
          name: 'sequential latency p50',
          target: '≤ 1.25× bare',
          measured: fmtRatio(r50.median),
          met: r50.median <= 1.25,
        },
      ],
      data: { n, blocks },
    },
  );
}

// ------------------------------------------------------------------------------------------
// 2. Throughput

interface TputBlock {
  rate: number;
  nodeCpu: number;
  workerCpu: number;
}

async function throughputBlock(
  call: () => Promise<unknown>,
  concurrency: number,
  ms: number,
  pids: readonly (number | undefined)[],
): Promise<TputBlock> {
  let count = 0;
  const c0 = nodeCpuUs();
  const w0 = procsCpuNs(pids);
  const t0 = performance.now();
  const end = t0 + ms;
  const loop = async () => {
    while (performance.now() < end) {
      await call();
      count++;
    }
  };
  await Promise.all(Array.from({ length: concurrency }, loop));
  const wall = performance.now() - t0;
  return {
    rate: count / (wall / 1000),
    nodeCpu: (nodeCpuUs() - c0) / count,
    workerCpu: (procsCpuNs(pids) - w0) / 1000 / count,
  };
}

async function benchThroughput(python: string): Promise<Section> {
  const ms = QUICK ? 500 : 1500;
  const reps = REPS;
  const rows: string[][] = [];
  const targets: Target[] = [];
  const data: Record<string, unknown> = {};
  for (const size of [2, 4]) {
    const concurrency = 4 * size;
    const pool = newPool(size);
    const bare = new BarePool(python, size);
    await Promise.all([pool.ready(), bare.ready()]);
    const variants = [
      {
        name: 'bare',
        call: () => bare.call('add', [1, 2]),
        pids: bare.workers.map((w) => w.pid),
      },
      { name: 'pyvisor', call: () => pool.call('add', [1, 2]), pids: workerPids(pool) },
    ];
    for (const v of variants) await throughputBlock(v.call, concurrency, 300, v.pids);
    const blocks: Record<string, TputBlock[]> = { bare: [], pyvisor: [] };
    for (let r = 0; r < reps; r++) {
      for (const v of order(variants, r)) {
        blocks[v.name]!.push(await throughputBlock(v.call, concurrency, ms, v.pids));
      }
      log(
        `  throughput size ${size} rep ${r + 1}/${reps}: bare ${fmt(blocks.bare!.at(-1)!.rate)}/s, pyvisor ${fmt(blocks.pyvisor!.at(-1)!.rate)}/s`,
      );
    }
    await Promise.all([pool.close(), bare.close()]);
    const ratio = ratioSummary(blocks.pyvisor!.map((x, i) => x.rate / blocks.bare![i]!.rate));
    for (const name of ['bare', 'pyvisor']) {
      const b = blocks[name]!;
      rows.push([
        String(size),
        name,
        fmt(median(b.map((x) => x.rate))),
        fmt(median(b.map((x) => x.nodeCpu))),
        fmt(median(b.map((x) => x.workerCpu))),
        name === 'pyvisor' ? ratio.text : '',
      ]);
    }
    targets.push({
      name: `throughput, size ${size}`,
      target: '≥ 1.0× bare',
      measured: fmtRatio(ratio.median),
      met: ratio.median >= 1.0,
    });
    data[`size${size}`] = { concurrency, blocks };
  }
  return section(
    'throughput',
    '2. Throughput (closed loop, 4 callers per worker, add(1, 2))',
    reps,
    {
      columns: [
        'workers',
        '',
        'calls/s',
        'Node CPU µs/call',
        'workers CPU µs/call',
        'pyvisor / bare',
      ],
      rows,
      notes: [
        `${reps} interleaved blocks of ${ms} ms per variant (after a 300 ms warm-up); 4 × size concurrent callers, each awaiting its call before making the next. The bare pool keeps one call in flight per worker behind a FIFO, like pyvisor.`,
      ],
      targets,
      data,
    },
  );
}

// ------------------------------------------------------------------------------------------
// 2b. Async handlers: fan-out of I/O-bound calls, and an async call against a plain one

interface FanOutBlock {
  wall: number;
  nodeCpu: number;
  workerCpu: number;
}

async function fanOutBlock(pool: Pool, calls: number, seconds: number): Promise<FanOutBlock> {
  const pids = workerPids(pool);
  const c0 = nodeCpuUs();
  const w0 = procsCpuNs(pids);
  const t0 = performance.now();
  await Promise.all(Array.from({ length: calls }, () => pool.call('nap', [seconds])));
  return {
    wall: performance.now() - t0,
    nodeCpu: (nodeCpuUs() - c0) / calls,
    workerCpu: (procsCpuNs(pids) - w0) / 1000 / calls,
  };
}

async function benchAsync(_python: string): Promise<Section> {
  const reps = REPS;
  const calls = 1000;
  const seconds = 0.1;
  const fan = newPool(2, { concurrency: 250 });
  await fan.ready();
  await fanOutBlock(fan, calls, seconds); // warm-up: the event loop and asyncio are imported
  const fanBlocks: FanOutBlock[] = [];
  for (let r = 0; r < reps; r++) {
    fanBlocks.push(await fanOutBlock(fan, calls, seconds));
    log(`  async fan-out rep ${r + 1}/${reps}: ${fmt(fanBlocks.at(-1)!.wall)} ms`);
  }
  await fan.close();

  // An async call against a plain one, one call in flight, in a default pool (concurrency 1)
  // and in a concurrent one (concurrency 250: every call goes through the event loop).
  const n = QUICK ? 2000 : 5000;
  const overhead: Record<string, { sync: SeqBlock[]; async: SeqBlock[] }> = {};
  for (const concurrency of [1, 250]) {
    const pool = newPool(1, { concurrency });
    await pool.ready();
    const pids = workerPids(pool);
    const variants = [
      { name: 'sync', call: () => pool.call('add', [1, 2]) },
      { name: 'async', call: () => pool.call('aadd', [1, 2]) },
    ];
    for (const v of variants) await sequentialBlock(v.call, 1000, pids);
    const blocks = { sync: [] as SeqBlock[], async: [] as SeqBlock[] };
    for (let r = 0; r < reps; r++) {
      for (const v of order(variants, r)) {
        blocks[v.name as 'sync' | 'async'].push(await sequentialBlock(v.call, n, pids));
      }
      log(
        `  async vs sync, concurrency ${concurrency}, rep ${r + 1}/${reps}: sync p50 ${fmt(blocks.sync.at(-1)!.p50)} µs, async p50 ${fmt(blocks.async.at(-1)!.p50)} µs`,
      );
    }
    await pool.close();
    overhead[`concurrency${concurrency}`] = blocks;
  }

  const floor = seconds * 1000 * (calls / (2 * 250));
  const wall = median(fanBlocks.map((b) => b.wall));
  const rows: string[][] = [
    [
      `fan-out: ${calls} × nap(${seconds}), size 2, concurrency 250`,
      `${fmt(wall)} ms (floor ${fmt(floor)} ms)`,
      fmt(median(fanBlocks.map((b) => b.nodeCpu))),
      fmt(median(fanBlocks.map((b) => b.workerCpu))),
      '',
    ],
  ];
  const targets: Target[] = [
    {
      name: `async fan-out, ${calls} calls of 100 ms, size 2, concurrency 250`,
      target: '≤ 600 ms wall',
      measured: `${fmt(wall)} ms`,
      met: wall <= 600,
    },
  ];
  for (const [key, blocks] of Object.entries(overhead)) {
    const ratio = ratioSummary(blocks.async.map((x, i) => x.p50 / blocks.sync[i]!.p50));
    const c = key.replace('concurrency', '');
    for (const kind of ['sync', 'async'] as const) {
      const b = blocks[kind];
      rows.push([
        `${kind === 'sync' ? 'add' : 'aadd (async def)'}, one call in flight, concurrency ${c}`,
        `p50 ${fmt(median(b.map((x) => x.p50)))} µs`,
        fmt(median(b.map((x) => x.nodeCpu))),
        fmt(median(b.map((x) => x.workerCpu))),
        kind === 'async' ? ratio.text : '',
      ]);
    }
    targets.push({
      name: `async call over a plain one, concurrency ${c}`,
      target: '≤ 1.3×',
      measured: fmtRatio(ratio.median),
      met: ratio.median <= 1.3,
    });
  }
  return section('async', '2b. Async handlers (fan-out; an async call against a plain one)', reps, {
    columns: ['', 'time', 'Node CPU µs/call', 'worker CPU µs/call', 'async / sync p50'],
    rows,
    notes: [
      `Fan-out: ${calls} calls of \`await asyncio.sleep(${seconds})\` made at once on a pool of 2 workers with \`concurrency\` 250, ${reps} rounds (after one warm-up round); the floor is ${calls} / (2 × 250) rounds of ${seconds * 1000} ms. CPU per call: Node from process.cpuUsage(), workers from /proc/<pid>/task/*/schedstat.`,
      `Async against plain: \`aadd\` (an \`async def\` add) and \`add\` on one worker, ${reps} interleaved blocks of ${n} sequential calls each; ratio of the p50s, median of the pairs (range). With concurrency 1 an async handler runs on the worker's persistent loop (run_until_complete); with concurrency 250 every call, plain ones included, goes through the event loop.`,
    ],
    targets,
    data: { fanOut: fanBlocks, overhead },
  });
}

// ------------------------------------------------------------------------------------------
// 3. Startup

async function startPyvisor(size: number, extra: Record<string, unknown> = {}): Promise<number> {
  const t0 = performance.now();
  const pool = newPool(size, extra);
  await pool.ready();
  const ms = performance.now() - t0;
  await pool.close();
  return ms;
}

async function startBare(python: string, size: number): Promise<number> {
  const t0 = performance.now();
  const workers = Array.from({ length: size }, () => new BareWorker(python));
  await Promise.all(workers.map((w) => w.ready));
  const ms = performance.now() - t0;
  await Promise.all(workers.map((w) => w.kill()));
  return ms;
}

async function benchStartup(python: string): Promise<Section> {
  const reps = Math.max(REPS, QUICK ? 3 : 9);
  const sizes = [1, 2, 4, 8];
  const rows: string[][] = [];
  const targets: Target[] = [];
  const data: Record<string, unknown> = {};
  await startPyvisor(1); // warm the page cache and pyvisor's __pycache__
  await startBare(python, 1);
  for (const size of sizes) {
    const times: Record<string, number[]> = { bare: [], pyvisor: [] };
    const variants = [
      { name: 'bare', run: () => startBare(python, size) },
      { name: 'pyvisor', run: () => startPyvisor(size) },
    ];
    for (let r = 0; r < reps; r++) {
      for (const v of order(variants, r)) {
        times[v.name]!.push(await v.run());
        await sleep(50);
      }
    }
    const ratio = ratioSummary(times.pyvisor!.map((x, i) => x / times.bare![i]!));
    log(
      `  startup size ${size}: bare ${fmt(median(times.bare!))} ms, pyvisor ${fmt(median(times.pyvisor!))} ms`,
    );
    rows.push([
      String(size),
      fmt(median(times.bare!)),
      fmt(median(times.pyvisor!)),
      fmt(median(times.pyvisor!) - median(times.bare!)),
      ratio.text,
    ]);
    targets.push({
      name: `startup, size ${size}`,
      target: '≤ 1.3× bare',
      measured: fmtRatio(ratio.median),
      met: ratio.median <= 1.3,
    });
    data[`size${size}`] = times;
  }
  // Once per Node process, the first pool resolves the interpreter (a pyenv shim is asked for
  // sys.executable). The cache is keyed by cwd, so a fresh directory measures it uncached.
  const resolveTimes: number[] = [];
  for (let r = 0; r < Math.min(reps, 5); r++) {
    const dir = mkdtempSync(join(tmpdir(), 'pyvisor-bench-'));
    const t0 = performance.now();
    await resolveInterpreter(process.env.PYVISOR_PYTHON ?? 'python3', process.env, dir);
    resolveTimes.push(performance.now() - t0);
    rmSync(dir, { recursive: true, force: true });
  }
  data.resolve = resolveTimes;
  return section(
    'startup',
    '3. Startup (createPool → ready() vs N bare workers spawned concurrently)',
    reps,
    {
      columns: ['workers', 'bare ms', 'pyvisor ms', 'pyvisor − bare ms', 'pyvisor / bare'],
      rows,
      notes: [
        `${reps} interleaved runs per size; bare = spawn N bare_worker.py processes at once until each wrote its first frame (before it even imports json: the interpreter's own cold start). pyvisor = createPool({ size: N }) until ready(): spawn, import of the runtime and the handler file, ready frame, supervisor bookkeeping. Pools close (and bare workers are killed) between runs, outside the timing.`,
        `Not in these numbers: the first pool of a Node process also resolves the interpreter once (\`${process.env.PYVISOR_PYTHON ?? 'python3'}\` → real binary; through a pyenv shim that runs the shim): median ${fmt(median(resolveTimes))} ms here, cached for the rest of the process.`,
      ],
      targets,
      data,
    },
  );
}

// ------------------------------------------------------------------------------------------
// 4. Payload sweep

async function benchPayload(python: string): Promise<Section> {
  const reps = REPS;
  const sizes = [
    { label: '1 KB', bytes: 1e3, calls: QUICK ? 200 : 500 },
    { label: '100 KB', bytes: 1e5, calls: QUICK ? 40 : 100 },
    { label: '1 MB', bytes: 1e6, calls: QUICK ? 8 : 20 },
    { label: '10 MB', bytes: 1e7, calls: QUICK ? 2 : 4 },
  ];
  const pool = newPool(1);
  const bare = new BareWorker(python);
  const raw = new BareWorker(python, 'raw');
  await Promise.all([pool.ready(), bare.ready, raw.ready]);
  const rows: string[][] = [];
  const targets: Target[] = [];
  const data: Record<string, unknown> = {};
  for (const size of sizes) {
    const text = 'x'.repeat(size.bytes);
    const bytes = Buffer.alloc(size.bytes, 'x');
    const check = (v: unknown) => {
      const n = typeof v === 'string' || Buffer.isBuffer(v) ? v.length : -1;
      if (n !== size.bytes) throw new Error(`echo returned ${n} bytes, expected ${size.bytes}`);
    };
    const variants = [
      { name: 'raw', call: async () => check(await raw.echoRaw(bytes)) },
      { name: 'bare', call: async () => check(await bare.call('echo', [text])) },
      { name: 'pyvisor', call: async () => check(await pool.call('echo', [text])) },
      { name: 'binary', call: async () => check(await pool.call('echo', [bytes])) },
    ];
    for (const v of variants) for (let i = 0; i < Math.max(1, size.calls / 4); i++) await v.call();
    const times: Record<string, number[]> = { raw: [], bare: [], pyvisor: [], binary: [] };
    for (let r = 0; r < reps; r++) {
      for (const v of order(variants, r)) {
        const each: number[] = [];
        for (let i = 0; i < size.calls; i++) {
          const t0 = performance.now();
          await v.call();
          each.push(performance.now() - t0);
        }
        times[v.name]!.push(median(each));
      }
    }
    const m = (name: string) => median(times[name]!);
    const mbps = (ms: number) => fmt(size.bytes / 1e6 / (ms / 1000));
    const ratio = ratioSummary(times.pyvisor!.map((x, i) => x / times.bare![i]!));
    const speedup = ratioSummary(times.pyvisor!.map((x, i) => x / times.binary![i]!));
    log(
      `  payload ${size.label}: raw ${fmt(m('raw'), 2)} ms, bare ${fmt(m('bare'), 2)} ms, pyvisor ${fmt(m('pyvisor'), 2)} ms, pyvisor binary ${fmt(m('binary'), 2)} ms`,
    );
    rows.push([
      size.label,
      `${fmt(m('raw'), 2)} (${mbps(m('raw'))})`,
      `${fmt(m('bare'), 2)} (${mbps(m('bare'))})`,
      `${fmt(m('pyvisor'), 2)} (${mbps(m('pyvisor'))})`,
      `${fmt(m('binary'), 2)} (${mbps(m('binary'))})`,
      ratio.text,
      speedup.text,
      fmtRatio(m('bare') / m('raw')),
    ]);
    if (size.bytes === 1e7) {
      targets.push({
        name: '10 MB echo (JSON)',
        target: '≤ 1.2× bare JSON',
        measured: fmtRatio(ratio.median),
        met: ratio.median <= 1.2,
      });
      targets.push({
        name: '10 MB binary (Buffer ⇄ bytes)',
        target: '≥ 5× JSON throughput',
        measured: `${fmtRatio(speedup.median)} (pyvisor JSON / pyvisor binary; binary ${fmtRatio(m('binary') / m('raw'))} bare raw bytes)`,
        met: speedup.median >= 5,
      });
    }
    data[size.label] = { calls: size.calls, times };
  }
  await Promise.all([pool.close(), bare.kill(), raw.kill()]);
  return section(
    'payload',
    '4. Payload sweep (echo of an ASCII string, and of a Buffer; ms per round trip, MB/s)',
    reps,
    {
      columns: [
        'payload',
        'bare raw bytes ms (MB/s)',
        'bare JSON ms (MB/s)',
        'pyvisor ms (MB/s)',
        'pyvisor binary ms (MB/s)',
        'pyvisor / bare JSON',
        'pyvisor JSON / binary',
        'bare JSON / raw',
      ],
      rows,
      notes: [
        `${reps} interleaved blocks per size and variant (${sizes.map((s) => `${s.label}: ${s.calls} calls`).join(', ')}); the block's median round trip, then the median over blocks. MB/s = payload bytes (one way) per round trip time, 1 MB = 10⁶ bytes; each round trip moves the payload twice.`,
        'bare raw bytes: the same worker echoing the frame body as bytes (no JSON): the limit for binary payloads.',
        "pyvisor binary: `pool.call('echo', [buffer])` with a Buffer of the same size; it travels as an attachment frame and comes back as a Buffer (Python sees bytes).",
      ],
      targets,
      data,
    },
  );
}

// ------------------------------------------------------------------------------------------
// 4b. Values: a numpy array as an NDArray against the same array as nested lists

async function benchValues(python: string): Promise<Section> {
  const reps = REPS;
  const title = '4b. Values (a 1000×1000 float64 numpy array: NDArray vs .tolist(); ms per call)';
  const columns = ['result', 'ms per call', 'MB/s', 'tolist / NDArray'];
  try {
    execFileSync(python, ['-c', 'import numpy'], { stdio: 'ignore' });
  } catch {
    log('  values: skipped (numpy is not importable)');
    return section('values', title, 0, {
      columns,
      rows: [],
      notes: [`Skipped: \`${python} -c "import numpy"\` failed (numpy is not installed).`],
      targets: [
        {
          name: '1000×1000 float64 result as NDArray',
          target: '≥ 10× faster than .tolist()',
          measured: 'not measured (no numpy)',
          met: null,
        },
      ],
      data: null,
    });
  }
  const calls = { ndarray: QUICK ? 10 : 30, tolist: QUICK ? 2 : 5 };
  const bytes = 8e6; // 10⁶ float64 elements
  const pool = newPool(1);
  await pool.ready();
  const variants = [
    {
      name: 'ndarray' as const,
      call: async () => {
        const m = (await pool.call('matrix')) as { shape: number[]; data: Float64Array };
        if (m.data.length !== 1e6 || m.shape[0] !== 1000 || !(m.data instanceof Float64Array)) {
          throw new Error('matrix did not return a 1000×1000 Float64Array NDArray');
        }
      },
    },
    {
      name: 'tolist' as const,
      call: async () => {
        const m = (await pool.call('matrix_list')) as number[][];
        if (m.length !== 1000 || m[999]!.length !== 1000) {
          throw new Error('matrix_list did not return 1000 lists of 1000 numbers');
        }
      },
    },
  ];
  // Warm-up; the first call also builds the matrix (cached in the worker, outside the timing).
  for (const v of variants) await v.call();
  const times: Record<'ndarray' | 'tolist', number[]> = { ndarray: [], tolist: [] };
  for (let r = 0; r < reps; r++) {
    for (const v of order(variants, r)) {
      const each: number[] = [];
      for (let i = 0; i < calls[v.name]; i++) {
        const t0 = performance.now();
        await v.call();
        each.push(performance.now() - t0);
      }
      times[v.name].push(median(each));
    }
  }
  await pool.close();
  const nd = median(times.ndarray);
  const tl = median(times.tolist);
  const speedup = ratioSummary(times.tolist.map((x, i) => x / times.ndarray[i]!));
  const mbps = (ms: number) => fmt(bytes / 1e6 / (ms / 1000));
  log(`  values: NDArray ${fmt(nd, 2)} ms, tolist() ${fmt(tl, 2)} ms, ${fmtRatio(speedup.median)}`);
  return section('values', title, reps, {
    columns,
    rows: [
      ['NDArray (`return arr`)', fmt(nd, 2), mbps(nd), '1.00×'],
      ['nested lists (`return arr.tolist()`)', fmt(tl, 2), mbps(tl), speedup.text],
    ],
    notes: [
      `${reps} interleaved blocks (NDArray: ${calls.ndarray} calls, tolist: ${calls.tolist} calls); the block's median call, then the median over blocks. MB/s = the array's 8 MB of float64 data per call. The array is built once per worker (bench/handlers.py) and not timed; \`.tolist()\` is timed, as it is part of returning an array that way.`,
      'NDArray: the result arrives as { dtype, shape, data: Float64Array } with data a view on the attachment (docs/values.md). tolist: 10⁶ Python floats encoded as JSON text, parsed by JSON.parse into 1000 arrays.',
    ],
    targets: [
      {
        name: '1000×1000 float64 result as NDArray',
        target: '≥ 10× faster than .tolist()',
        measured: `${fmtRatio(speedup.median)} (${fmt(nd, 2)} ms vs ${fmt(tl, 2)} ms)`,
        met: speedup.median >= 10,
      },
    ],
    data: { calls, times },
  });
}

// ------------------------------------------------------------------------------------------
// 5. Recovery

interface Recovery {
  total: number;
  detect: number;
  delay: number;
}

async function recoverOnce(pool: Pool): Promise<Recovery> {
  const pid = pool.stats().workers[0]!.pid!;
  let detect = Number.NaN;
  let delay = Number.NaN;
  const t0 = performance.now();
  const exited = (e: { pid: number | null }) => {
    if (e.pid === pid) detect = performance.now() - t0;
  };
  const restarting = (e: { delay: number }) => {
    delay = e.delay;
  };
  pool.on('worker.exit', exited);
  pool.once('worker.restart', restarting);
  const ready = new Promise<void>((resolve) => pool.once('pool.ready', () => resolve()));
  process.kill(pid, 'SIGKILL');
  await ready;
  const total = performance.now() - t0;
  pool.off('worker.exit', exited);
  return { total, detect, delay };
}

async function benchRecovery(python: string): Promise<Section> {
  const reps = Math.max(REPS, QUICK ? 3 : 9);
  // Generous restart intensity: the benchmark kills workers on purpose, many times a minute.
  const restart = { maxRestarts: 10_000 };
  const pools = {
    default: newPool(2, { restart }),
    zero: newPool(2, { restart: { ...restart, minDelay: 0 } }),
  };
  await Promise.all([pools.default.ready(), pools.zero.ready()]);
  const res: Record<string, Recovery[]> = { default: [], zero: [] };
  const cold: Record<string, number[]> = { bare: [], pyvisor: [] };
  const variants = [
    { name: 'bare', run: async () => cold.bare!.push(await startBare(python, 1)) },
    { name: 'pyvisor', run: async () => cold.pyvisor!.push(await startPyvisor(1)) },
    { name: 'default', run: async () => res.default!.push(await recoverOnce(pools.default)) },
    { name: 'zero', run: async () => res.zero!.push(await recoverOnce(pools.zero)) },
  ];
  for (let r = 0; r < reps; r++) {
    for (const v of order(variants, r)) {
      await v.run();
      await sleep(50);
    }
  }
  await Promise.all([pools.default.close(), pools.zero.close()]);
  const bareCold = median(cold.bare!);
  const row = (name: string, list: Recovery[]) => {
    const total = median(list.map((x) => x.total));
    const detect = median(list.map((x) => x.detect));
    const delay = median(list.map((x) => x.delay));
    const start = median(list.map((x) => x.total - x.detect - x.delay));
    return [
      name,
      fmt(total),
      fmt(detect, 2),
      fmt(delay),
      fmt(start),
      ratioSummary(list.map((x, i) => x.total / cold.bare![i]!)).text,
    ];
  };
  const zeroRatio = ratioSummary(res.zero!.map((x, i) => x.total / cold.bare![i]!));
  log(
    `  recovery: default ${fmt(median(res.default!.map((x) => x.total)))} ms, minDelay 0 ${fmt(median(res.zero!.map((x) => x.total)))} ms, bare cold ${fmt(bareCold)} ms`,
  );
  return section(
    'recovery',
    '5. Recovery (SIGKILL one of 2 workers → pool back to full size)',
    reps,
    {
      columns: [
        '',
        'total ms',
        'kill → exit seen ms',
        'backoff ms',
        'respawn → ready ms',
        '/ bare cold start',
      ],
      rows: [
        ['bare cold start, 1 worker', fmt(bareCold), '', '', fmt(bareCold), '1.00×'],
        [
          'pyvisor cold start, size 1',
          fmt(median(cold.pyvisor!)),
          '',
          '',
          fmt(median(cold.pyvisor!)),
          ratioSummary(cold.pyvisor!.map((x, i) => x / cold.bare![i]!)).text,
        ],
        row('recovery, default restart (minDelay 100)', res.default!),
        row('recovery, restart.minDelay 0', res.zero!),
      ],
      notes: [
        `${reps} interleaved runs of each. Total = SIGKILL sent → 'pool.ready' emitted again; "exit seen" = the 'worker.exit' event; backoff = the delay of the 'worker.restart' event (equal jitter: 50–100 ms with the default minDelay 100, since the killed worker had been ready); respawn → ready = the rest.`,
      ],
      targets: [
        {
          name: 'recovery without backoff (minDelay 0)',
          target: 'no target set; ≈ a cold start',
          measured: `${fmtRatio(zeroRatio.median)} a bare cold start`,
          met: null,
        },
      ],
      data: { res, cold },
    },
  );
}

// ------------------------------------------------------------------------------------------
// 6. Peers

/** Serializes calls to one peer process: one in flight at a time, the others wait in order. */
function oneAtATime(peer: Peer): (args: readonly unknown[]) => Promise<unknown> {
  let tail: Promise<unknown> = Promise.resolve();
  return (args) => {
    const next = tail.then(() => peer.call('add', args));
    tail = next.catch(() => {});
    return next;
  };
}

/** Calls/s of each variant with 8 callers over 2 processes (see the section's notes). */
async function peerThroughput(
  python: string,
  factories: PeerFactory[],
  reps: number,
): Promise<Record<string, number[]>> {
  const ms = QUICK ? 500 : 1500;
  const callers = 8;
  const out: Record<string, number[]> = {};
  const variants: {
    name: string;
    start(): Promise<{ call: () => Promise<unknown>; close(): Promise<void> }>;
  }[] = [];
  for (const f of factories) {
    if (f.name === 'bare') {
      variants.push({
        name: 'bare',
        async start() {
          const bare = new BarePool(python, 2);
          await bare.ready();
          return { call: () => bare.call('add', [1, 2]), close: () => bare.close() };
        },
      });
    } else if (f.name === 'pyvisor') {
      variants.push({
        name: 'pyvisor',
        async start() {
          const pool = newPool(2);
          await pool.ready();
          return { call: () => pool.call('add', [1, 2]), close: () => pool.close() };
        },
      });
    } else if (f.name === 'python-shell') {
      variants.push({
        name: f.name,
        async start() {
          const peers = [await f.start(), await f.start()];
          const lanes = peers.map(oneAtATime);
          let next = 0;
          return {
            call: () => lanes[next++ % 2]!([1, 2]),
            close: async () => {
              await Promise.all(peers.map((p) => p.close()));
            },
          };
        },
      });
    } else {
      variants.push({
        name: f.name,
        async start() {
          const peer = await f.start();
          return { call: () => peer.call('add', [1, 2]), close: () => peer.close() };
        },
      });
    }
  }
  for (const v of variants) out[v.name] = [];
  for (let r = 0; r < reps; r++) {
    for (const v of order(variants, r)) {
      const running = await v.start();
      await throughputBlock(running.call, callers, 300, []);
      out[v.name]!.push((await throughputBlock(running.call, callers, ms, [])).rate);
      await running.close();
      await sleep(50);
    }
    log(
      `  peer throughput rep ${r + 1}/${reps}: ${variants.map((v) => `${v.name} ${fmt(out[v.name]!.at(-1)!)}/s`).join(', ')}`,
    );
  }
  return out;
}

async function benchPeers(python: string): Promise<Section> {
  const reps = REPS;
  const factories: PeerFactory[] = [
    {
      name: 'bare',
      version: '',
      async start() {
        const w = new BareWorker(python);
        await w.ready;
        return {
          name: 'bare',
          pid: w.pid,
          call: (fn, args) => w.call(fn, args),
          close: () => w.kill(),
        };
      },
    },
    {
      name: 'pyvisor',
      version: '',
      async start() {
        const pool = newPool(1);
        await pool.ready();
        return {
          name: 'pyvisor',
          pid: workerPids(pool)[0],
          call: (fn, args) => pool.call(fn, args),
          close: () => pool.close(),
        };
      },
    },
  ];
  const missing: string[] = [];
  for (const [name, make] of [
    ['python-shell', pythonShellFactory],
    ['pythonia', pythoniaFactory],
  ] as const) {
    const f = await make(python);
    if (f) factories.push(f);
    else missing.push(name);
  }
  const names = factories.map((f) => f.name);
  const lat: Record<string, number[]> = {};
  const mb: Record<string, number[]> = {};
  const start: Record<string, number[]> = {};
  for (const n of names) {
    lat[n] = [];
    mb[n] = [];
    start[n] = [];
  }
  const calls = QUICK ? 500 : 1000;
  const warmup = QUICK ? 1000 : 2000;
  const mbCalls = QUICK ? 3 : 6;
  const text = 'x'.repeat(1e6);
  for (let r = 0; r < reps; r++) {
    for (const f of order(factories, r)) {
      const t0 = performance.now();
      const peer: Peer = await f.start();
      start[f.name]!.push(performance.now() - t0);
      // Warm-up: enough calls for V8 to optimise each client's hot path.
      for (let i = 0; i < warmup; i++) await peer.call('add', [1, 2]);
      const one = await sequentialBlock(() => peer.call('add', [1, 2]), calls, [peer.pid]);
      lat[f.name]!.push(one.p50);
      const each: number[] = [];
      for (let i = 0; i < mbCalls; i++) {
        const s = performance.now();
        const v = await peer.call('echo', [text]);
        each.push(performance.now() - s);
        if (typeof v !== 'string' || v.length !== text.length)
          throw new Error(`${f.name}: bad echo`);
      }
      mb[f.name]!.push(median(each));
      await peer.close();
      await sleep(50);
    }
    log(
      `  peers rep ${r + 1}/${reps}: ${names.map((n) => `${n} ${fmt(lat[n]!.at(-1)!)} µs`).join(', ')}`,
    );
  }
  const tput = await peerThroughput(python, factories, reps);
  const rows = factories.map((f) => {
    const rel = (m: Record<string, number[]>) =>
      ratioSummary(m[f.name]!.map((x, i) => x / m.bare![i]!)).text;
    return [
      f.version ? `${f.name} ${f.version}` : f.name,
      fmt(median(lat[f.name]!)),
      rel(lat),
      fmt(median(mb[f.name]!)),
      rel(mb),
      fmt(median(start[f.name]!)),
      rel(start),
      fmt(median(tput[f.name]!)),
      rel(tput),
    ];
  });
  const pyvisorRate = median(tput.pyvisor!);
  const targets: Target[] = factories
    .filter((f) => f.name !== 'bare' && f.name !== 'pyvisor')
    .map((f) => ({
      name: `throughput, size 2, 8 callers: pyvisor ahead of ${f.name}`,
      target: `> ${f.name}`,
      measured: `${fmt(pyvisorRate)} vs ${fmt(median(tput[f.name]!))} calls/s`,
      met: pyvisorRate > median(tput[f.name]!),
    }));
  return section(
    'peers',
    '6. Peers on the same workloads (one process, one call at a time; and 2 processes, 8 callers)',
    reps,
    {
      columns: [
        '',
        'add(1, 2) p50 µs',
        '/ bare',
        '1 MB echo ms',
        '/ bare',
        'start → first reply ms',
        '/ bare',
        'calls/s, 2 processes, 8 callers',
        '/ bare',
      ],
      rows,
      notes: [
        `${reps} interleaved rounds; in each, every variant is started, serves ${warmup} warm-up calls, ${calls} timed add(1, 2) calls and ${mbCalls} echoes of a 1 MB string, and is stopped.`,
        'python-shell: a script reading JSON lines on stdin and writing JSON lines on stdout (bench/peers/shell_worker.py), `mode: "json"`, one message in flight. pythonia: `python(bench/peers/pythonia_handlers.py)`, then `await mod.add(1, 2)` through its proxy (its Python process is per Node process; it is restarted for each round).',
        'Start → first reply: bare = first frame; pyvisor = createPool({ size: 1 }) → ready(); python-shell = first JSON line; pythonia = the module import answered.',
        `Throughput: 8 callers in a closed loop of add(1, 2) for ${QUICK ? 500 : 1500} ms, after a 300 ms warm-up, interleaved. bare: its pool of 2 (one call in flight per worker); pyvisor: createPool({ size: 2 }) with its defaults (pipelining on); python-shell: 2 processes, callers split between them, one message in flight per process (its protocol has no ids); pythonia: its one Python process (one per Node process), all 8 callers at once through its proxy.`,
        ...(missing.length ? [`Not installed, skipped: ${missing.join(', ')}.`] : []),
      ],
      targets,
      data: { lat, mb, start, calls, mbCalls, tput },
    },
  );
}

// ------------------------------------------------------------------------------------------
// Machine, report, document

function sh(cmd: string, args: string[]): string {
  try {
    return execFileSync(cmd, args, {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'ignore'],
    }).trim();
  } catch {
    return '?';
  }
}

function machine(python: string) {
  let cpu = cpus()[0]?.model ?? '?';
  try {
    const m = /^model name\s*:\s*(.+)$/m.exec(readFileSync('/proc/cpuinfo', 'utf8'));
    if (m) cpu = m[1]!;
  } catch {
    // Not Linux.
  }
  const dirty = sh('git', ['-C', ROOT, 'status', '--porcelain', '--', 'src', 'python']);
  return {
    uname: sh('uname', ['-a']),
    cpu,
    cores: cpus().length,
    memoryGiB: Math.round(totalmem() / 2 ** 30),
    node: process.version,
    python: `${sh(python, ['-c', 'import sys; print(sys.version.split()[0])'])} (${python})`,
    commit: `${sh('git', ['-C', ROOT, 'rev-parse', '--short', 'HEAD'])}${dirty && dirty !== '?' ? ' + uncommitted changes in src/ or python/' : ''}; measured: ${libLabel}`,
    loadavg: loadavg()
      .map((x) => x.toFixed(2))
      .join(' '),
  };
}

function table(columns: string[], rows: string[][]): string {
  const line = (cells: string[]) => `| ${cells.join(' | ')} |`;
  return [line(columns), line(columns.map(() => '---')), ...rows.map(line)].join('\n');
}

function printSection(s: Section): void {
  const widths = s.columns.map((c, i) =>
    Math.max(c.length, ...s.rows.map((r) => (r[i] ?? '').length)),
  );
  const pad = (cells: string[]) => cells.map((c, i) => (c ?? '').padEnd(widths[i]!)).join('  ');
  console.log(`\n${s.title}`);
  console.log(pad(s.columns));
  for (const r of s.rows) console.log(pad(r));
  for (const t of s.targets) {
    const mark = t.met === null ? 'n/a ' : t.met ? 'MET ' : 'MISS';
    console.log(`  [${mark}] ${t.name}: ${t.measured} (target ${t.target})`);
  }
}

const BEGIN =
  '<!-- BEGIN GENERATED: bench/run.ts rewrites this part; edit below the END marker -->';
const END = '<!-- END GENERATED -->';

function renderDoc(results: {
  machine: ReturnType<typeof machine>;
  command: string;
  sections: Section[];
}): string {
  const m = results.machine;
  const out: string[] = [BEGIN, ''];
  out.push('## Results', '');
  out.push(
    table(
      ['', ''],
      [
        ['machine', `\`${m.uname}\``],
        ['CPU', `${m.cpu}, ${m.cores} cores, ${m.memoryGiB} GiB`],
        ['Node.js', m.node],
        ['Python', m.python],
        ['pyvisor', m.commit],
        ['load average at the start', `${m.loadavg} (shared machine: other work runs in parallel)`],
        ['command', `\`${results.command}\``],
      ],
    ),
    '',
  );
  const targets = results.sections.flatMap((s) => s.targets);
  if (targets.length) {
    out.push('### Targets', '');
    out.push(
      table(
        ['target', 'goal', 'measured (median of paired ratios)', ''],
        targets.map((t) => [
          t.name,
          t.target,
          t.measured,
          t.met === null ? 'n/a' : t.met ? 'met' : '**missed**',
        ]),
      ),
      '',
    );
  }
  for (const s of results.sections) {
    out.push(`### ${s.title}`, '');
    const from = s.command && s.command !== results.command ? `, from \`${s.command}\`` : '';
    const load = s.load ? `, load average ${s.load} at the end` : '';
    out.push(
      `_${s.date.slice(0, 16).replace('T', ' ')} UTC, ${s.mode} run, ${s.reps} repetitions${load}${from}._`,
      '',
    );
    out.push(table(s.columns, s.rows), '');
    for (const n of s.notes) out.push(`- ${n}`);
    out.push('');
  }
  out.push(END);
  return out.join('\n');
}

function writeDoc(results: Parameters<typeof renderDoc>[0]): void {
  const generated = renderDoc(results);
  let doc: string;
  try {
    doc = readFileSync(DOC, 'utf8');
  } catch {
    doc = `# Benchmarks\n\n\`npm run bench\` (full, a few minutes) or \`npm run bench -- --quick\`.\n\n${BEGIN}\n${END}\n`;
  }
  const a = doc.indexOf(BEGIN);
  const b = doc.indexOf(END);
  doc =
    a >= 0 && b > a
      ? doc.slice(0, a) + generated + doc.slice(b + END.length)
      : `${doc.trimEnd()}\n\n${generated}\n`;
  writeFileSync(DOC, doc);
}

const BENCHES: Record<BenchId, (python: string) => Promise<Section>> = {
  latency: benchLatency,
  throughput: benchThroughput,
  async: benchAsync,
  startup: benchStartup,
  payload: benchPayload,
  values: benchValues,
  recovery: benchRecovery,
  peers: benchPeers,
};

async function main(): Promise<void> {
  await loadLib();
  const python = await resolveInterpreter(
    process.env.PYVISOR_PYTHON ?? 'python3',
    process.env,
    process.cwd(),
  );
  const info = machine(python);
  log(
    `pyvisor benchmarks (${QUICK ? 'quick' : 'full'}), python ${info.python}, load ${info.loadavg}`,
  );
  // Both sides must run the same binary: check the executable of a pyvisor worker.
  {
    const pool = newPool(1);
    await pool.ready();
    const exe = readlinkSync(`/proc/${workerPids(pool)[0]}/exe`);
    const bare = new BareWorker(python);
    await bare.ready;
    const bareExe = readlinkSync(`/proc/${bare.pid}/exe`);
    await Promise.all([pool.close(), bare.kill()]);
    if (exe !== bareExe) throw new Error(`pyvisor runs ${exe} but the baseline ${bareExe}`);
    log(`interpreter of both sides: ${exe}`);
  }
  const sections: Section[] = [];
  for (const id of selected) {
    log(`${id}…`);
    const s = await BENCHES[id](python);
    printSection(s);
    sections.push(s);
  }
  if (!WRITE) return;
  let previous: { sections?: Section[] } = {};
  try {
    previous = JSON.parse(readFileSync(RESULTS, 'utf8')) as typeof previous;
  } catch {
    // First run.
  }
  const merged = ALL.map(
    (id) => sections.find((s) => s.id === id) ?? previous.sections?.find((s) => s.id === id),
  ).filter((s): s is Section => s !== undefined);
  const results = { machine: info, command: COMMAND, sections: merged };
  mkdirSync(dirname(RESULTS), { recursive: true });
  writeFileSync(RESULTS, `${JSON.stringify(results, null, 1)}\n`);
  writeDoc(results);
  log(`wrote ${RESULTS} and ${DOC}`);
}

await main();
