import { SerializationError } from '../errors.js';
import { type BinaryArgs, extractBinary, mayHoldBinary, withAttachments } from './binary.js';
import { encodeFrame } from './frame.js';
import type { CallRequest } from './messages.js';

/** What {@link encodeCall} needs to know of a call. */
export interface CallToEncode {
  id: number;
  fn: string;
  args: readonly unknown[];
  /** Keyword arguments, or undefined. */
  kwargs?: Readonly<Record<string, unknown>> | undefined;
  /** Credit of a stream call (its first window of items); absent for a plain call. */
  streamCredit: number | undefined;
  /** W3C traceparent of the call's span. */
  traceparent: string | undefined;
}

/**
 * Encodes a call once, before checkout, into the frame (and attachment frames) a worker is sent.
 * Throws {@link SerializationError} for arguments that cannot travel: not JSON, an inconsistent
 * NDArray, or a frame or a binary value larger than `maxMessageSize`.
 */
export function encodeCall(call: CallToEncode, maxMessageSize: number): Buffer | Buffer[] {
  const { id, fn, kwargs } = call;
  // Keyword arguments travel as a last element of `args` (flagged by `kw`), so binary values in
  // them take the same path as those in positional arguments.
  const args = kwargs === undefined ? call.args : [...call.args, kwargs];
  let binary: BinaryArgs | null = null;
  let json: string;
  // One try and no closure: this runs for every call.
  try {
    // Binary values (NDArrays too) travel as attachment frames, non-finite numbers as
    // placeholders; the scan allocates nothing when there is neither.
    if (mayHoldBinary(args)) binary = extractBinary(args);
    const request: CallRequest = {
      t: 'call',
      id,
      fn,
      args: binary ? binary.args : (args as unknown[]),
    };
    if (call.streamCredit !== undefined) {
      request.stream = true;
      request.credit = call.streamCredit;
    }
    if (call.traceparent) request.tp = call.traceparent;
    if (kwargs !== undefined) request.kw = true;
    // `b` comes last: Python reads it from the end of a frame it cannot decode.
    if (binary) request.b = binary.attachments.length;
    json = JSON.stringify(request);
  } catch (cause) {
    if (cause instanceof SerializationError) {
      // From extractBinary: an inconsistent NDArray.
      throw new SerializationError(
        `The arguments of '${fn}' hold an invalid NDArray: ${cause.message}`,
        { cause },
      );
    }
    throw new SerializationError(
      `The arguments of '${fn}' cannot be encoded as JSON: ${(cause as Error).message}`,
      { cause },
    );
  }
  // encodeFrame measures the UTF-8 length once; the header holds it.
  const frame = encodeFrame(json);
  if (frame.length - 4 > maxMessageSize) {
    throw new SerializationError(
      `The arguments of '${fn}' are larger than maxMessageSize (${maxMessageSize} bytes)`,
    );
  }
  if (!binary) return frame;
  if (binary.attachments.length === 0) return frame; // only non-finite numbers: "b": 0
  // Each attachment is a frame of its own, under the same limit.
  for (const a of binary.attachments) {
    if (a.length > maxMessageSize) {
      throw new SerializationError(
        `The arguments of '${fn}' hold a ${a.length}-byte binary value, larger than maxMessageSize (${maxMessageSize} bytes)`,
      );
    }
  }
  return withAttachments(frame, binary.attachments);
}
