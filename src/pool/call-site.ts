import { PyvisorError } from '../errors.js';

/**
 * Caller stacks for errors of `call()` and `stream()`. A call's error is made where the reply
 * arrives (inside XState, from a pipe's data event), so its own stack shows only pyvisor. Taking a
 * stack on every call costs microseconds; instead the call's promise is awaited in an async
 * function, and only when it rejects is a stack taken there: V8's async stack traces then list
 * the async functions awaiting it, down to the user's line that made the call (`at async …`).
 * A caller that uses `.then()` instead of `await` has no such frames, and keeps the error as it is.
 */

// Errors already given a caller's stack: one that reaches a second call (a pool failure shared by
// every waiting call) is copied for it rather than rewritten again.
const rewritten = new WeakSet<Error>();

/** `promise`, whose rejection carries the stack of the code awaiting the result. */
export async function withCallSite<T>(promise: Promise<T>): Promise<T> {
  try {
    return await promise;
  } catch (error) {
    // Everything from this frame up is left out: what remains are the async functions awaiting
    // this one (by position, not by the text `async`: source-map tools reformat frames).
    const site: { stack?: string } = {};
    Error.captureStackTrace(site, withCallSite);
    throw withSite(error, framesOf(site.stack));
  }
}

function framesOf(stack: string | undefined): string | null {
  const start = stack?.indexOf('\n    at ') ?? -1;
  if (start < 0) return null;
  // Node's microtask runner says nothing about the caller.
  const frames = stack!
    .slice(start + 1)
    .split('\n')
    .filter((line) => !line.includes('(node:internal/'));
  return frames.length > 0 ? frames.join('\n') : null;
}

function withSite(error: unknown, frames: string | null): unknown {
  // Only pyvisor's own errors: an abort reason (a DOMException, or any value) is the caller's.
  if (frames === null || !(error instanceof PyvisorError) || typeof error.stack !== 'string') {
    return error;
  }
  const target = rewritten.has(error) ? copyOf(error) : error;
  rewritten.add(target);
  target.stack = replaceFrames(error.stack, `${error.name}: ${error.message}`, frames);
  return target;
}

/**
 * `stack` with its frames (the `    at …` lines after the header) replaced by `frames`; what
 * follows them (a Python traceback, see PythonError) stays.
 */
export function replaceFrames(stack: string, header: string, frames: string): string {
  let at = stack.startsWith(header) ? header.length : stack.indexOf('\n    at ');
  if (at < 0) at = stack.length;
  let end = at;
  while (stack.startsWith('\n    at ', end)) {
    const next = stack.indexOf('\n', end + 1);
    end = next < 0 ? stack.length : next;
  }
  return `${stack.slice(0, at)}\n${frames}${stack.slice(end)}`;
}

/** A real Error of the same class, with the same own properties (code, cause, fields). */
function copyOf(error: Error): Error {
  const copy = Reflect.construct(Error, [error.message], error.constructor) as Error;
  Object.defineProperties(copy, Object.getOwnPropertyDescriptors(error));
  return copy;
}
