/**
 * Terminal output helpers shared by the commands: colours (only on a TTY, never under
 * `NO_COLOR`), aligned tables, durations and percentiles.
 */

/** A stream the CLI writes to: `process.stdout` or `process.stderr`. */
export interface OutputStream {
  isTTY?: boolean;
  write(text: string): boolean;
}

/** Colour functions for one stream; each returns its input unchanged when colour is off. */
export interface Style {
  /** Whether escape sequences are written at all. */
  readonly color: boolean;
  bold(text: string): string;
  dim(text: string): string;
  red(text: string): string;
  green(text: string): string;
  yellow(text: string): string;
  cyan(text: string): string;
}

/**
 * Decides whether to colour `stream`: never when `NO_COLOR` is set (https://no-color.org) or
 * `TERM=dumb`; always when `FORCE_COLOR` is set to anything but `0`; otherwise only on a TTY.
 */
export function useColor(stream: OutputStream, env: NodeJS.ProcessEnv = process.env): boolean {
  if (env.NO_COLOR) return false;
  if (env.TERM === 'dumb') return false;
  if (env.FORCE_COLOR !== undefined && env.FORCE_COLOR !== '' && env.FORCE_COLOR !== '0') {
    return true;
  }
  return stream.isTTY === true;
}

/** The {@link Style} for `stream`, per {@link useColor}. */
export function styleFor(stream: OutputStream, env: NodeJS.ProcessEnv = process.env): Style {
  const color = useColor(stream, env);
  const paint = (open: number, close: number) => (text: string) =>
    color ? `\x1b[${open}m${text}\x1b[${close}m` : text;
  return {
    color,
    bold: paint(1, 22),
    dim: paint(2, 22),
    red: paint(31, 39),
    green: paint(32, 39),
    yellow: paint(33, 39),
    cyan: paint(36, 39),
  };
}

// biome-ignore lint/suspicious/noControlCharactersInRegex: matching ANSI escape sequences
const ANSI = /\x1b\[[0-9;]*m/g;

/** `text` without ANSI colour sequences. */
export function stripAnsi(text: string): string {
  return text.replace(ANSI, '');
}

/** Visible width of `text` (ignores colour sequences). */
function width(text: string): number {
  return [...stripAnsi(text)].length;
}

/** Column alignment for {@link table}. */
export type Align = 'left' | 'right';

/**
 * Lays `rows` out as aligned columns separated by two spaces, without trailing spaces. The first
 * row is the header and is printed in bold when `style` is given. Cells may contain colour.
 */
export function table(
  rows: readonly (readonly string[])[],
  options: { align?: readonly Align[]; style?: Style; indent?: string } = {},
): string {
  const [header] = rows;
  if (!header) return '';
  const widths = header.map((_, i) => Math.max(...rows.map((row) => width(row[i] ?? ''))));
  const indent = options.indent ?? '';
  return rows
    .map((row, r) => {
      const cells = row.map((cell, i) => {
        const pad = ' '.repeat(widths[i]! - width(cell));
        const text = r === 0 && options.style ? options.style.bold(cell) : cell;
        return options.align?.[i] === 'right' ? pad + text : text + pad;
      });
      return (indent + cells.join('  ')).trimEnd();
    })
    .join('\n');
}

/** Nearest-rank percentile `p` (0-100) of ascending `sorted` values; `NaN` when empty. */
export function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length, Math.max(1, rank)) - 1]!;
}

/** A number of milliseconds for a table cell: `0.42`, `12.3`, `850`, `1520`; `-` for `NaN`. */
export function ms(value: number): string {
  if (!Number.isFinite(value)) return '-';
  if (value >= 100) return value.toFixed(0);
  if (value >= 10) return value.toFixed(1);
  return value.toFixed(2);
}

/** A duration for prose: `0.42 ms`, `850 ms`, `1.52 s`, `12.5 s`; `-` for `NaN`. */
export function duration(value: number): string {
  if (!Number.isFinite(value)) return '-';
  if (value >= 10_000) return `${(value / 1000).toFixed(1)} s`;
  if (value >= 1000) return `${(value / 1000).toFixed(2)} s`;
  return `${ms(value)} ms`;
}

/** `n thing` / `n things`. */
export function plural(n: number, word: string, many = `${word}s`): string {
  return `${n} ${n === 1 ? word : many}`;
}

/** Indents every line of `text` by `prefix`. */
export function indent(text: string, prefix = '    '): string {
  return text
    .trimEnd()
    .split('\n')
    .map((line) => prefix + line)
    .join('\n');
}
