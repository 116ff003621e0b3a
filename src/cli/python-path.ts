/**
 * `pyvisor python-path`: prints the directory that holds pyvisor's Python package, to put on
 * `PYTHONPATH` so that handler files import from plain Python too (unit tests, notebooks):
 *
 *   PYTHONPATH="$(npx pyvisor python-path)" python3 -m pytest
 */
import { PYTHON_DIR } from '../transport/paths.js';
import { EXIT, parseCommand } from './args.js';

/** Runs `pyvisor python-path`; resolves with the exit code. */
export async function pythonPath(argv: readonly string[]): Promise<number> {
  parseCommand(argv, {});
  console.log(PYTHON_DIR);
  return EXIT.ok;
}
