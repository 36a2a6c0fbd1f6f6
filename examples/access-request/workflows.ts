/**
 * An access-request approval process: validate the request, wait for the manager's decision (escalating
 * to the manager's manager after 24 h, denying after 48 h), provision access if approved, and tell the
 * requester either way. The waits are durable timers: the process survives restarts and deploys.
 */
import {
  ApplicationFailure,
  condition,
  defineQuery,
  defineSignal,
  proxyActivities,
  setHandler,
} from 'longhaul/workflow';
import type { AccessRequestActivities } from './activities.js';
import { formatDuration } from './format.js';

const HOUR_MS = 3_600_000;

export interface AccessRequest {
  /** E-mail addresses. */
  readonly requester: string;
  readonly manager: string;
  readonly managersManager: string;
  /** What is requested, e.g. 'prod-db:read'. */
  readonly resource: string;
  readonly justification: string;
  /** How long the manager has before the request is escalated, ms (default 24 h). */
  readonly escalateAfterMs?: number;
  /** How long a decision may take in total, ms (default 48 h); after that the request is denied. */
  readonly decisionTimeoutMs?: number;
}

export type AccessRequestStage =
  | 'validating'
  | 'awaiting-approval'
  | 'escalated'
  | 'provisioning'
  | 'notifying'
  | 'done';

export interface Decision {
  readonly approved: boolean;
  readonly by: string;
  readonly reason?: string;
}

export interface AccessRequestStatus {
  readonly stage: AccessRequestStage;
  readonly escalated: boolean;
  readonly decision: Decision | null;
}

export interface AccessRequestResult {
  readonly outcome: 'approved' | 'rejected' | 'denied';
  readonly decidedBy?: string;
  readonly reason?: string;
  readonly escalated: boolean;
  readonly grantId?: string;
}

/** The manager (or, after escalation, the manager's manager) approves; the first decision counts. */
export const approve = defineSignal<[approver: string]>('approve');
export const reject = defineSignal<[approver: string, reason?: string]>('reject');
export const status = defineQuery<AccessRequestStatus>('status');

const { validateRequest, escalate, provisionAccess, notifyRequester } =
  proxyActivities<AccessRequestActivities>({
    startToCloseTimeout: '1m',
    retry: { initialInterval: '1s', maximumInterval: '1m', nonRetryableErrorTypes: ['InvalidRequest'] },
  });

export async function accessRequest(req: AccessRequest): Promise<AccessRequestResult> {
  const escalateAfterMs = req.escalateAfterMs ?? 24 * HOUR_MS;
  const decisionTimeoutMs = req.decisionTimeoutMs ?? 48 * HOUR_MS;
  if (!(escalateAfterMs > 0 && decisionTimeoutMs > escalateAfterMs)) {
    throw ApplicationFailure.nonRetryable(
      `need 0 < escalateAfterMs < decisionTimeoutMs, got ${escalateAfterMs} and ${decisionTimeoutMs}`,
      'InvalidRequest',
    );
  }

  let stage: AccessRequestStage = 'validating';
  let escalated = false;
  let decision: Decision | undefined;
  setHandler(status, () => ({ stage, escalated, decision: decision ?? null }));
  setHandler(approve, (by) => {
    decision ??= { approved: true, by };
  });
  setHandler(reject, (by: string, reason?: string) => {
    decision ??= reason === undefined ? { approved: false, by } : { approved: false, by, reason };
  });

  await validateRequest(req);

  stage = 'awaiting-approval';
  let decided = await condition(() => decision !== undefined, escalateAfterMs);
  if (!decided) {
    stage = 'escalated';
    escalated = true;
    await escalate(req, escalateAfterMs);
    decided = await condition(() => decision !== undefined, decisionTimeoutMs - escalateAfterMs);
  }

  let result: AccessRequestResult;
  if (!decided || decision === undefined) {
    result = {
      outcome: 'denied',
      reason: `no decision within ${formatDuration(decisionTimeoutMs)}`,
      escalated,
    };
  } else if (decision.approved) {
    stage = 'provisioning';
    const grantId = await provisionAccess(req);
    result = { outcome: 'approved', decidedBy: decision.by, escalated, grantId };
  } else {
    result = {
      outcome: 'rejected',
      decidedBy: decision.by,
      escalated,
      ...(decision.reason === undefined ? {} : { reason: decision.reason }),
    };
  }

  stage = 'notifying';
  await notifyRequester(req, result);
  stage = 'done';
  return result;
}
