import { describe, expect, it } from 'vitest';
import { ProtocolError } from '../../src/errors.js';
import {
  BINARY_KEY,
  encodeCall,
  encodeFrame,
  extractBinary,
  FrameDecoder,
  mayHoldBinary,
  type PythonMessage,
  withAttachments,
} from '../../src/protocol/index.js';
import { frame } from './frames.js';

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

/** A reply frame with attachments, as the Python runtime writes it. */
function binaryReply(json: object, attachments: Buffer[]): Buffer {
  return Buffer.concat([
    frame(JSON.stringify({ ...json, b: attachments.length })),
    ...attachments.map((a) => frame(a)),
  ]);
}

function decodeAll(bytes: Buffer, step = bytes.length, max?: number): PythonMessage[] {
  const out: PythonMessage[] = [];
  const decoder = new FrameDecoder(max);
  for (let i = 0; i < bytes.length; i += step) {
    decoder.push(bytes.subarray(i, i + step), (m) => out.push(m));
  }
  expect(decoder.pending).toBe(0);
  return out;
}

function protocolError(run: () => void): ProtocolError {
  try {
    run();
  } catch (error) {
    expect(error).toBeInstanceOf(ProtocolError);
    expect((error as ProtocolError).code).toBe('ERR_PROTOCOL');
    return error as ProtocolError;
  }
  throw new Error('no ProtocolError');
}

