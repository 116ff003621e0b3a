// Suite 3 (fast subset): one parent per way of dying not covered by
// test/integration/orphans.test.ts (SIGTERM, an unhandled rejection) plus SIGKILL, each with an
// idle worker, one in a Python loop, one in time.sleep and one in a C call holding the GIL. The
// full run (also exit() and throw, 3 rounds each) holds every worker to 1 s:
// scripts/reliability/orphans.ts; here the budget only has to hold on a loaded machine.
import { describe, expect, it } from 'vitest';
import { runOrphans } from '../../scripts/reliability/orphans.js';

describe('no orphans', () => {
  it('every worker exits once the parent dies (SIGKILL, SIGTERM, unhandled rejection)', async () => {
    const result = await runOrphans({
      modes: ['sigkill', 'sigterm', 'reject'],
      rounds: 1,
      budget: 10_000,
    });
    expect(result.violations).toEqual([]);
  }, 90_000);
});
