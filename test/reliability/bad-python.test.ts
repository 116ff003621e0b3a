// Suite 4 (fast subset, 32 MiB floods): a worker that misbehaves on the protocol pipes or floods
// its output. Full run (256 MiB floods): scripts/reliability/bad-python.ts.
import { describe, expect, it } from 'vitest';
import { runBadPython } from '../../scripts/reliability/bad-python.js';

describe('bad input from Python', () => {
  it('each attack fails only the call on the misbehaving worker, which is replaced; bystanders succeed; memory stays bounded', async () => {
    const result = await runBadPython({ floodMiB: 32 });
    expect(result.violations).toEqual([]);
    const f = result.figures as { attacks: number; processesLeftAfterClose: number };
    expect(f.attacks).toBe(18);
    expect(f.processesLeftAfterClose).toBe(0);
  }, 90_000);
});
