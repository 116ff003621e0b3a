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

  constructor(maxSize = DEFAULT_MAX_MESSAGE_SIZE) {
    this.#maxSize = maxSize;
  }

  /** Bytes received but not yet part of a complete frame. */
  get pending(): number {
    return this.#buffered;
  }

  /** Feeds a chunk; calls `onMessage` for each complete frame in it. */
  push(chunk: Buffer, onMessage: (message: PythonMessage) => void): void {
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
      if (this.#buffered < this.#need) return;
      const body = this.#take(this.#need);
      this.#need = -1;
      onMessage(parseBody(body));
    }
  }

  #take(n: number): Buffer {
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
