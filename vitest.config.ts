import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vitest/config';

export default defineConfig({
  resolve: {
    conditions: ['source'],
    // Tests import the package by its public names, served from source.
    alias: [
      {
        find: /^longhaul\/(workflow|activity|client|worker)$/,
        replacement: fileURLToPath(new URL('./src/$1/index.ts', import.meta.url)),
      },
    ],
  },
  test: {
    testTimeout: 60_000,
    hookTimeout: 60_000,
    pool: 'forks',
    fileParallelism: true,
    maxWorkers: 2,
    projects: [
      { extends: true, test: { name: 'sqlite', include: ['test/**/*.test.ts', 'examples/**/*.test.ts'] } },
      // The end-to-end suite again, on PostgreSQL (each test environment uses a fresh schema).
      {
        extends: true,
        test: {
          name: 'postgres',
          include: ['test/e2e/**/*.test.ts'],
          env: { LONGHAUL_TEST_STORE: 'postgres' },
        },
      },
    ],
  },
});
