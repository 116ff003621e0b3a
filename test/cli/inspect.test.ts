import { createServer } from 'node:net';
import { describe, expect, it } from 'vitest';
import { fixture, freePort, receiveWebSocket, SLOW, startCli } from './helpers.js';

describe('pyvisor inspect', () => {
  it('stops by itself after --duration and nothing keeps the process alive', {
    timeout: SLOW,
  }, async () => {
    const port = await freePort();
    const cli = startCli([
      'inspect',
      '--script',
      fixture('handlers.py'),
      '--duration',
      '1500',
      '--no-open',
      '--port',
      String(port),
    ]);
    await cli.waitForOutput('stopping:');
    const r = await cli.done;
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.signal).toBeNull();
    expect(r.stdout).toContain(`open http://localhost:${port} in a browser`);
    expect(r.stdout).toMatch(/✓ stopped\n$/);
    // It ended by itself: a handle left open would have kept it alive until the forced exit,
    // which says so on stderr (checked above), or until startCli's SIGKILL (signal, checked).
  });

  it('relays the supervisor, the workers and the breaker, with no payloads and no env', {
    timeout: SLOW,
  }, async () => {
    const port = await freePort();
    const cli = startCli(
      [
        'inspect',
        '--script',
        fixture('handlers.py'),
        '--size',
        '2',
        '--duration',
        '1500',
        '--no-open',
        '--port',
        String(port),
        '--call',
        'echo',
        '--args',
        '["SECRET-PAYLOAD"]',
      ],
      { env: { PYVISOR_SECRET: 'ENV-SECRET-VALUE' } },
    );
    const browser = await receiveWebSocket(port);
    await cli.waitForOutput('stopping:');
    // Like a browser tab closed before the relay stops (an open tab would delay the exit).
    browser.close();
    const r = await cli.done;
    expect(r.code).toBe(0);

    const wire = browser.messages.join('\n');
    expect(wire).not.toContain('SECRET-PAYLOAD');
    expect(wire).not.toContain('ENV-SECRET-VALUE');
    expect(wire).not.toContain(process.env.PATH!);
    expect(wire).toContain('"fn":"echo"');
    const events = browser.messages.map(
      (m) =>
        JSON.parse(m) as {
          type: string;
          name?: string;
          snapshot?: { context?: Record<string, unknown>; input?: unknown };
        },
    );
    const actors = events.filter((e) => e.type === '@xstate.actor').map((e) => e.name);
    expect(actors).toContain('supervisor');
    expect(actors).toContain('circuit');
    expect(actors.filter((n) => /^worker-\d+-\d+$/.test(n ?? '')).length).toBeGreaterThanOrEqual(2);
    const contexts = events.map((e) => e.snapshot?.context).filter((c) => c !== undefined);
    // Sanitised once, not twice (twice would leave `{}`).
    expect(contexts.some((c) => c.pool === 'inspect' && Array.isArray(c.slots))).toBe(true);
    expect(contexts.some((c) => typeof c.workerId === 'number' && 'generation' in c)).toBe(true);
    expect(events.some((e) => e.snapshot?.input !== undefined)).toBe(false);
  });

  it('exits 1 with a clear message when the port is taken', { timeout: SLOW }, async () => {
    const server = createServer();
    await new Promise<void>((resolve) => server.listen(0, resolve));
    const address = server.address();
    const port = typeof address === 'object' && address ? address.port : 0;
    try {
      const cli = startCli([
        'inspect',
        '--script',
        fixture('handlers.py'),
        '--no-open',
        '--port',
        String(port),
      ]);
      const r = await cli.done;
      expect(r.code).toBe(1);
      expect(r.stderr).toBe(
        `pyvisor inspect: port ${port} is already in use; choose another one with --port\n`,
      );
    } finally {
      server.close();
    }
  });
});
