// A line longer than this is cut, so a worker that floods stderr without newlines cannot grow
// Node's memory without bound.
const MAX_LINE = 16 * 1024;

/** Splits a text stream into lines and keeps the last `keep` of them. */
export class LineSplitter {
  #partial = '';
  readonly #ring: string[] = [];
  readonly #keep: number;
  readonly #onLine: (line: string) => void;

  constructor(keep: number, onLine: (line: string) => void) {
    this.#keep = keep;
    this.#onLine = onLine;
  }

  push(text: string): void {
    let start = 0;
    for (;;) {
      const nl = text.indexOf('\n', start);
      if (nl < 0) break;
      const piece = text.slice(start, nl);
      const line = this.#partial ? this.#partial + piece : piece;
      this.#partial = '';
      this.#line(line);
      start = nl + 1;
    }
    if (start < text.length) {
      this.#partial += text.slice(start);
      if (this.#partial.length > MAX_LINE) {
        this.#line(`${this.#partial.slice(0, MAX_LINE)}… [line cut]`);
        this.#partial = '';
      }
    }
  }

  /** Emits what is left after the stream ended. */
  flush(): void {
    if (this.#partial) {
      const line = this.#partial;
      this.#partial = '';
      this.#line(line);
    }
  }

  tail(): string[] {
    return this.#ring.slice();
  }

  #line(raw: string): void {
    const line = raw.length > MAX_LINE ? `${raw.slice(0, MAX_LINE)}… [line cut]` : raw;
    const trimmed = line.endsWith('\r') ? line.slice(0, -1) : line;
    if (this.#keep > 0) {
      if (this.#ring.length >= this.#keep) this.#ring.shift();
      this.#ring.push(trimmed);
    }
    this.#onLine(trimmed);
  }
}
