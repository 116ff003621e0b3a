import { describe, expect, it } from 'vitest';
import { intFlag, jsonArgs, msFlag, parseCommand, UsageError } from '../../src/cli/args.js';
import { explain } from '../../src/cli/explain.js';
import { ms, percentile, stripAnsi, styleFor, table, useColor } from '../../src/cli/format.js';
import {
  InspectUnavailableError,
  loadInspectModules,
  sanitizeContextOnce,
  scrubInspectionEvent,
} from '../../src/cli/relay.js';
import { CircuitOpenError, WorkerInitError } from '../../src/index.js';
import { sanitizeContext } from '../../src/observe/inspect.js';

describe('CLI building blocks', () => {
  it('colours a TTY only, never under NO_COLOR or TERM=dumb, always under FORCE_COLOR', () => {
    expect(useColor({ isTTY: true, write: () => true }, {})).toBe(true);
    expect(useColor({ isTTY: false, write: () => true }, {})).toBe(false);
    expect(useColor({ isTTY: true, write: () => true }, { NO_COLOR: '1' })).toBe(false);
    expect(useColor({ isTTY: true, write: () => true }, { TERM: 'dumb' })).toBe(false);
    expect(useColor({ isTTY: false, write: () => true }, { FORCE_COLOR: '1' })).toBe(true);
    expect(useColor({ isTTY: true, write: () => true }, { FORCE_COLOR: '0' })).toBe(true);
  });

  it('aligns table columns by visible width, without trailing spaces', () => {
    const s = styleFor({ isTTY: false, write: () => true }, { FORCE_COLOR: '1' });
    const out = table(
      [
        ['a', 'bb', 'c'],
        [s.green('long'), '1', ''],
      ],
      { align: ['left', 'right', 'left'], style: s },
    );
    expect(stripAnsi(out)).toBe('a     bb  c\nlong   1');
  });

  it('computes nearest-rank percentiles and formats milliseconds', () => {
    const values = Array.from({ length: 100 }, (_, i) => i + 1);
    expect([50, 90, 99, 100].map((p) => percentile(values, p))).toEqual([50, 90, 99, 100]);
    expect(percentile([7], 99)).toBe(7);
    expect(ms(percentile([], 50))).toBe('-');
    expect([0.123, 12.34, 850.4, 1520].map(ms)).toEqual(['0.12', '12.3', '850', '1520']);
  });

  it('parses flags strictly: unknown flags, bad numbers and extra arguments are usage errors', () => {
    const spec = { size: { type: 'string' }, json: { type: 'boolean' } } as const;
    const { flags, positionals } = parseCommand(['a', '--size=3', '--json'], spec, 1);
    expect(positionals).toEqual(['a']);
    expect(intFlag(flags, 'size', { min: 1 })).toBe(3);
    expect(flags.json).toBe(true);
    expect(() => parseCommand(['--bogus'], spec)).toThrow(UsageError);
    expect(() => parseCommand(['a', 'b'], spec, 1)).toThrow(/unexpected argument: b/);
    expect(() => parseCommand(['--size'], spec)).toThrow(UsageError);
    for (const bad of ['0', '1.5', 'x', '-1']) {
      expect(() => intFlag({ size: bad }, 'size', { min: 1 })).toThrow(UsageError);
    }
    expect(msFlag({ timeout: '250.5' }, 'timeout')).toBe(250.5);
    for (const bad of ['0', 'soon', '', '-5']) {
      expect(() => msFlag({ timeout: bad }, 'timeout')).toThrow(/--timeout must be a number/);
    }
    expect(msFlag({ duration: '0' }, 'duration', { allowZero: true })).toBe(0);
  });

  it('accepts only a JSON array as call arguments', () => {
    expect(jsonArgs('[1, "a", null]')).toEqual([1, 'a', null]);
    expect(jsonArgs(undefined)).toEqual([]);
    expect(() => jsonArgs('1, 2')).toThrow(UsageError);
    expect(() => jsonArgs('{"a": 1}')).toThrow(/JSON array of positional arguments/);
  });

  it('explains a start failure behind an open circuit in plain words', () => {
    const init = new WorkerInitError('error', {
      workerId: 0,
      pid: 1,
      pythonType: 'ImportError',
      pythonMessage: 'No module named foo',
      pythonTraceback: 'Traceback (most recent call last):\nImportError: No module named foo\n',
      stderr: 'warning: something\n',
    });
    const x = explain(new CircuitOpenError(init));
    expect(x.code).toBe('ERR_CIRCUIT_OPEN');
    expect(x.summary).toBe(
      'importing the script (or one of its @on_init functions) raised ImportError: No module named foo',
    );
    expect(x.evidence.map((e) => e.title)).toEqual([
      'Python traceback',
      'worker stderr (last lines)',
    ]);
    const timeout = explain(new WorkerInitError('timeout', {}), { initTimeout: 500 });
    expect(timeout.summary).toContain('longer than initTimeout (500 ms)');
  });

  it('sanitises a context once: an already sanitised context is kept, not emptied', () => {
    const raw = {
      workerId: 1,
      port: {},
      generation: 2,
      pid: 3,
      calls: 4,
      call: null,
      info: null,
      stopReason: null,
      ending: null,
    };
    const once = sanitizeContext(raw) as Record<string, unknown>;
    expect(sanitizeContextOnce(raw)).toEqual(once);
    expect(sanitizeContextOnce(JSON.parse(JSON.stringify(once)))).toEqual(
      JSON.parse(JSON.stringify(once)),
    );
    expect(sanitizeContextOnce({ env: { SECRET: 'x' } })).toEqual({});
  });

  it('drops snapshot inputs (the spawn spec and its env) before anything is sent', () => {
    const event = {
      type: '@xstate.actor',
      snapshot: {
        status: 'active',
        input: { spec: { env: { SECRET: 'x' } } },
        output: {
          workerId: 1,
          reason: 'crashed',
          exitCode: 1,
          signal: null,
          error: { stderr: 'x' },
        },
        error: { code: 'ERR_PROTOCOL', stack: 'x' },
        tags: new Set(['a']),
      },
    };
    expect(scrubInspectionEvent(event)).toEqual({
      type: '@xstate.actor',
      snapshot: {
        status: 'active',
        output: { workerId: 1, reason: 'crashed', exitCode: 1, signal: null },
        error: { code: 'ERR_PROTOCOL' },
        tags: ['a'],
      },
    });
  });

  it('says how to install @statelyai/inspect when it is missing', async () => {
    await expect(loadInspectModules('@statelyai/not-installed-here')).rejects.toThrow(
      InspectUnavailableError,
    );
    await expect(loadInspectModules('@statelyai/not-installed-here')).rejects.toThrow(
      /npm install --save-dev @statelyai\/inspect/,
    );
  });
});
