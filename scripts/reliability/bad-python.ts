/**
 * Suite 4, bad input from Python: a handler misbehaves on the reply pipe (garbage, a 4 GiB
 * header, a truncated frame, invalid UTF-8, replies with unknown or stale ids, two replies, late
 * garbage), floods stdout/stderr, or closes / dup2s over the protocol fds.
 *
 * Each attack runs on a "victim" worker (pinned by a session) while bystander calls run on the
 * other workers (pinned by their own sessions). Invariants: the attack call gets the expected,
 * clear error (or its value when the attack is harmless); the victim is replaced exactly when it
 * must be; every bystander call succeeds; Node's RSS stays bounded; nothing is left after close.
 *
 *   node --import tsx scripts/reliability/bad-python.ts
 *   BAD_FLOOD_MB=256 (per flood) BAD_ROUNDS=1 BAD_ATTACKS=garbage,huge_header,...
 */
import { createPool, type Pool } from '../../src/index.js';
import { nextEvent } from './lib/events.js';
import { CHAOS_SCRIPT } from './lib/fixtures.js';
import { mib, rssBytes, workersOfParent } from './lib/procs.js';
import { Checker, envInt, errorCode, runMain, type SuiteResult, tally } from './lib/suite.js';
import { PoolWatch } from './lib/watch.js';

export interface Attack {
  /** Name in the report. */
  name: string;
  /** Handler and arguments of the attack call. */
  fn: string;
  args: unknown[];
  /** Codes the attack call may end with ('ok' for a value). */
  expect: string[];
  /** What the error message must say. */
  message?: RegExp;
  /** A value the call must resolve with, when it resolves. */
  value?: unknown;
  /** Whether the victim process must be replaced. */
  replaced: boolean;
  /** Exit reasons the replacement may report. */
  exitReasons?: string[];
  /** A call to make on the victim first (e.g. one that gets cancelled). */
  before?: { fn: string; args: unknown[]; timeout: number };
  /** RSS growth allowed for this attack, MiB. */
  rssBudget?: number;
}

