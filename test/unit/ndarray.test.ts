import { describe, expect, it } from 'vitest';
import { ProtocolError, SerializationError } from '../../src/errors.js';
import { isNDArray, type NDArray, type NDArrayDType, ndarray } from '../../src/index.js';
import {
  BINARY_KEY,
  encodeCall,
  extractBinary,
  FrameDecoder,
  mayHoldBinary,
  type PythonMessage,
  restoreBinary,
} from '../../src/protocol/index.js';
import { frame } from './frames.js';

/** A reply frame with attachments, as the Python runtime writes it. */
function reply(v: unknown, attachments: Buffer[], t: 'ok' | 'item' = 'ok'): Buffer {
  return Buffer.concat([
    frame(JSON.stringify({ t, id: 1, v, b: attachments.length })),
    ...attachments.map((a) => frame(a)),
  ]);
}

function decode(bytes: Buffer, step = bytes.length): unknown {
  const out: PythonMessage[] = [];
  const decoder = new FrameDecoder();
  for (let i = 0; i < bytes.length; i += step) {
    decoder.push(bytes.subarray(i, i + step), (m) => out.push(m));
  }
  expect(decoder.pending).toBe(0);
  expect(out).toHaveLength(1);
  return (out[0] as { v: unknown }).v;
}

/** The JSON and the attachment bodies of what encodeCall returns. */
function parseCall(out: Buffer | Buffer[]): { json: Record<string, unknown>; bodies: Buffer[] } {
  const all = Buffer.isBuffer(out) ? out : Buffer.concat(out);
  const n = all.readUInt32BE(0);
  const json = JSON.parse(all.subarray(4, 4 + n).toString()) as Record<string, unknown>;
  const bodies: Buffer[] = [];
  for (let off = 4 + n; off < all.length; ) {
    const m = all.readUInt32BE(off);
    bodies.push(all.subarray(off + 4, off + 4 + m));
    off += 4 + m;
  }
  return { json, bodies };
}

function call(args: unknown[], kwargs?: Record<string, unknown>): Buffer | Buffer[] {
  return encodeCall(
    { id: 7, fn: 'f', args, kwargs, streamCredit: undefined, traceparent: undefined },
    1 << 24,
  );
}

/** Encodes `args` as a call, then decodes its args as if Python had echoed them as a result. */
function roundTrip(args: unknown[]): unknown {
  const { json, bodies } = parseCall(call(args));
  return decode(reply(json.args, bodies));
}

function serializationError(run: () => unknown): SerializationError {
  try {
    run();
  } catch (error) {
    expect(error).toBeInstanceOf(SerializationError);
    expect((error as SerializationError).code).toBe('ERR_SERIALIZATION');
    return error as SerializationError;
  }
  throw new Error('no SerializationError');
}

function protocolError(run: () => unknown): ProtocolError {
  try {
    run();
  } catch (error) {
    expect(error).toBeInstanceOf(ProtocolError);
    expect((error as ProtocolError).code).toBe('ERR_PROTOCOL');
    return error as ProtocolError;
  }
  throw new Error('no ProtocolError');
}

const SAMPLES: { [D in NDArrayDType]: NDArray<D> } = {
  bool: { dtype: 'bool', shape: [2, 2], data: new Uint8Array([1, 0, 0, 1]) },
  int8: { dtype: 'int8', shape: [3], data: new Int8Array([-128, 0, 127]) },
  uint8: { dtype: 'uint8', shape: [1, 3], data: new Uint8Array([0, 1, 255]) },
  int16: { dtype: 'int16', shape: [3, 1], data: new Int16Array([-32768, 1, 32767]) },
  uint16: { dtype: 'uint16', shape: [2], data: new Uint16Array([0, 65535]) },
  int32: {
    dtype: 'int32',
    shape: [2, 3],
    data: new Int32Array([-(2 ** 31), -1, 0, 1, 2, 2 ** 31 - 1]),
  },
  uint32: { dtype: 'uint32', shape: [1], data: new Uint32Array([2 ** 32 - 1]) },
  int64: {
    dtype: 'int64',
    shape: [3],
    data: new BigInt64Array([-(2n ** 63n), 2n ** 53n + 1n, 2n ** 63n - 1n]),
  },
  uint64: { dtype: 'uint64', shape: [2], data: new BigUint64Array([0n, 2n ** 64n - 1n]) },
  float32: { dtype: 'float32', shape: [2, 2], data: new Float32Array([1.5, -0, Number.NaN, 3e38]) },
  float64: {
    dtype: 'float64',
    shape: [2, 2, 1],
    data: new Float64Array([Math.PI, Number.NEGATIVE_INFINITY, Number.MIN_VALUE, -1e308]),
  },
};

