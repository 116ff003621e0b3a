// pool.reload(): every worker replaced by one running the code on disk now, without failing a
// call; new code that does not start leaves the old workers serving.
import { mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { WorkerInitError } from '../../src/index.js';
import { nextEvent, pids, testPool } from '../helpers.js';

function handlerFile(version: string): { dir: string; file: string; write: (v: string) => void } {
  const dir = mkdtempSync(join(tmpdir(), 'pyvisor-reload-'));
  const file = join(dir, 'app.py');
  const write = (v: string) =>
    writeFileSync(
      file,
      [
        'import os, time',
        'from pyvisor import handler',
        '',
        '@handler',
        'def version():',
        `    return [${v}, os.getpid()]`,
        '',
        '@handler',
        'def slow(seconds):',
        '    time.sleep(seconds)',
        `    return ${v}`,
        '',
      ].join('\n'),
    );
  write(version);
  return { dir, file, write };
}

describe('pool.reload()', () => {
  it('replaces every worker one at a time, never below size ready, without failing a call', async () => {
    const app = handlerFile("'v1'");
    const pool = testPool({ script: app.file, size: 3 });
    await pool.ready();
    const oldPids = pids(pool);
    // A call running on an old worker when the reload starts finishes there, with the old code.
    const running = pool.call('slow', [1]);
    app.write("'v2'");
    let lowest = Number.POSITIVE_INFINITY;
    const serving = () =>
      pool.stats().workers.filter((w) => w.state === 'ready' || w.state === 'busy').length;
    pool.on('worker.state', () => {
      lowest = Math.min(lowest, serving());
    });
    const events: string[] = [];
    pool.on('reload.start', () => events.push('start'));
    pool.on('reload.done', () => events.push('done'));
    let stop = false;
    const failures: unknown[] = [];
    let served = 0;
    // Load while the workers are being replaced.
    const load = (async () => {
      while (!stop) {
        await pool.call('version').then(
          () => served++,
          (e: unknown) => failures.push(e),
        );
      }
    })();
    await pool.reload();
    stop = true;
    await load;
    expect(events).toEqual(['start', 'done']);
    expect(failures).toEqual([]);
    expect(served).toBeGreaterThan(0);
    expect(await running).toBe('v1');
    expect(lowest).toBeGreaterThanOrEqual(3);
    // Every slot runs the new code, in a new process.
    const after = await Promise.all(
      [0, 1, 2].map((i) => pool.call<[string, number]>('version', [], { session: `s${i}` })),
    );
    for (const [version] of after) expect(version).toBe('v2');
    const newPids = pids(pool);
    expect(newPids).toHaveLength(3);
    for (const pid of newPids) expect(oldPids).not.toContain(pid);
    expect(pool.stats().state).toBe('running');
    await pool.close();
  });

  it('new code that does not start: reload() rejects with ERR_WORKER_INIT, the old workers keep serving, nothing is counted', async () => {
    const app = handlerFile("'v1'");
    const pool = testPool({ script: app.file, size: 2, circuit: { threshold: 1 } });
    await pool.ready();
    const oldPids = pids(pool);
    writeFileSync(app.file, 'from pyvisor import handler\n\n@handler\ndef version(:\n    pass\n');
    const failed = nextEvent(pool, 'reload.failed');
    const error = (await pool.reload().catch((e: unknown) => e)) as WorkerInitError;
    expect(error).toBeInstanceOf(WorkerInitError);
    expect(error.code).toBe('ERR_WORKER_INIT');
    expect(error.pythonType).toBe('SyntaxError');
    expect(error.pythonTraceback).toContain('app.py');
    expect((await failed).error).toBe(error);
    // The breaker (threshold 1) did not count it; the old workers serve the old code.
    expect(pool.stats().circuit).toBe('closed');
    expect(pool.stats().state).toBe('running');
    expect(pids(pool).sort()).toEqual(oldPids.sort());
    expect((await pool.call<[string, number]>('version'))[0]).toBe('v1');
    expect(pool.stats().workers.every((w) => w.restarts === 0)).toBe(true);
    // Fixed code reloads fine afterwards.
    app.write("'v3'");
    await pool.reload();
    expect((await pool.call<[string, number]>('version'))[0]).toBe('v3');
    await pool.close();
  });

  it('a reload asked for during one runs after it; one on a closed pool rejects', async () => {
    const app = handlerFile("'v1'");
    const pool = testPool({ script: app.file, size: 1 });
    await pool.ready();
    app.write("'v2'");
    const first = pool.reload();
    const second = pool.reload();
    const third = pool.reload(); // shares the waiting one
    expect(third).toBe(second);
    await Promise.all([first, second]);
    expect((await pool.call<[string, number]>('version'))[0]).toBe('v2');
    await pool.close();
    await expect(pool.reload()).rejects.toMatchObject({ code: 'ERR_POOL_CLOSED' });
  });
});

describe('watch', () => {
  it('reloads when a .py file under the script directory changes; close() leaves no watcher', async () => {
    const app = handlerFile("'v1'");
    // inotify watches this process holds (Linux): the watchers are unref'd, so Node's list of
    // active resources does not show them.
    const watchers = () => {
      let n = 0;
      for (const fd of readdirSync('/proc/self/fdinfo')) {
        try {
          n += readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8').split('\ninotify wd:').length - 1;
        } catch {
          // closed meanwhile
        }
      }
      return n;
    };
    const before = watchers();
    const pool = testPool({ script: app.file, size: 1, watch: { debounce: 50 } });
    await pool.ready();
    expect(watchers()).toBeGreaterThan(before);
    const changed = nextEvent(pool, 'watch.change');
    const done = nextEvent(pool, 'reload.done');
    app.write("'v2'");
    expect((await changed).files).toEqual([app.file]);
    await done;
    expect((await pool.call<[string, number]>('version'))[0]).toBe('v2');
    // A broken edit (saved half-way, say) keeps the old code serving.
    const failed = nextEvent(pool, 'reload.failed');
    writeFileSync(app.file, 'raise RuntimeError("half-saved")\n');
    expect((await failed).error).toMatchObject({ code: 'ERR_WORKER_INIT' });
    expect((await pool.call<[string, number]>('version'))[0]).toBe('v2');
    await pool.close();
    expect(watchers()).toBe(before);
  });
});
