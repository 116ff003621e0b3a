/** Where a session is pinned: a slot and the generation (process) of the worker in it. */
export interface SessionBinding {
  slot: number;
  generation: number;
  lastUsed: number;
}

/**
 * Session id -> worker. Entries expire after `ttl` ms without a call, so the table cannot grow
 * without bound.
 */
export class SessionTable {
  readonly #map = new Map<string, SessionBinding>();
  readonly #ttl: number;

  constructor(ttl: number) {
    this.#ttl = ttl;
  }

  get size(): number {
    return this.#map.size;
  }

  /** The live binding of `id`, if any. Changes nothing. */
  peek(id: string, now: number): SessionBinding | undefined {
    const binding = this.#map.get(id);
    return binding && now - binding.lastUsed < this.#ttl ? binding : undefined;
  }

  /** The live binding of `id`, if any; an expired one is forgotten. */
  get(id: string, now: number): SessionBinding | undefined {
    const binding = this.#map.get(id);
    if (binding && now - binding.lastUsed >= this.#ttl) {
      this.#map.delete(id);
      return undefined;
    }
    return binding;
  }

  /** Pins `id` to a worker; returns the previous binding if it pointed at another worker. */
  bind(id: string, slot: number, generation: number, now: number): SessionBinding | undefined {
    const previous = this.#map.get(id);
    if (previous && previous.slot === slot && previous.generation === generation) {
      previous.lastUsed = now;
      return undefined;
    }
    this.#map.set(id, { slot, generation, lastUsed: now });
    return previous && now - previous.lastUsed < this.#ttl ? previous : undefined;
  }

  /** Drops sessions idle for longer than the ttl; returns their ids. */
  sweep(now: number): string[] {
    const expired: string[] = [];
    for (const [id, binding] of this.#map) {
      if (now - binding.lastUsed >= this.#ttl) {
        this.#map.delete(id);
        expired.push(id);
      }
    }
    return expired;
  }

  clear(): void {
    this.#map.clear();
  }
}
