import type { Writable } from 'node:stream';

// After a process exits its pipes may stay open (a grandchild inherited them); their last bytes
// get this long before the exit is reported anyway.
const OUTPUT_DRAIN_MS = 100;

/**
 * Calls `drained` once the output of a process that just exited has had its chance to arrive:
 * after {@link OUTPUT_DRAIN_MS}, then one `setImmediate`. Timers run before I/O in an event-loop
 * turn, so after a stall longer than the drain time the last frames may still wait in the pipe,
 * readable in this very turn; `setImmediate` runs after that turn's I/O. Returns the timer (unref'd:
 * it never keeps Node alive) so that a report that comes first can clear it.
 */
export function afterDrain(drained: () => void): NodeJS.Timeout {
  return setTimeout(() => setImmediate(drained), OUTPUT_DRAIN_MS).unref();
}

/**
 * Writes a frame, or a frame and its attachment frames: several buffers go out in one writev, no
 * copies, and since writes are queued in order nothing can come between them.
 */
export function writeFrame(stream: Writable, frame: Buffer | readonly Buffer[]): void {
  if (frame instanceof Uint8Array) {
    stream.write(frame);
    return;
  }
  stream.cork();
  for (const part of frame) stream.write(part);
  stream.uncork();
}