const CTORS: Record<NDArrayDType, string> = {
  bool: 'Uint8Array',
  int8: 'Int8Array',
  uint8: 'Uint8Array',
  int16: 'Int16Array',
  uint16: 'Uint16Array',
  int32: 'Int32Array',
  uint32: 'Uint32Array',
  int64: 'BigInt64Array',
  uint64: 'BigUint64Array',
  float32: 'Float32Array',
  float64: 'Float64Array',
};

describe('NDArray arguments: encoding', () => {
  it('sends every dtype as an ndarray placeholder plus the raw little-endian bytes', () => {
    for (const [dtype, arr] of Object.entries(SAMPLES)) {
      const { json, bodies } = parseCall(call([arr]));
      expect(json.args).toEqual([{ [BINARY_KEY]: 'ndarray', dtype, shape: arr.shape, data: 0 }]);
      expect(json.b).toBe(1);
      expect(Object.keys(json).at(-1)).toBe('b');
      expect(bodies).toHaveLength(1);
      const d = arr.data;
      expect(bodies[0]!.equals(Buffer.from(d.buffer, d.byteOffset, d.byteLength))).toBe(true);
    }
    // Byte order: little-endian, whatever the value.
    const { bodies } = parseCall(call([ndarray(new Uint16Array([0x0102]))]));
    expect([...bodies[0]!]).toEqual([0x02, 0x01]);
  });

  it('round-trips every dtype, 0-d and empty arrays with the right TypedArray', () => {
    const cases: NDArray[] = [
      ...Object.values(SAMPLES),
      { dtype: 'float64', shape: [], data: new Float64Array([2.5]) },
      { dtype: 'int64', shape: [], data: new BigInt64Array([-5n]) },
      { dtype: 'float32', shape: [0], data: new Float32Array(0) },
      { dtype: 'int16', shape: [3, 0, 2], data: new Int16Array(0) },
      { dtype: 'bool', shape: [0], data: new Uint8Array(0) },
    ];
    for (const arr of cases) {
      const [back] = roundTrip([arr]) as [NDArray];
      expect(back.dtype).toBe(arr.dtype);
      expect(back.shape).toEqual(arr.shape);
      expect(back.data.constructor.name).toBe(CTORS[arr.dtype]);
      expect(back.data).toEqual(arr.data);
      expect(Object.keys(back)).toEqual(['dtype', 'shape', 'data']);
      expect(isNDArray(back)).toBe(true);
    }
  });

  it('takes the bytes of a view without copying them, and leaves the argument alone', () => {
    const backing = new Float64Array(10).map((_, i) => i);
    const view = backing.subarray(3, 7); // byteOffset 24
    const arg = { dtype: 'float64', shape: [2, 2], data: view };
    const result = extractBinary([{ m: arg }])!;
    expect(result.attachments).toHaveLength(1);
    const a = result.attachments[0]!;
    expect(a.buffer).toBe(backing.buffer);
    expect(a.byteOffset).toBe(24);
    expect(a.length).toBe(32);
    expect(result.args).toEqual([
      { m: { [BINARY_KEY]: 'ndarray', dtype: 'float64', shape: [2, 2], data: 0 } },
    ]);
    expect(arg.data).toBe(view);
    expect(arg.shape).toEqual([2, 2]);
    // A large array is passed to the writer as it is (not copied next to its header).
    const big = new Float64Array(4096);
    const parts = call([ndarray(big)]) as Buffer[];
    expect(parts.some((p) => p.buffer === big.buffer && p.length === big.byteLength)).toBe(true);
    expect([...(roundTrip([ndarray(view, [4])]) as [NDArray])[0].data]).toEqual([3, 4, 5, 6]);
  });

  it('finds NDArrays nested anywhere, kwargs included, next to Buffers', () => {
    const m = ndarray(new Int32Array([1, 2, 3, 4, 5, 6]), [2, 3]);
    expect(mayHoldBinary([{ x: [m] }])).toBe(true);
    const { json, bodies } = parseCall(
      call([Buffer.from('raw'), [{ m }]], { weights: ndarray(new Float32Array([0.5])) }),
    );
    expect(json.kw).toBe(true);
    expect(json.b).toBe(3);
    expect(json.args).toEqual([
      { [BINARY_KEY]: 0 },
      [{ m: { [BINARY_KEY]: 'ndarray', dtype: 'int32', shape: [2, 3], data: 1 } }],
      { weights: { [BINARY_KEY]: 'ndarray', dtype: 'float32', shape: [1], data: 2 } },
    ]);
    expect(bodies.map((b) => b.length)).toEqual([3, 24, 4]);
  });

  it('rejects an inconsistent NDArray with ERR_SERIALIZATION, naming the problem', () => {
    const cases: [unknown, RegExp][] = [
      [
        { dtype: 'float16', shape: [1], data: new Uint16Array(1) },
        /dtype 'float16' is not one of bool, int8/,
      ],
      [{ dtype: 7, shape: [1], data: new Float64Array(1) }, /dtype 7 is not one of/],
      [
        { dtype: 'float64', shape: [2], data: new Float32Array(2) },
        /'float64' needs a Float64Array as data, got Float32Array/,
      ],
      [
        { dtype: 'uint8', shape: [2], data: new Uint8ClampedArray(2) },
        /needs a Uint8Array.*got Uint8ClampedArray/,
      ],
      [{ dtype: 'int8', shape: [2], data: new Uint8Array(2) }, /needs a Int8Array/],
      [{ dtype: 'bool', shape: [2], data: new Int8Array(2) }, /'bool' needs a Uint8Array/],
      [
        { dtype: 'int32', shape: [-1], data: new Int32Array(0) },
        /shape must be an array of non-negative integers, got \[-1\]/,
      ],
      [{ dtype: 'int32', shape: [1.5], data: new Int32Array(1) }, /shape/],
      [{ dtype: 'int32', shape: '3', data: new Int32Array(3) }, /shape.*got '3'/],
      [{ dtype: 'int32', shape: [Number.NaN], data: new Int32Array(0) }, /shape/],
      [
        { dtype: 'int32', shape: [2, 3], data: new Int32Array(5) },
        /shape \[2, 3\] holds 6 elements but its data has 5/,
      ],
      [
        { dtype: 'int32', shape: [], data: new Int32Array(0) },
        /shape \[\] holds 1 elements but its data has 0/,
      ],
      [
        { dtype: 'int32', shape: [2 ** 30, 2 ** 30], data: new Int32Array(1) },
        /holds Infinity elements|holds \d+ elements/,
      ],
    ];
    for (const [arr, message] of cases) {
      const error = serializationError(() => call([1, { nested: [arr] }]));
      expect(error.message).toMatch(/^The arguments of 'f' hold an invalid NDArray: /);
      expect(error.message).toMatch(message);
      expect(isNDArray(arr)).toBe(false);
      // In kwargs too.
      serializationError(() => call([], { arr }));
    }
  });

  it('sends objects that are not NDArray-shaped as they are', () => {
    class Matrix {
      dtype = 'float64';
      shape = [1];
      data = new Float64Array(1);
    }
    const cases: [unknown, unknown][] = [
      // An extra key, a missing key, data not a TypedArray: plain objects.
      [
        { dtype: 'float64', shape: [1], data: new Float64Array(1), name: 'x' },
        { dtype: 'float64', shape: [1], data: { [BINARY_KEY]: 0 }, name: 'x' },
      ],
      [
        { dtype: 'png', data: Buffer.from('x') },
        { dtype: 'png', data: { [BINARY_KEY]: 0 } },
      ],
      [
        { dtype: 'float64', shape: [1], data: new DataView(new ArrayBuffer(8)) },
        { dtype: 'float64', shape: [1], data: { [BINARY_KEY]: 0 } },
      ],
      [
        { dtype: 'float64', shape: [1], data: [1.5], blob: Buffer.from('x') },
        { dtype: 'float64', shape: [1], data: [1.5], blob: { [BINARY_KEY]: 0 } },
      ],
      // A class instance is not a plain object.
      [new Matrix(), { dtype: 'float64', shape: [1], data: { [BINARY_KEY]: 0 } }],
    ];
    for (const [arg, expected] of cases) {
      expect(extractBinary([arg])!.args).toEqual([expected]);
    }
    expect(mayHoldBinary([{ dtype: 'float64', shape: [1], data: [1.5] }])).toBe(false);
    // A null-prototype object is plain.
    const bare = Object.assign(Object.create(null), ndarray(new Int8Array(2)));
    expect(isNDArray(bare)).toBe(true);
    expect(extractBinary([bare])!.args).toEqual([
      { [BINARY_KEY]: 'ndarray', dtype: 'int8', shape: [2], data: 0 },
    ]);
  });
});