describe('binary values: finding them in call arguments', () => {
  it('says no for JSON-only arguments (the hot path) and yes for any binary value', () => {
    for (const args of [
      [],
      [1, 2],
      ['a', { x: 1, y: [null, true] }],
      [[1, [2, [3]]]],
      [new Date(0), new Map([[1, 2]])],
      [{ toJSON: () => Buffer.alloc(1) }],
    ]) {
      expect(mayHoldBinary(args)).toBe(false);
    }
    for (const args of [
      [Buffer.alloc(0)],
      [1, { a: [new Uint8Array(1)] }],
      [new Float64Array(2)],
      [new DataView(new ArrayBuffer(4))],
      [new ArrayBuffer(3)],
      [new SharedArrayBuffer(3)],
      [{ deep: { deeper: [[{ buffer: Buffer.from('x') }]] } }],
    ]) {
      expect(mayHoldBinary(args)).toBe(true);
    }
  });

  // Its cost (a few ns for small arguments) is measured in bench/machine-cost.ts, not here.
  it('says no for arguments without binary values, of every JSON shape', () => {
    for (const args of [
      [],
      [1, 2],
      ['x', null, true, 1.5],
      [{ a: 1, b: 'x', c: [1, 2, 3] }],
      [[[[{ deep: { deeper: [1, { x: 'y' }] } }]]]],
      [new Date(0), { toJSON: () => Buffer.from('x') }],
    ]) {
      expect(mayHoldBinary(args)).toBe(false);
    }
  });

  it('gives up on deep or cyclic values conservatively, and extractBinary settles it', () => {
    let deep: unknown = 1;
    for (let i = 0; i < 100; i++) deep = [deep];
    expect(mayHoldBinary([deep])).toBe(true);
    expect(extractBinary([deep])).toBeNull();
    const cyclic: Record<string, unknown> = { a: 1 };
    cyclic.self = cyclic;
    expect(mayHoldBinary([cyclic])).toBe(true);
    expect(extractBinary([cyclic])).toBeNull();
    // A cycle next to a binary value stays a cycle, for JSON.stringify to report.
    const both = extractBinary([cyclic, Buffer.from('x')])!;
    expect(() => JSON.stringify(both.args)).toThrow(/circular/);
  });

  it('replaces binary values by placeholders in a copy, sharing their memory', () => {
    const big = new ArrayBuffer(16);
    const view = new Uint8Array(big, 4, 3);
    view.set([1, 2, 3]);
    const buf = Buffer.from('hello');
    const floats = new Float64Array([1.5]);
    const args = [buf, { meta: { view, n: 1 }, list: [floats, 'x'] }, new ArrayBuffer(2)];
    const result = extractBinary(args)!;
    expect(JSON.parse(JSON.stringify(result.args))).toEqual([
      { [BINARY_KEY]: 0 },
      { meta: { view: { [BINARY_KEY]: 1 }, n: 1 }, list: [{ [BINARY_KEY]: 2 }, 'x'] },
      { [BINARY_KEY]: 3 },
    ]);
    const [a0, a1, a2, a3] = result.attachments;
    expect(a0).toBe(buf);
    expect([...a1!]).toEqual([1, 2, 3]);
    expect(a1!.buffer).toBe(big); // a view on the caller's memory, not a copy
    expect(a1!.byteOffset).toBe(4);
    expect(a2!.equals(Buffer.from(floats.buffer))).toBe(true);
    expect(a3!.length).toBe(2);
    // The caller's arguments are untouched.
    expect(args[0]).toBe(buf);
    expect((args[1] as { meta: { view: unknown } }).meta.view).toBe(view);
  });

  it('keeps JSON.stringify semantics around the binary values', () => {
    const date = new Date(0);
    const args = [
      Buffer.from('x'),
      { date, u: undefined, f: () => 1, boxed: new Number(3), s: new String('ab') },
      // biome-ignore lint/suspicious/noSparseArray: a hole on purpose
      [undefined, , 1],
      JSON.parse('{"__proto__": 1, "a": 2}'),
    ];
    const result = extractBinary(args)!;
    const expected = JSON.parse(JSON.stringify(args.slice(1)));
    expect(JSON.parse(JSON.stringify(result.args)).slice(1)).toEqual(expected);
  });

  it('escapes objects that have the placeholder key', () => {
    const result = extractBinary([{ [BINARY_KEY]: 7, x: Buffer.from('q') }])!;
    expect(JSON.parse(JSON.stringify(result.args))).toEqual([
      { [BINARY_KEY]: 'escape', v: { [BINARY_KEY]: 7, x: { [BINARY_KEY]: 0 } } },
    ]);
  });

  it('frames the attachments after the call frame, packing small ones', () => {
    const small = Buffer.from('ab');
    const large = Buffer.alloc(20000, 7);
    const json = encodeFrame('{"t":"call","id":1,"fn":"f","args":[],"b":3}');
    const parts = withAttachments(json, [small, large, Buffer.alloc(0)]) as Buffer[];
    expect(parts[0]).toBe(json);
    expect(parts).toContain(large); // passed through, not copied
    const all = Buffer.concat(parts);
    let off = json.length;
    const bodies: Buffer[] = [];
    while (off < all.length) {
      const n = all.readUInt32BE(off);
      bodies.push(all.subarray(off + 4, off + 4 + n));
      off += 4 + n;
    }
    expect(bodies.map((b) => b.length)).toEqual([2, 20000, 0]);
    expect(bodies[0]!.equals(small)).toBe(true);
    expect(bodies[1]!.equals(large)).toBe(true);
    // Only small attachments: one buffer, one plain write.
    const one = withAttachments(json, [small, small]);
    expect(Buffer.isBuffer(one)).toBe(true);
    expect(Buffer.concat([json, frame(small), frame(small)]).equals(one as Buffer)).toBe(true);
  });
});

