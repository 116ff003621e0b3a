import { describe, expect, it } from 'vitest';
import { createPool, InvalidOptionError } from '../../src/index.js';
import { fixture, testPool } from '../helpers.js';

describe('logger option', () => {
  it('receives structured records: stderr lines with the worker id, crashes as warnings', async () => {
    const records: { level: string; obj: Record<string, unknown>; msg?: string }[] = [];
    const logger = {
      info: (obj: Record<string, unknown>, msg?: string) =>
        records.push({ level: 'info', obj, msg }),
      warn: (obj: Record<string, unknown>, msg?: string) =>
        records.push({ level: 'warn', obj, msg }),
      error: (obj: Record<string, unknown>, msg?: string) =>
        records.push({ level: 'error', obj, msg }),
    };
    const pool = testPool({ name: 'logged', logger });
    await pool.call('noisy', [3]);
    await pool.call('crash', [9]).catch(() => {});
    await pool.ready();
    await pool.close();
    const stderr = records.filter((r) => r.obj.stream === 'stderr');
    expect(stderr.length).toBeGreaterThanOrEqual(3);
    expect(stderr[0]!.obj).toMatchObject({ pool: 'logged', workerId: 0 });
    expect(typeof stderr[0]!.obj.line).toBe('string');
    const crash = records.find((r) => r.msg === 'worker crashed');
    expect(crash?.level).toBe('warn');
    expect(crash?.obj).toMatchObject({ workerId: 0, exitCode: 9, reason: 'crashed' });
    expect(records.some((r) => r.msg === 'worker ready')).toBe(true);
  });

  it('rejects a logger without the three methods', () => {
    expect(() =>
      createPool({ script: fixture('handlers.py'), logger: { info() {} } as never }),
    ).toThrow(InvalidOptionError);
  });
});