export function attacks(floodMiB: number): Attack[] {
  const flood = floodMiB * 1024 * 1024;
  const protocol = ['protocolError'];
  return [
    {
      name: 'garbage bytes',
      fn: 'attack',
      args: ['garbage'],
      expect: ['ERR_PROTOCOL'],
      message: /over the \d+-byte limit|not valid|incomplete/,
      replaced: true,
      exitReasons: protocol,
    },
    {
      name: 'header announcing 4 GiB',
      fn: 'attack',
      args: ['huge_header'],
      expect: ['ERR_PROTOCOL'],
      message: /4294967295-byte frame.*maxMessageSize/,
      replaced: true,
      exitReasons: protocol,
      rssBudget: 32,
    },
    {
      name: 'truncated frame',
      fn: 'attack',
      args: ['truncated'],
      expect: ['ERR_PROTOCOL'],
      message: /incomplete frame/,
      replaced: true,
      exitReasons: protocol,
    },
    {
      name: 'invalid UTF-8',
      fn: 'attack',
      args: ['bad_utf8'],
      expect: ['ERR_PROTOCOL'],
      message: /not valid UTF-8/,
      replaced: true,
      exitReasons: protocol,
    },
    {
      name: 'reply with an unknown id',
      fn: 'attack',
      args: ['unknown_id'],
      expect: ['ERR_PROTOCOL'],
      message: /unexpected 'ok' frame \(id 987654321\)/,
      replaced: true,
      exitReasons: protocol,
    },
    {
      name: 'reply for a cancelled call',
      fn: 'attack',
      args: ['stale_id'],
      before: { fn: 'cancellable', args: [30], timeout: 200 },
      expect: ['ERR_PROTOCOL'],
      message: /unexpected 'ok' frame \(id \d+\)/,
      replaced: true,
      exitReasons: protocol,
    },
    {
      name: 'two replies for one call',
      fn: 'attack',
      args: ['double_reply'],
      expect: ['ok'],
      value: 'first',
      replaced: true,
      exitReasons: protocol,
    },
    {
      name: 'garbage while idle',
      fn: 'attack',
      args: ['late_garbage'],
      expect: ['ok'],
      value: 'survived late_garbage',
      replaced: true,
      exitReasons: protocol,
    },
    {
      name: 'frame of unknown type',
      fn: 'attack',
      args: ['unknown_type'],
      expect: ['ERR_PROTOCOL'],
      message: /unknown type/,
      replaced: true,
      exitReasons: protocol,
    },
    {
      name: 'JSON that is not an object',
      fn: 'attack',
      args: ['not_object'],
      expect: ['ERR_PROTOCOL'],
      message: /not a JSON object/,
      replaced: true,
      exitReasons: protocol,
    },
    {
      name: 'close(4)',
      fn: 'attack',
      args: ['close_fd4'],
      expect: ['ok'],
      value: 'survived close_fd4',
      replaced: false,
    },
    {
      name: 'dup2 over fds 3 and 4',
      fn: 'attack',
      args: ['dup2_fd34'],
      expect: ['ok'],
      value: 'survived dup2_fd34',
      replaced: false,
    },
    {
      name: 'close the real reply pipe',
      fn: 'attack',
      args: ['close_reply'],
      expect: ['ERR_WORKER_CRASHED', 'ERR_PROTOCOL'],
      message: /reply pipe|exited with code 3/,
      replaced: true,
      exitReasons: ['crashed', 'protocolError'],
    },
    {
      name: 'dup2 over the real reply pipe',
      fn: 'attack',
      args: ['dup2_reply'],
      expect: ['ERR_PROTOCOL', 'ERR_WORKER_CRASHED'],
      message: /reply pipe/,
      replaced: true,
      exitReasons: ['crashed', 'protocolError'],
    },
    {
      name: 'dup2 over the real request pipe',
      fn: 'attack',
      args: ['dup2_request'],
      expect: ['ERR_WORKER_CRASHED', 'ERR_PROTOCOL'],
      replaced: true,
      exitReasons: ['crashed', 'protocolError'],
    },
    {
      name: `stderr flood, ${floodMiB} MiB of 8 KiB lines`,
      fn: 'flood',
      args: ['stderr', flood, 8191],
      expect: ['ok'],
      value: flood,
      replaced: false,
      rssBudget: 64,
    },
    {
      name: `stderr flood, ${floodMiB} MiB without a newline`,
      fn: 'flood',
      args: ['stderr', flood, 0],
      expect: ['ok'],
      value: flood,
      replaced: false,
      rssBudget: 64,
    },
    {
      name: `stdout flood, ${floodMiB} MiB without a newline`,
      fn: 'flood',
      args: ['stdout', flood, 0],
      expect: ['ok'],
      value: flood,
      replaced: false,
      rssBudget: 64,
    },
  ];
}

export interface BadPythonParams {
  floodMiB: number;
  /** Only these attacks (by args[0] or fn), all when empty. */
  only: string[];
  rounds: number;
  /** Bystander sessions (each pinned to its own worker). */
  bystanders: number;
}

export const BAD_PYTHON_DEFAULTS: BadPythonParams = {
  floodMiB: 256,
  only: [],
  rounds: 1,
  bystanders: 2,
};

interface AttackFigures {
  outcome: string;
  ms: number;
  replaced: boolean;
  exitReason: string | null;
  bystanderCalls: number;
  bystanderFailures: number;
  rssGrowthMiB: number;
  peakRssGrowthMiB: number;
  message?: string;
}

