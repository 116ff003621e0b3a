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

export interface CallRequest {
  t: 'call';
  id: number;
  fn: string;
  args: unknown[];
  stream?: boolean;
  credit?: number;
  tp?: string;
  /** The last element of `args` is a dict of keyword arguments: Python calls `fn(*args[:-1], **args[-1])`. */
  kw?: true;
  /**
   * Number of attachment frames that follow (binary values and NDArrays in `args`); 0 when
   * `args` holds only NaN/±Infinity placeholders; absent when there is nothing to restore.
   */
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
  /** A generator or async generator function: call it with `stream()`. */
  stream: boolean;
  /** An `async def` function or async generator: runs as a task on the worker's event loop. */
  async?: boolean;
}
export interface ReadyMessage {
  t: 'ready';
  pid: number;
  version: string;
  executable: string;
  handlers: HandlerInfo[];
  initMs: number;
  /** Calls the worker runs at once (`PYVISOR_CONCURRENCY`). */
  concurrency?: number;
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