describe('binary values: decoding replies with attachments', () => {
  it('substitutes attachments anywhere in the value, split at any byte boundary', () => {
    const bytes = Buffer.concat([
      binaryReply(
        {
          t: 'ok',
          id: 1,
          v: {
            data: { [BINARY_KEY]: 1 },
            n: 3,
            parts: [{ [BINARY_KEY]: 0 }, { k: { [BINARY_KEY]: 2 } }],
          },
        },
        [Buffer.from('a'), Buffer.alloc(5000, 1), Buffer.alloc(0)],
      ),
      frame('{"t":"pong","id":2}'),
      binaryReply({ t: 'item', id: 3, v: { [BINARY_KEY]: 0 } }, [Buffer.from('z')]),
    ]);
    for (const step of [1, 3, 7, 4096, bytes.length]) {
      const out = decodeAll(bytes, step);
      expect(out.map((m) => m.t)).toEqual(['ok', 'pong', 'item']);
      const v = (out[0] as { v: { data: Buffer; n: number; parts: [Buffer, { k: Buffer }] } }).v;
      expect(Buffer.isBuffer(v.data)).toBe(true);
      expect(v.data.equals(Buffer.alloc(5000, 1))).toBe(true);
      expect(v.n).toBe(3);
      expect(v.parts[0].toString()).toBe('a');
      expect(v.parts[1].k.length).toBe(0);
      expect((out[2] as { v: Buffer }).v.toString()).toBe('z');
      expect('b' in out[0]!).toBe(false);
    }
  });

  it('assembles large frames and attachments as their chunks arrive', () => {
    const text = 'é'.repeat(150_000);
    const big = Buffer.alloc(300_000);
    for (let i = 0; i < big.length; i++) big[i] = i & 0xff;
    const bytes = Buffer.concat([
      frame(JSON.stringify({ t: 'ok', id: 1, v: text })),
      binaryReply({ t: 'item', id: 2, v: [{ [BINARY_KEY]: 0 }, { [BINARY_KEY]: 1 }] }, [
        big,
        Buffer.from('tail'),
      ]),
      frame('{"t":"end","id":2}'),
    ]);
    for (const step of [7, 4096, 65_536, 100_000, bytes.length]) {
      const out = decodeAll(bytes, step);
      expect(out.map((m) => m.t)).toEqual(['ok', 'item', 'end']);
      expect((out[0] as { v: string }).v).toBe(text);
      const [a, b] = (out[1] as { v: [Buffer, Buffer] }).v;
      expect(a.equals(big)).toBe(true);
      expect(b.toString()).toBe('tail');
    }
  });

  it('counts a started frame as pending, header included', () => {
    const decoder = new FrameDecoder();
    const bytes = frame(JSON.stringify({ t: 'ok', id: 1, v: 'x'.repeat(200_000) }));
    decoder.push(bytes.subarray(0, 4), () => {});
    expect(decoder.pending).toBe(4);
    decoder.push(bytes.subarray(4, 70_000), () => {});
    expect(decoder.pending).toBe(70_000);
    const out: PythonMessage[] = [];
    decoder.push(bytes.subarray(70_000), (m) => out.push(m));
    expect(out).toHaveLength(1);
    expect(decoder.pending).toBe(0);
  });

  it('reports a message with attachments as pending until the last one is in', () => {
    const bytes = binaryReply({ t: 'ok', id: 1, v: [{ [BINARY_KEY]: 0 }, { [BINARY_KEY]: 1 }] }, [
      Buffer.from('abc'),
      Buffer.from('de'),
    ]);
    const decoder = new FrameDecoder();
    const out: PythonMessage[] = [];
    const last = bytes.length - 6; // the last attachment frame: 4 + 2 bytes
    decoder.push(bytes.subarray(0, last), (m) => out.push(m));
    expect(out).toEqual([]);
    expect(decoder.pending).toBe(last);
    decoder.push(bytes.subarray(last), (m) => out.push(m));
    expect(out).toHaveLength(1);
    expect(decoder.pending).toBe(0);
  });

  it('unescapes objects that have the placeholder key', () => {
    const [msg] = decodeAll(
      binaryReply(
        {
          t: 'ok',
          id: 1,
          v: { [BINARY_KEY]: 'escape', v: { [BINARY_KEY]: 0, bin: { [BINARY_KEY]: 0 } } },
        },
        [Buffer.from('x')],
      ),
    );
    expect((msg as { v: unknown }).v).toEqual({ [BINARY_KEY]: 0, bin: Buffer.from('x') });
  });

  it('leaves frames without "b" alone, placeholder key or not', () => {
    const [msg] = decodeAll(frame(`{"t":"ok","id":1,"v":{"${BINARY_KEY}":0}}`));
    expect((msg as { v: unknown }).v).toEqual({ [BINARY_KEY]: 0 });
  });

  it.each([
    ['a non-integer count', frame('{"t":"ok","id":1,"v":1,"b":"x"}'), /attachment count/],
    ['a negative count', frame('{"t":"ok","id":1,"v":1,"b":-1}'), /attachment count/],
    ['a fractional count', frame('{"t":"ok","id":1,"v":1,"b":0.5}'), /attachment count/],
    ['a zero count on an err frame', frame('{"t":"err","id":1,"b":0}'), /attachment count/],
    ['a count on an end frame', frame('{"t":"end","id":1,"b":1}'), /attachment count/],
    [
      'an index out of range',
      binaryReply({ t: 'ok', id: 1, v: { [BINARY_KEY]: 1 } }, [Buffer.from('a')]),
      /placeholder/,
    ],
    [
      'an attachment used twice',
      binaryReply({ t: 'ok', id: 1, v: [{ [BINARY_KEY]: 0 }, { [BINARY_KEY]: 0 }] }, [
        Buffer.from('a'),
      ]),
      /placeholder/,
    ],
    [
      'an unreferenced attachment',
      binaryReply({ t: 'ok', id: 1, v: { [BINARY_KEY]: 0 } }, [Buffer.from('a'), Buffer.from('b')]),
      /referred to 1/,
    ],
    [
      'a malformed placeholder',
      binaryReply({ t: 'ok', id: 1, v: { [BINARY_KEY]: 'escape', v: 3 } }, [Buffer.from('a')]),
      /placeholder/,
    ],
    [
      'an oversize attachment header',
      Buffer.concat([
        frame(`{"t":"ok","id":1,"v":{"${BINARY_KEY}":0},"b":1}`),
        Buffer.from([0xff, 0xff, 0xff, 0xff]),
      ]),
      /over the/,
    ],
  ])('rejects %s with ERR_PROTOCOL', (_, bytes, message) => {
    const error = protocolError(() => new FrameDecoder(1024).push(bytes, () => {}));
    expect(error.message).toMatch(message);
  });
});

