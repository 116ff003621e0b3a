/** Backoff settings, ms. */
export interface BackoffOptions {
  minDelay: number;
  maxDelay: number;
}

/**
 * Delay before restart number `attempt` (0-based) of a slot: exponential, capped, with "equal
 * jitter" (half fixed, half random) so slots that died together do not restart in lockstep.
 */
export function backoffDelay(
  attempt: number,
  { minDelay, maxDelay }: BackoffOptions,
  random: () => number = Math.random,
): number {
  const base = Math.min(maxDelay, minDelay * 2 ** Math.min(attempt, 30));
  return Math.round(base / 2 + (random() * base) / 2);
}
