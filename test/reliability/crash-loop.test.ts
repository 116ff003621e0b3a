// Suite 2 (fast subset): a crash loop; the breaker opens, stops spawns, probes once per
// resetTimeout and closes when the script is fixed. Full run: scripts/reliability/crash-loop.ts.
import { describe, expect, it } from 'vitest';
import { runCrashLoop } from '../../scripts/reliability/crash-loop.js';

describe('crash loop and the circuit breaker', () => {
  it.each(['fail', 'crash'] as const)(
    'an init that always %ss: spawns counted, fast failures, one probe per resetTimeout, recovery after the fix',
    async (failure) => {
      const result = await runCrashLoop({
        failure,
        size: 3,
        threshold: 2,
        resetTimeout: 400,
        probes: 2,
        fastCalls: 20,
        // Latency budgets are for the full run; here they only have to hold on a loaded machine.
        // (That calls fail without waiting for the breaker is checked regardless.)
        fastBudget: 10_000,
        lateBudget: 10_000,
      });
      expect(result.violations).toEqual([]);
      const f = result.figures as { spawnsWhileOpen: number; spawnsPerFailedProbe: number[] };
      expect(f.spawnsWhileOpen).toBe(0);
      expect(f.spawnsPerFailedProbe).toEqual([1, 1]);
    },
    60_000,
  );
});
