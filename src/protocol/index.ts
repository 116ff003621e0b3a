/** The wire protocol between Node and a Python worker: see messages.ts and docs/protocol.md. */
export * from './binary.js';
export * from './encode-call.js';
export * from './frame.js';
export * from './frame-decoder.js';
export * from './messages.js';
export * from './ndarray.js';
