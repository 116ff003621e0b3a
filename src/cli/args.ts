/**
 * Command-line parsing for the `pyvisor` commands: a thin layer over `node:util`'s `parseArgs`
 * that turns every mistake into a {@link UsageError} (exit code 2) and validates numbers.
 */
import { parseArgs } from 'node:util';

/** Exit codes shared by every command. */
export const EXIT = {
  /** Success; for `doctor`: healthy. */
  ok: 0,
  /** The command ran and something failed (a Python error, an unhealthy script...). */
  failed: 1,
  /** The command line is wrong. */
  usage: 2,
} as const;

/** A wrong command line: printed with the command's usage, exit code 2. */
export class UsageError extends Error {
  override readonly name = 'UsageError';
}

/** One flag: `string` takes a value (`--port 8080` or `--port=8080`), `boolean` does not. */
export interface FlagSpec {
  type: 'string' | 'boolean';
  short?: string;
}

/** Result of {@link parseCommand}. */
export interface ParsedCommand {
  /** Flag values by long name (strings for `string` flags, `true` for booleans given). */
  flags: Record<string, string | boolean | undefined>;
  positionals: string[];
}

/**
 * Parses `argv` (the arguments after the command name) against `spec`. Unknown flags, missing
 * values and more than `maxPositionals` positionals throw {@link UsageError}. `--help`/`-h` is
 * always accepted.
 */
export function parseCommand(
  argv: readonly string[],
  spec: Record<string, FlagSpec>,
  maxPositionals = 0,
): ParsedCommand {
  let parsed: ReturnType<typeof parseArgs>;
  try {
    parsed = parseArgs({
      args: [...argv],
      options: { ...spec, help: { type: 'boolean', short: 'h' } },
      allowPositionals: true,
      strict: true,
    });
  } catch (error) {
    // "Unknown option '--x'. To specify a positional argument starting with a '-', ..."
    const first = (error as Error).message.split('\n')[0]!.split('. To specify')[0]!;
    throw new UsageError(first.charAt(0).toLowerCase() + first.slice(1));
  }
  if (parsed.positionals.length > maxPositionals) {
    const extra = parsed.positionals.slice(maxPositionals).join(' ');
    throw new UsageError(`unexpected argument: ${extra}`);
  }
  return {
    flags: parsed.values as Record<string, string | boolean | undefined>,
    positionals: parsed.positionals,
  };
}

/** The string value of `--name`, or `undefined` when absent. */
export function stringFlag(flags: ParsedCommand['flags'], name: string): string | undefined {
  const value = flags[name];
  return typeof value === 'string' ? value : undefined;
}

/** The string value of `--name`; throws {@link UsageError} when absent or empty. */
export function requiredFlag(flags: ParsedCommand['flags'], name: string): string {
  const value = stringFlag(flags, name);
  if (!value) throw new UsageError(`--${name} is required`);
  return value;
}

/**
 * The integer value of `--name` within `[min, max]`, `fallback` when absent. Throws
 * {@link UsageError} on anything else (`--size 1.5`, `--port abc`).
 */
export function intFlag(
  flags: ParsedCommand['flags'],
  name: string,
  { min = 0, max = Number.MAX_SAFE_INTEGER }: { min?: number; max?: number } = {},
): number | undefined {
  const raw = stringFlag(flags, name);
  if (raw === undefined) return undefined;
  const value = Number(raw);
  if (!/^\d+$/.test(raw.trim()) || !Number.isSafeInteger(value) || value < min || value > max) {
    const range = max === Number.MAX_SAFE_INTEGER ? `≥ ${min}` : `between ${min} and ${max}`;
    throw new UsageError(`--${name} must be an integer ${range}, got '${raw}'`);
  }
  return value;
}

/** A duration flag in ms (`--timeout 500`): a finite number > 0 (or ≥ 0 with `allowZero`). */
export function msFlag(
  flags: ParsedCommand['flags'],
  name: string,
  { allowZero = false }: { allowZero?: boolean } = {},
): number | undefined {
  const raw = stringFlag(flags, name);
  if (raw === undefined) return undefined;
  const value = Number(raw);
  if (raw.trim() === '' || !Number.isFinite(value) || value < 0 || (!allowZero && value === 0)) {
    throw new UsageError(
      `--${name} must be a number of milliseconds ${allowZero ? '≥ 0' : '> 0'}, got '${raw}'`,
    );
  }
  return value;
}

/** Parses a JSON array of call arguments (`'[1, "a"]'`); throws {@link UsageError} otherwise. */
export function jsonArgs(raw: string | undefined, what = 'arguments'): unknown[] {
  if (raw === undefined) return [];
  let value: unknown;
  try {
    value = JSON.parse(raw);
  } catch (error) {
    throw new UsageError(`${what} must be a JSON array: ${(error as Error).message}`);
  }
  if (!Array.isArray(value)) {
    throw new UsageError(
      `${what} must be a JSON array of positional arguments, e.g. '[1, 2]' or '["text"]' (got ${raw})`,
    );
  }
  return value;
}

/** Flags every pool-starting command accepts. */
export const POOL_FLAGS = {
  python: { type: 'string' },
} as const satisfies Record<string, FlagSpec>;

/**
 * The command line of a command that starts a pool of its own on `--script` (`stats`,
 * `inspect`): its own flags plus `--script` (required), `--size` (1 to `maxSize`) and `--python`.
 */
export function parsePoolCommand(
  argv: readonly string[],
  spec: Record<string, FlagSpec>,
  maxSize: number,
): { flags: ParsedCommand['flags']; script: string; size?: number; python?: string } {
  const { flags } = parseCommand(argv, {
    ...POOL_FLAGS,
    script: { type: 'string' },
    size: { type: 'string' },
    ...spec,
  });
  return {
    flags,
    script: requiredFlag(flags, 'script'),
    size: intFlag(flags, 'size', { min: 1, max: maxSize }),
    python: stringFlag(flags, 'python'),
  };
}
