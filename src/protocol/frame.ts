/** Frames: a 4-byte big-endian length, then the body. */
import type { NodeMessage } from './messages.js';

/** Default cap on one frame's body, both directions. */
export const DEFAULT_MAX_MESSAGE_SIZE = 256 * 1024 * 1024;

/** Length of a frame's header. */
export const HEADER = 4;

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

/** A message's text, cut short for an error message. */
export function preview(text: string): string {
  return JSON.stringify(text.length > 120 ? `${text.slice(0, 120)}…` : text);
}
