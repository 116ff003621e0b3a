#!/usr/bin/env node
/**
 * The `pyvisor` command: `demo`, `doctor`, `call`, `stats` and `inspect` (docs/cli.md).
 * Exit codes: 0 success, 1 failure, 2 wrong command line.
 */
import { readFileSync } from 'node:fs';
import { EXIT, UsageError } from './args.js';
import { styleFor } from './format.js';
import { type CommandName, commandHelp, HELP, isCommand, mainHelp } from './help.js';

type Command = (argv: readonly string[]) => Promise<number>;

// Loaded on demand: `--help`, `--version` and usage errors never load the library.
const COMMANDS: Record<CommandName, () => Promise<Command>> = {
  demo: async () => (await import('./demo.js')).demo,
  doctor: async () => (await import('./doctor.js')).doctor,
  call: async () => (await import('./call.js')).call,
  stats: async () => (await import('./stats.js')).stats,
  inspect: async () => (await import('./inspect.js')).inspect,
  'python-path': async () => (await import('./python-path.js')).pythonPath,
};

function version(): string {
  try {
    const url = new URL('../../package.json', import.meta.url);
    return (JSON.parse(readFileSync(url, 'utf8')) as { version?: string }).version ?? 'unknown';
  } catch {
    return 'unknown';
  }
}

function wantsHelp(argv: readonly string[]): boolean {
  const end = argv.indexOf('--');
  return (end === -1 ? argv : argv.slice(0, end)).some((a) => a === '--help' || a === '-h');
}

async function main(argv: readonly string[]): Promise<number> {
  const [command, ...rest] = argv;
  if (command === undefined) {
    console.error(mainHelp(version()));
    return EXIT.usage;
  }
  if (command === '--help' || command === '-h' || command === 'help') {
    const topic = rest[0];
    console.log(topic && isCommand(topic) ? commandHelp(topic) : mainHelp(version()));
    return EXIT.ok;
  }
  if (command === '--version' || command === '-v') {
    console.log(version());
    return EXIT.ok;
  }
  if (!isCommand(command)) {
    console.error(`pyvisor: unknown command '${command}'\n\n${mainHelp(version())}`);
    return EXIT.usage;
  }
  if (wantsHelp(rest)) {
    console.log(commandHelp(command));
    return EXIT.ok;
  }
  try {
    const run = await COMMANDS[command]();
    return await run(rest);
  } catch (error) {
    if (!(error instanceof UsageError)) throw error;
    const s = styleFor(process.stderr);
    console.error(
      `${s.red(`pyvisor ${command}:`)} ${error.message}\nusage: ${HELP[command].usage}`,
    );
    return EXIT.usage;
  }
}

// `pyvisor stats | head -1`: a closed pipe is not an error worth a stack trace.
process.stdout.on('error', (error: NodeJS.ErrnoException) => {
  if (error.code === 'EPIPE') process.exit(process.exitCode ?? 0);
  throw error;
});

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (error: unknown) => {
    console.error(error instanceof Error ? (error.stack ?? error.message) : error);
    process.exitCode = EXIT.failed;
  },
);