const NAN = { [BINARY_KEY]: 'float', v: 'NaN' };
const INF = { [BINARY_KEY]: 'float', v: 'Infinity' };
const NINF = { [BINARY_KEY]: 'float', v: '-Infinity' };

/** The JSON of a call frame (and the number of bytes after it) that encodeCall wrote. */
function encodedCall(
  args: unknown[],
  kwargs?: Record<string, unknown>,
): { json: Record<string, unknown>; text: string; rest: number } {
  const out = encodeCall(
    { id: 1, fn: 'f', args, kwargs, streamCredit: undefined, traceparent: undefined },
    1 << 20,
  );
  const all = Buffer.isBuffer(out) ? out : Buffer.concat(out);
  const n = all.readUInt32BE(0);
  const text = all.subarray(4, 4 + n).toString();
  return { json: JSON.parse(text) as Record<string, unknown>, text, rest: all.length - 4 - n };
}

describe('non-finite numbers: call arguments', () => {
  it('are found by the scan anywhere JSON.stringify would see them, and only then', () => {
    for (const args of [
      [Number.NaN],
      [1, Number.POSITIVE_INFINITY],
      [[Number.NEGATIVE_INFINITY]],
      [{ a: { b: [1, { c: Number.NaN }] } }],
      ['x', { kw: Number.NaN }],
    ]) {
      expect(mayHoldBinary(args)).toBe(true);
    }
    for (const args of [
      [0, -0, 1.5, Number.MAX_VALUE, -Number.MAX_VALUE, Number.MIN_VALUE, Number.EPSILON],
      [{ a: [Number.MAX_SAFE_INTEGER, 'NaN', 'Infinity'] }],
      [{ toJSON: () => Number.NaN }],
    ]) {
      expect(mayHoldBinary(args)).toBe(false);
    }
  });

  it('become float placeholders, in a frame with "b": 0 last and no attachments', () => {
    const { json, text, rest } = encodedCall([
      Number.NaN,
      [1, Number.POSITIVE_INFINITY, [Number.NEGATIVE_INFINITY]],
      { x: { y: Number.NaN }, z: 2 },
    ]);
    expect(json.args).toEqual([NAN, [1, INF, [NINF]], { x: { y: NAN }, z: 2 }]);
    expect(text.endsWith(',"b":0}')).toBe(true);
    expect(rest).toBe(0);
  });

  it('travel in kwargs, next to attachments, and escape the placeholder key', () => {
    const a = encodedCall([1], { limit: Number.POSITIVE_INFINITY, opts: { eps: Number.NaN } });
    expect(a.json.kw).toBe(true);
    expect(a.json.args).toEqual([1, { limit: INF, opts: { eps: NAN } }]);
    expect(a.json.b).toBe(0);
    const b = encodedCall([Buffer.from('ab'), Number.NaN, { [BINARY_KEY]: 1, x: Number.NaN }]);
    expect(b.json.args).toEqual([
      { [BINARY_KEY]: 0 },
      NAN,
      { [BINARY_KEY]: 'escape', v: { [BINARY_KEY]: 1, x: NAN } },
    ]);
    expect(b.json.b).toBe(1);
    expect(b.rest).toBe(4 + 2);
  });

  it('leave frames of finite values byte for byte as before (no "b")', () => {
    const { text } = encodedCall([1.5, { a: [0, -0] }], { k: 1e308 });
    expect(text).toBe(
      '{"t":"call","id":1,"fn":"f","args":[1.5,{"a":[0,0]},{"k":1e+308}],"kw":true}',
    );
    expect(extractBinary([1, { a: 2 }])).toBeNull();
  });

  it("are replaced in a copy, leaving the caller's values alone", () => {
    const arg = { x: [Number.NaN] };
    const result = extractBinary([arg])!;
    expect(result.attachments).toEqual([]);
    expect(result.args).toEqual([{ x: [NAN] }]);
    expect(arg.x[0]).toBeNaN();
  });
});

