/**
 * Binary values on the wire: Buffers and TypedArrays in call arguments leave the JSON as
 * placeholders and travel as attachment frames after it; the reverse for results (see
 * docs/protocol.md, Binary values). Non-finite numbers and numeric arrays ({@link NDArray}) take
 * the same path: NaN and ±Infinity as placeholders without attachment, an array as a placeholder
 * with its shape and dtype and its elements' bytes as an attachment.
 */
import { ProtocolError, SerializationError } from '../errors.js';
import { HEADER, preview } from './frame.js';
import {
  DTYPES,
  elementCount,
  looksLikeNDArray,
  type NDArray,
  type NDArrayTypedArray,
  ndarrayProblem,
} from './ndarray.js';

/** Key of the placeholder objects that stand for binary values in a frame with attachments. */
export const BINARY_KEY = '__pyvisor_bytes__';
const ESCAPE = 'escape';
const FLOAT = 'float';
const NDARRAY = 'ndarray';

function isBinary(v: object): boolean {
  return ArrayBuffer.isView(v) || v instanceof ArrayBuffer || v instanceof SharedArrayBuffer;
}

// Levels the allocation-free scan looks through; deeper (or cyclic) values take the careful path.
const SCAN_DEPTH = 32;

/**
 * Whether `args` may hold a binary value (a Buffer, any TypedArray or DataView, an ArrayBuffer or
 * SharedArrayBuffer, so also an {@link NDArray}) or a non-finite number (NaN, ±Infinity) where
 * `JSON.stringify` would find it: in arrays and in plain objects, not behind `toJSON`. Allocates
 * nothing; may say yes for a value nested deeper than it looks, never no for one that holds such
 * a value.
 */
export function mayHoldBinary(args: readonly unknown[]): boolean {
  return scanArray(args, SCAN_DEPTH);
}

// `x - x !== 0` holds exactly for NaN and ±Infinity (NaN - NaN and Infinity - Infinity are NaN).
function scanArray(a: readonly unknown[], depth: number): boolean {
  for (let i = 0; i < a.length; i++) {
    const v = a[i];
    if (typeof v === 'object') {
      if (v !== null && scanObject(v, depth)) return true;
    } else if (typeof v === 'number' && v - v !== 0) return true;
  }
  return false;
}

function scanObject(v: object, depth: number): boolean {
  if (Array.isArray(v)) return depth === 0 || scanArray(v, depth - 1);
  if (isBinary(v)) return true;
  if (typeof (v as { toJSON?: unknown }).toJSON === 'function') return false;
  if (depth === 0) return true;
  for (const k in v) {
    const x = (v as Record<string, unknown>)[k];
    if (typeof x === 'object') {
      if (x !== null && scanObject(x, depth - 1)) return true;
    } else if (typeof x === 'number' && x - x !== 0) return true;
  }
  return false;
}

/** Call arguments with their binary values taken out: see {@link extractBinary}. */
export interface BinaryArgs {
  /** A copy of the arguments with placeholders where the binary values were. */
  args: unknown[];
  /**
   * The binary values (and the elements of NDArrays), as Buffers sharing their memory (not
   * copies). May be empty: when the arguments only hold non-finite numbers.
   */
  attachments: Buffer[];
}

/** The placeholder of a non-finite number (NaN, Infinity, -Infinity). */
function floatPlaceholder(x: number): Record<string, unknown> {
  return { [BINARY_KEY]: FLOAT, v: Number.isNaN(x) ? 'NaN' : x > 0 ? 'Infinity' : '-Infinity' };
}

/**
 * Replaces the binary values, NDArrays and non-finite numbers in `args` with placeholders, in a
 * copy (the caller's values are not touched), and escapes objects that have the placeholder
 * key. Returns null when there is none after all. Cycles are left in place for `JSON.stringify`
 * to report. Throws {@link SerializationError} for a value that looks like an NDArray (see
 * `looksLikeNDArray`) but is not a consistent one.
 */
export function extractBinary(args: readonly unknown[]): BinaryArgs | null {
  const state: ExtractState = { attachments: [], floats: 0 };
  const out = extract(args, state, new Set()) as unknown[];
  return state.attachments.length > 0 || state.floats > 0
    ? { args: out, attachments: state.attachments }
    : null;
}

