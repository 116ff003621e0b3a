/**
 * `npm run demo`: a pool on the bundled example handlers, a visible workload, a worker killed
 * half-way to show recovery, and a table of what happened.
 */
import { fileURLToPath } from 'node:url';
import { createPool, type PyvisorError } from '../index.js';

const color = process.stdout.isTTY && !process.env.NO_COLOR;
const paint = (code: number) => (text: string) => (color ? `\x1b[${code}m${text}\x1b[0m` : text);
const bold = paint(1);
const dim = paint(2);
const green = paint(32);
const yellow = paint(33);
const red = paint(31);

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  return rows.map((r) => r.map((cell, i) => cell.padEnd(widths[i]!)).join('  ')).join('\n');
}

export async function demo(): Promise<void> {
  const script = fileURLToPath(new URL('../../examples/handlers.py', import.meta.url));
  const size = 4;
  console.log(bold(`pyvisor demo: a pool of ${size} Python workers on examples/handlers.py`));
  const started = performance.now();
  const pool = createPool({ script, size, name: 'demo' });
  pool.on('worker.restart', (e) =>
    console.log(
      yellow(`  ↻ worker ${e.workerId} ended (${e.reason}); restarting in ${e.delay} ms`),
    ),
  );
  pool.on('worker.stdout', (e) => console.log(dim(`  [worker ${e.workerId}] ${e.line}`)));
  await pool.ready();
  console.log(
    `${green('✓')} ${size} workers ready in ${(performance.now() - started).toFixed(0)} ms`,
  );

  console.log(`add(1, 2) = ${await pool.call('add', [1, 2])}`);
  const items: unknown[] = [];
  for await (const x of pool.stream('count', [5])) items.push(x);
  console.log(`stream count(5) -> ${JSON.stringify(items)}`);

  const total = 200;
  const latencies: number[] = [];
  const outcomes = new Map<string, number>();
  let done = 0;
  let killed = false;
  const progress = () => {
    if (!process.stdout.isTTY) return;
    const width = 30;
    const filled = Math.round((done / total) * width);
    process.stdout.write(
      `\r  [${'#'.repeat(filled)}${' '.repeat(width - filled)}] ${done}/${total}`,
    );
  };
  console.log(
    `running ${total} calls of slow_square(x, 10 ms) at concurrency 8; a worker is killed half-way`,
  );
  let next = 0;
  const runOne = async (): Promise<void> => {
    while (next < total) {
      const x = next++;
      if (!killed && x >= total / 2) {
        killed = true;
        const victim = pool.stats().workers.find((w) => w.pid !== null);
        if (victim?.pid) {
          if (process.stdout.isTTY) process.stdout.write('\n');
          console.log(red(`  ✗ SIGKILL worker ${victim.id} (pid ${victim.pid})`));
          process.kill(victim.pid, 'SIGKILL');
        }
      }
      const t0 = performance.now();
      try {
        await pool.call('slow_square', [x, 0.01]);
        latencies.push(performance.now() - t0);
        outcomes.set('ok', (outcomes.get('ok') ?? 0) + 1);
      } catch (error) {
        const code = (error as PyvisorError).code ?? 'other';
        outcomes.set(code, (outcomes.get(code) ?? 0) + 1);
      }
      done++;
      progress();
    }
  };
  await Promise.all(Array.from({ length: 8 }, runOne));
  if (process.stdout.isTTY) process.stdout.write('\n');
  await pool.ready();

  latencies.sort((a, b) => a - b);
  const stats = pool.stats();
  console.log();
  console.log(
    table([
      ['worker', 'pid', 'state', 'calls', 'restarts'],
      ...stats.workers.map((w) => [
        String(w.id),
        String(w.pid ?? '-'),
        w.state,
        String(w.calls),
        String(w.restarts),
      ]),
    ]),
  );
  console.log();
  console.log(
    `outcomes: ${[...outcomes].map(([k, v]) => `${k}=${v}`).join(', ')} | latency ms p50=${percentile(latencies, 50).toFixed(1)} p90=${percentile(latencies, 90).toFixed(1)} p99=${percentile(latencies, 99).toFixed(1)}`,
  );
  console.log(`pool state: ${stats.state}, circuit: ${stats.circuit}, queued: ${stats.queued}`);
  await pool.close();
  console.log(`${green('✓')} closed; every worker process has exited`);
}
