// startMethod 'forkserver': workers forked from a template that imported the script once, driven
// through the public API against real python3.
import { spawn } from 'node:child_process';
import { mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import {
  type CircuitOpenError,
  type PoolOptions,
  type PoolWarning,
  WorkerCrashedError,
  type WorkerInitError,
} from '../../src/index.js';
import {
  allGone,
  fixture,
  isAlive,
  nextEvent,
  pids,
  started,
  testPool,
  until,
} from '../helpers.js';

const forked = (options: Partial<PoolOptions> & { platform?: NodeJS.Platform } = {}) =>
  testPool({ startMethod: 'forkserver', ...options });

/** Field 4 of /proc/<pid>/stat: the parent's pid. */
function ppidOf(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
}

/** The processes whose parent is `pid`, with their state letter (Z: a zombie). */
function childrenOf(pid: number): { pid: number; state: string }[] {
  const out: { pid: number; state: string }[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      if (Number(fields[1]) === pid) out.push({ pid: Number(name), state: fields[0]! });
    } catch {
      // Gone meanwhile.
    }
  }
  return out;
}

/** The fork server's socket directory of this Node process (there is one pool at a time here). */
function socketDirs(): string[] {
  return readdirSync(tmpdir())
    .filter((name) => name.startsWith(`pyvisor-${process.pid}-`))
    .map((name) => join(tmpdir(), name));
}

function warnings(pool: ReturnType<typeof testPool>): PoolWarning[] {
  const seen: PoolWarning[] = [];
  pool.on('warning', (w) => seen.push(w));
  return seen;
}