interface ExtractState {
  attachments: Buffer[];
  /** Non-finite numbers replaced (they need `b` but no attachment). */
  floats: number;
}

function extract(v: unknown, state: ExtractState, active: Set<object>): unknown {
  if (typeof v !== 'object' || v === null) {
    if (typeof v === 'number' && v - v !== 0) {
      state.floats++;
      return floatPlaceholder(v);
    }
    return v;
  }
  const attachments = state.attachments;
  if (isBinary(v)) {
    let buffer: Buffer;
    if (Buffer.isBuffer(v)) buffer = v;
    else if (ArrayBuffer.isView(v)) buffer = Buffer.from(v.buffer, v.byteOffset, v.byteLength);
    else buffer = Buffer.from(v as ArrayBuffer);
    attachments.push(buffer);
    return { [BINARY_KEY]: attachments.length - 1 };
  }
  if (active.has(v)) return v;
  if (Array.isArray(v)) {
    active.add(v);
    const out = new Array<unknown>(v.length);
    for (let i = 0; i < v.length; i++) out[i] = extract(v[i], state, active);
    active.delete(v);
    return out;
  }
  if (
    typeof (v as { toJSON?: unknown }).toJSON === 'function' ||
    v instanceof Number ||
    v instanceof String ||
    v instanceof Boolean
  ) {
    return v; // JSON.stringify turns these into something else: leave them to it
  }
  if (looksLikeNDArray(v)) {
    const problem = ndarrayProblem(v);
    if (problem !== null) throw new SerializationError(problem);
    const { dtype, shape, data } = v as NDArray;
    attachments.push(Buffer.from(data.buffer, data.byteOffset, data.byteLength));
    return {
      [BINARY_KEY]: NDARRAY,
      dtype,
      shape: shape.slice(),
      data: attachments.length - 1,
    };
  }
  active.add(v);
  // A null prototype: a '__proto__' key is an ordinary key here, as in JSON.
  const out = Object.create(null) as Record<string, unknown>;
  let reserved = false;
  for (const k of Object.keys(v)) {
    if (k === BINARY_KEY) reserved = true;
    out[k] = extract((v as Record<string, unknown>)[k], state, active);
  }
  active.delete(v);
  return reserved ? { [BINARY_KEY]: ESCAPE, v: out } : out;
}

// Attachments smaller than this are copied next to their header (fewer, larger writes).
const INLINE_BELOW = 16 * 1024;

/**
 * What to write for a call frame followed by its attachments, in order: one Buffer when every
 * attachment is small (a single plain write), else several, where the large attachments are
 * passed through as they are (no copy) and the small ones are packed with the length headers.
 */
export function withAttachments(frame: Buffer, attachments: readonly Buffer[]): Buffer | Buffer[] {
  let packed = 0;
  let large = 0;
  for (const a of attachments) {
    packed += HEADER;
    if (a.length < INLINE_BELOW) packed += a.length;
    else large++;
  }
  // Without large attachments the call frame goes into the same buffer.
  const lead = large === 0 ? frame.length : 0;
  const heads = Buffer.allocUnsafe(lead + packed);
  if (lead > 0) heads.set(frame, 0);
  const out: Buffer[] = lead > 0 ? [] : [frame];
  let start = 0;
  let off = lead;
  for (const a of attachments) {
    heads.writeUInt32BE(a.length, off);
    off += HEADER;
    if (a.length < INLINE_BELOW) {
      heads.set(a, off);
      off += a.length;
    } else {
      out.push(heads.subarray(start, off), a);
      start = off;
    }
  }
  if (large === 0) return heads;
  if (off > start) out.push(heads.subarray(start, off));
  return out;
}

/**
 * Puts the values of the placeholders in `message.v` (in place): attachments (as Buffers),
 * non-finite numbers and {@link NDArray}s (whose `data` is a view on the attachment where its
 * alignment allows, else a copy). Throws {@link ProtocolError} for a malformed placeholder.
 */
export function restoreBinary(message: { v: unknown }, attachments: Buffer[]): void {
  const used = new Uint8Array(attachments.length);
  const state = { used, count: 0 };
  try {
    message.v = restore(message.v, attachments, state);
  } catch (error) {
    if (error instanceof ProtocolError) throw error;
    throw new ProtocolError('Failed to decode the binary values of a frame', { cause: error });
  }
  if (state.count !== attachments.length) {
    throw new ProtocolError(
      `Worker announced ${attachments.length} attachments but referred to ${state.count}`,
    );
  }
}

