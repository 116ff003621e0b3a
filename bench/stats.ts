/** Small statistics and measurement helpers for the benchmarks (no dependencies). */
import { readdirSync, readFileSync } from 'node:fs';

export function sorted(values: ArrayLike<number>): number[] {
  return Array.from(values).sort((a, b) => a - b);
}

/** Percentile by nearest rank on a sorted copy; `p` in [0, 100]. */
export function percentile(values: ArrayLike<number>, p: number): number {
  const s = sorted(values);
  if (s.length === 0) return Number.NaN;
  const rank = Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1));
  return s[rank]!;
}

export function median(values: ArrayLike<number>): number {
  const s = sorted(values);
  if (s.length === 0) return Number.NaN;
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

export function mean(values: ArrayLike<number>): number {
  let sum = 0;
  for (let i = 0; i < values.length; i++) sum += values[i]!;
  return values.length ? sum / values.length : Number.NaN;
}

export function min(values: ArrayLike<number>): number {
  return sorted(values)[0] ?? Number.NaN;
}

export function max(values: ArrayLike<number>): number {
  return sorted(values).at(-1) ?? Number.NaN;
}

/** CPU time of this Node process (all its threads), µs. */
export function nodeCpuUs(): number {
  const { user, system } = process.cpuUsage();
  return user + system;
}

/**
 * CPU time of a process (all its threads), ns, from /proc/<pid>/task/<tid>/schedstat (Linux;
 * precise, unlike the clock ticks of /proc/<pid>/stat). NaN where unavailable.
 */
export function procCpuNs(pid: number | null | undefined): number {
  if (!pid) return Number.NaN;
  try {
    let total = 0;
    for (const tid of readdirSync(`/proc/${pid}/task`)) {
      try {
        total += Number(readFileSync(`/proc/${pid}/task/${tid}/schedstat`, 'utf8').split(' ')[0]);
      } catch {
        // The thread ended in between.
      }
    }
    return total;
  } catch {
    return Number.NaN;
  }
}

export function procsCpuNs(pids: readonly (number | null | undefined)[]): number {
  let total = 0;
  for (const pid of pids) total += procCpuNs(pid);
  return total;
}

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** `1234.5` -> `"1,235"`, with `digits` decimals below 100. */
export function fmt(value: number, digits = 1): string {
  if (!Number.isFinite(value)) return '–';
  if (Math.abs(value) >= 100) return Math.round(value).toLocaleString('en-US');
  return value.toFixed(digits);
}

export function fmtRatio(value: number): string {
  return Number.isFinite(value) ? `${value.toFixed(2)}×` : '–';
}

/** Median of paired ratios, with their spread, e.g. `1.12× (1.05–1.20)`. */
export function ratioSummary(ratios: readonly number[]): { median: number; text: string } {
  const m = median(ratios);
  if (ratios.length < 2) return { median: m, text: fmtRatio(m) };
  return {
    median: m,
    text: `${fmtRatio(m)} (${min(ratios).toFixed(2)}–${max(ratios).toFixed(2)})`,
  };
}
