/**
 * `pyvisor demo` (`npm run demo`): a pool on the bundled example handlers, a few calls that show
 * results, errors and timeouts, a visible workload with a worker killed half-way, and a table of
 * what happened.
 */
import { fileURLToPath } from 'node:url';
import { createPool, type Pool, type PoolEvents, type PyvisorError } from '../index.js';
import { EXIT, intFlag, POOL_FLAGS, parseCommand, stringFlag } from './args.js';
import { renderError } from './explain.js';
import { duration, ms, percentile, plural, type Style, styleFor, table } from './format.js';
import { ProgressBar } from './progress.js';

const SCRIPT = fileURLToPath(new URL('../../examples/handlers.py', import.meta.url));
const ASYNC_SCRIPT = fileURLToPath(new URL('../../examples/async_handlers.py', import.meta.url));
const CALL_DELAY_S = 0.01;
const ASYNC_LATENCY_S = 0.1;

/**
 * Each worker's time per call of the workload, from what `timed_square` reports (its pid and how
 * long the call ran in Python), attributed to the slot that pid belonged to. Workers stay busy
 * from one queued call to the next, so `worker.state` has no per-call boundaries to measure.
 */
function trackServiceTimes(pool: Pool, size: number) {
  const times: number[][] = Array.from({ length: size }, () => []);
  const slotOfPid = new Map<number, number>();
  pool.on('worker.ready', ({ workerId, pid }) => {
    if (pid !== null) slotOfPid.set(pid, workerId);
  });
  return {
    times,
    record(reply: { pid: number; ms: number }) {
      const slot = slotOfPid.get(reply.pid);
      if (slot !== undefined) times[slot]?.push(reply.ms);
    },
  };
}

function isGone(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return false;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'ESRCH';
  }
}

async function showCalls(pool: Pool, s: Style): Promise<void> {
  const log = (line: string) => process.stdout.write(`  ${line}\n`);
  let t = performance.now();
  const sum = await pool.call<number>('add', [1, 2]);
  log(`add(1, 2) ${s.dim('→')} ${sum}  ${s.dim(`${duration(performance.now() - t)}`)}`);

  t = performance.now();
  const items: unknown[] = [];
  for await (const item of pool.stream('count', [5])) items.push(item);
  log(
    `count(5), a generator, streamed ${s.dim('→')} ${items.join(' ')}  ${s.dim(`${duration(performance.now() - t)}`)}`,
  );

  try {
    await pool.call('add', [1, 'a']);
  } catch (error) {
    const e = error as PyvisorError & { pythonTraceback?: string };
    log(`add(1, "a") ${s.dim('→')} ${s.red(e.code)} ${e.message}`);
    const where = e.pythonTraceback?.split('\n').find((line) => line.includes('File '));
    if (where) log(s.dim(`  with its Python traceback (err.pythonTraceback): ${where.trim()}`));
  }

  const restartsBefore = totalRestarts(pool);
  t = performance.now();
  try {
    await pool.call('slow_square', [7, 5], { timeout: 300 });
  } catch (error) {
    const kept = totalRestarts(pool) === restartsBefore;
    log(
      `slow_square(7, delay=5 s) with timeout 300 ms ${s.dim('→')} ${s.yellow((error as PyvisorError).code)} after ${duration(performance.now() - t)}`,
    );
    log(
      s.dim(
        kept
          ? '  the sleep was interrupted inside Python; the same worker process serves the next call'
          : '  the handler did not stop in time, so its worker was replaced',
      ),
    );
  }
}

function totalRestarts(pool: Pool): number {
  return pool.stats().workers.reduce((sum, w) => sum + w.restarts, 0);
}

/** What the `timed_square` example handler returns. */
interface TimedReply {
  value: number;
  pid: number;
  ms: number;
}

interface WorkloadResult {
  latencies: number[];
  outcomes: Map<string, number>;
  elapsed: number;
}