interface RestoreState {
  used: Uint8Array;
  count: number;
}

function badPlaceholder(o: object, why = ''): ProtocolError {
  return new ProtocolError(
    `Worker sent a bad binary placeholder${why}: ${preview(JSON.stringify(o))}`,
  );
}

/** Takes attachment `k` (unused so far, in range) or throws. */
function take(k: unknown, o: object, attachments: Buffer[], state: RestoreState): Buffer {
  if (
    typeof k !== 'number' ||
    !Number.isInteger(k) ||
    k < 0 ||
    k >= attachments.length ||
    state.used[k] === 1
  ) {
    throw badPlaceholder(o, ' (attachment index out of range or used twice)');
  }
  state.used[k] = 1;
  state.count++;
  return attachments[k]!;
}

function restore(v: unknown, attachments: Buffer[], state: RestoreState): unknown {
  if (typeof v !== 'object' || v === null) return v;
  if (Array.isArray(v)) {
    for (let i = 0; i < v.length; i++) {
      const x = v[i];
      if (typeof x === 'object' && x !== null) v[i] = restore(x, attachments, state);
    }
    return v;
  }
  const o = v as Record<string, unknown>;
  if (Object.hasOwn(o, BINARY_KEY)) {
    const k = o[BINARY_KEY];
    const keys = Object.keys(o).length;
    if (typeof k === 'number') {
      if (keys !== 1) throw badPlaceholder(o);
      return take(k, o, attachments, state);
    }
    if (k === FLOAT) {
      if (keys === 2) {
        const x = o.v;
        if (x === 'NaN') return Number.NaN;
        if (x === 'Infinity') return Number.POSITIVE_INFINITY;
        if (x === '-Infinity') return Number.NEGATIVE_INFINITY;
      }
      throw badPlaceholder(o);
    }
    if (k === NDARRAY) return restoreNDArray(o, keys, attachments, state);
    const inner = o.v;
    if (
      k !== ESCAPE ||
      keys !== 2 ||
      typeof inner !== 'object' ||
      inner === null ||
      Array.isArray(inner)
    ) {
      throw badPlaceholder(o);
    }
    restoreMembers(inner as Record<string, unknown>, attachments, state);
    return inner;
  }
  restoreMembers(o, attachments, state);
  return o;
}

/** `{"__pyvisor_bytes__": "ndarray", "dtype": D, "shape": [...], "data": i}` as an NDArray. */
function restoreNDArray(
  o: Record<string, unknown>,
  keys: number,
  attachments: Buffer[],
  state: RestoreState,
): NDArray {
  const { dtype, shape } = o;
  const d = typeof dtype === 'string' ? DTYPES.get(dtype) : undefined;
  if (keys !== 4 || !Object.hasOwn(o, 'data') || d === undefined) throw badPlaceholder(o);
  if (!Array.isArray(shape) || !shape.every((n) => Number.isSafeInteger(n) && n >= 0)) {
    throw badPlaceholder(o, ' (shape)');
  }
  const bytes = take(o.data, o, attachments, state);
  const count = elementCount(shape as number[]);
  if (count * d.size !== bytes.length) {
    throw badPlaceholder(
      o,
      ` (a ${bytes.length}-byte attachment for ${count} elements of ${d.size} bytes)`,
    );
  }
  let data: NDArrayTypedArray;
  if (bytes.byteOffset % d.size === 0) {
    data = new d.ctor(bytes.buffer, bytes.byteOffset, count);
  } else {
    // Misaligned for this TypedArray: copy into memory of its own.
    data = new d.ctor(count);
    new Uint8Array(data.buffer, 0, bytes.length).set(bytes);
  }
  return { dtype: d.dtype, shape: shape as number[], data } as NDArray;
}

function restoreMembers(
  o: Record<string, unknown>,
  attachments: Buffer[],
  state: RestoreState,
): void {
  for (const key of Object.keys(o)) {
    const x = o[key];
    if (typeof x === 'object' && x !== null) o[key] = restore(x, attachments, state);
  }
}
