/**
 * `pyvisor call <script> <fn> [argsJSON]`: one call in a one-worker pool. The result goes to
 * stdout as JSON; errors, and anything the worker prints, go to stderr.
 */
import { createPool, type Pool } from '../index.js';
import {
  EXIT,
  jsonArgs,
  msFlag,
  POOL_FLAGS,
  parseCommand,
  stringFlag,
  UsageError,
} from './args.js';
import { renderError } from './explain.js';
import { styleFor } from './format.js';

/** Runs `pyvisor call`; resolves with the exit code. */
export async function call(argv: readonly string[]): Promise<number> {
  const { flags, positionals } = parseCommand(
    argv,
    { ...POOL_FLAGS, timeout: { type: 'string' }, 'init-timeout': { type: 'string' } },
    3,
  );
  const [script, fn, rawArgs] = positionals;
  if (!script || !fn) throw new UsageError('expected a script and a handler name');
  const args = jsonArgs(rawArgs, 'argsJSON');
  const timeout = msFlag(flags, 'timeout');
  const initTimeout = msFlag(flags, 'init-timeout');
  const python = stringFlag(flags, 'python');
  const errStyle = styleFor(process.stderr);

  let pool: Pool;
  try {
    pool = createPool({
      script,
      size: 1,
      name: 'call',
      // One failed start is enough to know: fail fast instead of retrying with backoff.
      circuit: { threshold: 1 },
      healthCheck: false,
      ...(python ? { python } : {}),
      ...(initTimeout ? { initTimeout } : {}),
    });
  } catch (error) {
    console.error(renderError(error, errStyle));
    return EXIT.failed;
  }
  // Whatever the worker prints (print(), logging, warnings) is shown, but never on stdout,
  // which carries only the result.
  const forward = ({ line }: { line: string }) => process.stderr.write(`${line}\n`);
  pool.on('worker.stdout', forward);
  pool.on('worker.stderr', forward);
  try {
    // Wait for the worker first, so that --timeout covers the call and not the start-up.
    await pool.ready();
    const result = await pool.call(fn, args, timeout ? { timeout } : {});
    process.stdout.write(`${JSON.stringify(result ?? null)}\n`);
    return EXIT.ok;
  } catch (error) {
    console.error(renderError(error, errStyle, { stderrShown: true }));
    return EXIT.failed;
  } finally {
    await pool.close({ timeout: 1000 });
  }
}
