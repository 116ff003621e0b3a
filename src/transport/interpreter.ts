import { constants } from 'node:fs';
import { access, open } from 'node:fs/promises';
import { delimiter, isAbsolute, join, resolve } from 'node:path';
import { execa } from 'execa';
import { PythonNotFoundError } from '../errors.js';

// Resolutions are pure (same name, same PATH -> same binary) and cost up to ~1 s through a
// shim, so they are shared by all pools of the process.
interface Resolution {
  promise: Promise<string>;
  /** Pools waiting for it; when the last one gives up, the probe process is ended. */
  waiters: number;
  abort: AbortController;
}
const cache = new Map<string, Resolution>();

/**
 * Resolves `python` (a name on PATH or a path) to the real interpreter binary, so every spawn
 * skips wrapper scripts such as pyenv shims (~60 ms each). Rejects with
 * {@link PythonNotFoundError} when it cannot be run. `signal` says the caller no longer waits:
 * when no caller waits any more, the `python -c` probe (if one runs) is killed, so a pool closed
 * during its start leaves no process behind and keeps Node alive no longer.
 */
export function resolveInterpreter(
  python: string,
  env: NodeJS.ProcessEnv,
  cwd: string,
  signal?: AbortSignal,
): Promise<string> {
  const key = `${python}\0${env.PATH ?? ''}\0${cwd}`;
  let entry = cache.get(key);
  if (!entry) {
    const abort = new AbortController();
    const promise = resolveUncached(python, env, cwd, abort.signal);
    const created: Resolution = { promise, waiters: 0, abort };
    entry = created;
    cache.set(key, created);
    promise.catch(() => {
      if (cache.get(key) === created) cache.delete(key);
    });
  }
  if (!signal) {
    // A caller that cannot give up keeps the probe alive for good.
    entry.waiters++;
    return entry.promise;
  }
  if (signal.aborted) return Promise.reject(signal.reason);
  const resolution = entry;
  resolution.waiters++;
  return new Promise<string>((resolve, reject) => {
    const onAbort = () => {
      resolution.waiters--;
      reject(signal.reason);
      if (resolution.waiters === 0) {
        // Nobody waits: end the probe and forget the resolution (the next pool starts over).
        if (cache.get(key) === resolution) cache.delete(key);
        resolution.abort.abort();
      }
    };
    signal.addEventListener('abort', onAbort, { once: true });
    resolution.promise.then(
      (value) => {
        signal.removeEventListener('abort', onAbort);
        resolution.waiters--;
        resolve(value);
      },
      (error: unknown) => {
        signal.removeEventListener('abort', onAbort);
        resolution.waiters--;
        reject(error);
      },
    );
  });
}

async function resolveUncached(
  python: string,
  env: NodeJS.ProcessEnv,
  cwd: string,
  signal: AbortSignal,
) {
  const found = await findExecutable(python, env, cwd);
  // Not realpath(): a venv's bin/python is a symlink, and following it would leave the venv.
  if (found && (await isBinary(found))) return found;
  // A script (shim, wrapper) or not found on PATH: ask the interpreter itself.
  try {
    const { stdout } = await execa(found ?? python, ['-c', 'import sys; print(sys.executable)'], {
      env,
      cwd,
      timeout: 15_000,
      extendEnv: false,
      cancelSignal: signal,
    });
    const executable = stdout.trim();
    if (!executable) throw new Error('sys.executable is empty');
    return executable;
  } catch (cause) {
    throw new PythonNotFoundError(
      python,
      cause,
      python.includes('/') ? undefined : (env.PATH ?? ''),
    );
  }
}

async function findExecutable(
  name: string,
  env: NodeJS.ProcessEnv,
  cwd: string,
): Promise<string | null> {
  const candidates = name.includes('/')
    ? [isAbsolute(name) ? name : resolve(cwd, name)]
    : (env.PATH ?? '')
        .split(delimiter)
        .filter(Boolean)
        .map((dir) => join(dir, name));
  for (const candidate of candidates) {
    try {
      await access(candidate, constants.X_OK);
      return candidate;
    } catch {
      // Not here; keep looking.
    }
  }
  return null;
}

async function isBinary(path: string): Promise<boolean> {
  const handle = await open(path, 'r');
  try {
    const { buffer, bytesRead } = await handle.read(Buffer.alloc(4), 0, 4, 0);
    if (bytesRead < 2) return false;
    // ELF or Mach-O; anything starting with "#!" is a script.
    return !(buffer[0] === 0x23 && buffer[1] === 0x21);
  } catch {
    return false;
  } finally {
    await handle.close();
  }
}
