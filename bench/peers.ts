/**
 * Peers for the comparison benchmark, loaded only if installed (they are not dependencies of
 * pyvisor): `python-shell` (a long-lived script in JSON mode over stdin/stdout, one call at a
 * time) and `pythonia` (JSPyBridge: a Python process per Node process, calls through proxies).
 * Module names are held in variables so the type check passes without them.
 */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const SHELL_SCRIPT = fileURLToPath(new URL('./peers/shell_worker.py', import.meta.url));
const PYTHONIA_MODULE = fileURLToPath(new URL('./peers/pythonia_handlers.py', import.meta.url));

/** What the benchmark needs of a peer: start, call one at a time, stop. */
export interface Peer {
  readonly name: string;
  readonly pid: number | undefined;
  call(fn: 'add' | 'echo', args: readonly unknown[]): Promise<unknown>;
  close(): Promise<void>;
}

export interface PeerFactory {
  readonly name: string;
  readonly version: string;
  /** Starts a fresh peer; resolves after its first reply. */
  start(): Promise<Peer>;
}

interface PythonShellLike {
  childProcess: { pid?: number; once(event: 'exit', fn: () => void): void };
  send(message: unknown): unknown;
  on(event: 'message', fn: (message: unknown) => void): unknown;
  on(event: 'stderr', fn: (line: string) => void): unknown;
  kill(signal?: NodeJS.Signals): unknown;
}
type PythonShellCtor = new (script: string, options: object) => PythonShellLike;

/**
 * Where a peer is resolved from: the project's node_modules (devDependencies), else the
 * directory in PYVISOR_BENCH_PEERS (e.g. one made with `npm install --prefix DIR python-shell
 * pythonia`, which a concurrent `npm ci` in the work tree cannot wipe).
 */
function resolvePeer(name: string): string | null {
  const bases = [import.meta.url];
  const extra = process.env.PYVISOR_BENCH_PEERS;
  if (extra) bases.push(pathToFileURL(join(extra, 'package.json')).href);
  for (const base of bases) {
    try {
      return createRequire(base).resolve(name);
    } catch {
      // Not there.
    }
  }
  return null;
}

async function load(name: string): Promise<Record<string, unknown> | null> {
  const path = resolvePeer(name);
  if (!path) return null;
  try {
    return (await import(pathToFileURL(path).href)) as Record<string, unknown>;
  } catch {
    return null;
  }
}

function version(name: string): string {
  const path = resolvePeer(name);
  if (!path) return '?';
  // Walk up from the entry point to the package's own package.json.
  let dir = dirname(path);
  for (let i = 0; i < 5; i++) {
    try {
      const pkg = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as {
        name?: string;
        version?: string;
      };
      if (pkg.name === name) return pkg.version ?? '?';
    } catch {
      // Keep walking.
    }
    dir = dirname(dir);
  }
  return '?';
}

export async function pythonShellFactory(python: string): Promise<PeerFactory | null> {
  const mod = await load('python-shell');
  const PythonShell = (mod?.PythonShell ??
    (mod?.default as Record<string, unknown> | undefined)?.PythonShell) as
    | PythonShellCtor
    | undefined;
  if (!PythonShell) return null;
  return {
    name: 'python-shell',
    version: version('python-shell'),
    async start() {
      const shell = new PythonShell(SHELL_SCRIPT, {
        mode: 'json',
        pythonPath: python,
        pythonOptions: ['-u'],
      });
      let waiter: ((value: unknown) => void) | null = null;
      const exited = new Promise<void>((resolve) => shell.childProcess.once('exit', resolve));
      shell.on('message', (message) => {
        const w = waiter;
        waiter = null;
        w?.((message as { v?: unknown }).v);
      });
      shell.on('stderr', () => {});
      await new Promise((resolve) => {
        waiter = resolve;
      });
      let id = 0;
      return {
        name: 'python-shell',
        pid: shell.childProcess.pid,
        call(fn, args) {
          return new Promise((resolve) => {
            waiter = resolve;
            shell.send({ t: 'call', id: ++id, fn, args });
          });
        },
        async close() {
          shell.kill('SIGKILL');
          await exited;
        },
      };
    },
  };
}

interface PythoniaModule {
  add(a: unknown, b: unknown): Promise<unknown>;
  echo(x: unknown): Promise<unknown>;
}
interface PythoniaApi {
  python: ((file: string) => Promise<PythoniaModule>) & { exit(): void };
  com: { proc: { pid?: number; once(event: 'exit', fn: () => void): void } | null };
}

let pythonia: PythoniaApi | null | undefined;

/**
 * pythonia starts its Python process when it is imported (with `PYTHON_BIN`), and keeps one per
 * Node process: `start()` ends the previous one and starts another.
 */
export async function pythoniaFactory(python: string): Promise<PeerFactory | null> {
  if (pythonia === undefined) {
    process.env.PYTHON_BIN = python;
    const mod = await load('pythonia');
    const api = (mod?.default ?? mod) as PythoniaApi | null;
    pythonia = api && typeof api.python === 'function' ? api : null;
    pythonia?.python.exit(); // the process it started on import
  }
  const api = pythonia;
  if (!api) return null;
  return {
    name: 'pythonia',
    version: version('pythonia'),
    async start() {
      const m = await api.python(PYTHONIA_MODULE);
      const proc = api.com.proc;
      const exited = new Promise<void>((resolve) => {
        if (proc) proc.once('exit', resolve);
        else resolve();
      });
      return {
        name: 'pythonia',
        pid: proc?.pid,
        call(fn, args) {
          return fn === 'add' ? m.add(args[0], args[1]) : m.echo(args[0]);
        },
        async close() {
          api.python.exit();
          await exited;
        },
      };
    },
  };
}
