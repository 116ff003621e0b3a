/**
 * The frame every reliability suite shares: a result with parameters, figures and violated
 * invariants; env knobs; and `runMain`, which runs a suite as a script (`node --import tsx
 * scripts/reliability/<suite>.ts`), prints the result as JSON and sets a non-zero exit code when
 * an invariant failed. The scripts never call process.exit(): they must end by themselves once
 * the pool is closed, and a watchdog reports (and fails) a process that is kept alive by a leaked
 * handle.
 */
import { realpathSync } from 'node:fs';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';

/** What a suite run produces. */
export interface SuiteResult {
  suite: string;
  /** What was run (knobs after defaults). */
  params: Record<string, unknown>;
  /** The measurements. */
  figures: Record<string, unknown>;
  /** Invariants that did not hold, each a sentence. Empty when the run passed. */
  violations: string[];
  durationMs: number;
}

/** Collects violated invariants. */
export class Checker {
  readonly violations: string[] = [];

  /** Records `message` unless `ok`. Returns `ok`. */
  check(ok: boolean, message: string): boolean {
    if (!ok) this.violations.push(message);
    return ok;
  }
}

/** The stable code of an error (`ERR_*`), else its name (e.g. `AbortError`), else `unknown`. */
export function errorCode(error: unknown): string {
  if (error && typeof error === 'object') {
    const e = error as { code?: unknown; name?: unknown };
    if (typeof e.code === 'string') return e.code;
    if (typeof e.name === 'string') return e.name;
  }
  return 'unknown';
}

/** Adds one to `counts[key]`. */
export function tally(counts: Record<string, number>, key: string, n = 1): void {
  counts[key] = (counts[key] ?? 0) + n;
}

/** An integer knob from the environment. */
export function envInt(name: string, fallback: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const value = Number(raw);
  if (!Number.isFinite(value)) throw new Error(`${name}=${raw} is not a number`);
  return value;
}

/** Percentile `p` (0..100) of `values` (nearest rank), or null for none. */
export function percentile(values: readonly number[], p: number): number | null {
  if (values.length === 0) return null;
  const sorted = [...values].sort((a, b) => a - b);
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[rank]!;
}

/** Rounds to `digits` decimals. */
export function round(value: number, digits = 1): number {
  const f = 10 ** digits;
  return Math.round(value * f) / f;
}

/** Resolves with `promise`, or with `onTimeout()` after `ms` (the timer never keeps Node alive). */
export function within<T>(promise: Promise<T>, ms: number, onTimeout: () => T): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<T>((resolve) => {
    timer = setTimeout(() => resolve(onTimeout()), ms);
  });
  return Promise.race([promise, deadline]).finally(() => clearTimeout(timer));
}

function isMain(moduleUrl: string): boolean {
  const entry = process.argv[1];
  if (!entry) return false;
  try {
    return realpathSync(entry) === realpathSync(fileURLToPath(moduleUrl));
  } catch {
    return false;
  }
}

/** How long a finished script may take to exit by itself before it counts as leaking handles. */
const EXIT_GRACE_MS = 10_000;

/**
 * When `moduleUrl` is the script being run: runs the suite, prints its result as one JSON
 * document on stdout and sets the exit code (1 if any invariant failed, 2 if the suite threw).
 */
export function runMain(moduleUrl: string, run: () => Promise<SuiteResult>): void {
  if (!isMain(moduleUrl)) return;
  run().then(
    (result) => {
      process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
      if (result.violations.length > 0) process.exitCode = 1;
      armExitWatchdog(result.suite);
    },
    (error: unknown) => {
      process.stderr.write(`suite failed: ${(error as Error)?.stack ?? String(error)}\n`);
      process.exitCode = 2;
      armExitWatchdog('suite');
    },
  );
}

function armExitWatchdog(suite: string): void {
  // Unref'd: it fires only if something else keeps the process alive, i.e. a leaked handle.
  setTimeout(() => {
    const resources = process.getActiveResourcesInfo().filter((r) => r !== 'Timeout');
    process.stderr.write(
      `${suite}: the process did not exit within ${EXIT_GRACE_MS} ms after the suite ended; ` +
        `active resources: ${JSON.stringify(resources)}\n`,
    );
    process.exit(3);
  }, EXIT_GRACE_MS).unref();
}

/** Samples Node's event-loop delay until `stop()`; returns max and p99 in ms. */
export function loopDelay(): { stop(): { p99: number; max: number } } {
  const h = monitorEventLoopDelay({ resolution: 5 });
  h.enable();
  return {
    stop() {
      h.disable();
      return { p99: round(h.percentile(99) / 1e6), max: round(h.max / 1e6) };
    },
  };
}
