import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { allGone, isAlive, pids, testPool } from '../helpers.js';

const parentScript = fileURLToPath(new URL('../fixtures/orphan-parent.ts', import.meta.url));

function startParent(mode: string) {
  const child = spawn(process.execPath, ['--import', 'tsx', parentScript, mode], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const pidsLine = new Promise<number[]>((resolve, reject) => {
    let out = '';
    child.stdout.on('data', (chunk) => {
      out += chunk;
      const nl = out.indexOf('\n');
      if (nl >= 0) resolve(JSON.parse(out.slice(0, nl)));
    });
    child.on('exit', (code) => {
      if (!out.includes('\n')) reject(new Error(`parent exited early with ${code}`));
    });
  });
  return { child, pidsLine };
}

describe('no orphans', () => {
  it.each([
    ['SIGKILL of the Node parent', 'wait'],
    ['process.exit() in the parent', 'exit'],
    ['an uncaught exception in the parent', 'throw'],
  ])('workers exit after %s, idle or busy', async (_, mode) => {
    const { child, pidsLine } = startParent(mode);
    const exited = new Promise((resolve) => child.once('exit', resolve));
    const workerPids = await pidsLine;
    expect(workerPids).toHaveLength(3);
    for (const pid of workerPids) expect(isAlive(pid)).toBe(true);
    if (mode === 'wait') child.kill('SIGKILL');
    await exited;
    // Left alone, the busy workers would run for 10 minutes (spin) or for ever (hang_c). How fast
    // they go (within a second) is measured by scripts/reliability/orphans.ts, not here: the
    // bound below only has to be generous on a loaded machine.
    await allGone(workerPids, 10_000);
  });

  it('workers keep the interpreter process name, so ps shows them as Python', async () => {
    const pool = testPool({ size: 1 });
    await pool.ready();
    const pid = pids(pool)[0]!;
    const comm = readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
    expect(comm).toMatch(/^python/);
    const cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
    expect(cmdline.some((arg) => arg.endsWith('pyvisor/__main__.py'))).toBe(true);
  });
});
