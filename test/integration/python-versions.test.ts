import { existsSync, readdirSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { testPool } from '../helpers.js';

// Every CPython 3.9+ this machine has (pyenv's are found when present), plus the default python3.
function interpreters(): string[] {
  const found = ['python3'];
  const root = '/root/.pyenv/versions';
  if (!existsSync(root)) return found;
  for (const version of readdirSync(root)) {
    const m = /^3\.(\d+)\.\d+$/.exec(version);
    if (!m || Number(m[1]) < 9) continue;
    const bin = `${root}/${version}/bin/python3.${m[1]}`;
    if (existsSync(bin)) found.push(bin);
  }
  return found;
}

describe('supported interpreters', () => {
  it.each(interpreters())('runs handlers, streams and cancels under %s', async (python) => {
    const pool = testPool({ python });
    expect(await pool.call('add', [1, 2])).toBe(3);
    const items: number[] = [];
    for await (const x of pool.stream<number>('count', [3])) items.push(x);
    expect(items).toEqual([0, 1, 2]);
    await expect(pool.call('sleep', [30], { timeout: 100 })).rejects.toMatchObject({
      code: 'ERR_CALL_TIMEOUT',
    });
    expect(await pool.call('add', [2, 2])).toBe(4);
  });
});
