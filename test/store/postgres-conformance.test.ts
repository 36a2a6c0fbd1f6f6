import { afterAll, beforeAll } from 'vitest';
import { defineStoreConformanceSuite } from '../../src/store/conformance/index.js';
import { openStore } from '../../src/store/open-store.js';
import type { Store } from '../../src/store/store.js';
import { adminClient, dropSchema, storeUrl, testSchema } from './fixtures/postgres.js';

// One schema for the whole file, migrated once; every test starts from empty tables (TRUNCATE), which is
// several times faster than creating a schema per test.
const schema = testSchema();
const url = storeUrl(schema, { poolSize: '8' });
const TABLES = ['runs', 'events', 'buffer', 'activities', 'timers', 'requests', 'queries'];

beforeAll(async () => {
  // Fails the file with a clear message when the server is unreachable (CI starts it; never skipped).
  await (await adminClient()).end();
  const store = await openStore(url, { mode: 'node' });
  await store.close();
});
afterAll(async () => {
  await dropSchema(schema);
});

defineStoreConformanceSuite('PostgreSQL', async () => {
  const admin = await adminClient();
  try {
    await admin.query(`TRUNCATE ${TABLES.map((t) => `"${schema}".${t}`).join(', ')} RESTART IDENTITY`);
  } finally {
    await admin.end();
  }
  const opened: Store[] = [];
  const open = async (): Promise<Store> => {
    const store = await openStore(url, { mode: 'node' });
    opened.push(store);
    return store;
  };
  return {
    store: await open(),
    openAnother: open,
    async cleanup() {
      for (const store of opened) await store.close();
    },
  };
});
