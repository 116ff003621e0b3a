import { execFileSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import {
  createPool,
  InvalidOptionError,
  PythonError,
  type PythonNotFoundError,
  type PyvisorError,
  SerializationError,
  UnknownHandlerError,
} from '../../src/index.js';
import { fixture, isAlive, nextEvent, pids, testPool } from '../helpers.js';

describe('a pool of real Python workers', () => {
  it('starts every worker eagerly and in parallel, before the first call', async () => {
    const pool = testPool({ size: 3 });
    // In parallel: when the first worker is ready, every slot has its process already.
    let allSpawnedAtFirstReady: boolean | null = null;
    pool.on('worker.state', (e) => {
      if (e.to === 'ready') {
        allSpawnedAtFirstReady ??= pool.stats().workers.every((w) => w.pid !== null);
      }
    });
    // Spawned at once: every slot gets a process without any call or ready().
    await nextEvent(pool, 'pool.ready');
    expect(allSpawnedAtFirstReady).toBe(true);
    const stats = pool.stats();
    expect(stats.state).toBe('running');
    expect(stats.workers).toHaveLength(3);
    expect(stats.workers.every((w) => w.state === 'ready')).toBe(true);
    const ids = pids(pool);
    expect(new Set(ids).size).toBe(3);
    for (const pid of ids) expect(isAlive(pid)).toBe(true);
    await pool.ready();
  });

  it('lets a call made before ready wait for the first ready worker', async () => {
    const pool = testPool({ size: 2 });
    expect(pool.stats().state).toBe('starting');
    await expect(pool.call('add', [1, 2])).resolves.toBe(3);
  });

  it('calls handlers, renamed handlers and streams generators', async () => {
    const pool = testPool({ size: 1 });
    await pool.ready();
    expect(await pool.call('add', [2, 40])).toBe(42);
    expect(await pool.call('echo', [{ a: [1, 'é', null, true] }])).toEqual({
      a: [1, 'é', null, true],
    });
    const items: number[] = [];
    for await (const x of pool.stream<number>('count', [5])) items.push(x);
    expect(items).toEqual([0, 1, 2, 3, 4]);
    // A generator handler called with call() returns the list of its items.
    expect(await pool.call('count', [3])).toEqual([0, 1, 2]);
  });

  it('passes keyword arguments (kwargs) to calls and streams; wrong ones fail as in Python', async () => {
    const pool = testPool({});
    expect(await pool.call('add', [1], { kwargs: { b: 2 } })).toBe(3);
    expect(await pool.call('add', [], { kwargs: { b: 'y', a: 'x' } })).toBe('xy');
    // Binary values in kwargs travel as raw bytes, like those in args.
    expect(await pool.call('echo', [], { kwargs: { x: Buffer.from('raw') } })).toEqual(
      Buffer.from('raw'),
    );
    const items: number[] = [];
    for await (const n of pool.stream<number>('count', [], { kwargs: { n: 3 } })) items.push(n);
    expect(items).toEqual([0, 1, 2]);
    const error = await pool.call('add', [1], { kwargs: { c: 2 } }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(PythonError);
    expect((error as PythonError).code).toBe('ERR_PYTHON');
    expect((error as PythonError).pythonType).toBe('TypeError');
    expect((error as PythonError).message).toContain("unexpected keyword argument 'c'");
    for (const kwargs of [null, [1], 'b=2', new Map([['b', 2]])]) {
      await expect(
        pool.call('add', [1], { kwargs: kwargs as unknown as Record<string, unknown> }),
      ).rejects.toMatchObject({ code: 'ERR_INVALID_OPTION', option: 'kwargs' });
    }
    // And in a concurrent pool (the event loop's path).
    const aio = testPool({ script: fixture('aio.py'), concurrency: 4 });
    expect(await aio.call('nap', [], { kwargs: { seconds: 0, tag: null } })).toBe(0);
  });

  it('env extends process.env (like execa); extendEnv: false replaces it; a missing interpreter names the PATH searched', async () => {
    const pool = testPool({ env: { PYVISOR_TEST_FOO: '1', HOME: undefined } });
    const seen = (await pool.call('getenv', [['PYVISOR_TEST_FOO', 'PATH', 'HOME']])) as Record<
      string,
      string | null
    >;
    expect(seen).toEqual({ PYVISOR_TEST_FOO: '1', PATH: process.env.PATH ?? null, HOME: null });

    const python = execFileSync(process.env.PYVISOR_PYTHON || 'python3', [
      '-c',
      'import sys; print(sys.executable)',
    ])
      .toString()
      .trim();
    const only = testPool({ python, extendEnv: false, env: { PYVISOR_TEST_FOO: '2' } });
    expect(await only.call('getenv', [['PYVISOR_TEST_FOO', 'PATH']])).toEqual({
      PYVISOR_TEST_FOO: '2',
      PATH: null,
    });

    // A bare interpreter name and no PATH: the error says why.
    const noPath = testPool({ python: 'python3', extendEnv: false, env: { A: '1' } });
    const error = (await noPath.ready().catch((e: unknown) => e)) as PyvisorError;
    expect(error.code).toBe('ERR_POOL_FAILED');
    const cause = error.cause as PythonNotFoundError;
    expect(cause.code).toBe('ERR_PYTHON_NOT_FOUND');
    expect(cause.message).toContain("the workers' PATH is empty");
    const badPath = testPool({ python: 'python3', env: { PATH: '/no/such/dir' } });
    const error2 = (await badPath.ready().catch((e: unknown) => e)) as PyvisorError;
    expect((error2.cause as PythonNotFoundError).message).toContain(
      "searched the workers' PATH: /no/such/dir",
    );
    expect((error2.cause as PythonNotFoundError).searchedPath).toBe('/no/such/dir');
    expect(() => testPool({ extendEnv: 'no' as unknown as boolean })).toThrow(InvalidOptionError);
  });

  it('rejects handler exceptions with ERR_PYTHON and the Python traceback', async () => {
    const pool = testPool({});
    const error = await pool.call('fail', ['boom']).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(PythonError);
    expect((error as PythonError).code).toBe('ERR_PYTHON');
    expect((error as PythonError).pythonType).toBe('ValueError');
    expect((error as PythonError).message).toContain('boom');
    expect((error as PythonError).pythonTraceback).toContain('Traceback (most recent call last)');
    expect((error as PythonError).pythonTraceback).toContain('fixtures/_common.py');
    // The worker is still fine.
    expect(await pool.call('add', [1, 1])).toBe(2);
  });

  it('rejects an unknown handler with ERR_UNKNOWN_HANDLER', async () => {
    const pool = testPool({});
    const error = await pool.call('nope').catch((e: unknown) => e);
    expect(error).toBeInstanceOf(UnknownHandlerError);
    expect((error as UnknownHandlerError).code).toBe('ERR_UNKNOWN_HANDLER');
    expect((error as Error).message).toContain('nope');
  });

  it('rejects arguments that cannot be encoded before touching a worker', async () => {
    const pool = testPool({});
    await pool.ready();
    const circular: Record<string, unknown> = {};
    circular.self = circular;
    for (const args of [[1n], [circular]]) {
      const error = await pool.call('echo', args).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(SerializationError);
      expect((error as SerializationError).code).toBe('ERR_SERIALIZATION');
    }
    expect(pool.stats().workers[0]!.calls).toBe(0);
  });

  it('turns a result Python cannot encode into ERR_SERIALIZATION, keeping the worker', async () => {
    const pool = testPool({});
    const pid = (await pool.call('pid')) as number;
    // A bare object() has nothing to convert it (no encoder, no duck-typed method).
    const error = await pool.call('unserializable').catch((e: unknown) => e);
    expect(error).toBeInstanceOf(SerializationError);
    expect((error as SerializationError).code).toBe('ERR_SERIALIZATION');
    expect((error as Error).message).toMatch(/object is not JSON serializable/);
    // NaN is no longer one of them: it travels as a placeholder.
    expect(await pool.call('nan')).toBeNaN();
    expect(await pool.call('pid')).toBe(pid);
  });

  it('keeps print() and fd-1 writes out of the protocol and emits them as lines', async () => {
    const pool = testPool({});
    const stdout: string[] = [];
    const stderr: string[] = [];
    pool.on('worker.stdout', (e) => stdout.push(e.line));
    pool.on('worker.stderr', (e) => stderr.push(e.line));
    expect(await pool.call('noisy', [50])).toBe('done');
    expect(await pool.call('add', [1, 2])).toBe(3);
    await pool.close();
    // print() and os.write(1, ...) both reach worker.stdout, line by line, none lost.
    for (let i = 0; i < 50; i++) {
      expect(stdout).toContain(`noisy stdout line ${i}`);
      expect(stdout).toContain(`noisy raw fd1 line ${i}`);
      expect(stderr).toContain(`noisy stderr line ${i}`);
    }
  });

  it('passes tens of megabytes both ways without deadlock', async () => {
    const pool = testPool({});
    const big = 'x'.repeat(20 * 1024 * 1024);
    const echoed = (await pool.call('echo', [big])) as string;
    expect(echoed.length).toBe(big.length);
    const made = (await pool.call('big', [30 * 1024 * 1024])) as string;
    expect(made.length).toBe(30 * 1024 * 1024);
  });

  it('keeps pools isolated: closing one leaves the other serving', async () => {
    const a = testPool({ name: 'a' });
    const b = testPool({ name: 'b' });
    await Promise.all([a.ready(), b.ready()]);
    const aPids = pids(a);
    await a.close();
    expect(a.stats().state).toBe('closed');
    for (const pid of aPids) expect(isAlive(pid)).toBe(false);
    expect(await b.call('add', [2, 2])).toBe(4);
    expect(b.stats().name).toBe('b');
  });

  it('leaving a stream early cancels the generator and frees the worker', async () => {
    const pool = testPool({});
    const pid = await pool.call('pid');
    const seen: number[] = [];
    for await (const x of pool.stream<number>('count', [1_000_000])) {
      seen.push(x);
      if (x === 2) break;
    }
    expect(seen).toEqual([0, 1, 2]);
    expect(await pool.call('add', [1, 2])).toBe(3);
    expect(await pool.call('pid')).toBe(pid);
  });

  it('validates options with typed errors that name the option', () => {
    expect(() => createPool({ script: fixture('handlers.py'), size: 0 })).toThrow(
      InvalidOptionError,
    );
    expect(() => createPool({ script: fixture('handlers.py'), initTimeout: -1 })).toThrow(
      /initTimeout/,
    );
    expect(() => createPool({ script: fixture('missing.py') })).toThrow(/not a file/);
    expect(() => createPool({} as never)).toThrow(/script/);
  });
});
