/**
 * Helpers for the CLI tests: run `pyvisor` as a subprocess from the TypeScript sources, find a
 * free port, and read the messages a WebSocket server sends (Node 20 has no WebSocket client).
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { request } from 'node:http';
import { createServer } from 'node:net';
import { fileURLToPath } from 'node:url';

/** The repository root. */
export const ROOT = fileURLToPath(new URL('../../', import.meta.url));

/** Absolute path of a file in test/fixtures. */
export function fixture(name: string): string {
  return fileURLToPath(new URL(`../fixtures/${name}`, import.meta.url));
}

/**
 * The real interpreter binary behind `PYVISOR_PYTHON` or `python3`, resolved once. The CLI
 * processes get it as `PYVISOR_PYTHON`, so that no process spends time (and, on a loaded machine,
 * seconds) resolving a pyenv shim; `pool.close()` does not wait for that resolution, which would
 * blur what the inspect test checks.
 */
export const PYTHON = execFileSync(
  process.env.PYVISOR_PYTHON || 'python3',
  ['-c', 'import sys; print(sys.executable)'],
  { encoding: 'utf8' },
).trim();

/** What a finished `pyvisor` process left behind. */
export interface CliResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  /** Wall time from spawn to exit, ms. */
  ms: number;
}

/** A running `pyvisor` process. */
export interface CliProcess {
  child: ChildProcess;
  /** Everything written to stdout so far. */
  stdout(): string;
  /** Resolves when stdout contains `text`. */
  waitForOutput(text: string): Promise<void>;
  /** Resolves when the process exits. */
  done: Promise<CliResult>;
}

/**
 * Starts `node --import tsx src/cli/index.ts ...args` in the repository root, with stdout and
 * stderr as pipes (not a TTY), without colour variables unless `env` sets them, and with
 * `PYVISOR_PYTHON` set to {@link PYTHON}. Killed with SIGKILL after `timeout` ms, so a hang fails
 * the test instead of blocking the suite.
 */
export function startCli(
  args: readonly string[],
  { env = {}, timeout = 45_000 }: { env?: NodeJS.ProcessEnv; timeout?: number } = {},
): CliProcess {
  const base: NodeJS.ProcessEnv = { ...process.env, PYVISOR_PYTHON: PYTHON };
  delete base.FORCE_COLOR;
  delete base.NO_COLOR;
  const started = performance.now();
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli/index.ts', ...args], {
    cwd: ROOT,
    env: { ...base, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  const waiters: { text: string; resolve: () => void }[] = [];
  child.stdout!.setEncoding('utf8').on('data', (chunk: string) => {
    stdout += chunk;
    for (const w of waiters.filter((w) => stdout.includes(w.text))) {
      waiters.splice(waiters.indexOf(w), 1);
      w.resolve();
    }
  });
  child.stderr!.setEncoding('utf8').on('data', (chunk: string) => {
    stderr += chunk;
  });
  const killer = setTimeout(() => child.kill('SIGKILL'), timeout);
  const done = new Promise<CliResult>((resolve) => {
    child.on('close', (code, signal) => {
      clearTimeout(killer);
      resolve({ code, signal, stdout, stderr, ms: performance.now() - started });
    });
  });
  return {
    child,
    stdout: () => stdout,
    waitForOutput: (text) =>
      stdout.includes(text)
        ? Promise.resolve()
        : new Promise((resolve) => waiters.push({ text, resolve })),
    done,
  };
}

/** Runs `pyvisor ...args` to completion. */
export function runCli(
  args: readonly string[],
  options?: { env?: NodeJS.ProcessEnv; timeout?: number },
): Promise<CliResult> {
  return startCli(args, options).done;
}

/** Per-test timeout for tests that start CLI processes: generous for a loaded 2-core machine. */
export const SLOW = 60_000;

/** A TCP port nobody listens on right now. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, () => {
      const address = server.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

/** Text messages received from a WebSocket server; `close()` drops the connection. */
export interface Received {
  messages: string[];
  close(): void;
}

/**
 * Connects to `ws://localhost:<port>` (retrying while nothing listens, up to `timeout` ms: a
 * generous bound, as the CLI process may take long to start on a loaded machine) and collects
 * the text frames the server sends. Enough of RFC 6455 for a server that sends unfragmented,
 * unmasked frames, as `ws` does.
 */
export async function receiveWebSocket(port: number, timeout = 30_000): Promise<Received> {
  const deadline = performance.now() + timeout;
  for (;;) {
    try {
      return await connectOnce(port);
    } catch (error) {
      if (performance.now() > deadline) throw error;
      await new Promise((r) => setTimeout(r, 25));
    }
  }
}

function connectOnce(port: number): Promise<Received> {
  return new Promise((resolve, reject) => {
    const req = request({
      host: '127.0.0.1',
      port,
      headers: {
        Connection: 'Upgrade',
        Upgrade: 'websocket',
        'Sec-WebSocket-Key': Buffer.from('pyvisor-cli-test').toString('base64'),
        'Sec-WebSocket-Version': '13',
      },
    });
    // Give up on an attempt that hangs (e.g. something accepted but does not answer).
    req.setTimeout(1000, () => req.destroy(new Error('no answer')));
    req.once('error', reject);
    req.once('response', (res) => {
      res.resume();
      reject(new Error(`no upgrade: HTTP ${res.statusCode}`));
    });
    req.once('upgrade', (_res, socket, head) => {
      const messages: string[] = [];
      let buffer: Buffer = Buffer.from(head);
      const parse = () => {
        while (buffer.length >= 2) {
          const opcode = buffer[0]! & 0x0f;
          let length = buffer[1]! & 0x7f;
          let offset = 2;
          if (length === 126) {
            if (buffer.length < 4) return;
            length = buffer.readUInt16BE(2);
            offset = 4;
          } else if (length === 127) {
            if (buffer.length < 10) return;
            length = Number(buffer.readBigUInt64BE(2));
            offset = 10;
          }
          if (buffer.length < offset + length) return;
          const payload = buffer.subarray(offset, offset + length);
          buffer = buffer.subarray(offset + length);
          if (opcode === 1) messages.push(payload.toString('utf8'));
        }
      };
      socket.on('data', (chunk: Buffer) => {
        buffer = Buffer.concat([buffer, chunk]);
        parse();
      });
      socket.on('error', () => {});
      parse();
      resolve({ messages, close: () => socket.destroy() });
    });
    req.end();
  });
}
