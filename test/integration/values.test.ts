import { execFileSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { isNDArray, type NDArray, ndarray, SerializationError } from '../../src/index.js';
import { fixture, testPool } from '../helpers.js';

const script = fixture('values.py');

/** Whether the workers' python3 can import numpy (the tests that need it are skipped if not). */
const hasNumpy = (() => {
  try {
    execFileSync('python3', ['-c', 'import numpy'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
})();

async function serializationError(promise: Promise<unknown>): Promise<SerializationError> {
  const error = await promise.catch((e: unknown) => e);
  expect(error).toBeInstanceOf(SerializationError);
  expect((error as SerializationError).code).toBe('ERR_SERIALIZATION');
  return error as SerializationError;
}

function expectArray(v: unknown, dtype: string, shape: number[], ctor: string, values: unknown[]) {
  expect(isNDArray(v)).toBe(true);
  const a = v as NDArray;
  expect(a.dtype).toBe(dtype);
  expect(a.shape).toEqual(shape);
  expect(a.data.constructor.name).toBe(ctor);
  expect([...a.data]).toEqual(values);
}

describe('values: NaN and infinities', () => {
  it('come back from results and stream items as NaN, Infinity and -Infinity', async () => {
    const pool = testPool({ script });
    expect(await pool.call('nan')).toBeNaN();
    expect(await pool.call('non_finite')).toEqual([
      Number.NaN,
      Number.POSITIVE_INFINITY,
      Number.NEGATIVE_INFINITY,
      { x: Number.NaN, y: [1.5, Number.NEGATIVE_INFINITY] },
      [Number.POSITIVE_INFINITY],
    ]);
    const items: unknown[] = [];
    for await (const item of pool.stream('non_finite_stream')) items.push(item);
    expect(items).toEqual([
      Number.NaN,
      1,
      { v: Number.POSITIVE_INFINITY },
      [Number.NEGATIVE_INFINITY],
    ]);
  });

  it('travel as arguments, kwargs included, and round-trip', async () => {
    const pool = testPool({ script });
    expect(await pool.call('is_nan', [Number.NaN])).toBe(true);
    expect(await pool.call('is_nan', [1.5])).toBe(false);
    expect(
      await pool.call('classify', [Number.NaN, [Number.POSITIVE_INFINITY, 2]], {
        kwargs: { limit: Number.NEGATIVE_INFINITY, nested: { x: [Number.NaN] } },
      }),
    ).toEqual({
      args: ['nan', ['inf', 'int']],
      kwargs: { limit: '-inf', nested: { x: ['nan'] } },
    });
    const args = [Number.NaN, { a: [1, Number.POSITIVE_INFINITY], b: -0.5 }, 'NaN'];
    const kwargs = { k: Number.NEGATIVE_INFINITY, buf: Buffer.from('x') };
    expect(await pool.call('echo_args', args, { kwargs })).toEqual({ args, kwargs });
  });
});

describe('values: arrays and scalars without numpy (duck typing)', () => {
  it('sends buffer-backed arrays as NDArrays and scalar-likes as numbers', async () => {
    const pool = testPool({ script });
    const v = (await pool.call('duck_values')) as Record<string, unknown>;
    expectArray(v.f64, 'float64', [2, 3], 'Float64Array', [
      0.5,
      1.5,
      2.5,
      -1,
      Number.NaN,
      Number.POSITIVE_INFINITY,
    ]);
    expectArray(v.i32, 'int32', [2, 2], 'Int32Array', [1, -2, 3, 4]);
    expectArray(v.bool, 'bool', [2, 2], 'Uint8Array', [1, 0, 0, 1]);
    expectArray(v.i64, 'int64', [1, 2], 'BigInt64Array', [-(2n ** 63n), 2n ** 53n + 1n]);
    expect(v.objects).toEqual([
      ['a', null],
      [1, Number.NaN],
    ]);
    expect(v.scalars).toEqual([7, 1.5, true]);
  });

  it('turns an NDArray argument into bytes when the worker cannot import numpy', async () => {
    const pool = testPool({ script, env: { VALUES_NO_NUMPY: '1' } });
    const m = ndarray(new Float64Array([1, 2, 3, 4, 5, 6]), [2, 3]);
    expect(await pool.call('array_info', [m])).toEqual({ type: 'bytes', len: 48 });
    const back = (await pool.call('array_echo', [m])) as Buffer;
    expect(Buffer.isBuffer(back)).toBe(true);
    expect(new Float64Array(back.buffer, back.byteOffset, 6)).toEqual(m.data);
    expect(await pool.call('numpy_loaded')).toBe(false);
  });
});

describe('values: the standard library and pyvisor.encoder', () => {
  it('converts sets, tuples, dataclasses, models, enums, datetimes and Decimals', async () => {
    const pool = testPool({ script });
    const v = (await pool.call('stdlib')) as Record<string, unknown>;
    expect(v).toEqual({
      set: [3],
      frozenset: ['a'],
      tuple: [1, [2, 'x']],
      dataclass: { x: 1, y: 2.5, tags: ['k'] },
      model: { name: 'm', size: 3 },
      enum: ['red', 2],
      datetime: '2024-01-02T03:04:05.006000',
      date: '2024-02-29',
      time: '13:14:15',
      decimal: '3.14159265358979323846',
    });
  });

  it('uses the encoder a handler file registers for its own class', async () => {
    const pool = testPool({ script });
    expect(await pool.call('money')).toEqual([
      { amount: '1.25', currency: 'EUR' },
      { total: { amount: '0.10', currency: 'USD' } },
    ]);
  });

  it('fails a result nothing can encode with ERR_SERIALIZATION naming the type, keeping the worker', async () => {
    const pool = testPool({ script });
    const pid = await pool.call('pid');
    const error = await serializationError(pool.call('unencodable'));
    expect(error.message).toMatch(/Opaque/);
    expect(error.message).toMatch(/pyvisor\.encoder/);
    expect(error.message).toMatch(/unencodable/);
    expect(await pool.call('pid')).toBe(pid);
  });
});

describe('values: NDArray arguments', () => {
  it('rejects an inconsistent NDArray with ERR_SERIALIZATION before any worker sees it', async () => {
    const pool = testPool({ script });
    await pool.ready();
    for (const bad of [
      { dtype: 'float64', shape: [2, 2], data: new Float64Array(3) },
      { dtype: 'float64', shape: [2], data: new Float32Array(2) },
      { dtype: 'complex128', shape: [1], data: new Float64Array(2) },
    ]) {
      const error = await serializationError(pool.call('array_info', [bad]));
      expect(error.message).toMatch(/'array_info' hold an invalid NDArray/);
    }
    expect(pool.stats().workers[0]!.calls).toBe(0);
  });
});

describe.skipIf(!hasNumpy)('values: numpy', () => {
  it('sends numpy scalars as plain numbers and booleans', async () => {
    const pool = testPool({ script });
    const [i, f, b, u, n] = (await pool.call('numpy_scalars')) as unknown[];
    expect(i).toBe(7);
    expect(f).toBe(1.5);
    expect(b).toBe(true);
    expect(u).toBe(255);
    expect(n).toBeNaN();
  });

  it('sends numeric arrays as NDArrays and the others as nested lists', async () => {
    const pool = testPool({ script });
    const v = (await pool.call('numpy_arrays')) as Record<string, unknown>;
    expectArray(v.f64, 'float64', [2, 3], 'Float64Array', [0, 0.5, 1, 1.5, 2, 2.5]);
    expectArray(v.i32, 'int32', [2, 2], 'Int32Array', [1, -2, 3, 2 ** 31 - 1]);
    expectArray(v.bool, 'bool', [2, 2], 'Uint8Array', [1, 0, 0, 1]);
    expectArray(v.i64, 'int64', [2, 2], 'BigInt64Array', [
      -(2n ** 63n),
      2n ** 53n + 1n,
      0n,
      2n ** 63n - 1n,
    ]);
    // Not C-contiguous in Python: sent in C order of the transposed view.
    expectArray(v.transposed, 'int16', [3, 2], 'Int16Array', [0, 3, 1, 4, 2, 5]);
    expectArray(v.zero_d, 'float64', [], 'Float64Array', [2.5]);
    expectArray(v.empty, 'float32', [0, 3], 'Float32Array', []);
    expect(v.strings).toEqual([
      ['a', 'bc'],
      ['d', 'e'],
    ]);
    expect(v.objects).toEqual([
      [1, 'x'],
      [null, 2.5],
    ]);
    expect(v.float16).toEqual([1.5, -2]);
  });

  it('streams arrays', async () => {
    const pool = testPool({ script });
    const items: NDArray[] = [];
    for await (const item of pool.stream<NDArray>('numpy_stream', [70])) items.push(item);
    expect(items).toHaveLength(70);
    items.forEach((item, i) => {
      expectArray(item, 'float64', [2, 2], 'Float64Array', [i, i, i, i]);
    });
  });

  it('returns a large matrix', async () => {
    const pool = testPool({ script });
    const m = (await pool.call('numpy_matrix', [300])) as NDArray<'float64'>;
    expect(m.shape).toEqual([300, 300]);
    expect(m.data).toBeInstanceOf(Float64Array);
    expect(m.data.length).toBe(90_000);
    expect(m.data[299 * 300 + 7]).toBe(299 * 300 + 7);
  });

  it('passes NDArray arguments as writable numpy arrays of the right dtype and shape', async () => {
    const pool = testPool({ script });
    expect(await pool.call('numpy_loaded')).toBe(false); // numpy is imported lazily
    const cases: [NDArray, string, number[], number | string | boolean][] = [
      [ndarray(new Float64Array([1, 2, 3, 4, 5, 6.5]), [2, 3]), 'float64', [2, 3], 21.5],
      [ndarray(new Int32Array([1, -2, 3, 4]), [2, 2]), 'int32', [2, 2], 6],
      [{ dtype: 'bool', shape: [3], data: new Uint8Array([1, 0, 1]) }, 'bool', [3], 2],
      [ndarray(new BigInt64Array([2n ** 40n, 5n])), 'int64', [2], 2 ** 40 + 5],
      [ndarray(new Float32Array([0.5]), []), 'float32', [], 0.5],
      [ndarray(new Uint16Array(0), [0, 4]), 'uint16', [0, 4], 0],
    ];
    for (const [arr, dtype, shape, sum] of cases) {
      expect(await pool.call('array_info', [arr])).toEqual({
        type: 'ndarray',
        dtype,
        shape,
        sum,
        writeable: true,
      });
    }
    // A view with a byteOffset, in kwargs.
    const view = new Int16Array([9, 9, 1, 2, 3, 9]).subarray(2, 5);
    expect(await pool.call('array_info', [], { kwargs: { a: ndarray(view) } })).toMatchObject({
      dtype: 'int16',
      sum: 6,
    });
  });

  it('round-trips NDArrays of every dtype, next to NaN and Buffers', async () => {
    const pool = testPool({ script });
    const arrays: NDArray[] = [
      { dtype: 'bool', shape: [2, 2], data: new Uint8Array([1, 0, 0, 1]) },
      ndarray(new Int8Array([-128, 127])),
      ndarray(new Uint8Array([0, 255])),
      ndarray(new Int16Array([-1, 2, -3, 4]), [2, 2]),
      ndarray(new Uint16Array([65535])),
      ndarray(new Int32Array([-(2 ** 31)])),
      ndarray(new Uint32Array([2 ** 32 - 1])),
      ndarray(new BigInt64Array([-(2n ** 63n), 2n ** 63n - 1n])),
      ndarray(new BigUint64Array([2n ** 64n - 1n])),
      ndarray(new Float32Array([1.5, Number.NaN, Number.NEGATIVE_INFINITY])),
      ndarray(
        new Float64Array(20_000).map((_, i) => i / 7),
        [100, 200],
      ),
    ];
    for (const arr of arrays) {
      const back = await pool.call('array_echo', [arr]);
      expect(back).toEqual(arr);
    }
    const args = [arrays[3], { n: Number.NaN, b: Buffer.from('z'), m: [arrays[9]] }];
    expect(await pool.call('echo_args', args)).toEqual({ args, kwargs: {} });
    expect(await pool.call('numpy_double', [ndarray(new Float32Array([1, 2]))])).toEqual(
      ndarray(new Float32Array([2, 4])),
    );
  });
});
