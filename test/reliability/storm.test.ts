// Suite 1 (fast subset): a crash storm on a small pool. The full run (8 workers, 2000 calls,
// 30 kill cycles) is `node --import tsx scripts/reliability/storm.ts`.
import { describe, expect, it } from 'vitest';
import { runStorm } from '../../scripts/reliability/storm.js';

describe('crash storm', () => {
  it.each(['serving', 'any'] as const)(
    'SIGKILLs of random %s workers under load: every call settles, the pool recovers, no process is left',
    async (targets) => {
      const result = await runStorm({
        size: 4,
        calls: 400,
        concurrency: 8,
        killEvery: 25,
        cycles: 10,
        killsPerCycle: 2,
        targets,
        // The full run holds recovery to 5 s (15 s with starting workers killed: restart
        // backoff); here the budget only has to hold on a loaded machine.
        recoveryBudget: 20_000,
      });
      expect(result.violations).toEqual([]);
      const f = result.figures as {
        kills: number;
        callsSettled: number;
        processesLeftAfterClose: number;
        maxLiveWorkers: number;
      };
      expect(f.kills).toBeGreaterThan(0);
      expect(f.callsSettled).toBe(400);
      expect(f.maxLiveWorkers).toBeLessThanOrEqual(4);
      expect(f.processesLeftAfterClose).toBe(0);
    },
    90_000,
  );
});