async function runWorkload(
  pool: Pool,
  total: number,
  concurrency: number,
  s: Style,
  onReply: (reply: TimedReply) => void,
) {
  const bar = new ProgressBar(process.stdout, s, total);
  const onRestart: PoolEvents['worker.restart'] = (e) =>
    bar.log(
      s.yellow(
        `  ↻ worker ${e.workerId} ${e.reason}${e.error?.code ? ` (${e.error.code})` : ''}; a new process starts in ${Math.round(e.delay)} ms`,
      ),
    );
  const onReady: PoolEvents['worker.ready'] = (e) =>
    bar.log(
      s.green(`  ✓ worker ${e.workerId} is back: pid ${e.pid}, ready in ${duration(e.initMs)}`),
    );
  pool.on('worker.restart', onRestart);
  pool.on('worker.ready', onReady);
  const result: WorkloadResult = { latencies: [], outcomes: new Map(), elapsed: 0 };
  const started = performance.now();
  let next = 0;
  let done = 0;
  let killed = false;
  const lane = async (): Promise<void> => {
    while (next < total) {
      const x = next++;
      if (!killed && x >= total / 2) {
        killed = true;
        const workers = pool.stats().workers;
        const victim =
          workers.find((w) => w.state === 'busy' && w.pid) ?? workers.find((w) => w.pid);
        if (victim?.pid) {
          bar.log(
            s.red(
              `  ✗ SIGKILL worker ${victim.id} (pid ${victim.pid})${victim.state === 'busy' ? ' in the middle of a call' : ''}`,
            ),
          );
          process.kill(victim.pid, 'SIGKILL');
        }
      }
      const t0 = performance.now();
      let outcome = 'ok';
      try {
        onReply(await pool.call<TimedReply>('timed_square', [x, CALL_DELAY_S]));
        result.latencies.push(performance.now() - t0);
      } catch (error) {
        outcome = (error as PyvisorError).code ?? 'error';
      }
      result.outcomes.set(outcome, (result.outcomes.get(outcome) ?? 0) + 1);
      bar.update(++done);
    }
  };
  await Promise.all(Array.from({ length: concurrency }, lane));
  result.elapsed = performance.now() - started;
  bar.finish();
  // The killed slot may still be restarting: wait so the table shows the recovered pool.
  await pool.ready();
  pool.off('worker.restart', onRestart);
  pool.off('worker.ready', onReady);
  result.latencies.sort((a, b) => a - b);
  return result;
}

function printResults(pool: Pool, service: number[][], result: WorkloadResult, s: Style): void {
  const stats = pool.stats();
  const rows = stats.workers.map((w) => {
    const times = [...(service[w.id] ?? [])].sort((a, b) => a - b);
    const state = w.state === 'ready' ? s.green(w.state) : s.yellow(w.state);
    const restarts = w.restarts > 0 ? s.yellow(String(w.restarts)) : String(w.restarts);
    return [
      String(w.id),
      String(w.pid ?? '-'),
      state,
      String(w.calls),
      restarts,
      ms(percentile(times, 50)),
      ms(percentile(times, 90)),
      ms(percentile(times, 99)),
    ];
  });
  console.log(
    table(
      [['worker', 'pid', 'state', 'calls', 'restarts', 'p50 ms', 'p90 ms', 'p99 ms'], ...rows],
      { align: ['right', 'right', 'left', 'right', 'right', 'right', 'right', 'right'], style: s },
    ),
  );
  console.log(s.dim('  p50/p90/p99: time each worker spent in Python on one call of the workload'));
  console.log();
  const ok = result.outcomes.get('ok') ?? 0;
  const failed = [...result.outcomes].filter(([code]) => code !== 'ok');
  const failures = failed.map(([code, n]) => `${n} ${s.red(code)}`).join(', ');
  const lat = result.latencies;
  console.log(
    `calls: ${s.green(`${ok} ok`)}${failures ? `, ${failures}` : ''}${failed.length ? s.dim(' (the call running on the killed worker)') : ''}`,
  );
  console.log(
    `latency (end to end, queue wait included): p50 ${duration(percentile(lat, 50))} · p90 ${duration(percentile(lat, 90))} · p99 ${duration(percentile(lat, 99))} · max ${duration(lat.at(-1) ?? Number.NaN)}`,
  );
  const total = [...result.outcomes.values()].reduce((a, b) => a + b, 0);
  console.log(
    `throughput: ${Math.round((total / result.elapsed) * 1000)} calls/s · pool ${stats.state} · circuit ${stats.circuit} · queued ${stats.queued}`,
  );
}

/**
 * I/O-bound async calls side by side: a second pool on examples/async_handlers.py with
 * `concurrency` 100, each call awaiting a simulated LLM request. Returns the pids it started.
 */
