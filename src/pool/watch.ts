import { type FSWatcher, readdirSync, statSync, watch } from 'node:fs';
import { join } from 'node:path';

/** Directories never watched: dependencies, caches, virtual environments, VCS data. */
const SKIP = new Set(['node_modules', '__pycache__', 'site-packages', 'venv', 'env', 'dist']);
// Bounds that keep a watch on a project root cheap (Node's own recursive watch on Linux opens one
// inotify watch per directory, node_modules included).
const MAX_DEPTH = 4;
const MAX_DIRS = 256;

/**
 * The directories to watch for `paths` (files or directories): each directory and, below it, the
 * subdirectories that may hold the project's own Python code, up to a depth and a count.
 */
export function watchedDirectories(paths: readonly string[]): string[] {
  const out = new Set<string>();
  const visit = (dir: string, depth: number) => {
    if (out.size >= MAX_DIRS || out.has(dir)) return;
    out.add(dir);
    if (depth >= MAX_DEPTH) return;
    let entries: import('node:fs').Dirent[];
    try {
      entries = readdirSync(dir, { withFileTypes: true });
    } catch {
      return;
    }
    for (const entry of entries) {
      if (!entry.isDirectory() || entry.name.startsWith('.') || SKIP.has(entry.name)) continue;
      const sub = join(dir, entry.name);
      try {
        statSync(join(sub, 'pyvenv.cfg'));
      } catch {
        visit(sub, depth + 1);
      }
    }
  };
  for (const path of paths) {
    try {
      if (statSync(path).isDirectory()) visit(path, 0);
      else out.add(join(path, '..'));
    } catch {
      // A path that does not exist (yet) is not watched.
    }
  }
  return [...out];
}

/**
 * Calls `onChange` with the `.py` files that changed in the watched directories, once they have
 * been quiet for `debounce` ms. Returns the function that stops watching (every watcher closed,
 * the timer cleared). The watchers never keep Node alive.
 */
export function watchPython(
  paths: readonly string[],
  debounce: number,
  onChange: (files: string[]) => void,
): () => void {
  const changed = new Set<string>();
  let timer: NodeJS.Timeout | null = null;
  const watchers: FSWatcher[] = [];
  for (const dir of watchedDirectories(paths)) {
    try {
      const watcher = watch(dir, { persistent: false }, (_event, name) => {
        if (typeof name !== 'string' || !name.endsWith('.py')) return;
        changed.add(join(dir, name));
        if (timer) clearTimeout(timer);
        timer = setTimeout(() => {
          timer = null;
          const files = [...changed].sort();
          changed.clear();
          onChange(files);
        }, debounce);
        timer.unref();
      });
      watcher.on('error', () => watcher.close());
      watchers.push(watcher);
    } catch {
      // A directory removed meanwhile, or out of inotify watches: the others still work.
    }
  }
  return () => {
    if (timer) clearTimeout(timer);
    timer = null;
    for (const watcher of watchers) watcher.close();
    watchers.length = 0;
  };
}
