/**
 * `pyvisor doctor [--script handlers.py]`: checks the interpreter (path, version, virtual
 * environment), imports the script in one worker, lists its handlers and start-up time, and
 * explains each failure in plain words with the Python traceback. Exit code 0 when healthy.
 */
import { resolve } from 'node:path';
import { ExecaError, execa } from 'execa';
import { createPool, type Pool, type PoolEvents } from '../index.js';
import { PYTHON_DIR } from '../transport/paths.js';
import { EXIT, intFlag, msFlag, POOL_FLAGS, parseCommand, stringFlag } from './args.js';
import { explain, renderEvidence } from './explain.js';
import { duration, indent, plural, type Style, styleFor } from './format.js';

const PROBE = [
  'import json, sys',
  'print(json.dumps({"executable": sys.executable, "version": "%d.%d.%d" % sys.version_info[:3],',
  ' "implementation": sys.implementation.name, "prefix": sys.prefix,',
  ' "base_prefix": getattr(sys, "base_prefix", sys.prefix)}))',
].join('\n');

const MIN_PYTHON: readonly [number, number] = [3, 9];
const DEFAULT_INIT_TIMEOUT = 30_000;

/** What the interpreter says about itself. */
interface InterpreterFacts {
  executable: string;
  version: string;
  implementation: string;
  prefix: string;
  base_prefix: string;
}

/** Prints the checklist and counts problems and warnings. */
class Report {
  problems = 0;
  warnings = 0;
  constructor(readonly s: Style) {}
  section(title: string): void {
    console.log(`\n${this.s.bold(title)}`);
  }
  ok(text: string): void {
    console.log(`  ${this.s.green('✓')} ${text}`);
  }
  fail(text: string): void {
    this.problems++;
    console.log(`  ${this.s.red('✗')} ${text}`);
  }
  warn(text: string): void {
    this.warnings++;
    console.log(`  ${this.s.yellow('!')} ${text}`);
  }
  /** An item that was not checked (not a problem in itself). */
  skip(text: string): void {
    console.log(`  ${this.s.dim(`- ${text}`)}`);
  }
  /** Detail lines under the previous item. */
  detail(text: string): void {
    console.log(indent(text, '    '));
  }
}

function wrap(words: readonly string[], width = 88): string {
  const lines: string[] = [];
  let line = '';
  for (const word of words) {
    if (line && line.length + word.length + 2 > width) {
      lines.push(`${line},`);
      line = word;
    } else line = line ? `${line}, ${word}` : word;
  }
  if (line) lines.push(line);
  return lines.join('\n');
}

async function probe(python: string): Promise<InterpreterFacts | string> {
  try {
    const { stdout } = await execa(python, ['-c', PROBE], { timeout: 15_000 });
    return JSON.parse(stdout.trim().split('\n').pop() ?? '') as InterpreterFacts;
  } catch (error) {
    if (error instanceof ExecaError) {
      if (error.code === 'ENOENT') {
        return python.includes('/') ? 'no such file' : 'not found on PATH';
      }
      if (error.code === 'EACCES') return 'not executable (permission denied)';
      if (error.timedOut) return 'it did not answer within 15 s';
      const stderr = String(error.stderr ?? '').trim();
      return stderr ? `it failed:\n${stderr}` : error.shortMessage;
    }
    return `it printed something unexpected: ${(error as Error).message}`;
  }
}

