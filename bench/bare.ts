/**
 * The Node side of the bare baseline: a minimal length-prefixed echo client over fds 3/4, spawned
 * with the same `child_process.spawn` stdio as pyvisor (`['ignore','pipe','pipe','pipe','pipe']`,
 * i.e. the same socket pairs libuv creates for pyvisor's workers). No state machine, no timers,
 * no validation: one call in flight per worker, a FIFO of waiting calls in front of the pool.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import type { Readable, Writable } from 'node:stream';
import { fileURLToPath } from 'node:url';

export const BARE_WORKER = fileURLToPath(new URL('./bare_worker.py', import.meta.url));

// The same decoder as pyvisor's FrameDecoder: V8's UTF-8 path of Buffer#toString is slower
// for large bodies, and the baseline must not lose on a choice that has nothing to do with
// the protocol.
const utf8 = new TextDecoder('utf-8', { fatal: true });

interface Waiter {
  resolve(value: unknown): void;
  reject(error: unknown): void;
}

/** One bare worker process. */
export class BareWorker {
  readonly child: ChildProcess;
  readonly ready: Promise<void>;
  readonly exited: Promise<void>;
  readonly #requests: Writable;
  readonly #raw: boolean;
  #chunks: Buffer[] = [];
  #buffered = 0;
  #need = -1;
  #nextId = 0;
  #readyResolve!: () => void;
  #waiter: Waiter | null = null;

  constructor(python: string, mode: 'json' | 'raw' = 'json') {
    this.#raw = mode === 'raw';
    this.ready = new Promise((resolve) => {
      this.#readyResolve = resolve;
    });
    this.child = spawn(python, ['-u', BARE_WORKER, mode], {
      stdio: ['ignore', 'pipe', 'pipe', 'pipe', 'pipe'],
    });
    this.exited = new Promise((resolve) => this.child.once('exit', () => resolve()));
    const stdio = this.child.stdio as unknown as [null, Readable, Readable, Writable, Readable];
    stdio[1].resume();
    stdio[2].resume();
    this.#requests = stdio[3];
    this.#requests.on('error', () => {});
    stdio[4].on('error', () => {});
    stdio[4].on('data', (chunk: Buffer) => this.#onData(chunk));
    this.child.once('exit', (code, signal) => {
      const w = this.#waiter;
      this.#waiter = null;
      w?.reject(new Error(`bare worker exited (${code ?? signal})`));
    });
  }

  get pid(): number | undefined {
    return this.child.pid;
  }

  /** One JSON call (`echo` or `add`). One at a time per worker. */
  call(fn: string, args: readonly unknown[]): Promise<unknown> {
    const json = JSON.stringify({ t: 'call', id: ++this.#nextId, fn, args });
    const length = Buffer.byteLength(json);
    const frame = Buffer.allocUnsafe(4 + length);
    frame.writeUInt32BE(length, 0);
    frame.write(json, 4, 'utf8');
    return this.#send(frame);
  }

  /** Raw mode: echoes `body` as bytes (no JSON on either side). */
  echoRaw(body: Buffer): Promise<Buffer> {
    const head = Buffer.allocUnsafe(4);
    head.writeUInt32BE(body.length, 0);
    this.#requests.cork();
    this.#requests.write(head);
    this.#requests.write(body);
    this.#requests.uncork();
    return new Promise((resolve, reject) => {
      this.#waiter = { resolve: resolve as (v: unknown) => void, reject };
    });
  }

  #send(frame: Buffer): Promise<unknown> {
    this.#requests.write(frame);
    return new Promise((resolve, reject) => {
      this.#waiter = { resolve, reject };
    });
  }

  kill(): Promise<void> {
    this.child.kill('SIGKILL');
    return this.exited;
  }

  #onData(chunk: Buffer): void {
    this.#chunks.push(chunk);
    this.#buffered += chunk.length;
    for (;;) {
      if (this.#need < 0) {
        if (this.#buffered < 4) return;
        this.#need = this.#take(4).readUInt32BE(0);
      }
      if (this.#buffered < this.#need) return;
      const body = this.#take(this.#need);
      this.#need = -1;
      this.#frame(body);
    }
  }

  #take(n: number): Buffer {
    const first = this.#chunks[0]!;
    let out: Buffer;
    if (first.length === n) {
      out = first;
      this.#chunks.shift();
    } else if (first.length > n) {
      out = first.subarray(0, n);
      this.#chunks[0] = first.subarray(n);
    } else {
      const all = Buffer.concat(this.#chunks, this.#buffered);
      out = all.subarray(0, n);
      this.#chunks = all.length > n ? [all.subarray(n)] : [];
    }
    this.#buffered -= n;
    return out;
  }

  #frame(body: Buffer): void {
    const w = this.#waiter;
    if (this.#raw) {
      if (w === null) {
        this.#readyResolve(); // the ready frame
        return;
      }
      this.#waiter = null;
      w.resolve(body);
      return;
    }
    const msg = JSON.parse(utf8.decode(body)) as { t: string; v?: unknown };
    if (msg.t === 'ready') {
      this.#readyResolve();
      return;
    }
    this.#waiter = null;
    w?.resolve(msg.v);
  }
}

interface Job {
  fn: string;
  args: readonly unknown[];
  resolve(value: unknown): void;
  reject(error: unknown): void;
}

/** N bare workers behind a FIFO: the minimal pool to compare pyvisor's throughput with. */
export class BarePool {
  readonly workers: BareWorker[];
  readonly #idle: BareWorker[] = [];
  readonly #queue: Job[] = [];
  #head = 0;

  constructor(python: string, size: number) {
    this.workers = Array.from({ length: size }, () => new BareWorker(python));
  }

  async ready(): Promise<void> {
    await Promise.all(this.workers.map((w) => w.ready));
    this.#idle.push(...this.workers);
  }

  call(fn: string, args: readonly unknown[]): Promise<unknown> {
    return new Promise((resolve, reject) => {
      const worker = this.#idle.pop();
      if (worker) this.#run(worker, { fn, args, resolve, reject });
      else this.#queue.push({ fn, args, resolve, reject });
    });
  }

  #run(worker: BareWorker, job: Job): void {
    worker.call(job.fn, job.args).then(
      (value) => {
        this.#release(worker);
        job.resolve(value);
      },
      (error) => {
        this.#release(worker);
        job.reject(error);
      },
    );
  }

  #release(worker: BareWorker): void {
    if (this.#head < this.#queue.length) {
      const job = this.#queue[this.#head]!;
      this.#queue[this.#head++] = undefined as unknown as Job;
      if (this.#head === this.#queue.length) {
        this.#queue.length = 0;
        this.#head = 0;
      }
      this.#run(worker, job);
    } else {
      this.#idle.push(worker);
    }
  }

  async close(): Promise<void> {
    await Promise.all(this.workers.map((w) => w.kill()));
  }
}
