import { constants } from 'node:fs';
import { access, open } from 'node:fs/promises';
import { delimiter, isAbsolute, join, resolve } from 'node:path';
import { execa } from 'execa';
import { PythonNotFoundError } from './errors.js';

// Resolutions are pure (same name, same PATH -> same binary) and cost up to ~100 ms through a
// shim, so they are shared by all pools of the process.
const cache = new Map<string, Promise<string>>();

/**
 * Resolves `python` (a name on PATH or a path) to the real interpreter binary, so every spawn
 * skips wrapper scripts such as pyenv shims (~60 ms each). Rejects with
 * {@link PythonNotFoundError} when it cannot be run.
 */
export function resolveInterpreter(
  python: string,
  env: NodeJS.ProcessEnv,
  cwd: string,
): Promise<string> {
  const key = `${python}\0${env.PATH ?? ''}\0${cwd}`;
  let pending = cache.get(key);
  if (!pending) {
    pending = resolveUncached(python, env, cwd);
    cache.set(key, pending);
    pending.catch(() => cache.delete(key));
  }
  return pending;
}

async function resolveUncached(python: string, env: NodeJS.ProcessEnv, cwd: string) {
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
    });
    const executable = stdout.trim();
    if (!executable) throw new Error('sys.executable is empty');
    return executable;
  } catch (cause) {
    throw new PythonNotFoundError(python, cause);
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
