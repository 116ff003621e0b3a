/**
 * Watches a pool's processes while a suite attacks it: records every worker process it starts
 * (with its /proc start time, so pid reuse cannot confuse the accounting), every exit the pool
 * reports, and samples the number of live worker processes on every state change and on a short
 * interval, keeping the maximum.
 */
import type { Pool } from '../../../src/index.js';
import { isSameLive, liveWorkers, type ProcId, procInfo } from './procs.js';

export interface ExitRecord {
  pid: number | null;
  workerId: number;
  reason: string;
  at: number;
}

export class PoolWatch {
  readonly pool: Pool;
  readonly script: string;
  /** Every worker process seen, by pid. */
  readonly started = new Map<number, ProcId>();
  readonly exits: ExitRecord[] = [];
  readonly exitedPids = new Set<number>();
  /** Highest number of live worker processes seen at once. */
  maxLive = 0;
  /** Samples where live > size + lingering (each a description). */
  readonly overLimit: string[] = [];
  samples = 0;
  #timer: NodeJS.Timeout | null = null;
  #exitWaiters = new Map<number, (() => void)[]>();
  readonly #limit: number;

  constructor(pool: Pool, script: string, sampleEvery = 10) {
    this.pool = pool;
    this.script = script;
    this.#limit = pool.options.size;
    pool.on('worker.state', (e) => {
      if (e.pid !== null && !this.started.has(e.pid)) {
        const info = procInfo(e.pid);
        if (info) this.started.set(e.pid, { pid: e.pid, starttime: info.starttime });
      }
      // The count can only go up when a process is spawned: sample right then.
      if (e.to === 'starting') this.sample();
    });
    pool.on('worker.exit', (e) => {
      this.exits.push({
        pid: e.pid,
        workerId: e.workerId,
        reason: e.reason,
        at: performance.now(),
      });
      if (e.pid !== null) {
        this.exitedPids.add(e.pid);
        for (const resolve of this.#exitWaiters.get(e.pid) ?? []) resolve();
        this.#exitWaiters.delete(e.pid);
      }
    });
    if (sampleEvery > 0) {
      this.#timer = setInterval(() => this.sample(), sampleEvery);
      this.#timer.unref();
    }
  }

  /** Counts live workers now; records an overrun of size + processes that linger after exit. */
  sample(): number {
    this.samples++;
    const live = liveWorkers(this.script);
    const n = live.length;
    if (n > this.maxLive) this.maxLive = n;
    if (n > this.#limit) {
      // Allowed only for processes the pool gave up waiting for (reported exited, still alive).
      const lingering = live.filter((p) => this.exitedPids.has(p)).length;
      if (n > this.#limit + lingering) {
        this.overLimit.push(`${n} live worker processes (size ${this.#limit}): ${live.join(',')}`);
      }
    }
    return n;
  }

  /** Resolves when the pool reported the exit of `pid`. */
  exitOf(pid: number): Promise<void> {
    if (this.exitedPids.has(pid)) return Promise.resolve();
    return new Promise((resolve) => {
      const list = this.#exitWaiters.get(pid) ?? [];
      list.push(resolve);
      this.#exitWaiters.set(pid, list);
    });
  }

  /** Processes the pool started that are still alive. */
  stillAlive(): number[] {
    return [...this.started.values()].filter(isSameLive).map((p) => p.pid);
  }

  stop(): void {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = null;
  }
}
