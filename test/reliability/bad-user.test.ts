// Suite 5 (fast subset, 100 runs per property): generated options, call options, handler names
// and arguments, and misuse. Full run (300 runs): scripts/reliability/bad-user.ts.
import { describe, expect, it } from 'vitest';
import { runBadUser } from '../../scripts/reliability/bad-user.js';

describe('bad input from the user', () => {
  it('gets a typed error naming what to fix, at once, and never a hang', async () => {
    // Time budgets ×8: "at once" (250 ms in the full run) only has to hold on a loaded machine;
    // that a bad call never reaches a worker is checked as it is.
    const result = await runBadUser({ runs: 100, timeScale: 8 });
    expect(result.violations).toEqual([]);
  }, 90_000);
});