describe('NDArray results: decoding', () => {
  const placeholder = (dtype: string, shape: unknown, data: unknown = 0) => ({
    [BINARY_KEY]: 'ndarray',
    dtype,
    shape,
    data,
  });

  it('views the attachment when aligned, sharing its memory', () => {
    const backing = Buffer.alloc(64);
    const att = backing.subarray(8, 40); // byteOffset 8 (+ the pool offset, a multiple of 8)
    new Float64Array(att.buffer, att.byteOffset, 4).set([1, 2, 3, 4]);
    const message = { v: placeholder('float64', [2, 2]) as unknown };
    restoreBinary(message, [att]);
    const v = message.v as NDArray<'float64'>;
    expect(v.data).toBeInstanceOf(Float64Array);
    expect(v.data.buffer).toBe(att.buffer);
    expect(v.data.byteOffset).toBe(att.byteOffset);
    expect([...v.data]).toEqual([1, 2, 3, 4]);
  });

  it('copies a misaligned attachment into memory of its own', () => {
    for (const dtype of ['int16', 'int32', 'float32', 'float64', 'int64', 'uint64'] as const) {
      const src = SAMPLES[dtype].data;
      const bytes = Buffer.from(src.buffer, src.byteOffset, src.byteLength);
      const backing = new ArrayBuffer(bytes.length + 1);
      const att = Buffer.from(backing, 1, bytes.length); // byteOffset 1: misaligned
      att.set(bytes);
      const message = { v: [placeholder(dtype, SAMPLES[dtype].shape)] as unknown };
      restoreBinary(message, [att]);
      const [v] = message.v as [NDArray];
      expect(v.data.constructor.name).toBe(CTORS[dtype]);
      expect(v.data.buffer).not.toBe(backing);
      expect(v.data.byteOffset).toBe(0);
      expect(v.data).toEqual(src);
    }
    // One-byte elements are never misaligned.
    const att = Buffer.from(new ArrayBuffer(4), 1, 3);
    const message = { v: placeholder('bool', [3]) as unknown };
    restoreBinary(message, [att]);
    expect((message.v as NDArray).data.buffer).toBe(att.buffer);
    expect((message.v as NDArray).dtype).toBe('bool');
  });

  it('decodes arrays from frames split at any byte boundary, large ones too, in items', () => {
    const big = new Float64Array(50_000).map((_, i) => i / 3);
    const bytes = Buffer.concat([
      reply(
        {
          a: placeholder('float64', [250, 200], 1),
          b: [placeholder('bool', [2], 0), 'x'],
          z: placeholder('int8', [0], 2),
        },
        [Buffer.from([1, 0]), Buffer.from(big.buffer), Buffer.alloc(0)],
        'item',
      ),
    ]);
    for (const step of [5, 4096, 65_536, bytes.length]) {
      const v = decode(bytes, step) as { a: NDArray; b: [NDArray, string]; z: NDArray };
      expect(v.a.shape).toEqual([250, 200]);
      expect(v.a.data).toEqual(big);
      expect(v.b[0]).toEqual({ dtype: 'bool', shape: [2], data: new Uint8Array([1, 0]) });
      expect(v.z).toEqual({ dtype: 'int8', shape: [0], data: new Int8Array(0) });
    }
  });

  it.each([
    ['an unknown dtype', placeholder('float16', [1]), [2]],
    ['an inherited dtype name', placeholder('__proto__', [1]), [1]],
    ['a dtype that is not a string', placeholder(8 as unknown as string, [1]), [8]],
    ['a negative dimension', placeholder('uint8', [-1]), [0]],
    ['a fractional dimension', placeholder('uint8', [0.5]), [0]],
    ['a shape that is not an array', placeholder('uint8', 3), [3]],
    ['a shape of strings', placeholder('uint8', ['3']), [3]],
    ['too few bytes', placeholder('int32', [2]), [7]],
    ['too many bytes', placeholder('int32', [2]), [9]],
    ['a 0-d array without its element', placeholder('float64', []), [0]],
    ['a data index out of range', placeholder('uint8', [1], 1), [1]],
    ['a data index that is not an integer', placeholder('uint8', [1], '0'), [1]],
    ['a missing data index', { [BINARY_KEY]: 'ndarray', dtype: 'uint8', shape: [1], x: 0 }, [1]],
    ['an extra key', { ...placeholder('uint8', [1]), order: 'C' }, [1]],
  ])('rejects %s with ERR_PROTOCOL', (_, v, sizes) => {
    const bytes = reply(
      v,
      (sizes as number[]).map((n) => Buffer.alloc(n)),
    );
    const error = protocolError(() => new FrameDecoder().push(bytes, () => {}));
    expect(error.message).toMatch(/bad binary placeholder/);
  });

  it('rejects an attachment used by an array and a bytes placeholder both', () => {
    const bytes = reply([placeholder('uint8', [1], 0), { [BINARY_KEY]: 0 }], [Buffer.alloc(1)]);
    protocolError(() => new FrameDecoder().push(bytes, () => {}));
  });
});

