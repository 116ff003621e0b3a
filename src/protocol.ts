/**
 * The wire protocol between Node and a Python worker (docs/protocol.md has the full table).
 *
 * | direction        | `t`          | fields                                          |
 * | ---------------- | ------------ | ----------------------------------------------- |
 * | Node -> Python   | `call`       | id, fn, args, stream?, credit?, tp?             |
 * | Node -> Python   | `cancel`     | id                                              |
 * | Node -> Python   | `credit`     | id, n                                           |
 * | Node -> Python   | `ping`       | id                                              |
 * | Node -> Python   | `exit`       |                                                 |
 * | Python -> Node   | `ready`      | pid, version, executable, handlers, initMs      |
 * | Python -> Node   | `init_error` | type, message, traceback                        |
 * | Python -> Node   | `ok`         | id, v                      (terminal)           |
 * | Python -> Node   | `item`       | id, v                                           |
 * | Python -> Node   | `end`        | id                         (terminal)           |
 * | Python -> Node   | `err`        | id, kind, type, message, traceback (terminal)   |
 * | Python -> Node   | `pong`       | id                                              |
 *
 * Frames: 4-byte big-endian length, then that many bytes of UTF-8 JSON.
 *
 * Binary values (`call` args, `ok`/`item` values): the JSON frame gets a last field `b` (the number
 * of attachments) and is followed by that many attachment frames (same length header, raw bytes);
 * attachment `i` stands in the JSON as `{"__pyvisor_bytes__": i}`, and an object of the user's that
 * has that key is escaped as `{"__pyvisor_bytes__": "escape", "v": object}`. Messages without
 * binary values are written exactly as before (no `b`, no escaping).
 */
import { ProtocolError } from './errors.js';

export interface CallRequest {
  t: 'call';
  id: number;
  fn: string;
  args: unknown[];
  stream?: boolean;
  credit?: number;
  tp?: string;
  /** Number of attachment frames that follow (binary values in `args`); absent when none. */
  b?: number;
}
export type NodeMessage =
  | CallRequest
  | { t: 'cancel'; id: number }
  | { t: 'credit'; id: number; n: number }
  | { t: 'ping'; id: number }
  | { t: 'exit' };

export interface HandlerInfo {
  name: string;
  stream: boolean;
}
export interface ReadyMessage {
  t: 'ready';
  pid: number;
  version: string;
  executable: string;
  handlers: HandlerInfo[];
  initMs: number;
}
export interface InitErrorMessage {
  t: 'init_error';
  type: string;
  message: string;
  traceback: string;
}
export type ErrorKind =
  | 'python'
  | 'unknown_handler'
  | 'cancelled'
  | 'serialization'
  | 'bad_request';
export interface ErrMessage {
  t: 'err';
  id: number;
  kind: ErrorKind;
  type: string;
  message: string;
  traceback: string;
}
export type PythonMessage =
  | ReadyMessage
  | InitErrorMessage
  | { t: 'ok'; id: number; v: unknown }
  | { t: 'item'; id: number; v: unknown }
  | { t: 'end'; id: number }
  | ErrMessage
  | { t: 'pong'; id: number };

/** Default cap on one frame's body, both directions. */
export const DEFAULT_MAX_MESSAGE_SIZE = 256 * 1024 * 1024;

const HEADER = 4;

/**
 * Encodes an already-serialised JSON body into one frame buffer, so the transport writes it with a
 * single call (no header/body interleaving between concurrent writers).
 */
export function encodeFrame(json: string): Buffer {
  const length = Buffer.byteLength(json);
  const frame = Buffer.allocUnsafe(HEADER + length);
  frame.writeUInt32BE(length, 0);
  frame.write(json, HEADER, 'utf8');
  return frame;
}

/** Serialises a control message (not a call: calls are encoded once, before checkout). */
export function encodeMessage(message: NodeMessage): Buffer {
  return encodeFrame(JSON.stringify(message));
}

/** Key of the placeholder objects that stand for binary values in a frame with attachments. */
export const BINARY_KEY = '__pyvisor_bytes__';
const ESCAPE = 'escape';

function isBinary(v: object): boolean {
  return ArrayBuffer.isView(v) || v instanceof ArrayBuffer || v instanceof SharedArrayBuffer;
}

// Levels the allocation-free scan looks through; deeper (or cyclic) values take the careful path.
const SCAN_DEPTH = 32;

/**
 * Whether `args` may hold a binary value (a Buffer, any TypedArray or DataView, an ArrayBuffer or
 * SharedArrayBuffer) where `JSON.stringify` would find it: in arrays and in plain objects, not
 * behind `toJSON`. Allocates nothing; may say yes for a value nested deeper than it looks, never
 * no for one that holds a binary value.
 */
export function mayHoldBinary(args: readonly unknown[]): boolean {
  return scanArray(args, SCAN_DEPTH);
}

