import { ProtocolError } from '../errors.js';
import { FrameDecoder, type PythonMessage } from '../protocol/index.js';

// Python writes a frame in one writev, so a frame that stays incomplete this long while the
// process lives means the writer is broken (e.g. it wrote a header and never the body).
const FRAME_STALL_MS = 2000;

/**
 * Reads a worker's reply stream (spawned or forked alike): frames become messages; a bad frame,
 * a frame left incomplete for {@link FRAME_STALL_MS}, or one cut off by the exit becomes one
 * protocol error, after which nothing more is read.
 */
export class ReplyReader {
  readonly #decoder: FrameDecoder;
  readonly #onMessage: (message: PythonMessage) => void;
  readonly #onError: (error: ProtocolError) => void;
  /** Whether the process has exited (a stall then no longer matters: the exit is reported). */
  readonly #exited: () => boolean;
  #stallTimer: NodeJS.Timeout | null = null;
  #broken = false;

  constructor(
    maxMessageSize: number,
    onMessage: (message: PythonMessage) => void,
    onError: (error: ProtocolError) => void,
    exited: () => boolean,
  ) {
    this.#decoder = new FrameDecoder(maxMessageSize);
    this.#onMessage = onMessage;
    this.#onError = onError;
    this.#exited = exited;
  }

  /** A chunk of the reply stream. */
  push(chunk: Buffer): void {
    if (this.#broken) return;
    try {
      this.#decoder.push(chunk, this.#onMessage);
    } catch (error) {
      this.fail(
        error instanceof ProtocolError
          ? error
          : new ProtocolError('Failed to read a frame from the worker', { cause: error }),
      );
      return;
    }
    if (this.#stallTimer) {
      clearTimeout(this.#stallTimer);
      this.#stallTimer = null;
    }
    if (this.#decoder.pending > 0 && !this.#broken) {
      this.#stallTimer = setTimeout(() => {
        if (!this.#exited()) {
          this.fail(
            new ProtocolError(
              `Worker sent an incomplete frame and nothing more for ${FRAME_STALL_MS} ms`,
            ),
          );
        }
      }, FRAME_STALL_MS);
    }
  }

  /** Reports `error` (the first one only) and stops reading. */
  fail(error: ProtocolError): void {
    if (this.#broken) return;
    this.#broken = true;
    this.#clearStall();
    this.#onError(error);
  }

  /** The stream is over (the exit is being reported): a frame cut off is a protocol error. */
  finish(): void {
    this.#clearStall();
    if (this.#decoder.pending > 0) {
      this.fail(new ProtocolError('Worker exited in the middle of a frame'));
    }
  }

  #clearStall(): void {
    if (this.#stallTimer) clearTimeout(this.#stallTimer);
    this.#stallTimer = null;
  }
}
