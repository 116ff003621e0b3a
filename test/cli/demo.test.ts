import { describe, expect, it } from 'vitest';
import { runCli, SLOW } from './helpers.js';

describe('pyvisor demo', () => {
  it('runs the workload, survives a killed worker and prints the table, in plain text', {
    timeout: SLOW,
  }, async () => {
    const r = await runCli(['demo', '--calls', '40']);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const out = r.stdout;
    // Not a TTY: no colour, no progress-bar redraws, milestone lines instead.
    expect(out).not.toContain('\x1b');
    expect(out).not.toContain('\r');
    expect(out).toContain('progress: 40/40 calls');
    expect(out).toMatch(/✓ 4 workers ready in [\d.]+ m?s/);
    expect(out).toContain('add(1, 2) → 3');
    expect(out).toContain('count(5), a generator, streamed → 0 1 2 3 4');
    expect(out).toMatch(/add\(1, "a"\) → ERR_PYTHON TypeError: unsupported operand/);
    expect(out).toMatch(/timeout 300 ms → ERR_CALL_TIMEOUT after \d+/);
    expect(out).toMatch(/✗ SIGKILL worker \d \(pid \d+\)/);
    expect(out).toMatch(/↻ worker \d crashed/);
    expect(out).toMatch(/✓ worker \d is back: pid \d+/);

    const header = out
      .split('\n')
      .findIndex((l) =>
        /^worker\s+pid\s+state\s+calls\s+restarts\s+p50 ms\s+p90 ms\s+p99 ms$/.test(l),
      );
    expect(header).toBeGreaterThan(0);
    const rows = out
      .split('\n')
      .slice(header + 1, header + 5)
      .map((l) => l.trim().split(/\s+/));
    expect(rows.map((r) => r[2])).toEqual(['ready', 'ready', 'ready', 'ready']);
    expect(rows.reduce((sum, r) => sum + Number(r[4]), 0)).toBe(1);

    const calls = out.match(/^calls: (\d+) ok(?:, (\d+) ERR_WORKER_CRASHED)?/m);
    expect(calls).not.toBeNull();
    expect(Number(calls![1]) + Number(calls![2] ?? 0)).toBe(40);
    expect(out).toMatch(/latency \(end to end, queue wait included\): p50 [\d.]+ ms · p90/);
    // The async part: a second pool of 2 workers with concurrency 100.
    expect(out).toMatch(
      /async handlers: 500 calls of complete\(prompt\), each awaiting a 100 ms request, on 2 workers with concurrency 100/,
    );
    const overlap = out.match(/✓ 500 calls in [\d.]+ m?s .*; up to (\d+) in flight on one worker/);
    expect(overlap).not.toBeNull();
    expect(Number(overlap![1])).toBeGreaterThan(1);
    expect(out).toContain('stream_tokens, an async generator → streamed · token · by · token');
    expect(out).toMatch(/✓ pool closed in [\d.]+ m?s; all 7 worker processes have exited\n$/);
  });
});
