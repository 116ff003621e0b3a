/**
 * Process accounting for the reliability suites, straight from /proc (Linux only): which Python
 * workers this Node process has, whether a pid is still alive, how many fds and how much memory
 * Node uses. Nothing here sleeps; callers poll on events or with explicit deadlines.
 */
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';

/** What /proc says about one process. */
export interface ProcInfo {
  pid: number;
  ppid: number;
  /** One-letter state: R, S, D, T (stopped), Z (zombie)... */
  state: string;
  /** Start time in clock ticks since boot: (pid, starttime) names a process even if pids wrap. */
  starttime: number;
  comm: string;
}

/** Parses /proc/<pid>/stat, or null when the process is gone. */
export function procInfo(pid: number): ProcInfo | null {
  let stat: string;
  try {
    stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return null;
  }
  const open = stat.indexOf('(');
  const close = stat.lastIndexOf(')');
  const fields = stat.slice(close + 2).split(' ');
  // fields[0] is field 3 (state); ppid is field 4, starttime field 22.
  return {
    pid,
    comm: stat.slice(open + 1, close),
    state: fields[0] ?? '?',
    ppid: Number(fields[1]),
    starttime: Number(fields[19]),
  };
}

/** The argv of a process, or [] when it is gone. */
export function cmdline(pid: number): string[] {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter(Boolean);
  } catch {
    return [];
  }
}

/** True while the process exists and is not a zombie (dead, waiting to be reaped). */
export function isLive(pid: number): boolean {
  const info = procInfo(pid);
  return info !== null && info.state !== 'Z' && info.state !== 'X';
}

/** A process identity that survives pid reuse. */
export interface ProcId {
  pid: number;
  starttime: number;
}

/** True while that very process (not a later one with the same pid) is alive. */
export function isSameLive(id: ProcId): boolean {
  const info = procInfo(id.pid);
  return info !== null && info.starttime === id.starttime && info.state !== 'Z';
}

function readChildren(tid: string, out: number[]): boolean {
  let text: string;
  try {
    text = readFileSync(`/proc/self/task/${tid}/children`, 'utf8');
  } catch {
    return false;
  }
  for (const p of text.split(' ')) if (p.trim()) out.push(Number(p));
  return true;
}

/**
 * Direct children of this process, via /proc/self/task/<tid>/children (children are listed under
 * the thread that forked them). Every thread is read.
 */
export function childrenOf(): number[] {
  const out: number[] = [];
  for (const tid of readdirSync('/proc/self/task')) readChildren(tid, out);
  return out;
}

// Threads that fork children: the event-loop thread (pools are usually created there) and any
// other found by a full scan (a worker thread, tsx's loader thread that runs esbuild). Reading
// only those, with a full scan every so often, keeps a sample cheap.
const forkers = new Set<string>([String(process.pid)]);
let sinceFullScan = 0;

/** Like {@link childrenOf}, reading the threads known to fork (all of them now and then). */
function childrenFast(): number[] {
  if (++sinceFullScan >= 50) {
    sinceFullScan = 0;
    for (const tid of readdirSync('/proc/self/task')) {
      const probe: number[] = [];
      if (readChildren(tid, probe) && probe.length > 0) forkers.add(tid);
    }
  }
  const out: number[] = [];
  for (const tid of forkers) if (!readChildren(tid, out)) forkers.delete(tid);
  forkers.add(String(process.pid));
  return out;
}

/**
 * True for a pyvisor worker command line: `<python> -u -m pyvisor <script>` or
 * `<python> -u /path/to/python/pyvisor/__main__.py <script>` (both are used).
 */
export function isWorkerCmdline(argv: string[], script?: string): boolean {
  const m = argv.indexOf('-m');
  const isWorker =
    (m >= 0 && argv[m + 1] === 'pyvisor') || argv.some((a) => /pyvisor\/__main__\.py$/.test(a));
  if (!isWorker) return false;
  return script === undefined || argv.includes(script);
}

const cmdlines = new Map<string, string[]>();

/**
 * Live pyvisor worker processes that are children of this Node process (optionally only those
 * running `script`), recognised by their argv. A child between fork and exec still has Node's argv
 * and is not counted; libuv's spawn returns only after the exec, so a spawned worker is visible.
 * Cheap enough to call on every spawn: one read for the children, one per child (argv is cached
 * per process identity).
 */
export function liveWorkers(script?: string): number[] {
  const out: number[] = [];
  for (const pid of childrenFast()) {
    const info = procInfo(pid);
    if (!info || info.state === 'Z' || info.state === 'X') continue;
    const key = `${pid}:${info.starttime}`;
    let argv = cmdlines.get(key);
    if (!argv) {
      argv = cmdline(pid);
      if (isWorkerCmdline(argv)) {
        if (cmdlines.size > 10_000) cmdlines.clear();
        cmdlines.set(key, argv);
      }
    }
    if (isWorkerCmdline(argv, script)) out.push(pid);
  }
  return out;
}

/**
 * Every live process on the machine (any parent: orphans included) that is a pyvisor worker
 * started by Node process `parent` (it carries PYVISOR_PARENT_PID=<parent> in its environment).
 */
export function workersOfParent(parent: number = process.pid): number[] {
  const out: number[] = [];
  const needle = `PYVISOR_PARENT_PID=${parent}\0`;
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const pid = Number(name);
    if (pid === process.pid) continue;
    if (!isWorkerCmdline(cmdline(pid))) continue;
    let env: string;
    try {
      env = readFileSync(`/proc/${pid}/environ`, 'utf8');
    } catch {
      continue;
    }
    if (`${env}\0`.includes(needle) && isLive(pid)) out.push(pid);
  }
  return out;
}

/** Open file descriptors of this process. */
export function fdCount(): number {
  return readdirSync('/proc/self/fd').length;
}

/** What the open fds of this process point at, grouped: { 'pipe': 12, 'socket': 3, ... }. */
export function fdKinds(): Record<string, number> {
  const kinds: Record<string, number> = {};
  for (const fd of readdirSync('/proc/self/fd')) {
    let target = '?';
    try {
      target = readlinkSync(`/proc/self/fd/${fd}`);
    } catch {
      continue;
    }
    const kind = target.startsWith('/') ? 'file' : (target.split(':')[0] ?? '?');
    kinds[kind] = (kinds[kind] ?? 0) + 1;
  }
  return kinds;
}

/** Resident set size of this process in bytes (from /proc, cheaper than memoryUsage()). */
export function rssBytes(): number {
  return process.memoryUsage.rss();
}

const MiB = 1024 * 1024;
/** Bytes as MiB with one decimal. */
export function mib(bytes: number): number {
  return Math.round((bytes / MiB) * 10) / 10;
}

/**
 * Resolves once none of `pids` is alive; rejects after `timeout` ms. Polls /proc every `every` ms
 * (the only way to see a process die that is not our child).
 */
export async function waitGone(
  pids: readonly number[],
  timeout: number,
  every = 5,
): Promise<{ ms: number; perPid: Record<number, number> }> {
  const t0 = performance.now();
  const perPid: Record<number, number> = {};
  for (;;) {
    const now = performance.now() - t0;
    let left = 0;
    for (const pid of pids) {
      if (perPid[pid] !== undefined) continue;
      if (isLive(pid)) left++;
      else perPid[pid] = Math.round(now);
    }
    if (left === 0) return { ms: Math.round(now), perPid };
    if (now > timeout) {
      const alive = pids.filter((p) => perPid[p] === undefined);
      throw new Error(`processes still alive after ${timeout} ms: ${alive.join(', ')}`);
    }
    await new Promise((r) => setTimeout(r, every));
  }
}
