import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 30_000,
    hookTimeout: 30_000,
    // Real Python processes: two cores, so keep parallelism modest to avoid starving workers.
    maxWorkers: 2,
    fileParallelism: true,
  },
});
