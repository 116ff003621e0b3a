import { describe, expect, it } from 'vitest';
import { fixture, runCli, SLOW } from './helpers.js';

const handlers = fixture('handlers.py');

describe('pyvisor call', () => {
  it('prints the result as JSON on stdout and exits 0', { timeout: SLOW }, async () => {
    const r = await runCli(['call', handlers, 'add', '[1, 2]']);
    expect(r.stderr).toBe('');
    expect(r.stdout).toBe('3\n');
    expect(r.code).toBe(0);
  });

  it('collects a generator into a list; what the handler prints goes to stderr', {
    timeout: SLOW,
  }, async () => {
    const [count, noisy] = await Promise.all([
      runCli(['call', handlers, 'count', '[3]']),
      runCli(['call', handlers, 'noisy', '[1]']),
    ]);
    expect(count.stdout).toBe('[0,1,2]\n');
    expect(noisy.stdout).toBe('"done"\n');
    expect(noisy.stderr).toContain('noisy stdout line 0');
    expect(noisy.stderr).toContain('noisy stderr line 0');
    expect([count.code, noisy.code]).toEqual([0, 0]);
  });

  it('reports a Python exception on stderr with its traceback, exit 1', {
    timeout: SLOW,
  }, async () => {
    const r = await runCli(['call', handlers, 'fail', '["boom"]']);
    expect(r.code).toBe(1);
    expect(r.stdout).toBe('');
    expect(r.stderr).toMatch(/^ERR_PYTHON: ValueError: boom\n/);
    expect(r.stderr).toContain('Traceback (most recent call last)');
    expect(r.stderr).toContain('raise ValueError(msg)');
  });

  it('names the known handlers for an unknown one, and stops a call at --timeout', {
    timeout: SLOW,
  }, async () => {
    const [unknown, slow] = await Promise.all([
      runCli(['call', handlers, 'nope']),
      runCli(['call', handlers, 'sleep', '[30]', '--timeout', '200']),
    ]);
    expect(unknown.code).toBe(1);
    expect(unknown.stderr).toMatch(/^ERR_UNKNOWN_HANDLER: .*'nope'.*known handlers: .*\badd\b/);
    expect(slow.code).toBe(1);
    expect(slow.stderr).toMatch(/^ERR_CALL_TIMEOUT: Call to 'sleep' timed out after 200 ms/);
  });

  it('explains a script that cannot be imported, with the Python traceback', {
    timeout: SLOW,
  }, async () => {
    const r = await runCli(['call', fixture('syntax-error.py'), 'broken', '[1]']);
    expect(r.code).toBe(1);
    expect(r.stdout).toBe('');
    expect(r.stderr).toMatch(/^ERR_CIRCUIT_OPEN: /);
    expect(r.stderr).toContain('raised SyntaxError');
    expect(r.stderr).toContain('Python traceback:');
    expect(r.stderr).toContain('def broken(x:');
  });

  it('fails with exit 1 for a missing script or interpreter', { timeout: SLOW }, async () => {
    const [script, python] = await Promise.all([
      runCli(['call', 'no/such/script.py', 'add', '[1, 2]']),
      runCli(['call', handlers, 'add', '[1, 2]', '--python', '/no/such/python3']),
    ]);
    expect(script.code).toBe(1);
    expect(script.stderr).toMatch(/^ERR_INVALID_OPTION: .*no\/such\/script\.py.*not a file/);
    expect(python.code).toBe(1);
    expect(python.stderr).toMatch(/^ERR_POOL_FAILED: /);
    expect(python.stderr).toContain("the Python interpreter '/no/such/python3' could not be run");
  });

  it('rejects a bad command line with exit 2 and the usage line', { timeout: SLOW }, async () => {
    const runs = await Promise.all([
      runCli(['call', handlers]),
      runCli(['call', handlers, 'add', '1, 2']),
    ]);
    for (const r of runs) {
      expect(r.code).toBe(2);
      expect(r.stdout).toBe('');
      expect(r.stderr).toMatch(/^pyvisor call: .+\nusage: pyvisor call <script> <fn>/);
    }
    expect(runs[0]!.stderr).toContain('expected a script and a handler name');
    expect(runs[1]!.stderr).toContain('argsJSON must be a JSON array');
  });
});
