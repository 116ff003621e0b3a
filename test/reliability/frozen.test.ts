// Suite 6 (fast subset): frozen workers (SIGSTOP mid-call and idle), handlers that ignore the
// interrupt, and an init that is slower than initTimeout for some starts (a fixed pattern, no
// recycling). Full run (random slow starts with recycling): scripts/reliability/frozen.ts.
import { describe, expect, it } from 'vitest';
import { runFrozen } from '../../scripts/reliability/frozen.js';

describe('frozen and slow workers', () => {
  it('timeouts, health checks and cancelGrace replace frozen or stubborn workers; flaky slow starts fail no call', async () => {
    const result = await runFrozen({
      flakyCalls: 40,
      flakyRecycle: 0,
      // Start 2 is slow (it hits initTimeout); the others are quick.
      flakyPattern: 'ok,slow,ok,ok,ok,ok,ok,ok,ok,ok,ok,ok',
      // Generous: on a loaded machine an ordinary start must not hit it (the slow start costs
      // this much once).
      flakyInitTimeout: 6000,
      // Slack on every deadline: the full run's 1.5 s is a latency figure; here the deadlines
      // only have to hold on a loaded machine.
      slack: 5000,
    });
    expect(result.violations).toEqual([]);
  }, 90_000);
});
