/**
 * Runs every reliability suite at full size, each in its own Node process, and writes the
 * results (the figures published in docs/reliability.md) as one JSON document.
 *
 *   node --import tsx scripts/reliability/all.ts [--out reliability-results.json] [suite ...]
 *   SOAK_SECONDS=600 (default here; the soak script alone defaults to 30)
 *
 * Exits with 1 if any suite reported a violated invariant or did not exit by itself.
 */
import { execFileSync, spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { cpus, release, totalmem } from 'node:os';
import { fileURLToPath } from 'node:url';
import type { SuiteResult } from './lib/suite.js';

const REPO = fileURLToPath(new URL('../../', import.meta.url));

interface Run {
  name: string;
  script: string;
  env?: Record<string, string>;
  gc?: boolean;
}

const RUNS: Run[] = [
  { name: 'storm', script: 'storm.ts' },
  // Killing starting workers counts as start failures, so those slots restart with exponential
  // backoff (up to restart.maxDelay, 10 s): the 5 s recovery bound applies to serving workers.
  {
    name: 'storm-any',
    script: 'storm.ts',
    env: { STORM_TARGETS: 'any', STORM_RECOVERY_BUDGET: '15000' },
  },
  { name: 'crash-loop-fail', script: 'crash-loop.ts', env: { LOOP_FAILURE: 'fail' } },
  { name: 'crash-loop-crash', script: 'crash-loop.ts', env: { LOOP_FAILURE: 'crash' } },
  { name: 'crash-loop-hang', script: 'crash-loop.ts', env: { LOOP_FAILURE: 'hang' } },
  { name: 'orphans', script: 'orphans.ts' },
  { name: 'bad-python', script: 'bad-python.ts', gc: true },
  { name: 'bad-user', script: 'bad-user.ts' },
  { name: 'frozen', script: 'frozen.ts' },
  {
    name: 'soak',
    script: 'soak.ts',
    gc: true,
    env: { SOAK_SECONDS: process.env.SOAK_SECONDS ?? '600' },
  },
];

interface Outcome {
  name: string;
  exitCode: number | null;
  wallMs: number;
  result: SuiteResult | null;
  stderr: string;
}

function runOne(run: Run): Promise<Outcome> {
  const t0 = performance.now();
  const args = [
    ...(run.gc ? ['--expose-gc'] : []),
    '--import',
    'tsx',
    `scripts/reliability/${run.script}`,
  ];
  const child = spawn(process.execPath, args, {
    cwd: REPO,
    env: { ...process.env, ...run.env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  child.stdout.setEncoding('utf8').on('data', (s: string) => {
    out += s;
  });
  child.stderr.setEncoding('utf8').on('data', (s: string) => {
    err += s;
  });
  return new Promise((resolve) => {
    child.once('exit', (code) => {
      let result: SuiteResult | null = null;
      try {
        result = JSON.parse(out) as SuiteResult;
      } catch {
        // Reported through exitCode and stderr.
      }
      resolve({
        name: run.name,
        exitCode: code,
        wallMs: Math.round(performance.now() - t0),
        result,
        stderr: err.slice(-4000),
      });
    });
  });
}

function version(cmd: string, args: string[]): string {
  try {
    return execFileSync(cmd, args, { encoding: 'utf8' }).trim();
  } catch {
    return 'unknown';
  }
}

const argv = process.argv.slice(2);
const outIndex = argv.indexOf('--out');
const outFile = outIndex >= 0 ? argv[outIndex + 1] : undefined;
const only = argv.filter((a, i) => !a.startsWith('--') && (outIndex < 0 || i !== outIndex + 1));
const selected = RUNS.filter((r) => only.length === 0 || only.includes(r.name));

const machine = {
  cpus: cpus().length,
  cpuModel: cpus()[0]?.model ?? 'unknown',
  memoryGiB: Math.round((totalmem() / 2 ** 30) * 10) / 10,
  kernel: release(),
  node: process.version,
  python: version('python3', ['--version']),
};
const started = new Date().toISOString();
const outcomes: Outcome[] = [];
for (const run of selected) {
  process.stderr.write(`running ${run.name}...`);
  const outcome = await runOne(run);
  outcomes.push(outcome);
  const v = outcome.result?.violations.length ?? -1;
  process.stderr.write(
    ` exit ${outcome.exitCode}, ${v < 0 ? 'no result' : `${v} violation(s)`}, ${Math.round(outcome.wallMs / 1000)} s\n`,
  );
}
const report = { started, finished: new Date().toISOString(), machine, outcomes };
const json = `${JSON.stringify(report, null, 2)}\n`;
if (outFile) writeFileSync(outFile, json);
else process.stdout.write(json);
const failed = outcomes.filter((o) => o.exitCode !== 0);
for (const o of failed) {
  process.stderr.write(`\n${o.name} failed (exit ${o.exitCode}):\n`);
  for (const v of o.result?.violations ?? []) process.stderr.write(`  - ${v}\n`);
  if (!o.result) process.stderr.write(o.stderr);
}
process.exitCode = failed.length > 0 ? 1 : 0;
