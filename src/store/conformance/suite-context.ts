import type { Store, StoreTx } from '../store.js';
import type { StoreConformanceFixture } from './index.js';

/** What every part of the suite sees: the current test's store and fixture, and transaction helpers. */
export interface SuiteContext {
  readonly store: Store;
  readonly fixture: StoreConformanceFixture;
  /** Whether the store can be opened twice (the two-instance tests apply). */
  readonly shared: boolean;
  tx<T>(fn: (t: StoreTx) => Promise<T>): Promise<T>;
  txFails(code: string, fn: (t: StoreTx) => Promise<unknown>): Promise<void>;
}
