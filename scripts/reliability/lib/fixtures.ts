import { fileURLToPath } from 'node:url';

/** Absolute path of a file in test/fixtures/chaos. */
export function chaosFixture(name: string): string {
  return fileURLToPath(new URL(`../../../test/fixtures/chaos/${name}`, import.meta.url));
}

/** The handler file of the reliability suites. */
export const CHAOS_SCRIPT = chaosFixture('chaos.py');
