/**
 * `pyvisor inspect --script <file>`: runs a pool with the Stately inspector attached, through a
 * WebSocket relay on localhost, so a browser shows the supervisor, every worker and the circuit
 * breaker changing state live. Runs until SIGINT/SIGTERM, or for `--duration` ms.
 */
import { createPool, type Pool } from '../index.js';
import { EXIT, intFlag, jsonArgs, msFlag, parsePoolCommand, stringFlag } from './args.js';
import { explain, renderError } from './explain.js';
import { plural, type Style, styleFor } from './format.js';
import { loadInspectModules, type Relay, startRelay } from './relay.js';

const DEFAULT_PORT = 8080;
const DEFAULT_SIZE = 2;
const CALL_PAUSE_MS = 250;
/**
 * After everything is closed, a browser tab may still hold a connection to the relay (the relay
 * server cannot close it): exit anyway after this long.
 */
const FORCED_EXIT_AFTER_MS = 1000;

function log(line: string): void {
  process.stdout.write(`${line}\n`);
}

function narrate(pool: Pool, s: Style): void {
  pool.on('worker.ready', (e) =>
    log(`  ${s.green('✓')} worker ${e.workerId} ready (pid ${e.pid}, ${Math.round(e.initMs)} ms)`),
  );
  pool.on('worker.restart', (e) =>
    log(
      `  ${s.yellow('↻')} worker ${e.workerId} ${e.reason}; restarting in ${Math.round(e.delay)} ms`,
    ),
  );
  pool.on('circuit.change', (e) => log(`  ${s.yellow('⚡')} circuit breaker ${e.state}`));
  pool.on('pool.failed', (e) => log(`  ${s.red('✗')} pool failed: ${explain(e.error).summary}`));
  pool.on('pool.recovered', (e) =>
    log(`  ${s.green('✓')} pool recovered after ${Math.round(e.downMs)} ms; starting workers`),
  );
}

/** Calls `fn(...args)` on every worker, with a pause between calls, until `stopped()`. */
async function callLoop(
  pool: Pool,
  fn: string,
  args: unknown[],
  stopped: () => boolean,
  s: Style,
): Promise<void> {
  const lane = async () => {
    while (!stopped()) {
      try {
        await pool.call(fn, args, { timeout: 30_000 });
      } catch (error) {
        if (stopped()) return;
        const x = explain(error);
        log(`  ${s.red('✗')} ${fn}: ${x.code}: ${x.message}`);
      }
      await new Promise((r) => setTimeout(r, CALL_PAUSE_MS));
    }
  };
  await Promise.all(Array.from({ length: pool.options.size }, lane));
}

/** Runs `pyvisor inspect`; resolves with the exit code once everything is closed. */
export async function inspect(argv: readonly string[]): Promise<number> {
  const parsed = parsePoolCommand(
    argv,
    {
      port: { type: 'string' },
      'no-open': { type: 'boolean' },
      duration: { type: 'string' },
      call: { type: 'string' },
      args: { type: 'string' },
    },
    64,
  );
  const { flags, script, python } = parsed;
  const size = parsed.size ?? DEFAULT_SIZE;
  const port = intFlag(flags, 'port', { min: 1, max: 65_535 }) ?? DEFAULT_PORT;
  const duration = msFlag(flags, 'duration');
  const fn = stringFlag(flags, 'call');
  const args = jsonArgs(stringFlag(flags, 'args'), '--args');
  const s = styleFor(process.stdout);
  const errStyle = styleFor(process.stderr);

  let relay: Relay;
  try {
    relay = await startRelay(await loadInspectModules(), { port, open: flags['no-open'] !== true });
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error);
    console.error(`${errStyle.red('pyvisor inspect:')} ${message}`);
    return EXIT.failed;
  }
  let pool: Pool;
  try {
    pool = createPool({
      script,
      size,
      name: 'inspect',
      inspect: relay.inspect,
      ...(python ? { python } : {}),
    });
  } catch (error) {
    console.error(renderError(error, errStyle));
    await relay.stop();
    return EXIT.failed;
  }

  log(s.bold(`pyvisor inspect · ${plural(size, 'worker')} on ${script}`));
  log(`  open ${s.cyan(relay.url)} in a browser to watch the pool's state machines live`);
  log(
    s.dim(
      `  (the page embeds https://stately.ai/inspect; the relay listens on port ${port}; no payloads or environment are sent)`,
    ),
  );
  log(
    duration === undefined ? '  press Ctrl-C to stop' : `  stopping by itself after ${duration} ms`,
  );
  narrate(pool, s);

  let stopping = false;
  let wake: () => void = () => {};
  const stopRequested = new Promise<void>((r) => {
    wake = r;
  });
  const requestStop = () => {
    stopping = true;
    wake();
  };
  process.once('SIGINT', requestStop);
  process.once('SIGTERM', requestStop);
  const timers: NodeJS.Timeout[] = [];
  if (duration !== undefined) {
    timers.push(setTimeout(requestStop, duration));
    // Half-way (or once the pool is ready, if it is slower), a crash and a restart to watch.
    timers.push(
      setTimeout(() => {
        pool.ready().then(
          () => {
            const victim = pool.stats().workers.find((w) => w.pid !== null);
            if (!victim?.pid || stopping) return;
            log(
              `  ${s.red('✗')} SIGKILL worker ${victim.id} (pid ${victim.pid}) to show a restart`,
            );
            process.kill(victim.pid, 'SIGKILL');
          },
          () => {},
        );
      }, duration / 2),
    );
  }
  pool.ready().then(
    () => log(`  ${s.green('✓')} pool ready`),
    (error: unknown) => {
      if (!stopping) console.error(renderError(error, errStyle));
    },
  );
  const calls = fn ? callLoop(pool, fn, args, () => stopping, s) : Promise.resolve();

  await stopRequested;
  for (const timer of timers) clearTimeout(timer);
  process.off('SIGINT', requestStop);
  process.off('SIGTERM', requestStop);
  log('stopping: closing the pool, the inspector and the relay');
  await pool.close({ timeout: 2000 });
  await calls;
  await relay.stop();
  log(`${s.green('✓')} stopped`);
  const force = setTimeout(() => {
    const open = process.getActiveResourcesInfo().filter((r) => r !== 'Timeout');
    const why = open.includes('TCPSocketWrap')
      ? 'a browser tab is still connected to the relay'
      : `something is still running (${open.join(', ')})`;
    console.error(`pyvisor inspect: ${why}; exiting without waiting for it`);
    process.exit();
  }, FORCED_EXIT_AFTER_MS);
  force.unref();
  return EXIT.ok;
}
