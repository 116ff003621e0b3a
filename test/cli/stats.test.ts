import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import type { PoolStats } from '../../src/index.js';
import { fixture, ROOT, runCli, SLOW } from './helpers.js';

describe('pyvisor stats', () => {
  it('prints pool.stats() as a table once every worker is ready', { timeout: SLOW }, async () => {
    const r = await runCli(['stats', '--script', fixture('handlers.py'), '--size', '2']);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const lines = r.stdout.trimEnd().split('\n');
    expect(lines[0]).toBe('pool pyvisor: running · circuit closed · queued 0 · sessions 0');
    expect(lines[1]).toMatch(
      /^worker\s+pid\s+state\s+calls\s+restarts\s+generation\s+init ms\s+python$/,
    );
    expect(lines.slice(2)).toHaveLength(2);
    for (const [i, line] of lines.slice(2).entries()) {
      expect(line).toMatch(
        new RegExp(`^\\s+${i}\\s+\\d+\\s+ready\\s+0\\s+0\\s+1\\s+[\\d.]+\\s+3\\.\\d+\\.\\d+$`),
      );
    }
  });

  it('prints exactly pool.stats() as JSON with --json', { timeout: SLOW }, async () => {
    const r = await runCli(['stats', '--script', fixture('handlers.py'), '--size', '2', '--json']);
    expect(r.code).toBe(0);
    const stats = JSON.parse(r.stdout) as PoolStats;
    expect(Object.keys(stats).sort()).toEqual(
      ['circuit', 'name', 'queued', 'sessions', 'state', 'workers'].sort(),
    );
    expect(stats).toMatchObject({
      name: 'pyvisor',
      state: 'running',
      circuit: 'closed',
      queued: 0,
    });
    expect(stats.workers.map((w) => [w.id, w.state, w.generation])).toEqual([
      [0, 'ready', 1],
      [1, 'ready', 1],
    ]);
    expect(stats.workers.every((w) => typeof w.pid === 'number')).toBe(true);
  });

  it('exits 1 with the explanation when the script cannot start, 2 without --script', {
    timeout: SLOW,
  }, async () => {
    const [broken, usage] = await Promise.all([
      runCli(['stats', '--script', fixture('syntax-error.py'), '--size', '1', '--json']),
      runCli(['stats', '--json']),
    ]);
    expect(broken.code).toBe(1);
    expect(broken.stdout).toBe('');
    expect(broken.stderr).toMatch(/^ERR_CIRCUIT_OPEN: /);
    expect(broken.stderr).toContain('SyntaxError');
    expect(usage.code).toBe(2);
    expect(usage.stderr).toBe(
      'pyvisor stats: --script is required\nusage: pyvisor stats --script <file> [--size n] [--json] [--python path]\n',
    );
  });
});

describe('pyvisor without a command, --help, --version', () => {
  it('lists the commands with --help and exits 0; exits 2 on an unknown command', {
    timeout: SLOW,
  }, async () => {
    const [help, unknown, none, commandHelp, version] = await Promise.all([
      runCli(['--help']),
      runCli(['frobnicate']),
      runCli([]),
      runCli(['inspect', '--help']),
      runCli(['--version']),
    ]);
    expect(help.code).toBe(0);
    for (const name of ['demo', 'doctor', 'call', 'stats', 'inspect']) {
      expect(help.stdout).toMatch(new RegExp(`^  ${name} `, 'm'));
    }
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toMatch(/^pyvisor: unknown command 'frobnicate'/);
    expect(none.code).toBe(2);
    expect(none.stderr).toContain('usage: pyvisor <command> [options]');
    expect(commandHelp.code).toBe(0);
    expect(commandHelp.stdout).toContain('--no-open');
    const pkg = JSON.parse(readFileSync(`${ROOT}/package.json`, 'utf8')) as { version: string };
    expect(version.stdout).toBe(`${pkg.version}\n`);
  });
});
