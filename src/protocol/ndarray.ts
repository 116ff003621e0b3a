/**
 * Numeric arrays (numpy's `ndarray` on the Python side) as plain `{ dtype, shape, data }` objects
 * whose `data` is a TypedArray: the dtype table, the types, and the checks used on call arguments
 * and on results (see docs/values.md).
 */

/**
 * The element types an {@link NDArray} can have: numpy's dtype names. Elements are stored
 * little-endian (the byte order of every platform Node runs on in practice).
 */
export type NDArrayDType =
  | 'bool'
  | 'int8'
  | 'uint8'
  | 'int16'
  | 'uint16'
  | 'int32'
  | 'uint32'
  | 'int64'
  | 'uint64'
  | 'float32'
  | 'float64';

/**
 * The TypedArray that holds the elements of each {@link NDArrayDType}: `bool` is a `Uint8Array`
 * of 0 and 1, `int64`/`uint64` are `BigInt64Array`/`BigUint64Array`.
 */
export interface NDArrayData {
  bool: Uint8Array;
  int8: Int8Array;
  uint8: Uint8Array;
  int16: Int16Array;
  uint16: Uint16Array;
  int32: Int32Array;
  uint32: Uint32Array;
  int64: BigInt64Array;
  uint64: BigUint64Array;
  float32: Float32Array;
  float64: Float64Array;
}

/** Any TypedArray that can be the `data` of an {@link NDArray}. */
export type NDArrayTypedArray = NDArrayData[NDArrayDType];

/**
 * A numeric n-dimensional array: numpy's `ndarray` of a numeric or bool dtype arrives as one, and
 * one passed as an argument (in `args` or `kwargs`, at any depth) arrives in Python as a
 * `numpy.ndarray` (as `bytes` when the worker cannot import numpy).
 *
 * - `dtype`: the element type (see {@link NDArrayDType});
 * - `shape`: the size of each dimension (non-negative integers); `[]` is a 0-d array (one
 *   element);
 * - `data`: the elements in C order (last index fastest), little-endian, `prod(shape)` of them,
 *   in the TypedArray of the dtype (see {@link NDArrayData}).
 *
 * A result's `data` is a view on the bytes received (no copy) when they are aligned for the
 * TypedArray, else a copy. `NDArray` is a union discriminated by `dtype`; `NDArray<'float64'>` is
 * the one with a `Float64Array`.
 *
 * @example
 * ```ts
 * const m = (await pool.call('matrix')) as NDArray<'float64'>;
 * const [rows, cols] = m.shape;
 * const x = m.data[1 * cols! + 2]; // m[1, 2]
 * await pool.call('total', [{ dtype: 'int32', shape: [2, 2], data: new Int32Array([1, 2, 3, 4]) }]);
 * ```
 */
export type NDArray<D extends NDArrayDType = NDArrayDType> = {
  [K in D]: { dtype: K; shape: number[]; data: NDArrayData[K] };
}[D];

/** The dtype {@link ndarray} infers from a TypedArray type (`uint8` for a `Uint8Array`). */
export type NDArrayDTypeOf<T extends NDArrayTypedArray> = T extends Float64Array
  ? 'float64'
  : T extends Float32Array
    ? 'float32'
    : T extends BigInt64Array
      ? 'int64'
      : T extends BigUint64Array
        ? 'uint64'
        : T extends Int32Array
          ? 'int32'
          : T extends Uint32Array
            ? 'uint32'
            : T extends Int16Array
              ? 'int16'
              : T extends Uint16Array
                ? 'uint16'
                : T extends Int8Array
                  ? 'int8'
                  : 'uint8';

interface TypedArrayConstructor {
  new (length: number): NDArrayTypedArray;
  new (buffer: ArrayBufferLike, byteOffset: number, length: number): NDArrayTypedArray;
  readonly BYTES_PER_ELEMENT: number;
}

/** What the wire needs to know of a dtype. */
export interface DTypeInfo {
  readonly dtype: NDArrayDType;
  /** The TypedArray of its elements. */
  readonly ctor: TypedArrayConstructor;
  /** Its `Symbol.toStringTag` ('Float64Array', ...), which a subclass (Buffer) keeps. */
  readonly tag: string;
  /** Bytes per element. */
  readonly size: number;
}

function info(dtype: NDArrayDType, ctor: TypedArrayConstructor): DTypeInfo {
  return { dtype, ctor, tag: ctor.name, size: ctor.BYTES_PER_ELEMENT };
}

/** The dtypes by name (a Map: a dtype read from the wire may be any string, '__proto__' too). */
export const DTYPES: ReadonlyMap<string, DTypeInfo> = new Map(
  [
    info('bool', Uint8Array),
    info('int8', Int8Array),
    info('uint8', Uint8Array),
    info('int16', Int16Array),
    info('uint16', Uint16Array),
    info('int32', Int32Array),
    info('uint32', Uint32Array),
    info('int64', BigInt64Array),
    info('uint64', BigUint64Array),
    info('float32', Float32Array),
    info('float64', Float64Array),
  ].map((d) => [d.dtype, d]),
);

// TypedArray tag -> the dtype ndarray() infers (a Uint8Array is 'uint8', never 'bool').
const BY_TAG = new Map<string, DTypeInfo>();
for (const d of DTYPES.values()) if (d.dtype !== 'bool') BY_TAG.set(d.tag, d);

