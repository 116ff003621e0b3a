import { describe, expect, it } from 'vitest';
import type { InspectionEvent } from 'xstate';
import { testPool } from '../helpers.js';

describe('inspect option', () => {
  it('shows the supervisor, every worker and the breaker, with no payloads and no env', async () => {
    const events: InspectionEvent[] = [];
    const pool = testPool({
      size: 2,
      env: { ...process.env, PYVISOR_SECRET: 'ENV-SECRET-VALUE' },
      inspect: (event: InspectionEvent) => events.push(event),
    });
    expect(await pool.call('echo', ['SECRET-PAYLOAD'])).toBe('SECRET-PAYLOAD');
    await pool.close();
    const actors = new Set(
      events
        .filter((e) => e.type === '@xstate.actor')
        .map((e) => (e.actorRef as unknown as { id: string }).id),
    );
    expect(actors).toContain('circuit');
    expect([...actors].filter((id) => id.startsWith('worker-')).length).toBeGreaterThanOrEqual(2);
    const snapshots = events.filter((e) => e.type === '@xstate.snapshot');
    expect(snapshots.length).toBeGreaterThan(10);
    const seen = JSON.stringify(
      events.map((e) => ({
        event: 'event' in e ? e.event : null,
        context:
          e.type === '@xstate.snapshot' ? (e.snapshot as { context?: unknown }).context : null,
      })),
    );
    // Snapshots keep no `input` (the spawn spec holds the env), and actor registrations, which
    // inspectors read through actorRef.getSnapshot(), are sanitised as well.
    for (const e of events) {
      if ('snapshot' in e) expect(e.snapshot).not.toHaveProperty('input');
    }
    const registered = JSON.stringify(
      events
        .filter((e) => e.type === '@xstate.actor')
        .map((e) => (e.actorRef as unknown as { getSnapshot(): unknown }).getSnapshot()),
    );
    expect(registered).not.toContain('ENV-SECRET-VALUE');
    expect(registered).not.toContain('SECRET-PAYLOAD');
    expect(seen).not.toContain('SECRET-PAYLOAD');
    expect(seen).not.toContain('ENV-SECRET-VALUE');
    expect(seen).toContain('"fn":"echo"');
    expect(seen).toContain('"circuit":"closed"');
  });
});
