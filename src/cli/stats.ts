/**
 * `pyvisor stats --script <file>`: starts a pool, waits until every worker is ready, prints
 * `pool.stats()` as a table (or as JSON with `--json`) and closes the pool.
 */
import { createPool, type Pool, type PoolStats } from '../index.js';
import { EXIT, msFlag, parsePoolCommand } from './args.js';
import { renderError } from './explain.js';
import { ms, type Style, styleFor, table } from './format.js';

/** What `pyvisor stats` learns about each worker beyond `pool.stats()`. */
interface WorkerFacts {
  initMs: number;
  version?: string;
}

function renderStats(stats: PoolStats, facts: Map<number, WorkerFacts>, s: Style): string {
  const circuit = stats.circuit === 'closed' ? s.green(stats.circuit) : s.red(stats.circuit);
  const state = stats.state === 'running' ? s.green(stats.state) : s.yellow(stats.state);
  const header = `pool ${s.bold(stats.name)}: ${state} · circuit ${circuit} · queued ${stats.queued} · sessions ${stats.sessions}`;
  const rows = stats.workers.map((w) => [
    String(w.id),
    String(w.pid ?? '-'),
    w.state,
    String(w.calls),
    String(w.restarts),
    String(w.generation),
    ms(facts.get(w.id)?.initMs ?? Number.NaN),
    facts.get(w.id)?.version ?? '-',
  ]);
  return `${header}\n${table(
    [['worker', 'pid', 'state', 'calls', 'restarts', 'generation', 'init ms', 'python'], ...rows],
    { align: ['right', 'right', 'left', 'right', 'right', 'right', 'right', 'left'], style: s },
  )}`;
}

/** Runs `pyvisor stats`; resolves with the exit code. */
export async function stats(argv: readonly string[]): Promise<number> {
  const { flags, script, size, python } = parsePoolCommand(
    argv,
    { json: { type: 'boolean' }, 'init-timeout': { type: 'string' } },
    1024,
  );
  const initTimeout = msFlag(flags, 'init-timeout');
  const json = flags.json === true;

  let pool: Pool;
  try {
    pool = createPool({
      script,
      ...(size ? { size } : {}),
      ...(python ? { python } : {}),
      ...(initTimeout ? { initTimeout } : {}),
      // Report a script that cannot start instead of retrying it for ever.
      circuit: { threshold: 1 },
    });
  } catch (error) {
    console.error(renderError(error, styleFor(process.stderr)));
    return EXIT.failed;
  }
  const facts = new Map<number, WorkerFacts>();
  pool.on('worker.ready', (e) => facts.set(e.workerId, { initMs: e.initMs, version: e.version }));
  try {
    await pool.ready();
    const snapshot = pool.stats();
    process.stdout.write(
      json
        ? `${JSON.stringify(snapshot, null, 2)}\n`
        : `${renderStats(snapshot, facts, styleFor(process.stdout))}\n`,
    );
    return EXIT.ok;
  } catch (error) {
    console.error(renderError(error, styleFor(process.stderr)));
    return EXIT.failed;
  } finally {
    await pool.close({ timeout: 1000 });
  }
}
