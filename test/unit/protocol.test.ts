import { describe, expect, it } from 'vitest';
import { ProtocolError } from '../../src/errors.js';
import { encodeFrame, FrameDecoder, type PythonMessage } from '../../src/protocol.js';

function frame(body: string | Buffer): Buffer {
  const b = typeof body === 'string' ? Buffer.from(body) : body;
  const head = Buffer.alloc(4);
  head.writeUInt32BE(b.length);
  return Buffer.concat([head, b]);
}

describe('FrameDecoder', () => {
  it('parses frames split at any byte boundary', () => {
    const bytes = Buffer.concat([
      frame('{"t":"ok","id":1,"v":3}'),
      frame('{"t":"pong","id":2}'),
      frame(JSON.stringify({ t: 'ok', id: 3, v: 'é€😀'.repeat(100) })),
    ]);
    for (let step = 1; step <= 7; step++) {
      const out: PythonMessage[] = [];
      const decoder = new FrameDecoder();
      for (let i = 0; i < bytes.length; i += step) {
        decoder.push(bytes.subarray(i, i + step), (m) => out.push(m));
      }
      expect(out.map((m) => m.t)).toEqual(['ok', 'pong', 'ok']);
      expect((out[2] as { v: string }).v).toBe('é€😀'.repeat(100));
      expect(decoder.pending).toBe(0);
    }
  });

  it('round-trips encodeFrame', () => {
    const out: PythonMessage[] = [];
    new FrameDecoder().push(encodeFrame('{"t":"end","id":9}'), (m) => out.push(m));
    expect(out).toEqual([{ t: 'end', id: 9 }]);
  });

  it.each([
    ['an oversize header', Buffer.from([0xff, 0xff, 0xff, 0xff]), /over the/],
    ['invalid UTF-8', frame(Buffer.from([0x7b, 0xff, 0xfe, 0x7d])), /UTF-8/],
    ['invalid JSON', frame('{nope'), /not valid JSON/],
    ['a non-object', frame('[1,2]'), /not a JSON object/],
    ['an unknown type', frame('{"t":"hello"}'), /unknown type/],
    ['a reply without id', frame('{"t":"ok","v":1}'), /numeric id/],
  ])('rejects %s with ERR_PROTOCOL', (_, bytes, message) => {
    const decoder = new FrameDecoder(1024);
    let error: unknown;
    try {
      decoder.push(bytes, () => {});
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(ProtocolError);
    expect((error as ProtocolError).code).toBe('ERR_PROTOCOL');
    expect((error as Error).message).toMatch(message);
  });
});
