import { afterEach, beforeEach, describe } from 'vitest';
import type { Store, StoreTx } from '../store.js';
import { describeClaimsAndSweeps } from './claims.js';
import { describePendingState } from './pending-state.js';
import { expectStoreError } from './records.js';
import { describeRunsEventsAndBuffer } from './runs-events.js';
import type { SuiteContext } from './suite-context.js';
import { describeTransactions } from './transactions.js';

/** What a conformance factory returns: a fresh, empty store for one test. */
export interface StoreConformanceFixture {
  readonly store: Store;
  /** Closes every store the fixture opened and removes the data. */
  cleanup(): Promise<void>;
  /**
   * Opens a second, independent Store on the same database. Required when the store says it is
   * `sharedAcrossProcesses`; the suite closes what it returns.
   */
  openAnother?(): Promise<Store>;
}

/**
 * The Store contract as tests. Every adapter must pass this suite unchanged; each test gets a fresh store
 * from `factory`. Beyond `store.ts`, it pins down these semantics:
 * - findRun without a runId returns the run with the latest startTime, the later insert on a tie.
 * - A constraint failure (DUPLICATE_OPEN_RUN, EVENT_CONFLICT, ...) that the callback catches leaves the
 *   transaction usable, and a failed `appendEvents` writes none of its events.
 * - appendEvents also refuses a gap ('EVENT_GAP'); update* of a missing row fails (RUN_NOT_FOUND,
 *   ACTIVITY_NOT_FOUND, QUERY_NOT_FOUND); delete* of a missing row is a no-op; a duplicate key on insert is
 *   'DUPLICATE_KEY'; putRequest overwrites.
 * - JSON values round-trip exactly: `JSON.stringify` of what comes back equals that of what went in (key
 *   order, NUL characters and all), `undefined` stays distinct from `null`, absent `| null` fields are null.
 * - nextWakeTime also counts claimed queries' lease expiry, and ignores cancel-requested activities'
 *   visibility (they can never be claimed).
 * - A transaction handle used after its callback settled fails with 'TX_ENDED'; a closed store fails
 *   with 'STORE_CLOSED'.
 */ export function defineStoreConformanceSuite(
  name: string,
  factory: () => Promise<StoreConformanceFixture>,
  /** Whether the store under test can be opened twice (a file or a server, not an in-memory database). */
  options: { readonly shared: boolean } = { shared: true },
): void {
  describe(`Store conformance: ${name}`, () => {
    let fixture: StoreConformanceFixture | undefined;
    const s: SuiteContext = {
      get store(): Store {
        return s.fixture.store;
      },
      get fixture(): StoreConformanceFixture {
        if (!fixture) throw new Error('the conformance fixture is only available inside a test');
        return fixture;
      },
      shared: options.shared,
      tx: <T>(fn: (t: StoreTx) => Promise<T>): Promise<T> => s.store.transaction(fn),
      txFails: (code, fn) => expectStoreError(s.tx(fn), code),
    };
    beforeEach(async () => {
      fixture = await factory();
    });
    afterEach(async () => {
      await fixture?.cleanup();
      fixture = undefined;
    });

    describeRunsEventsAndBuffer(s);
    describePendingState(s);
    describeClaimsAndSweeps(s);
    describeTransactions(s);
  });
}
