/**
 * Suite 3, orphans: the Node parent dies while its workers are idle, busy in a Python loop,
 * blocked in time.sleep (a C call that releases the GIL) and blocked in a C call that holds the
 * GIL. Every worker must be gone within `budget` ms of the parent's death, whatever killed it:
 * SIGKILL, SIGTERM, process.exit(), an uncaught exception, an unhandled rejection.
 *
 *   node --import tsx scripts/reliability/orphans.ts
 *   ORPHAN_ROUNDS=3 (rounds per mode) ORPHAN_MODES=sigkill,sigterm,exit,throw,reject
 */
import { execFileSync, spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { chaosFixture } from './lib/fixtures.js';
import { isLive, procInfo, waitGone, workersOfParent } from './lib/procs.js';
import { Checker, envInt, runMain, type SuiteResult } from './lib/suite.js';

export type OrphanMode = 'sigkill' | 'sigterm' | 'exit' | 'throw' | 'reject';
export const ORPHAN_MODES: OrphanMode[] = ['sigkill', 'sigterm', 'exit', 'throw', 'reject'];

export interface OrphanParams {
  modes: OrphanMode[];
  rounds: number;
  /** Every worker must be gone this long after the parent died, ms. */
  budget: number;
}

export const ORPHAN_DEFAULTS: OrphanParams = { modes: ORPHAN_MODES, rounds: 3, budget: 1000 };

const REPO = fileURLToPath(new URL('../../', import.meta.url));
const PARENT = chaosFixture('orphan-parent.ts');

type Roles = Record<'idle' | 'loop' | 'sleep' | 'gil', number>;

let python: string | undefined = process.env.PYVISOR_PYTHON;
/** The real interpreter binary, so each parent skips resolving a pyenv shim (~1 s). */
function realPython(): string {
  python ??= execFileSync('python3', ['-c', 'import sys; print(sys.executable)'], {
    encoding: 'utf8',
  }).trim();
  return python;
}

/**
 * Runs one parent in `mode`; returns the role → pid map and each worker's ms to death (-1 for a
 * worker still alive `budget` + 5 s after the parent died).
 */
export async function orphanRound(
  mode: OrphanMode,
  budget = ORPHAN_DEFAULTS.budget,
): Promise<{
  roles: Roles;
  goneMs: Record<string, number>;
  parentExit: string;
  leftover: number[];
}> {
  const child = spawn(
    process.execPath,
    ['--import', 'tsx', PARENT, mode === 'sigkill' || mode === 'sigterm' ? 'wait' : mode],
    {
      cwd: REPO,
      env: { ...process.env, PYVISOR_PYTHON: realPython() },
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (s: string) => {
    stderr += s;
  });
  let exitedAt = 0;
  let parentExit = '';
  const exited = new Promise<void>((resolve) => {
    child.once('exit', (code, signal) => {
      exitedAt = performance.now();
      parentExit = signal ?? `code ${code}`;
      resolve();
    });
  });
  const roles = await new Promise<Roles>((resolve, reject) => {
    let out = '';
    child.stdout.setEncoding('utf8').on('data', (s: string) => {
      out += s;
      const nl = out.indexOf('\n');
      if (nl >= 0) resolve(JSON.parse(out.slice(0, nl)));
    });
    exited.then(() => reject(new Error(`parent exited early (${parentExit}): ${stderr}`)));
  });
  for (const [role, pid] of Object.entries(roles)) {
    if (!isLive(pid))
      throw new Error(
        `the ${role} worker ${pid} is not alive before the test: ${JSON.stringify(procInfo(pid))} ${stderr}`,
      );
  }
  if (mode === 'sigkill') child.kill('SIGKILL');
  if (mode === 'sigterm') child.kill('SIGTERM');
  await exited;
  const pids = Object.values(roles);
  const byPid: Record<number, number> = {};
  // Worker deaths are measured from the moment this process saw the parent's exit.
  const offset = performance.now() - exitedAt;
  try {
    const gone = await waitGone(pids, budget + 5000, 2);
    Object.assign(byPid, gone.perPid);
  } catch {
    // Reported below as leftovers.
  }
  const goneMs: Record<string, number> = {};
  for (const [role, pid] of Object.entries(roles)) {
    goneMs[role] = byPid[pid] === undefined ? -1 : Math.round(byPid[pid]! + offset);
  }
  const leftover = workersOfParent(child.pid!);
  return { roles, goneMs, parentExit, leftover };
}

export async function runOrphans(overrides: Partial<OrphanParams> = {}): Promise<SuiteResult> {
  const p: OrphanParams = { ...ORPHAN_DEFAULTS, ...overrides };
  const c = new Checker();
  const t0 = performance.now();
  const perMode: Record<string, { worstMs: Record<string, number>; parentExit: string[] }> = {};
  for (const mode of p.modes) {
    const worstMs: Record<string, number> = {};
    const parentExit: string[] = [];
    for (let r = 0; r < p.rounds; r++) {
      const round = await orphanRound(mode, p.budget);
      parentExit.push(round.parentExit);
      for (const [role, ms] of Object.entries(round.goneMs)) {
        c.check(
          ms >= 0 && ms <= p.budget,
          `${mode}: the ${role} worker ${ms < 0 ? 'did not exit' : `took ${ms} ms to exit`} (budget ${p.budget} ms)`,
        );
        worstMs[role] = ms < 0 ? Number.POSITIVE_INFINITY : Math.max(worstMs[role] ?? 0, ms);
      }
      c.check(
        round.leftover.length === 0,
        `${mode}: workers of the dead parent still alive: ${round.leftover.join(',')}`,
      );
    }
    perMode[mode] = { worstMs, parentExit: [...new Set(parentExit)] };
  }
  return {
    suite: 'orphans',
    params: { ...p },
    figures: { parents: p.modes.length * p.rounds, workersPerParent: 4, perMode },
    violations: c.violations,
    durationMs: Math.round(performance.now() - t0),
  };
}

runMain(import.meta.url, () =>
  runOrphans({
    rounds: envInt('ORPHAN_ROUNDS', ORPHAN_DEFAULTS.rounds),
    modes: process.env.ORPHAN_MODES
      ? (process.env.ORPHAN_MODES.split(',') as OrphanMode[])
      : ORPHAN_DEFAULTS.modes,
  }),
);
