/**
 * Usage lines and help texts of the `pyvisor` commands (docs/cli.md has the long version).
 */

/** The commands of the `pyvisor` binary. */
export type CommandName = 'demo' | 'doctor' | 'call' | 'stats' | 'inspect' | 'python-path';

interface CommandHelp {
  usage: string;
  summary: string;
  flags: readonly (readonly [string, string])[];
}

const PYTHON: readonly [string, string] = [
  '--python <path>',
  'interpreter (default: PYVISOR_PYTHON, else python3)',
];

/** Help of every command, in the order `pyvisor --help` lists them. */
export const HELP: Readonly<Record<CommandName, CommandHelp>> = {
  demo: {
    usage: 'pyvisor demo [--size n] [--calls n] [--python path]',
    summary:
      'A pool on the bundled example handlers: calls, a stream, an error, a timeout, a workload with a worker killed half-way, and a table of the results.',
    flags: [
      ['--size <n>', 'workers (default 4)'],
      ['--calls <n>', 'calls in the workload (default 200)'],
      PYTHON,
    ],
  },
  doctor: {
    usage:
      'pyvisor doctor [--script handlers.py] [--python path] [--init-timeout ms] [--concurrency n]',
    summary:
      'Checks the interpreter, imports the script in a worker and lists its handlers; explains each failure. Exit code 0 when healthy, 1 otherwise.',
    flags: [
      ['--script <file>', 'the handler file to check (without it, only the interpreter)'],
      PYTHON,
      ['--init-timeout <ms>', 'time allowed for import and @on_init (default 30000)'],
      [
        '--concurrency <n>',
        'calls per worker of the pool you will make (default 1); async handlers with 1 get a warning',
      ],
    ],
  },
  call: {
    usage: "pyvisor call <script> <fn> ['[args as JSON]'] [--timeout ms] [--python path]",
    summary:
      'Calls one handler once. The result is printed as JSON on stdout; errors go to stderr with exit code 1.',
    flags: [
      ['--timeout <ms>', 'deadline of the call, once the worker is ready'],
      ['--init-timeout <ms>', 'time allowed for import and @on_init (default 30000)'],
      PYTHON,
    ],
  },
  stats: {
    usage: 'pyvisor stats --script <file> [--size n] [--json] [--python path]',
    summary: 'Starts a pool, waits until every worker is ready and prints pool.stats().',
    flags: [
      ['--script <file>', 'the handler file (required)'],
      ['--size <n>', 'workers (default: the number of CPUs)'],
      ['--json', 'print pool.stats() as JSON'],
      ['--init-timeout <ms>', 'time allowed for import and @on_init (default 30000)'],
      PYTHON,
    ],
  },
  inspect: {
    usage:
      'pyvisor inspect --script <file> [--size n] [--port 8080] [--no-open] [--duration ms] [--call fn [--args JSON]]',
    summary:
      'Runs a pool with the Stately inspector attached through a relay on localhost: watch the supervisor, every worker and the circuit breaker live in a browser. Needs @statelyai/inspect.',
    flags: [
      ['--script <file>', 'the handler file (required)'],
      ['--size <n>', 'workers (default 2)'],
      ['--port <port>', 'port of the relay and its page (default 8080)'],
      ['--no-open', 'do not open a browser'],
      ['--duration <ms>', 'stop by itself after this long (a worker is killed half-way)'],
      ['--call <fn>', 'keep calling this handler on every worker'],
      ['--args <JSON>', 'arguments of --call as a JSON array'],
      PYTHON,
    ],
  },
  'python-path': {
    usage: 'pyvisor python-path',
    summary:
      'Prints the directory of pyvisor\'s Python package. Put it on PYTHONPATH to import handler files from plain Python (unit tests, notebooks): PYTHONPATH="$(npx pyvisor python-path)" python3 -m pytest',
    flags: [],
  },
};

/** Help of one command: usage, summary and flags. */
export function commandHelp(name: CommandName): string {
  const { usage, summary, flags } = HELP[name];
  const width = Math.max(0, ...flags.map(([flag]) => flag.length));
  const lines = [`usage: ${usage}`, '', summary];
  if (flags.length > 0)
    lines.push('', ...flags.map(([f, text]) => `  ${f.padEnd(width)}  ${text}`));
  return lines.join('\n');
}

/** `pyvisor --help`. */
export function mainHelp(version: string): string {
  const names = Object.keys(HELP) as CommandName[];
  const width = Math.max(...names.map((n) => n.length));
  return [
    `pyvisor ${version}: run Python in a pool of supervised worker processes`,
    '',
    'usage: pyvisor <command> [options]',
    '',
    ...names.map((n) => `  ${n.padEnd(width)}  ${HELP[n].usage.replace(/^pyvisor \S+ ?/, '')}`),
    '',
    "Run 'pyvisor <command> --help' for details. Docs: docs/cli.md",
  ].join('\n');
}

/** Whether `name` is a command. */
export function isCommand(name: string): name is CommandName {
  return Object.hasOwn(HELP, name);
}
