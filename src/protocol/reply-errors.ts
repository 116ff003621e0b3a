import { ProtocolError, PythonError, SerializationError, UnknownHandlerError } from '../errors.js';
import type { ErrMessage } from './index.js';

/** Turns an `err` reply from Python into the error the caller sees. */
export function errorFromReply(message: ErrMessage, fn: string): Error {
  switch (message.kind) {
    case 'unknown_handler':
      return new UnknownHandlerError(fn, message.message);
    case 'serialization':
      return new SerializationError(
        `The result of '${fn}' could not be sent back as JSON: ${message.message}`,
        { pythonType: message.type, pythonTraceback: message.traceback },
      );
    case 'bad_request':
      return new ProtocolError(`The worker rejected the request for '${fn}': ${message.message}`);
    default:
      // 'python', and 'cancelled' for an interrupt the caller did not ask for.
      return new PythonError(
        String(message.message),
        String(message.type),
        String(message.traceback ?? ''),
      );
  }
}