describe('non-finite numbers: results', () => {
  it('decode from placeholders in "b": 0 frames, nested anywhere, escapes included', () => {
    const bytes = Buffer.concat([
      frame(
        JSON.stringify({
          t: 'ok',
          id: 1,
          v: {
            a: NAN,
            b: [1, INF, [NINF]],
            e: { [BINARY_KEY]: 'escape', v: { [BINARY_KEY]: NAN } },
          },
          b: 0,
        }),
      ),
      frame(JSON.stringify({ t: 'item', id: 2, v: NAN, b: 0 })),
      frame(JSON.stringify({ t: 'ok', id: 3, v: [1, 'NaN'], b: 0 })),
      frame(JSON.stringify({ t: 'ok', id: 4, v: 2 })),
    ]);
    for (const step of [1, 7, bytes.length]) {
      const out = decodeAll(bytes, step);
      expect(out.map((m) => m.t)).toEqual(['ok', 'item', 'ok', 'ok']);
      expect((out[0] as { v: unknown }).v).toEqual({
        a: Number.NaN,
        b: [1, Number.POSITIVE_INFINITY, [Number.NEGATIVE_INFINITY]],
        e: { [BINARY_KEY]: Number.NaN },
      });
      expect((out[1] as { v: unknown }).v).toBeNaN();
      expect((out[2] as { v: unknown }).v).toEqual([1, 'NaN']);
      expect('b' in out[0]!).toBe(false);
    }
  });

  it('decode next to attachments', () => {
    const [msg] = decodeAll(
      binaryReply({ t: 'ok', id: 1, v: [NINF, { [BINARY_KEY]: 0 }] }, [Buffer.from('q')]),
    );
    expect((msg as { v: unknown }).v).toEqual([Number.NEGATIVE_INFINITY, Buffer.from('q')]);
  });

  it('are not interpreted in frames without "b"', () => {
    const [msg] = decodeAll(frame(JSON.stringify({ t: 'ok', id: 1, v: NAN })));
    expect((msg as { v: unknown }).v).toEqual(NAN);
  });

  it.each([
    ['a lower-case nan', { [BINARY_KEY]: 'float', v: 'nan' }],
    ['a finite value', { [BINARY_KEY]: 'float', v: '1.5' }],
    ['a number', { [BINARY_KEY]: 'float', v: 1 }],
    ['a missing value', { [BINARY_KEY]: 'float' }],
    ['an extra key', { [BINARY_KEY]: 'float', v: 'NaN', w: 1 }],
    ['an unknown kind', { [BINARY_KEY]: 'complex', v: 'NaN' }],
    ['a bytes placeholder without attachment', { [BINARY_KEY]: 0 }],
  ])('rejects %s with ERR_PROTOCOL', (_, v) => {
    const bytes = frame(JSON.stringify({ t: 'ok', id: 1, v: [v], b: 0 }));
    const error = protocolError(() => new FrameDecoder().push(bytes, () => {}));
    expect(error.message).toMatch(/bad binary placeholder/);
  });
});
