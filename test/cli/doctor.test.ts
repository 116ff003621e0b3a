import { describe, expect, it } from 'vitest';
import { stripAnsi } from '../../src/cli/format.js';
import { fixture, runCli, SLOW } from './helpers.js';

const lastLine = (text: string) => text.trimEnd().split('\n').pop();

describe('pyvisor doctor', () => {
  it('checks the interpreter and the script, lists the handlers and exits 0', {
    timeout: SLOW,
  }, async () => {
    const r = await runCli(['doctor', '--script', fixture('handlers.py')]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).not.toContain('\x1b[');
    expect(r.stdout).toMatch(/✓ \S+ \(PYVISOR_PYTHON\) → \/\S+ \(CPython 3\.\d+\.\d+\)/);
    expect(r.stdout).toMatch(/✓ (virtual environment: |no virtual environment)/);
    expect(r.stdout).toMatch(/✓ imported by a worker \(pid \d+\) in [\d.]+ m?s/);
    expect(r.stdout).toMatch(/✓ \d+ handlers:\n\s+add, /);
    expect(r.stdout).toContain('count (stream)');
    expect(r.stdout).toMatch(/✓ calls reach the worker and come back in [\d.]+ m?s/);
    expect(lastLine(r.stdout)).toBe('✓ healthy');
  });

  it('lists async handlers and warns when the pool would run them one at a time', {
    timeout: SLOW,
  }, async () => {
    const serial = await runCli(['doctor', '--script', fixture('aio.py')]);
    expect(serial.code).toBe(0);
    expect(stripAnsi(serial.stdout)).toContain('ticker (async, stream)');
    expect(serial.stdout).toMatch(/! \d+ async handlers \(fetch, .*\), but concurrency is 1/);
    expect(lastLine(serial.stdout)).toBe('✓ healthy, 1 warning');
    const concurrent = await runCli([
      'doctor',
      '--script',
      fixture('aio.py'),
      '--concurrency',
      '100',
    ]);
    expect(concurrent.code).toBe(0);
    expect(concurrent.stdout).not.toContain('but concurrency is 1');
    expect(lastLine(concurrent.stdout)).toBe('✓ healthy');
  });

  it('explains an import error with the Python traceback and exits 1', {
    timeout: SLOW,
  }, async () => {
    const r = await runCli(['doctor', '--script', fixture('syntax-error.py')]);
    expect(r.code).toBe(1);
    expect(r.stdout).toContain(
      '✗ importing the script (or one of its @on_init functions) raised SyntaxError',
    );
    expect(r.stdout).toContain('Python traceback:');
    expect(r.stdout).toContain('def broken(x:');
    expect(lastLine(r.stdout)).toBe('✗ 1 problem found');
  });

  it('explains a worker that dies while importing', { timeout: SLOW }, async () => {
    const r = await runCli(['doctor', '--script', fixture('crash-on-start.py')]);
    expect(r.code).toBe(1);
    expect(r.stdout).toContain(
      '✗ the worker process exited with code 3 while importing the script, before it was ready',
    );
  });

  it('explains a missing script and a missing interpreter; NO_COLOR wins', {
    timeout: SLOW,
  }, async () => {
    const [script, python] = await Promise.all([
      runCli(['doctor', '--script', 'no/such/handlers.py'], {
        env: { FORCE_COLOR: '1', NO_COLOR: '1' },
      }),
      runCli(['doctor', '--script', fixture('handlers.py'), '--python', '/no/such/python3']),
    ]);
    expect(script.code).toBe(1);
    expect(script.stdout).not.toContain('\x1b[');
    expect(script.stdout).toContain('✗ the script does not exist or is not a file');
    expect(python.code).toBe(1);
    expect(python.stdout).toContain('✗ /no/such/python3 (--python) could not be run: no such file');
    expect(python.stdout).toContain('- not checked: no interpreter to run it');
    expect(lastLine(python.stdout)).toBe('✗ 1 problem found');
  });

  it('warns when VIRTUAL_ENV is not where the interpreter runs; colours when forced', {
    timeout: SLOW,
  }, async () => {
    const r = await runCli(['doctor'], { env: { VIRTUAL_ENV: '/no/such/venv', FORCE_COLOR: '1' } });
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('\x1b[32m✓\x1b[39m');
    expect(stripAnsi(r.stdout)).toMatch(
      /! VIRTUAL_ENV is \/no\/such\/venv, but \S+ runs outside it/,
    );
    expect(r.stdout).toContain('- not checked: pass --script handlers.py');
    expect(lastLine(r.stdout)).toContain('✓ healthy');
    expect(lastLine(r.stdout)).toContain('1 warning');
  });
});