/** Binds `sessions` to distinct workers: one concurrent call each, while all workers are idle. */
async function bindSessions(pool: Pool, sessions: string[]): Promise<Map<string, number>> {
  await pool.ready();
  const pids = await Promise.all(
    sessions.map((session) =>
      pool
        .call('sleep_ms', [30], { session })
        .then(() => pool.call<number>('pid', [], { session })),
    ),
  );
  const map = new Map(sessions.map((s, i) => [s, pids[i]!] as const));
  if (new Set(pids).size !== sessions.length) throw new Error(`sessions share workers: ${pids}`);
  return map;
}

export async function runBadPython(overrides: Partial<BadPythonParams> = {}): Promise<SuiteResult> {
  const p: BadPythonParams = { ...BAD_PYTHON_DEFAULTS, ...overrides };
  const c = new Checker();
  const t0 = performance.now();
  const pool = createPool({
    script: CHAOS_SCRIPT,
    size: p.bystanders + 1,
    cancelGrace: 1000,
    restart: { maxRestarts: 1000 },
  });
  const watch = new PoolWatch(pool, CHAOS_SCRIPT);
  let stderrLines = 0;
  let stdoutLines = 0;
  pool.on('worker.stderr', () => stderrLines++);
  pool.on('worker.stdout', () => stdoutLines++);
  await pool.ready();
  global.gc?.();
  const rssStart = rssBytes();
  let rssPeak = rssStart;
  const rssTimer = setInterval(() => {
    rssPeak = Math.max(rssPeak, rssBytes());
  }, 20);
  rssTimer.unref();

  const selected = attacks(p.floodMiB).filter(
    (a) => p.only.length === 0 || p.only.includes(String(a.args[0])) || p.only.includes(a.fn),
  );
  const perAttack: Record<string, AttackFigures> = {};
  const outcomes: Record<string, number> = {};
  for (let round = 0; round < p.rounds; round++) {
    for (const attack of selected) {
      const victim = `victim-${round}-${attack.args[0]}-${attack.fn}`;
      const bystanders = Array.from(
        { length: p.bystanders },
        (_, i) => `by-${round}-${attack.name}-${i}`,
      );
      const bound = await bindSessions(pool, [victim, ...bystanders]);
      const victimPid = bound.get(victim)!;
      global.gc?.();
      const rssBefore = rssBytes();
      let peak = rssBefore;
      const peakTimer = setInterval(() => {
        peak = Math.max(peak, rssBytes());
      }, 10);

      // Bystanders: call their own workers in a loop until the attack is over.
      let attacking = true;
      let bystanderCalls = 0;
      const bystanderFailures: string[] = [];
      const loops = bystanders.map(async (session) => {
        let i = 0;
        while (attacking) {
          i++;
          const v = await pool.call('add', [i, 1], { session }).catch((e: unknown) => e);
          bystanderCalls++;
          if (v !== i + 1) bystanderFailures.push(`${errorCode(v)}: ${(v as Error)?.message}`);
          if (bound.get(session) !== (await pool.call('pid', [], { session }))) {
            bystanderFailures.push(`bystander ${session} moved to another worker`);
          }
        }
      });

      const exited = attack.replaced
        ? nextEvent(pool, 'worker.exit', (e) => e.pid === victimPid, 15_000)
        : null;
      if (attack.before) {
        const b = attack.before;
        const e = await pool
          .call(b.fn, b.args, { session: victim, timeout: b.timeout })
          .catch((error: unknown) => error);
        c.check(
          errorCode(e) === 'ERR_CALL_TIMEOUT',
          `${attack.name}: set-up call gave ${errorCode(e)}`,
        );
      }
      const s = performance.now();
      const result = await pool
        .call(attack.fn, attack.args, { session: victim, timeout: 30_000 })
        .then(
          (value) => ({ code: 'ok', value, message: '' }),
          (error: unknown) => ({
            code: errorCode(error),
            value: undefined,
            message: String((error as Error)?.message ?? ''),
          }),
        );
      const ms = Math.round(performance.now() - s);
      let exitReason: string | null = null;
      if (exited) {
        exitReason = await exited.then(
          (e) => e.reason,
          () => null,
        );
      }
      await pool.ready();
      attacking = false;
      await Promise.all(loops);
      clearInterval(peakTimer);
      global.gc?.();
      const rssAfter = rssBytes();

      tally(outcomes, result.code);
      c.check(
        attack.expect.includes(result.code),
        `${attack.name}: the call ended with ${result.code} (${result.message.split('\n')[0]}), expected ${attack.expect.join(' or ')}`,
      );
      if (result.code !== 'ok' && attack.message) {
        c.check(
          attack.message.test(result.message),
          `${attack.name}: message ${JSON.stringify(result.message.split('\n')[0])} does not match ${attack.message}`,
        );
      }
      if (result.code === 'ok' && attack.value !== undefined) {
        c.check(
          result.value === attack.value,
          `${attack.name}: resolved with ${JSON.stringify(result.value)}, expected ${JSON.stringify(attack.value)}`,
        );
      }
      const nowPid = await pool.call<number>('pid', [], { session: victim });
      const replaced = nowPid !== victimPid;
      c.check(
        replaced === attack.replaced,
        `${attack.name}: the victim was ${replaced ? '' : 'not '}replaced`,
      );
      if (attack.replaced) {
        c.check(
          exitReason !== null && (attack.exitReasons ?? []).includes(exitReason),
          `${attack.name}: the victim ended as ${exitReason}, expected ${attack.exitReasons?.join(' or ')}`,
        );
      }
      c.check(
        bystanderFailures.length === 0,
        `${attack.name}: bystander calls failed: ${bystanderFailures.slice(0, 3).join('; ')}`,
      );
      const growth = mib(rssAfter - rssBefore);
      const peakGrowth = mib(peak - rssBefore);
      if (attack.rssBudget !== undefined) {
        c.check(
          peakGrowth <= attack.rssBudget,
          `${attack.name}: Node's RSS grew by ${peakGrowth} MiB at peak (budget ${attack.rssBudget} MiB)`,
        );
      }
      perAttack[attack.name] = {
        outcome: result.code,
        ms,
        replaced,
        exitReason,
        bystanderCalls,
        bystanderFailures: bystanderFailures.length,
        rssGrowthMiB: growth,
        peakRssGrowthMiB: peakGrowth,
        ...(result.message ? { message: result.message.split('\n')[0]!.slice(0, 160) } : {}),
      };
    }
  }
  clearInterval(rssTimer);
  global.gc?.();
  const rssEnd = rssBytes();
  c.check(watch.overLimit.length === 0, `too many live workers: ${watch.overLimit[0]}`);
  await pool.close();
  watch.stop();
  const left = workersOfParent();
  c.check(left.length === 0, `processes left after close(): ${left.join(',')}`);
  const alive = watch.stillAlive();
  c.check(alive.length === 0, `started processes still alive: ${alive.join(',')}`);
  return {
    suite: 'bad-python',
    params: { ...p },
    figures: {
      attacks: Object.keys(perAttack).length * p.rounds,
      outcomes,
      perAttack,
      stderrLinesSeen: stderrLines,
      stdoutLinesSeen: stdoutLines,
      rssMiB: { start: mib(rssStart), peak: mib(rssPeak), end: mib(rssEnd) },
      workerProcessesStarted: watch.started.size,
      processesLeftAfterClose: left.length,
    },
    violations: c.violations,
    durationMs: Math.round(performance.now() - t0),
  };
}

runMain(import.meta.url, () =>
  runBadPython({
    floodMiB: envInt('BAD_FLOOD_MB', BAD_PYTHON_DEFAULTS.floodMiB),
    rounds: envInt('BAD_ROUNDS', BAD_PYTHON_DEFAULTS.rounds),
    only: process.env.BAD_ATTACKS ? process.env.BAD_ATTACKS.split(',') : [],
  }),
);