function checkInterpreter(report: Report, python: string, origin: string, facts: InterpreterFacts) {
  const { s } = report;
  const [major = 0, minor = 0] = facts.version.split('.').map(Number);
  const name = `${facts.implementation === 'cpython' ? 'CPython' : facts.implementation} ${facts.version}`;
  const line = `${python} ${s.dim(`(${origin})`)} → ${facts.executable} (${name})`;
  if (major < MIN_PYTHON[0] || (major === MIN_PYTHON[0] && minor < MIN_PYTHON[1])) {
    report.fail(line);
    report.detail(
      `pyvisor needs Python ${MIN_PYTHON.join('.')} or newer. Point --python (or PYVISOR_PYTHON) at a newer interpreter.`,
    );
  } else report.ok(line);

  const venv = process.env.VIRTUAL_ENV;
  if (facts.prefix !== facts.base_prefix) {
    report.ok(`virtual environment: ${facts.prefix}`);
  } else {
    report.ok(`no virtual environment ${s.dim(`(packages from ${facts.prefix})`)}`);
  }
  if (venv && resolve(venv) !== resolve(facts.prefix)) {
    report.warn(
      `VIRTUAL_ENV is ${venv}, but ${python} runs outside it, so its packages are not visible to your handlers`,
    );
    report.detail(`Use --python ${venv}/bin/python (or set PYVISOR_PYTHON) to run workers in it.`);
  }
  report.ok(`pyvisor's Python package: ${PYTHON_DIR} ${s.dim('(put on PYTHONPATH by pyvisor)')}`);
}

type ReadyInfo = Parameters<PoolEvents['worker.ready']>[0];

async function checkScript(
  report: Report,
  script: string,
  python: string,
  initTimeout: number,
  interpreter: InterpreterFacts,
  concurrency: number,
): Promise<void> {
  const { s } = report;
  let pool: Pool;
  try {
    pool = createPool({
      script,
      python,
      size: 1,
      concurrency,
      name: 'doctor',
      initTimeout,
      healthCheck: false,
      // The first failed start opens the breaker and rejects ready(): no retries to wait for.
      circuit: { threshold: 1 },
    });
  } catch (error) {
    const x = explain(error);
    const missing = (error as { option?: string }).option === 'script';
    report.fail(missing ? 'the script does not exist or is not a file' : x.summary);
    if (x.advice) report.detail(x.advice);
    return;
  }
  const output: string[] = [];
  const collect = ({ line }: { line: string }) => output.push(line);
  pool.on('worker.stdout', collect);
  pool.on('worker.stderr', collect);
  let info: ReadyInfo | null = null;
  pool.on('worker.ready', (event) => {
    info = event;
  });
  try {
    await pool.ready();
    const ready = info as ReadyInfo | null;
    report.ok(
      `imported by a worker (pid ${ready?.pid ?? '?'}) in ${duration(ready?.initMs ?? Number.NaN)} ${s.dim('(spawn, import and @on_init)')}`,
    );
    if (ready && ready.initMs > initTimeout / 2) {
      report.warn(
        `start-up takes more than half of initTimeout (${duration(initTimeout)}); raise it with --init-timeout or make the import faster`,
      );
    }
    if (ready?.executable && ready.executable !== interpreter.executable) {
      report.ok(`the worker runs Python ${ready.version ?? '?'} at ${ready.executable}`);
    }
    const handlers = ready?.handlers;
    if (!handlers) {
      report.warn('this pyvisor version does not report the handler list');
    } else if (handlers.length === 0) {
      report.fail('the script registers no handlers');
      report.detail('Decorate the functions to call from Node with @handler:');
      report.detail(
        '    from pyvisor import handler\n\n    @handler\n    def add(a, b):\n        return a + b',
      );
    } else {
      const names = handlers.map((h) => {
        const kinds = [h.async ? 'async' : '', h.stream ? 'stream' : ''].filter(Boolean);
        return kinds.length > 0 ? `${h.name} ${s.dim(`(${kinds.join(', ')})`)}` : h.name;
      });
      report.ok(`${plural(handlers.length, 'handler')}:`);
      report.detail(wrap(names));
      const async = handlers.filter((h) => h.async).map((h) => h.name);
      if (async.length > 0 && concurrency === 1) {
        report.warn(
          `${plural(async.length, 'async handler')} (${async.join(', ')}), but concurrency is 1: each worker runs one call at a time, so awaiting calls do not overlap`,
        );
        report.detail(
          'Create the pool with `concurrency` above 1 (e.g. createPool({ script, concurrency: 100 })) so that I/O-bound async calls run side by side on each worker; check again with --concurrency 100.',
        );
      }
    }
    await checkRoundTrip(report, pool);
    if (output.length > 0) {
      report.warn(`the worker printed ${plural(output.length, 'line')} while starting:`);
      report.detail(s.dim(output.slice(-20).join('\n')));
    }
  } catch (error) {
    const x = explain(error, { initTimeout });
    report.fail(x.summary);
    if (x.advice) report.detail(x.advice);
    if (x.evidence.length > 0) console.log(renderEvidence(x.evidence, s, '    '));
  } finally {
    await pool.close({ timeout: 1000 });
  }
}