function scanArray(a: readonly unknown[], depth: number): boolean {
  for (let i = 0; i < a.length; i++) {
    const v = a[i];
    if (typeof v === 'object' && v !== null && scanObject(v, depth)) return true;
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
    if (typeof x === 'object' && x !== null && scanObject(x, depth - 1)) return true;
  }
  return false;
}

/** Call arguments with their binary values taken out: see {@link extractBinary}. */
export interface BinaryArgs {
  /** A copy of the arguments with placeholders where the binary values were. */
  args: unknown[];
  /** The binary values, as Buffers sharing their memory (not copies). */
  attachments: Buffer[];
}

/**
 * Replaces the binary values in `args` with placeholders, in a copy (the caller's values are not
 * touched), and escapes objects that have the placeholder key. Returns null when there is no
 * binary value after all. Cycles are left in place for `JSON.stringify` to report.
 */
export function extractBinary(args: readonly unknown[]): BinaryArgs | null {
  const attachments: Buffer[] = [];
  const out = extract(args, attachments, new Set()) as unknown[];
  return attachments.length > 0 ? { args: out, attachments } : null;
}

function extract(v: unknown, attachments: Buffer[], active: Set<object>): unknown {
  if (typeof v !== 'object' || v === null) return v;
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
    for (let i = 0; i < v.length; i++) out[i] = extract(v[i], attachments, active);
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
  active.add(v);
  // A null prototype: a '__proto__' key is an ordinary key here, as in JSON.
  const out = Object.create(null) as Record<string, unknown>;
  let reserved = false;
  for (const k of Object.keys(v)) {
    if (k === BINARY_KEY) reserved = true;
    out[k] = extract((v as Record<string, unknown>)[k], attachments, active);
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

// Frames at least this large are assembled as they arrive (see FrameDecoder).
const BIG_FRAME = 128 * 1024;

const KNOWN_TYPES = new Set(['ready', 'init_error', 'ok', 'item', 'end', 'err', 'pong']);
const utf8 = new TextDecoder('utf-8', { fatal: true });

/**
 * Splits a byte stream into frames and parses them. Throws {@link ProtocolError} on anything that is
 * not a valid frame; after that the decoder must not be used again (the worker gets replaced).
 */
export class FrameDecoder {
  #chunks: Buffer[] = [];
  #buffered = 0;
  #need = -1;
  readonly #maxSize: number;
  // A large frame is copied into its own buffer as its chunks arrive (while the rest is still on
  // its way, and while each chunk is still in the cache), not all at once at the end.
  #big: Buffer | null = null;
  #bigOff = 0;
  // A message whose attachments are still coming: its announced count, those read, their bytes.
  #held: PythonMessage | null = null;
  #want = 0;
  #attachments: Buffer[] = [];
  #heldBytes = 0;

  constructor(maxSize = DEFAULT_MAX_MESSAGE_SIZE) {
    this.#maxSize = maxSize;
  }

  /** Bytes received but not yet part of a complete message (a frame and its attachments). */
  get pending(): number {
    return this.#buffered + this.#heldBytes + (this.#need >= 0 ? HEADER + this.#bigOff : 0);
  }

  /** Feeds a chunk; calls `onMessage` for each complete message in it. */
  push(chunk: Buffer, onMessage: (message: PythonMessage) => void): void {
    const big = this.#big;
    if (big !== null) {
      const want = this.#need - this.#bigOff;
      if (chunk.length < want) {
        big.set(chunk, this.#bigOff);
        this.#bigOff += chunk.length;
        return;
      }
      big.set(want === chunk.length ? chunk : chunk.subarray(0, want), this.#bigOff);
      this.#big = null;
      this.#bigOff = 0;
      this.#need = -1;
      this.#body(big, onMessage);
      if (chunk.length === want) return;
      chunk = chunk.subarray(want);
    }
    this.#chunks.push(chunk);
    this.#buffered += chunk.length;
    for (;;) {
      if (this.#need < 0) {
        if (this.#buffered < HEADER) return;
        const head = this.#take(HEADER);
        const length = head.readUInt32BE(0);
        if (length > this.#maxSize) {
          throw new ProtocolError(
            `Worker announced a ${length}-byte frame, over the ${this.#maxSize}-byte limit (maxMessageSize)`,
          );
        }
        this.#need = length;
      }
      if (this.#buffered < this.#need) {
        if (this.#need >= BIG_FRAME) {
          const target = Buffer.allocUnsafe(this.#need);
          let off = 0;
          for (const c of this.#chunks) {
            target.set(c, off);
            off += c.length;
          }
          this.#chunks = [];
          this.#buffered = 0;
          this.#big = target;
          this.#bigOff = off;
        }
        return;
      }
      const body = this.#take(this.#need);
      this.#need = -1;
      this.#body(body, onMessage);
    }
  }

  /** A complete frame body: a message, or an attachment of the held one. */
  #body(body: Buffer, onMessage: (message: PythonMessage) => void): void {
    if (this.#held !== null) {
      // Small attachments are copied, so a kept result does not pin a whole 64 KiB read chunk.
      this.#attachments.push(body.length < 4096 ? Buffer.from(body) : body);
      this.#heldBytes += HEADER + body.length;
      if (this.#attachments.length < this.#want) return;
      const message = this.#held;
      const attachments = this.#attachments;
      this.#held = null;
      this.#attachments = [];
      this.#heldBytes = 0;
      restoreBinary(message as { v: unknown }, attachments);
      onMessage(message);
      return;
    }
    const message = parseBody(body);
    const b = (message as { b?: unknown }).b;
    if (b === undefined) {
      onMessage(message);
      return;
    }
    if (
      typeof b !== 'number' ||
      !Number.isInteger(b) ||
      b < 1 ||
      (message.t !== 'ok' && message.t !== 'item')
    ) {
      throw new ProtocolError(
        `Worker sent a '${message.t}' frame with a bad attachment count (b): ${preview(JSON.stringify(b) ?? '')}`,
      );
    }
    delete (message as { b?: unknown }).b;
    this.#held = message;
    this.#want = b;
    this.#heldBytes = HEADER + body.length;
  }

  #take(n: number): Buffer {
    if (n === 0) return Buffer.alloc(0); // an empty attachment (there may be no chunk left)
    const first = this.#chunks[0]!;
    let out: Buffer;
    if (first.length >= n) {
      out = first.subarray(0, n);
      if (first.length === n) this.#chunks.shift();
      else this.#chunks[0] = first.subarray(n);
    } else {
      out = Buffer.allocUnsafe(n);
      let off = 0;
      while (off < n) {
        const c = this.#chunks[0]!;
        const want = n - off;
        if (c.length <= want) {
          c.copy(out, off);
          off += c.length;
          this.#chunks.shift();
        } else {
          c.copy(out, off, 0, want);
          this.#chunks[0] = c.subarray(want);
          off += want;
        }
      }
    }
    this.#buffered -= n;
    return out;
  }
}

/** Puts the attachments in place of their placeholders in `message.v` (in place). */
function restoreBinary(message: { v: unknown }, attachments: Buffer[]): void {
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

function restore(
  v: unknown,
  attachments: Buffer[],
  state: { used: Uint8Array; count: number },
): unknown {
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
      if (
        keys !== 1 ||
        !Number.isInteger(k) ||
        k < 0 ||
        k >= attachments.length ||
        state.used[k] === 1
      ) {
        throw new ProtocolError(
          `Worker sent a bad binary placeholder: ${preview(JSON.stringify(o))}`,
        );
      }
      state.used[k] = 1;
      state.count++;
      return attachments[k];
    }
    const inner = o.v;
    if (
      k !== ESCAPE ||
      keys !== 2 ||
      typeof inner !== 'object' ||
      inner === null ||
      Array.isArray(inner)
    ) {
      throw new ProtocolError(
        `Worker sent a bad binary placeholder: ${preview(JSON.stringify(o))}`,
      );
    }
    restoreMembers(inner as Record<string, unknown>, attachments, state);
    return inner;
  }
  restoreMembers(o, attachments, state);
  return o;
}

function restoreMembers(
  o: Record<string, unknown>,
  attachments: Buffer[],
  state: { used: Uint8Array; count: number },
): void {
  for (const key of Object.keys(o)) {
    const x = o[key];
    if (typeof x === 'object' && x !== null) o[key] = restore(x, attachments, state);
  }
}

function parseBody(body: Buffer): PythonMessage {
  let text: string;
  try {
    text = utf8.decode(body);
  } catch (cause) {
    throw new ProtocolError('Worker sent a frame that is not valid UTF-8', { cause });
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (cause) {
    throw new ProtocolError(`Worker sent a frame that is not valid JSON: ${preview(text)}`, {
      cause,
    });
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new ProtocolError(`Worker sent a frame that is not a JSON object: ${preview(text)}`);
  }
  const t = (value as { t?: unknown }).t;
  if (typeof t !== 'string' || !KNOWN_TYPES.has(t)) {
    throw new ProtocolError(`Worker sent a frame of unknown type: ${preview(text)}`);
  }
  if (t !== 'ready' && t !== 'init_error' && typeof (value as { id?: unknown }).id !== 'number') {
    throw new ProtocolError(`Worker sent a '${t}' frame without a numeric id: ${preview(text)}`);
  }
  return value as PythonMessage;
}

function preview(text: string): string {
  return JSON.stringify(text.length > 120 ? `${text.slice(0, 120)}…` : text);
}