const NAMES = [...DTYPES.keys()].join(', ');

/** The `Symbol.toStringTag` of a TypedArray (undefined for anything else, DataView included). */
function typedArrayTag(v: unknown): string | undefined {
  if (!ArrayBuffer.isView(v) || v instanceof DataView) return undefined;
  return (v as { [Symbol.toStringTag]?: string })[Symbol.toStringTag];
}

/**
 * Whether `v` looks like an NDArray: a plain object whose own enumerable keys are exactly
 * `dtype`, `shape` and `data`, with a TypedArray as `data`. Such a value is sent as an array
 * (or rejected by {@link ndarrayProblem}), never as a plain object.
 */
export function looksLikeNDArray(v: object): boolean {
  const proto = Object.getPrototypeOf(v);
  if (proto !== Object.prototype && proto !== null) return false;
  const o = v as Record<string, unknown>;
  if (!Object.hasOwn(o, 'data') || typedArrayTag(o.data) === undefined) return false;
  const keys = Object.keys(o);
  return (
    keys.length === 3 && keys.includes('dtype') && keys.includes('shape') && keys.includes('data')
  );
}

/**
 * What is wrong with an NDArray-shaped value (see {@link looksLikeNDArray}), or null when it is a
 * consistent {@link NDArray}: a known dtype, its TypedArray as data, a shape of non-negative safe
 * integers whose product is the number of elements.
 */
export function ndarrayProblem(v: {
  dtype?: unknown;
  shape?: unknown;
  data?: unknown;
}): string | null {
  const { dtype, shape, data } = v;
  const d = typeof dtype === 'string' ? DTYPES.get(dtype) : undefined;
  if (d === undefined) {
    return `its dtype ${describe(dtype)} is not one of ${NAMES}`;
  }
  const tag = typedArrayTag(data);
  if (tag !== d.tag) {
    return `dtype '${d.dtype}' needs a ${d.tag} as data, got ${tag ?? describe(data)}`;
  }
  if (!Array.isArray(shape) || !shape.every((n) => Number.isSafeInteger(n) && n >= 0)) {
    return `its shape must be an array of non-negative integers, got ${describe(shape)}`;
  }
  const count = elementCount(shape as number[]);
  const length = (data as NDArrayTypedArray).length;
  if (count !== length) {
    return `its shape [${shape.join(', ')}] holds ${count} elements but its data has ${length}`;
  }
  return null;
}

/** prod(shape), or Infinity when it would not be a safe integer. */
export function elementCount(shape: readonly number[]): number {
  let n = 1;
  for (const s of shape) {
    n *= s;
    if (n > Number.MAX_SAFE_INTEGER) return Number.POSITIVE_INFINITY;
  }
  return n;
}

function describe(v: unknown): string {
  if (typeof v === 'string') return `'${v}'`;
  if (typeof v === 'bigint') return `${v}n`;
  if (typeof v === 'object' && v !== null && !Array.isArray(v)) {
    return Object.getPrototypeOf(v)?.constructor?.name ?? 'an object';
  }
  try {
    return JSON.stringify(v) ?? String(v);
  } catch {
    return String(v);
  }
}

/**
 * Whether `v` is a consistent {@link NDArray}: a plain object with exactly the keys `dtype`,
 * `shape` and `data`, a known dtype, the dtype's TypedArray as `data` (a `Uint8Array` for `bool`)
 * and `prod(shape) === data.length`. Call arguments that are NDArray-shaped (those three keys, a
 * TypedArray as `data`) but fail this check are rejected with `ERR_SERIALIZATION`.
 */
export function isNDArray(v: unknown): v is NDArray {
  return (
    typeof v === 'object' &&
    v !== null &&
    looksLikeNDArray(v) &&
    ndarrayProblem(v as Record<string, unknown>) === null
  );
}

/**
 * Builds an {@link NDArray} around a TypedArray (no copy), its dtype inferred from the
 * TypedArray's type (`Float64Array` → `'float64'`, `Uint8Array` or `Buffer` → `'uint8'`; for a
 * `bool` array write `{ dtype: 'bool', shape, data }` yourself). `shape` defaults to
 * `[data.length]` (one dimension).
 *
 * @throws TypeError for a TypedArray with no dtype (`Uint8ClampedArray`), RangeError when
 * `shape` is not non-negative integers whose product is `data.length`.
 *
 * @example
 * ```ts
 * const m = ndarray(new Float32Array([1, 2, 3, 4, 5, 6]), [2, 3]); // { dtype: 'float32', ... }
 * await pool.call('process', [m]); // a 2×3 numpy.ndarray of float32 in Python
 * ```
 */
export function ndarray<T extends NDArrayTypedArray>(
  data: T,
  shape: readonly number[] = [data.length],
): NDArray<NDArrayDTypeOf<T>> {
  const tag = typedArrayTag(data);
  const d = tag === undefined ? undefined : BY_TAG.get(tag);
  if (d === undefined) {
    throw new TypeError(`ndarray(): a ${tag ?? describe(data)} has no NDArray dtype`);
  }
  const out = { dtype: d.dtype, shape: [...shape], data };
  const problem = ndarrayProblem(out);
  if (problem !== null) throw new RangeError(`ndarray(): ${problem}`);
  return out as unknown as NDArray<NDArrayDTypeOf<T>>;
}
