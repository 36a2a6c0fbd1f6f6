import { fileURLToPath } from 'node:url';
import { configDefaults, defineConfig } from 'vitest/config';

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
      {
        extends: true,
        test: {
          name: 'sqlite',
          include: ['test/**/*.test.ts', 'examples/**/*.test.ts'],
          exclude: [...configDefaults.exclude, 'test/chaos/**'],
        },
      },
      // The end-to-end suite again, on PostgreSQL (each test environment uses a fresh schema).
      {
        extends: true,
        test: {
          name: 'postgres',
          include: ['test/e2e/**/*.test.ts'],
          env: { LONGHAUL_TEST_STORE: 'postgres' },
        },
      },
      // Fault injection with real processes on PostgreSQL (test/chaos): each file saturates the machine for
      // up to a minute, so they run one at a time, after the other projects, and timing-sensitive tests
      // elsewhere never share the CPU with them.
      {
        extends: true,
        test: {
          name: 'chaos',
          include: ['test/chaos/**/*.test.ts'],
          fileParallelism: false,
          sequence: { groupOrder: 1 },
        },
      },
    ],
  },
});
