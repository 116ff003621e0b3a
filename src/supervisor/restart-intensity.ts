/**
 * OTP-style restart intensity: more than `maxRestarts` restarts within `period` ms means the
 * failure is not transient and the pool should stop trying.
 */
export class RestartIntensity {
  readonly #times: number[] = [];
  readonly #maxRestarts: number;
  readonly #period: number;

  constructor(maxRestarts: number, period: number) {
    this.#maxRestarts = maxRestarts;
    this.#period = period;
  }

  /** Records a restart at `now`; returns true when the intensity is exceeded. */
  record(now: number): boolean {
    this.#times.push(now);
    while (this.#times.length > 0 && this.#times[0]! <= now - this.#period) this.#times.shift();
    return this.#times.length > this.#maxRestarts;
  }

  /** Whether one more restart at `now` would exceed the intensity. */
  wouldExceed(now: number): boolean {
    let inWindow = 1;
    for (const t of this.#times) if (t > now - this.#period) inWindow++;
    return inWindow > this.#maxRestarts;
  }

  /** Forgets every restart (the pool starts over after a cool-down). */
  clear(): void {
    this.#times.length = 0;
  }

  /** Restarts counted in the current window. */
  get count(): number {
    return this.#times.length;
  }
}
