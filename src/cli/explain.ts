/**
 * Turns pyvisor errors into plain words for the terminal: what went wrong, what to do about it,
 * and the evidence (Python traceback, the worker's stderr).
 */
import type { PyvisorError } from '../errors.js';
import { indent, type Style } from './format.js';

/** A section of evidence under an explanation, e.g. the Python traceback. */
export interface Evidence {
  title: string;
  text: string;
}

/** An error explained for humans. */
export interface Explanation {
  /** The stable error code (`ERR_...`), or the error's class name for foreign errors. */
  code: string;
  /** First line of the error's own message. */
  message: string;
  /** What happened, in plain words, one sentence. */
  summary: string;
  /** What to do about it, when there is something to say. */
  advice?: string;
  /** Tracebacks, stderr tails and underlying causes, in the order to print them. */
  evidence: Evidence[];
}

type ErrorFields = Partial<PyvisorError> & {
  reason?: string;
  option?: string;
  python?: string;
  pythonType?: string;
  pythonTraceback?: string;
  stderr?: string;
  exitCode?: number | null;
  signal?: string | null;
  timeout?: number;
};

const STDERR_TITLE = 'worker stderr (last lines)';

function fields(error: unknown): ErrorFields {
  return error && typeof error === 'object' ? (error as ErrorFields) : {};
}

function firstLine(text: string): string {
  return text.split('\n', 1)[0] ?? '';
}

function lastLine(text: string): string {
  return text.trimEnd().split('\n').pop() ?? '';
}

function exitWords(e: ErrorFields): string {
  if (e.signal) return `was killed by ${e.signal}`;
  if (e.exitCode !== undefined && e.exitCode !== null) return `exited with code ${e.exitCode}`;
  return 'died';
}

function addProcessEvidence(e: ErrorFields, evidence: Evidence[]): void {
  if (e.pythonTraceback) evidence.push({ title: 'Python traceback', text: e.pythonTraceback });
  if (e.stderr) evidence.push({ title: STDERR_TITLE, text: e.stderr });
}

/** What the caller knows that the error does not carry. */
export interface ExplainContext {
  /** The pool's `initTimeout`, for start-up timeouts. */
  initTimeout?: number;
}

function explainInit(e: ErrorFields, base: Explanation, context: ExplainContext): Explanation {
  const evidence: Evidence[] = [];
  addProcessEvidence(e, evidence);
  const what = e.pythonTraceback
    ? lastLine(e.pythonTraceback)
    : (base.message.split('failed to initialise: ')[1] ?? '');
  switch (e.reason) {
    case 'error':
      return {
        ...base,
        summary: `importing the script (or one of its @on_init functions) raised ${what}`,
        advice: 'Fix the error shown in the traceback below, then try again.',
        evidence,
      };
    case 'crash':
      return {
        ...base,
        summary: `the worker process ${exitWords(e)} while importing the script, before it was ready`,
        advice:
          'Something ends the process at import time: sys.exit() or os._exit() at module level, ' +
          `or a crash in a C extension. ${e.stderr ? 'Its stderr is below.' : 'It wrote nothing to stderr.'}`,
        evidence,
      };
    case 'timeout':
      return {
        ...base,
        summary: `importing the script and running its @on_init functions took longer than initTimeout${context.initTimeout ? ` (${context.initTimeout} ms)` : ''}`,
        advice: 'Make the import faster, or allow more time (--init-timeout <ms>).',
        evidence,
      };
    default:
      return {
        ...base,
        summary: 'the worker process could not be started',
        advice: 'Check that the interpreter runs: <python> -c "print(1)".',
        evidence,
      };
  }
}

/** Explains any error thrown by pyvisor (or anything else) in plain words. */
export function explain(error: unknown, context: ExplainContext = {}): Explanation {
  const e = fields(error);
  const code = typeof e.code === 'string' ? e.code : error instanceof Error ? error.name : 'Error';
  const message = firstLine(error instanceof Error ? error.message : String(error));
  const base: Explanation = { code, message, summary: message, evidence: [] };
  const cause = fields(e.cause);
  switch (code) {
    case 'ERR_CIRCUIT_OPEN':
      if (cause.code === 'ERR_WORKER_INIT') return explainInit(cause, base, context);
      return base;
    case 'ERR_WORKER_INIT':
      return explainInit(e, base, context);
    case 'ERR_POOL_FAILED':
      if (cause.code === 'ERR_PYTHON_NOT_FOUND') {
        const why = cause.cause instanceof Error ? firstLine(cause.cause.message) : '';
        return {
          ...base,
          summary: `the Python interpreter '${cause.python}' could not be run`,
          advice:
            'Install Python 3.9 or newer, or point --python (or PYVISOR_PYTHON) at one, ' +
            'e.g. --python .venv/bin/python.',
          evidence: why ? [{ title: 'error', text: why }] : [],
        };
      }
      return {
        ...base,
        summary:
          'the pool failed: workers crashed too often (restart intensity exceeded)' +
          ((e as { retryAt?: number }).retryAt === undefined
            ? ''
            : '; it starts its workers again after a cool-down (restart.coolDown)'),
        evidence:
          e.cause instanceof Error
            ? [{ title: 'last crash', text: (e.cause as Error).message }]
            : [],
      };
    case 'ERR_INVALID_OPTION':
      if (e.option === 'script') {
        return { ...base, advice: 'Check the path: it is relative to the current directory.' };
      }
      return base;
    case 'ERR_PYTHON':
    case 'ERR_SERIALIZATION':
      return {
        ...base,
        evidence: e.pythonTraceback ? [{ title: 'Python traceback', text: e.pythonTraceback }] : [],
      };
    case 'ERR_WORKER_CRASHED': {
      const evidence: Evidence[] = [];
      addProcessEvidence(e, evidence);
      return { ...base, summary: `the worker ${exitWords(e)} while running the call`, evidence };
    }
    case 'ERR_CALL_TIMEOUT':
      return { ...base, advice: 'Allow more time with --timeout <ms>.' };
    default:
      return base;
  }
}

/** Renders the evidence of an explanation, each section under its title, indented. */
export function renderEvidence(evidence: readonly Evidence[], style: Style, pad = '  '): string {
  return evidence
    .map(({ title, text }) => `${pad}${style.dim(`${title}:`)}\n${indent(text, `${pad}  `)}`)
    .join('\n');
}

/**
 * The `code: message` line followed by the explanation and the evidence, as the commands print a
 * failure on stderr. `stderrShown`: the worker's stderr was already forwarded live, so its tail
 * is not repeated.
 */
export function renderError(
  error: unknown,
  style: Style,
  { stderrShown = false }: { stderrShown?: boolean } = {},
): string {
  const x = explain(error);
  const evidence = stderrShown ? x.evidence.filter((e) => e.title !== STDERR_TITLE) : x.evidence;
  const lines = [`${style.red(x.code)}: ${x.message}`];
  if (x.summary !== x.message) lines.push(`  ${x.summary}`);
  if (x.advice) lines.push(`  ${x.advice}`);
  if (evidence.length > 0) lines.push(renderEvidence(evidence, style));
  return lines.join('\n');
}
