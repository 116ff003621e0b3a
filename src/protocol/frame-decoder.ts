import { ProtocolError } from '../errors.js';
import { restoreBinary } from './binary.js';
import { DEFAULT_MAX_MESSAGE_SIZE, HEADER, preview } from './frame.js';
import type { PythonMessage } from './messages.js';

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
      b < 0 ||
      (message.t !== 'ok' && message.t !== 'item')
    ) {
      throw new ProtocolError(
        `Worker sent a '${message.t}' frame with a bad attachment count (b): ${preview(JSON.stringify(b) ?? '')}`,
      );
    }
    delete (message as { b?: unknown }).b;
    if (b === 0) {
      // Placeholders without attachments (NaN, ±Infinity): complete as it is.
      restoreBinary(message as { v: unknown }, []);
      onMessage(message);
      return;
    }
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