describe('ndarray() and isNDArray()', () => {
  it('infers the dtype from the TypedArray and defaults to one dimension', () => {
    const cases: [ArrayBufferView, NDArrayDType][] = [
      [new Int8Array(2), 'int8'],
      [new Uint8Array(2), 'uint8'],
      [Buffer.alloc(2), 'uint8'],
      [new Int16Array(2), 'int16'],
      [new Uint16Array(2), 'uint16'],
      [new Int32Array(2), 'int32'],
      [new Uint32Array(2), 'uint32'],
      [new BigInt64Array(2), 'int64'],
      [new BigUint64Array(2), 'uint64'],
      [new Float32Array(2), 'float32'],
      [new Float64Array(2), 'float64'],
    ];
    for (const [data, dtype] of cases) {
      const a = ndarray(data as Uint8Array);
      expect(a).toEqual({ dtype, shape: [2], data });
      expect(a.data).toBe(data);
      expect(isNDArray(a)).toBe(true);
    }
    const m: NDArray<'float32'> = ndarray(new Float32Array(6), [2, 3]);
    expect(m.shape).toEqual([2, 3]);
    const shape = [6];
    expect(ndarray(new Float64Array(6), shape).shape).not.toBe(shape);
    expect(ndarray(new Float64Array(1), []).shape).toEqual([]);
  });

  it('refuses TypedArrays without a dtype and shapes that do not fit', () => {
    expect(() => ndarray(new Uint8ClampedArray(2) as unknown as Uint8Array)).toThrow(TypeError);
    expect(() => ndarray(new Float64Array(6), [4])).toThrow(RangeError);
    expect(() => ndarray(new Float64Array(6), [4])).toThrow(/holds 4 elements but its data has 6/);
    expect(() => ndarray(new Float64Array(1), [-1])).toThrow(/non-negative/);
  });

  it('tells NDArrays from other values', () => {
    for (const v of [
      null,
      1,
      'x',
      new Float64Array(1),
      { dtype: 'float64', shape: [1], data: [1] },
      { dtype: 'float64', shape: [1], data: new Float64Array(1), extra: 1 },
      { dtype: 'float64', data: new Float64Array(1) },
    ]) {
      expect(isNDArray(v)).toBe(false);
    }
    expect(isNDArray({ shape: [], data: new Uint8Array(1), dtype: 'bool' })).toBe(true);
  });
});