async function showAsyncWorkload(
  s: Style,
  size: number,
  total: number,
  python: string | undefined,
): Promise<number[]> {
  const concurrency = 100;
  const workers = Math.min(size, 2);
  console.log(
    s.bold(
      `async handlers: ${total} calls of complete(prompt), each awaiting a ${ASYNC_LATENCY_S * 1000} ms request, on ${plural(workers, 'worker')} with concurrency ${concurrency}`,
    ),
  );
  const pool = createPool({
    script: ASYNC_SCRIPT,
    size: workers,
    concurrency,
    name: 'demo-async',
    ...(python ? { python } : {}),
  });
  const pids: number[] = [];
  try {
    await pool.ready();
    for (const w of pool.stats().workers) if (w.pid) pids.push(w.pid);
    let peak = 0;
    const t0 = performance.now();
    const calls = Array.from({ length: total }, (_, i) =>
      pool.call<{ text: string }>('complete', [`prompt ${i}`, ASYNC_LATENCY_S]).then((r) => {
        peak = Math.max(peak, ...pool.stats().workers.map((w) => w.inFlight));
        return r;
      }),
    );
    peak = Math.max(...pool.stats().workers.map((w) => w.inFlight));
    const results = await Promise.all(calls);
    const elapsed = performance.now() - t0;
    const serial = total * ASYNC_LATENCY_S * 1000;
    console.log(
      `  ${s.green('✓')} ${results.length} calls in ${duration(elapsed)} ${s.dim(`(one at a time per worker: ${duration(serial / workers)})`)}; up to ${peak} in flight on one worker`,
    );
    const tokens: string[] = [];
    for await (const token of pool.stream<string>('stream_tokens', ['streamed token by token'])) {
      tokens.push(token);
    }
    console.log(`  stream_tokens, an async generator ${s.dim('→')} ${tokens.join(' · ')}`);
  } finally {
    await pool.close();
  }
  return pids;
}

/** Runs `pyvisor demo`; resolves with the exit code. */
export async function demo(argv: readonly string[] = []): Promise<number> {
  const { flags } = parseCommand(argv, {
    ...POOL_FLAGS,
    size: { type: 'string' },
    calls: { type: 'string' },
  });
  const size = intFlag(flags, 'size', { min: 1, max: 64 }) ?? 4;
  const total = intFlag(flags, 'calls', { min: 1, max: 100_000 }) ?? 200;
  const s = styleFor(process.stdout);
  const concurrency = size * 2;

  console.log(s.bold(`pyvisor demo · ${plural(size, 'Python worker')} on examples/handlers.py`));
  console.log();
  console.log(s.bold('starting the pool'));
  const started = performance.now();
  const python = stringFlag(flags, 'python');
  const pool = createPool({ script: SCRIPT, size, name: 'demo', ...(python ? { python } : {}) });
  const pids = new Set<number>();
  const onReady: PoolEvents['worker.ready'] = (e) => {
    const python = e.version ? s.dim(`  Python ${e.version}`) : '';
    console.log(
      `  ${s.green('✓')} worker ${e.workerId} ready  pid ${e.pid}  init ${duration(e.initMs)}${python}`,
    );
  };
  pool.on('worker.ready', onReady);
  pool.on('worker.stdout', (e) => console.log(s.dim(`  [worker ${e.workerId}] ${e.line}`)));
  pool.on('worker.ready', (e) => {
    if (e.pid) pids.add(e.pid);
  });
  const service = trackServiceTimes(pool, size);
  try {
    await pool.ready();
    pool.off('worker.ready', onReady);
    console.log(
      `  ${s.green('✓')} ${plural(size, 'worker')} ready in ${duration(performance.now() - started)}`,
    );
    console.log();

    console.log(s.bold('a few calls'));
    await showCalls(pool, s);
    console.log();

    console.log(
      s.bold(
        `a workload: ${total} calls of timed_square(x, ${CALL_DELAY_S * 1000} ms), ${concurrency} at a time; one worker is killed half-way`,
      ),
    );
    const result = await runWorkload(pool, total, concurrency, s, service.record);
    console.log();
    printResults(pool, service.times, result, s);
    console.log();
    for (const pid of await showAsyncWorkload(s, size, Math.max(total, 500), python)) {
      pids.add(pid);
    }
  } catch (error) {
    console.error(renderError(error, styleFor(process.stderr)));
    await pool.close({ timeout: 1000 });
    return EXIT.failed;
  }
  const closing = performance.now();
  await pool.close();
  const left = [...pids].filter((pid) => !isGone(pid));
  console.log();
  if (left.length === 0) {
    console.log(
      `${s.green('✓')} pool closed in ${duration(performance.now() - closing)}; all ${plural(pids.size, 'worker process', 'worker processes')} have exited`,
    );
    return EXIT.ok;
  }
  console.error(`${s.red('✗')} worker processes still running after close(): ${left.join(', ')}`);
  return EXIT.failed;
}
