import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { watchedDirectories } from '../../src/pool/watch.js';

describe('watch: which directories', () => {
  it("watches the project's own code, not dependencies, caches, venvs or hidden directories", () => {
    const root = mkdtempSync(join(tmpdir(), 'pyvisor-watch-'));
    for (const dir of [
      'app/models',
      'node_modules/x',
      '__pycache__',
      '.git/objects',
      'venv',
      'env2',
    ]) {
      mkdirSync(join(root, dir), { recursive: true });
    }
    writeFileSync(join(root, 'env2', 'pyvenv.cfg'), 'home = /usr/bin\n');
    writeFileSync(join(root, 'app.py'), '');
    const dirs = watchedDirectories([root]).map((d) => d.slice(root.length) || '/');
    expect(dirs.sort()).toEqual(['/', '/app', '/app/models']);
    // A file stands for its directory.
    expect(watchedDirectories([join(root, 'app.py')])).toEqual([root]);
    expect(watchedDirectories([join(root, 'missing')])).toEqual([]);
  });
});