/** A call to a handler that cannot exist proves that calls reach Python and come back. */
async function checkRoundTrip(report: Report, pool: Pool): Promise<void> {
  const started = performance.now();
  try {
    await pool.call('__pyvisor_doctor_probe__', [], { timeout: 5000 });
    report.ok('calls reach the worker and come back');
  } catch (error) {
    const elapsed = performance.now() - started;
    if ((error as { code?: string }).code === 'ERR_UNKNOWN_HANDLER') {
      report.ok(`calls reach the worker and come back in ${duration(elapsed)}`);
      return;
    }
    const x = explain(error);
    report.fail(`a probe call failed: ${x.summary}`);
    if (x.evidence.length > 0) console.log(renderEvidence(x.evidence, report.s, '    '));
  }
}

/** Runs `pyvisor doctor`; resolves with 0 when everything checked is healthy, 1 otherwise. */
export async function doctor(argv: readonly string[]): Promise<number> {
  const { flags } = parseCommand(argv, {
    ...POOL_FLAGS,
    script: { type: 'string' },
    'init-timeout': { type: 'string' },
    concurrency: { type: 'string' },
  });
  const script = stringFlag(flags, 'script');
  const concurrency = intFlag(flags, 'concurrency', { min: 1, max: 10_000 }) ?? 1;
  const initTimeout = msFlag(flags, 'init-timeout') ?? DEFAULT_INIT_TIMEOUT;
  const flagPython = stringFlag(flags, 'python');
  const envPython = process.env.PYVISOR_PYTHON;
  const python = flagPython || envPython || 'python3';
  const origin = flagPython ? '--python' : envPython ? 'PYVISOR_PYTHON' : 'default';
  const report = new Report(styleFor(process.stdout));
  const { s } = report;

  console.log(
    `${s.bold('pyvisor doctor')} ${s.dim(`· Node.js ${process.version} on ${process.platform}-${process.arch}`)}`,
  );
  report.section('interpreter');
  const facts = await probe(python);
  if (typeof facts === 'string') {
    report.fail(`${python} ${s.dim(`(${origin})`)} could not be run: ${facts}`);
    report.detail(
      'Install Python 3.9 or newer, or point --python (or PYVISOR_PYTHON) at one, e.g. --python .venv/bin/python.',
    );
  } else checkInterpreter(report, python, origin, facts);

  if (script) {
    report.section(`script ${resolve(script)}`);
    if (typeof facts === 'string') report.skip('not checked: no interpreter to run it');
    else await checkScript(report, script, python, initTimeout, facts, concurrency);
  } else {
    report.section('script');
    report.skip('not checked: pass --script handlers.py to import it in a worker');
  }

  console.log();
  const warnings = report.warnings ? s.yellow(`, ${plural(report.warnings, 'warning')}`) : '';
  if (report.problems === 0) {
    console.log(`${s.green('✓ healthy')}${warnings}`);
    return EXIT.ok;
  }
  console.log(`${s.red(`✗ ${plural(report.problems, 'problem')} found`)}${warnings}`);
  return EXIT.failed;
}
