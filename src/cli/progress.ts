/**
 * A one-line progress bar that redraws itself on a TTY, and prints a few milestone lines
 * (25 %, 50 %, 75 %, 100 %) when the output is a file or a pipe.
 */
import type { OutputStream, Style } from './format.js';

const WIDTH = 30;

/** Progress of `total` steps on `stream`; {@link log} prints a line without breaking the bar. */
export class ProgressBar {
  readonly #stream: OutputStream;
  readonly #style: Style;
  readonly #total: number;
  readonly #live: boolean;
  #done = 0;
  #drawn = false;
  #milestone = 0;
  #lastDraw = 0;

  constructor(
    stream: OutputStream,
    style: Style,
    total: number,
    env: NodeJS.ProcessEnv = process.env,
  ) {
    this.#stream = stream;
    this.#style = style;
    this.#total = Math.max(1, total);
    // Redrawing needs a terminal that understands carriage return and "erase line".
    this.#live = stream.isTTY === true && env.TERM !== 'dumb';
  }

  /** Sets the number of finished steps and redraws (TTY) or prints a milestone (otherwise). */
  update(done: number): void {
    this.#done = Math.min(done, this.#total);
    if (this.#live) {
      // Redrawing on every step would flood a fast terminal: at most every 40 ms, and the end.
      const now = performance.now();
      if (now - this.#lastDraw >= 40 || this.#done === this.#total) this.#draw();
      return;
    }
    const quarter = Math.floor((this.#done / this.#total) * 4);
    if (quarter > this.#milestone) {
      this.#milestone = quarter;
      this.#stream.write(`  progress: ${this.#done}/${this.#total} calls\n`);
    }
  }

  /** Prints `line` above the bar (the bar is redrawn under it). */
  log(line: string): void {
    this.#clear();
    this.#stream.write(`${line}\n`);
    if (this.#live && this.#drawn) this.#draw();
  }

  /** Leaves the finished bar on its own line. */
  finish(): void {
    if (this.#live && this.#drawn) this.#stream.write('\n');
    this.#drawn = false;
  }

  #draw(): void {
    const filled = Math.round((this.#done / this.#total) * WIDTH);
    const bar = this.#style.green('█'.repeat(filled)) + this.#style.dim('░'.repeat(WIDTH - filled));
    const percent = String(Math.round((this.#done / this.#total) * 100)).padStart(3);
    this.#stream.write(`\r\x1b[2K  ${bar} ${percent}%  ${this.#done}/${this.#total} calls`);
    this.#drawn = true;
    this.#lastDraw = performance.now();
  }

  #clear(): void {
    if (this.#live && this.#drawn) this.#stream.write('\r\x1b[2K');
  }
}