describe("startMethod 'forkserver'", () => {
  it('forks every worker from one template that imported the script; @on_init runs in each worker', async () => {
    const pool = forked({ script: fixture('fork-state.py'), size: 2 });
    const seen = warnings(pool);
    const printed: { workerId: number; pid: number | null; line: string }[] = [];
    pool.on('worker.stdout', (e) => printed.push(e));
    await pool.ready();
    const [a, b] = pids(pool) as [number, number];
    const template = ppidOf(a);
    expect(ppidOf(b)).toBe(template);
    expect(template).not.toBe(process.pid);
    expect(ppidOf(template)).toBe(process.pid);
    const cmdline = readFileSync(`/proc/${template}/cmdline`, 'utf8');
    expect(cmdline).toContain('pyvisor/__main__.py');
    // Imported once, in the template; initialised in each worker, after the fork.
    const results = await Promise.all([
      pool.call('import_pid', [], { session: 'a' }),
      pool.call('init_pid', [], { session: 'a' }),
      pool.call('pid', [], { session: 'a' }),
    ]);
    expect(results[0]).toBe(template);
    // What the import printed: once, from the template (no worker's line).
    expect(printed).toEqual([{ workerId: -1, pid: template, line: 'fork-state imported' }]);
    expect(results[1]).toBe(results[2]);
    expect(await pool.call('add', [1, 2])).toBe(3);
    // NumPy's OpenBLAS starts a thread pool at import (where there is more than one core): the
    // workers are forked anyway, with a warning that counts the template's threads (it is
    // emitted as soon as the template is ready, before the workers are).
    for (const w of seen) {
      expect(w.code).toBe('WARN_FORK_NATIVE_THREADS');
      expect(w.osThreads).toBeGreaterThan(1);
    }
  });

  it('gives each worker its own stdout and stderr, reseeds its generators and detaches the files of the import', async () => {
    const pool = forked({ script: fixture('fork-state.py'), size: 2 });
    await pool.ready();
    const [a, b] = pids(pool) as [number, number];
    const lines: { pid: number | null; line: string }[] = [];
    pool.on('worker.stdout', (e) => lines.push(e));
    pool.on('worker.stderr', (e) => lines.push(e));
    // Two calls at once: one on each worker, and each session pinned to its worker.
    await Promise.all([
      pool.call('sleep', [0.05], { session: 'a' }),
      pool.call('sleep', [0.05], { session: 'b' }),
    ]);
    await pool.call('noisy', [1], { session: 'a' });
    await pool.call('noisy', [1], { session: 'b' });
    const pa = await pool.call('pid', [], { session: 'a' });
    const pb = await pool.call('pid', [], { session: 'b' });
    expect(new Set([pa, pb])).toEqual(new Set([a, b]));
    for (const pid of [a, b]) {
      const own = lines.filter((l) => l.pid === pid).map((l) => l.line);
      expect(own).toEqual(
        expect.arrayContaining([
          'noisy stdout line 0',
          'noisy stderr line 0',
          'noisy raw fd1 line 0',
        ]),
      );
    }
    const draws = [
      await pool.call('rand', [], { session: 'a' }),
      await pool.call('rand', [], { session: 'b' }),
    ];
    expect(draws[0]).not.toBe(draws[1]);
    const np = [
      await pool.call('np_rand', [], { session: 'a' }),
      await pool.call('np_rand', [], { session: 'b' }),
    ];
    if (np[0] !== null) expect(np[0]).not.toBe(np[1]);
    expect(await pool.call('import_fd')).toBe('/dev/null');
  });

  it('keeps exit codes, signals and stderr tails; replacements are forked and reaped (no zombies)', async () => {
    const pool = forked({ size: 2, restart: { minDelay: 0, maxDelay: 10 } });
    await pool.ready();
    const template = ppidOf(pids(pool)[0]!);
    const crash = (await pool.call('crash', [7]).catch((e: unknown) => e)) as WorkerCrashedError;
    expect(crash).toBeInstanceOf(WorkerCrashedError);
    expect(crash.exitCode).toBe(7);
    expect(crash.signal).toBeNull();
    await pool.ready();
    const victim = pids(pool)[0]!;
    const running = started(pool, 'forked-kill');
    const call = pool.call('sleep', [30, 'forked-kill'], { session: 'k' });
    const pid = (await running)!;
    process.kill(pid, 'SIGKILL');
    const killed = (await call.catch((e: unknown) => e)) as WorkerCrashedError;
    expect(killed.code).toBe('ERR_WORKER_CRASHED');
    expect(killed.signal).toBe('SIGKILL');
    expect(killed.pid).toBe(pid);
    expect(killed.stderr).toContain('started forked-kill');
    await pool.ready();
    for (const p of pids(pool)) expect(ppidOf(p)).toBe(template);
    expect(pids(pool)).not.toContain(pid);
    expect(victim).toBeTypeOf('number');
    // The template reaped both dead workers before it reported them. Its other children: the
    // workers, and maybe the spare it forks ahead of time.
    const children = childrenOf(template);
    expect(children.filter((c) => c.state === 'Z')).toEqual([]);
    expect(children.map((c) => c.pid)).toEqual(expect.arrayContaining(pids(pool)));
    expect(children.length).toBeLessThanOrEqual(pids(pool).length + 1);
  });

  it('runs async handlers side by side in a forked worker (concurrency > 1, async @on_init)', async () => {
    const pool = forked({ script: fixture('aio.py'), concurrency: 8 });
    await pool.ready();
    const t0 = performance.now();
    const naps = await Promise.all(Array.from({ length: 8 }, () => pool.call('nap', [0.2])));
    expect(naps).toEqual(Array(8).fill(0.2));
    // Side by side: far less than 8 × 0.2 s (a generous bound for a loaded machine).
    expect(performance.now() - t0).toBeLessThan(1200);
    expect(await pool.call('fetch')).toMatchObject({ alive: true });
    expect(ppidOf(pids(pool)[0]!)).not.toBe(process.pid);
  });

  it('recycles by forking', async () => {
    const pool = forked({ recycle: { maxCalls: 1 } });
    await pool.ready();
    const first = pids(pool)[0]!;
    const template = ppidOf(first);
    const recycled = nextEvent(pool, 'worker.exit');
    await pool.call('add', [1, 2]);
    expect((await recycled).reason).toBe('stopped');
    await pool.ready();
    expect(pids(pool)[0]).not.toBe(first);
    expect(ppidOf(pids(pool)[0]!)).toBe(template);
  });

  it('a killed template takes every worker with it; the pool forks new ones from a new template, counting one crash', async () => {
    // maxRestarts 1: three workers counted one by one would trip the restart intensity.
    const pool = forked({
      size: 3,
      restart: { minDelay: 0, maxDelay: 10, maxRestarts: 1, coolDown: 60_000 },
    });
    await pool.ready();
    const workers = pids(pool);
    const template = ppidOf(workers[0]!);
    const exits: { signal: string | null }[] = [];
    pool.on('worker.exit', (e) => exits.push(e));
    const running = started(pool, 'in-flight');
    const call = pool.call('sleep', [30, 'in-flight']);
    await running;
    process.kill(template, 'SIGKILL');
    const error = (await call.catch((e: unknown) => e)) as WorkerCrashedError;
    expect(error.code).toBe('ERR_WORKER_CRASHED');
    expect(error.stderr).toContain("the fork server's template");
    await allGone([template, ...workers]);
    await until(
      pool,
      () => exits.length === 3 && pool.stats().workers.every((w) => w.state === 'ready'),
    );
    expect(exits.map((e) => e.signal)).toEqual(['SIGKILL', 'SIGKILL', 'SIGKILL']);
    expect(pool.state).toBe('running');
    const newTemplate = ppidOf(pids(pool)[0]!);
    expect(newTemplate).not.toBe(template);
    expect(await pool.call('add', [1, 2])).toBe(3);
    // A second death within the period is one crash too many.
    const failed = nextEvent(pool, 'pool.failed');
    process.kill(newTemplate, 'SIGKILL');
    expect((await failed).error.code).toBe('ERR_POOL_FAILED');
    await allGone([newTemplate]);
  });

  it('a worker that hangs before it is ready hits initTimeout; the template keeps serving', async () => {
    const pool = forked({
      script: fixture('hang-in-init.py'),
      initTimeout: 1000,
      restart: { minDelay: 10, maxDelay: 20 },
      circuit: { threshold: 3, resetTimeout: 60_000 },
    });
    // The first start also waits for the template; on a loaded machine it may time out before
    // its fork (no pid). A forked one then hangs in @on_init.
    const timedOut = nextEvent(pool, 'worker.exit', (e) => e.pid !== null);
    const ready = pool.ready().catch((e: unknown) => e);
    const exit = await timedOut;
    expect(exit.reason).toBe('initTimedOut');
    await allGone([exit.pid!]);
    const template = findTemplate();
    expect(template).not.toBeNull();
    expect(isAlive(template!)).toBe(true);
    await pool.close();
    expect(((await ready) as CircuitOpenError).code).toMatch(/ERR_POOL_CLOSED|ERR_CIRCUIT_OPEN/);
    await allGone([template!]);
  });

  it('an import error fails each start with the traceback, as with spawn', async () => {
    const pool = forked({
      script: fixture('syntax-error.py'),
      restart: { minDelay: 10, maxDelay: 20 },
      circuit: { threshold: 2 },
    });
    const error = (await pool.ready().catch((e: unknown) => e)) as CircuitOpenError;
    const cause = error.cause as WorkerInitError;
    expect(cause.code).toBe('ERR_WORKER_INIT');
    expect(cause.pythonType).toBe('SyntaxError');
    expect(cause.message).toContain('syntax-error.py');
  });

  it('falls back to spawn with a warning naming the threads the script left running', async () => {
    const pool = forked({ script: fixture('fork-thread.py'), size: 2 });
    const warning = nextEvent(pool, 'warning');
    const seen = warnings(pool);
    await pool.ready();
    const w = await warning;
    expect(w.code).toBe('WARN_FORK_THREADS');
    expect(w.threads).toEqual(['left-running']);
    expect(w.message).toContain('left-running');
    for (const pid of pids(pool)) expect(ppidOf(pid)).toBe(process.pid);
    expect(await pool.call('add', [1, 2])).toBe(3);
    expect(seen).toHaveLength(1);
  });

  it('forks anyway, with a warning counting the OS threads, when native threads run after import', async () => {
    const pool = forked({ script: fixture('fork-native-thread.py'), size: 2 });
    const warning = nextEvent(pool, 'warning');
    await pool.ready();
    const w = await warning;
    expect(w.code).toBe('WARN_FORK_NATIVE_THREADS');
    expect(w.osThreads).toBe(2);
    for (const pid of pids(pool)) expect(ppidOf(pid)).not.toBe(process.pid);
    expect(await pool.call('add', [1, 2])).toBe(3);
  });

  it('falls back to spawn with one warning where it cannot fork (forced: not Linux)', async () => {
    const pool = forked({ size: 2, platform: 'darwin' });
    const seen = warnings(pool);
    await pool.ready();
    for (const pid of pids(pool)) expect(ppidOf(pid)).toBe(process.pid);
    expect(await pool.call('add', [1, 2])).toBe(3);
    await until(pool, () => seen.length > 0);
    expect(seen.map((w) => w.code)).toEqual(['WARN_FORK_UNSUPPORTED']);
    expect(socketDirs()).toEqual([]);
  });

  it('falls back to spawn with one warning when the template dies before it is ready', async () => {
    const pool = forked({ script: fixture('fork-template-dies.py'), size: 2 });
    const warning = nextEvent(pool, 'warning');
    await pool.ready();
    const w = await warning;
    expect(w.code).toBe('WARN_FORK_FAILED');
    expect(w.message).toContain('exited with code 9');
    for (const pid of pids(pool)) expect(ppidOf(pid)).toBe(process.pid);
  });

  it('listens in a private directory, refuses a wrong token, removes the directory on close', async () => {
    const stale = join(tmpdir(), `pyvisor-${await deadPid()}-Stale1`);
    mkdirSync(stale, { mode: 0o700 });
    const pool = forked();
    await pool.ready();
    expect(statSync(stale, { throwIfNoEntry: false })).toBeUndefined();
    const [dir] = socketDirs();
    expect(dir).toBeDefined();
    expect(statSync(dir!).mode & 0o777).toBe(0o700);
    const intruder = connect(join(dir!, 's'));
    const closed = new Promise((resolve) => intruder.on('close', resolve));
    intruder.on('error', () => {});
    intruder.write(`${'0'.repeat(32)}p`);
    await closed;
    expect(await pool.call('add', [1, 2])).toBe(3);
    await pool.close();
    expect(socketDirs()).toEqual([]);
  });

  it('an idle pool does not keep Node alive: a script that forgets close() exits, and the template, its workers and its socket directory go with it', async () => {
    const child = spawn(
      process.execPath,
      ['--import', 'tsx', fixture('keep-alive-script.ts'), 'default', 'forkserver'],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let out = '';
    child.stdout.on('data', (chunk) => {
      out += chunk;
    });
    const code = await new Promise((resolve) => child.on('exit', resolve));
    expect(code).toBe(0);
    const lines = out.trim().split('\n');
    expect(lines).toHaveLength(1);
    const { sum, pids: workerPids } = JSON.parse(lines[0]!) as { sum: number; pids: number[] };
    expect(sum).toBe(3);
    await allGone(workerPids);
    expect(
      readdirSync(tmpdir()).filter((name) => name.startsWith(`pyvisor-${child.pid}-`)),
    ).toEqual([]);
  });

  it('Node SIGKILLed with forked workers busy (one in a GIL-holding C call): template and workers gone within 1 s', async () => {
    const parent = spawn(
      process.execPath,
      [
        '--import',
        'tsx',
        fileURLToPath(new URL('../fixtures/orphan-parent.ts', import.meta.url)),
        'wait',
        'forkserver',
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    const exited = new Promise((resolve) => parent.once('exit', resolve));
    const workerPids = await new Promise<number[]>((resolve, reject) => {
      let out = '';
      parent.stdout.on('data', (chunk) => {
        out += chunk;
        const nl = out.indexOf('\n');
        if (nl >= 0) resolve(JSON.parse(out.slice(0, nl)));
      });
      parent.on('exit', (code) => reject(new Error(`parent exited early with ${code}`)));
    });
    const template = ppidOf(workerPids[0]!);
    expect(ppidOf(template)).toBe(parent.pid);
    // The workers and the spare the template may have forked ahead of time.
    const children = childrenOf(template).map((c) => c.pid);
    expect(children).toEqual(expect.arrayContaining(workerPids));
    parent.kill('SIGKILL');
    await exited;
    await allGone([template, ...children], 1000);
    // A SIGKILLed Node cannot remove its socket directory: the next fork server would (stale).
    for (const name of readdirSync(tmpdir())) {
      if (name.startsWith(`pyvisor-${parent.pid}-`))
        rmSync(join(tmpdir(), name), { recursive: true });
    }
  });
});

/** The template of this Node process: the child of Node running pyvisor with no worker as parent. */
function findTemplate(): number | null {
  for (const child of childrenOf(process.pid)) {
    try {
      const env = readFileSync(`/proc/${child.pid}/environ`, 'utf8');
      if (env.includes('PYVISOR_FORKSERVER=')) return child.pid;
    } catch {
      // Not ours to read, or gone.
    }
  }
  return null;
}

/** The pid of a process that has exited (so no process has it, for a while). */
function deadPid(): Promise<number> {
  const child = spawn('true');
  return new Promise((resolve) => child.on('exit', () => resolve(child.pid!)));
}

describe('reload() with the fork server', () => {
  function app(version: string): { file: string; write: (v: string) => void } {
    const dir = join(
      tmpdir(),
      `pyvisor-fork-reload-${process.pid}-${Math.random().toString(36).slice(2)}`,
    );
    mkdirSync(dir, { recursive: true });
    const file = join(dir, 'app.py');
    const write = (v: string) =>
      writeFileSync(
        file,
        `import os\nfrom pyvisor import handler\n\nVERSION = ${v}\n\n@handler\ndef version():\n    return [VERSION, os.getpid()]\n`,
      );
    write(version);
    return { file, write };
  }

  it('replaces the template first, then every worker, without failing a call; the old template ends', async () => {
    const code = app("'v1'");
    const pool = forked({ script: code.file, size: 2 });
    await pool.ready();
    const oldTemplate = ppidOf(pids(pool)[0]!);
    code.write("'v2'");
    let stop = false;
    const failures: unknown[] = [];
    const load = (async () => {
      while (!stop) await pool.call('version').catch((e: unknown) => failures.push(e));
    })();
    await pool.reload();
    stop = true;
    await load;
    expect(failures).toEqual([]);
    for (const i of [0, 1]) {
      const [version] = await pool.call<[string, number]>('version', [], { session: `s${i}` });
      expect(version).toBe('v2');
    }
    const newTemplate = ppidOf(pids(pool)[0]!);
    expect(newTemplate).not.toBe(oldTemplate);
    expect(ppidOf(pids(pool)[1]!)).toBe(newTemplate);
    await allGone([oldTemplate]);
    await pool.close();
  });

  it('new code that does not import: reload() rejects with ERR_WORKER_INIT and the old template keeps forking', async () => {
    const code = app("'v1'");
    const pool = forked({ script: code.file, size: 1 });
    await pool.ready();
    const template = ppidOf(pids(pool)[0]!);
    writeFileSync(code.file, 'raise RuntimeError("broken on purpose")\n');
    const error = (await pool.reload().catch((e: unknown) => e)) as WorkerInitError;
    expect(error.code).toBe('ERR_WORKER_INIT');
    expect(error.pythonType).toBe('RuntimeError');
    expect(error.pythonTraceback).toContain('broken on purpose');
    expect((await pool.call<[string, number]>('version'))[0]).toBe('v1');
    // A crash replacement still forks from the old template.
    const crashed = nextEvent(pool, 'worker.ready');
    process.kill(pids(pool)[0]!, 'SIGKILL');
    await crashed;
    expect(ppidOf(pids(pool)[0]!)).toBe(template);
    expect(pool.stats().circuit).toBe('closed');
    await pool.close();
  });
});
