import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { defineStoreConformanceSuite } from '../../src/store/conformance/index.js';
import { openStore } from '../../src/store/open-store.js';
import type { Store } from '../../src/store/store.js';

defineStoreConformanceSuite('SQLite file', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'longhaul-conformance-'));
  const url = `sqlite:${join(dir, 'store.db')}`;
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
      rmSync(dir, { recursive: true, force: true });
    },
  };
});

defineStoreConformanceSuite(
  'SQLite :memory:',
  async () => {
    const store = await openStore('sqlite::memory:', { mode: 'node' });
    return { store, cleanup: () => store.close() };
  },
  { shared: false },
);
