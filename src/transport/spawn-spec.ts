import { join } from 'node:path';
import type { NormalizedOptions } from '../pool/options.js';
import { PYTHON_DIR } from './paths.js';
import type { SpawnSpec } from './transport.js';

/** The process a worker runs: `python` (already resolved) on the pool's script. */
export function workerSpawnSpec(options: NormalizedOptions, python: string): SpawnSpec {
  const pythonPath = options.env.PYTHONPATH;
  return {
    command: python,
    // The script form starts 15-25 ms faster than `-m pyvisor` on Python 3.9/3.10 (no runpy).
    args: ['-u', join(PYTHON_DIR, 'pyvisor', '__main__.py'), options.script],
    env: {
      ...options.env,
      PYTHONPATH: pythonPath ? `${PYTHON_DIR}:${pythonPath}` : PYTHON_DIR,
      PYVISOR_PARENT_PID: String(process.pid),
      PYVISOR_MAX_MESSAGE: String(options.maxMessageSize),
      PYVISOR_CONCURRENCY: String(options.concurrency),
    },
    cwd: options.cwd,
    maxMessageSize: options.maxMessageSize,
    outputLines: options.outputLines,
  };
}
