import { describe, expect, it } from 'vitest';
import { ProtocolError, SerializationError } from '../../src/index.js';
import { fixture, pids, testPool } from '../helpers.js';

const script = fixture('binary.py');

function pattern(n: number, seed = 0): Buffer {
  const b = Buffer.allocUnsafe(n);
  for (let i = 0; i < n; i++) b[i] = (i * 31 + seed) & 0xff;
  return b;
}

describe('binary payloads (Buffer ⇄ bytes)', () => {
  it('round-trips empty, 1-byte, 1 MB and nested buffers as Python bytes', async () => {
    const pool = testPool({ script });
    for (const value of [Buffer.alloc(0), Buffer.from([0xff]), pattern(1 << 20)]) {
      const back = (await pool.call('echo', [value])) as Buffer;
      expect(Buffer.isBuffer(back)).toBe(true);
      expect(back.equals(value)).toBe(true);
      expect(await pool.call('size', [value])).toEqual({ type: 'bytes', len: value.length });
    }
    const nested = {
      image: pattern(70_000, 1),
      meta: { name: 'x', sizes: [1, 2], thumbs: [Buffer.from('a'), Buffer.alloc(0)] },
      list: [[Buffer.from('deep')]],
    };
    expect(await pool.call('echo', [nested])).toEqual(nested);
    expect(await pool.call('add', [1, 2])).toBe(3);
  });

  it('sends only the bytes of a Uint8Array view (byteOffset ≠ 0), and other views as bytes', async () => {
    const pool = testPool({ script });
    const backing = new ArrayBuffer(64);
    new Uint8Array(backing).fill(9);
    const view = new Uint8Array(backing, 10, 5);
    view.set([1, 2, 3, 4, 5]);
    expect(view.byteOffset).toBe(10);
    expect(await pool.call('size', [view])).toEqual({ type: 'bytes', len: 5 });
    expect([...((await pool.call('echo', [view])) as Buffer)]).toEqual([1, 2, 3, 4, 5]);
    const floats = new Float64Array([1.5, -2]);
    const back = (await pool.call('echo', [floats])) as Buffer;
    expect(new Float64Array(back.buffer, back.byteOffset, 2)).toEqual(floats);
    expect(await pool.call('types', [new DataView(backing, 60), new ArrayBuffer(2)])).toEqual([
      'bytes',
      'bytes',
    ]);
    expect(await pool.call('size', [new DataView(backing, 60)])).toEqual({ type: 'bytes', len: 4 });
  });

  it('mixes binary and JSON arguments in one call', async () => {
    const pool = testPool({ script });
    const buf = Buffer.from('abc');
    expect(
      await pool.call('types', [buf, 1, 's', [buf, { k: buf, n: null }], { x: [true] }]),
    ).toEqual(['bytes', 'int', 'str', ['bytes', { k: 'bytes', n: 'NoneType' }], { x: ['bool'] }]);
    expect(((await pool.call('reversed_', [buf])) as Buffer).toString()).toBe('cba');
  });

  it('returns bytes, bytearray and memoryview results as Buffers, nested anywhere', async () => {
    const pool = testPool({ script });
    const nested = (await pool.call('nested', [2])) as Record<string, unknown>;
    expect(nested).toEqual({
      data: Buffer.from([0, 1, 2, 0, 1, 2]),
      n: 2,
      parts: [Buffer.from('a'), Buffer.alloc(0), { deep: [Buffer.from([0xff])] }],
    });
    expect(Buffer.isBuffer(nested.data)).toBe(true);
    expect(nested.data).toBeInstanceOf(Uint8Array);
    const mutable = (await pool.call('mutable', [100_000])) as Buffer;
    expect(mutable.equals(Buffer.alloc(100_000, 7))).toBe(true);
    expect(await pool.call('view', [3])).toEqual([
      Buffer.from([1, 2, 3]),
      Buffer.from([0, 2, 4, 6]),
    ]);
  });

  it('keeps objects that use the placeholder key intact, both ways', async () => {
    const pool = testPool({ script });
    expect(await pool.call('reserved')).toEqual({
      __pyvisor_bytes__: 0,
      bin: Buffer.from('xyz'),
      s: '__pyvisor_bytes__',
    });
    const arg = { __pyvisor_bytes__: [Buffer.from('q'), { __pyvisor_bytes__: 1 }], x: 2 };
    expect(await pool.call('echo', [arg])).toEqual(arg);
    expect(await pool.call('types', [arg])).toEqual([
      { __pyvisor_bytes__: ['bytes', { __pyvisor_bytes__: 'int' }], x: 'int' },
    ]);
    // Without binary values the key is nothing special either.
    expect(await pool.call('echo', [{ __pyvisor_bytes__: 0 }])).toEqual({ __pyvisor_bytes__: 0 });
  });

  it('streams binary items, beyond one credit window', async () => {
    const pool = testPool({ script });
    const items: Buffer[] = [];
    for await (const item of pool.stream<Buffer>('chunks', [150, 1000])) items.push(item);
    expect(items).toHaveLength(150);
    items.forEach((item, i) => {
      expect(Buffer.isBuffer(item)).toBe(true);
      expect(item.equals(Buffer.alloc(1000, i % 256))).toBe(true);
    });
  });

  it('keeps concurrent binary calls on several workers apart', async () => {
    const pool = testPool({ script, size: 3 });
    await pool.ready();
    const inputs = Array.from({ length: 24 }, (_, i) => pattern(50_000 + i * 7_001, i));
    const outputs = await Promise.all(inputs.map((b) => pool.call('reversed_', [b])));
    outputs.forEach((out, i) => {
      expect((out as Buffer).equals(Buffer.from(inputs[i]!).reverse())).toBe(true);
    });
  });

  it('rejects a binary argument over maxMessageSize with ERR_SERIALIZATION, before any worker sees it', async () => {
    const pool = testPool({ script, maxMessageSize: 4096 });
    const pid = (await pool.call('pid')) as number;
    const calls = pool.stats().workers[0]!.calls;
    const error = await pool
      .call('echo', [{ small: Buffer.alloc(10), big: Buffer.alloc(4097) }])
      .catch((e: unknown) => e);
    expect(error).toBeInstanceOf(SerializationError);
    expect((error as SerializationError).code).toBe('ERR_SERIALIZATION');
    expect((error as Error).message).toMatch(/4097-byte binary value.*maxMessageSize/);
    expect(pool.stats().workers[0]!.calls).toBe(calls);
    // Each attachment has the limit to itself: two of 4096 bytes are fine.
    const two = [Buffer.alloc(4096, 1), Buffer.alloc(4096, 2)];
    expect(await pool.call('echo', [two])).toEqual(two);
    expect(await pool.call('pid')).toBe(pid);
  });

  it('turns a bytes result over maxMessageSize into ERR_SERIALIZATION, keeping the worker', async () => {
    const pool = testPool({ script, maxMessageSize: 4096 });
    const pid = (await pool.call('pid')) as number;
    expect(((await pool.call('big_bytes', [4096])) as Buffer).length).toBe(4096);
    const error = await pool.call('big_bytes', [4097]).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(SerializationError);
    expect((error as SerializationError).code).toBe('ERR_SERIALIZATION');
    expect((error as Error).message).toMatch(/4097-byte binary value/);
    expect(await pool.call('pid')).toBe(pid);
  });

  it.each(['index', 'count', 'unreferenced', 'huge', 'on_end', 'truncated'])(
    'garbled attachments from Python (%s) fail that call with ERR_PROTOCOL and replace the worker',
    async (kind) => {
      const pool = testPool({ script, size: 2, maxMessageSize: 1 << 20 });
      await pool.ready();
      const before = pids(pool);
      const other = pool.call('echo', [Buffer.from('fine')]);
      const error = await pool.call('bad_binary', [kind]).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(ProtocolError);
      expect((error as ProtocolError).code).toBe('ERR_PROTOCOL');
      expect(((await other) as Buffer).toString()).toBe('fine');
      await pool.ready();
      const after = pids(pool);
      expect(after).toHaveLength(2);
      expect(after.filter((pid) => !before.includes(pid))).toHaveLength(1);
      expect(((await pool.call('echo', [Buffer.from('ok')])) as Buffer).toString()).toBe('ok');
    },
  );
});
