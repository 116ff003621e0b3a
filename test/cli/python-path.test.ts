import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { PYTHON, ROOT, runCli, SLOW } from './helpers.js';

describe('pyvisor python-path', () => {
  it('prints the directory to put on PYTHONPATH; a handler file then imports from plain Python', {
    timeout: SLOW,
  }, async () => {
    const r = await runCli(['python-path']);
    expect(r.code).toBe(0);
    expect(r.stderr).toBe('');
    const dir = r.stdout.trim();
    expect(existsSync(join(dir, 'pyvisor', '__init__.py'))).toBe(true);
    // Importing a handler file outside a worker only records the handlers: they are plain
    // functions, callable from a unit test.
    const out = execFileSync(
      PYTHON,
      [
        '-c',
        'import sys, importlib.util as u; s = u.spec_from_file_location("h", sys.argv[1]); m = u.module_from_spec(s); s.loader.exec_module(m); print(m.add(1, 2), list(__import__("pyvisor")._handlers)[:2])',
        join(ROOT, 'examples', 'handlers.py'),
      ],
      { encoding: 'utf8', env: { ...process.env, PYTHONPATH: dir } },
    );
    expect(out.trim()).toBe("3 ['add', 'count']");
    const bad = await runCli(['python-path', '--nope']);
    expect(bad.code).toBe(2);
  });
});
