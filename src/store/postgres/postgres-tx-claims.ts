import type { ActivityRecord, RunRecord, TimerRecord } from '../store.js';
import {
  type ActivityRow,
  type QueryRow,
  type RunRow,
  rowToActivity,
  rowToQuery,
  rowToRun,
  rowToTimer,
  type TimerRow,
} from './postgres-rows.js';
import { PostgresTxBase } from './postgres-tx-base.js';

/** The column a claim adds to each row: the due rows it saw, locked or not (postgres-statements.ts). */
interface Due {
  readonly lh_due: number;
}

/**
 * The claim and sweep queries of a transaction handle (PostgresTx; only `transaction` handles use them:
 * `StoreReader` has none). Each locks the rows it returns and skips rows another transaction holds
 * (`FOR UPDATE SKIP LOCKED`); the claims count the due rows they passed over that way (`lockedDue`).
 */
export class PostgresTxClaims extends PostgresTxBase {
  /** Due rows this transaction's claims passed over because another transaction held them. */
  #lockedDue = 0;

  async findClaimableWorkflowTasks(
    namespace: string,
    taskQueue: string,
    now: number,
    limit: number,
    claimant?: { readonly workerId: string; readonly othersVisibleBy: number },
  ) {
    const stmt = this.st.claimableWorkflowTasks;
    const args = [
      namespace,
      taskQueue,
      now,
      limit,
      claimant?.workerId ?? null,
      claimant?.othersVisibleBy ?? now,
    ];
    const rows = await this.all<RunRow & Due>(stmt, args);
    return this.claimed(rows, limit, (r) => r.run_id !== null).map(rowToRun);
  }

  async findClaimableActivities(namespace: string, taskQueue: string, now: number, limit: number) {
    const args = [namespace, taskQueue, now, limit];
    const rows = await this.all<ActivityRow & Due>(this.st.claimableActivities, args);
    return this.claimed(rows, limit, (r) => r.run_id !== null).map(rowToActivity);
  }

  async findClaimableQueries(namespace: string, taskQueue: string, now: number, limit: number) {
    const args = [namespace, taskQueue, now, limit];
    const rows = await this.all<QueryRow & Due>(this.st.claimableQueries, args);
    return this.claimed(rows, limit, (r) => r.id !== null).map(rowToQuery);
  }

  lockedDue(): number {
    return this.#lockedDue;
  }

  /** The rows a claim took (`present`: not the row of nulls), counting the due rows it passed over. */
  private claimed<R extends Due>(rows: readonly R[], limit: number, present: (row: R) => boolean): R[] {
    const taken = rows.filter(present);
    const due = rows[0]?.lh_due ?? 0;
    if (taken.length < limit && due > taken.length) this.#lockedDue += due - taken.length;
    return taken;
  }

  async findDueTimers(now: number, limit: number): Promise<TimerRecord[]> {
    const stmt = this.st.dueTimers;
    return (await this.all<TimerRow>(stmt, [now, limit])).map(rowToTimer);
  }

  async findExpiredWorkflowTasks(now: number, limit: number): Promise<RunRecord[]> {
    const stmt = this.st.expiredWorkflowTasks;
    return (await this.all<RunRow>(stmt, [now, limit])).map(rowToRun);
  }

  async findDueActivities(now: number, limit: number): Promise<ActivityRecord[]> {
    const stmt = this.st.dueActivities;
    return (await this.all<ActivityRow>(stmt, [now, limit])).map(rowToActivity);
  }
}
