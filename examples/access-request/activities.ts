/**
 * Activities of the access-request example. They are built by a factory so the application (main.ts)
 * and the tests can plug in how notifications are sent and where access is granted.
 *
 * Activities run at least once per scheduling, so `provisionAccess` uses `activityInfo().idempotencyKey`
 * (the same for every retry of one scheduling): a retry after a crash does not grant twice.
 */
import { ApplicationFailure, activityInfo } from 'longhaul/activity';
import { formatDuration } from './format.js';
import type { AccessRequest, AccessRequestResult } from './workflows.js';

export interface Notification {
  readonly to: string;
  readonly subject: string;
  readonly body: string;
}

/** Grants access in some access system; returns a grant id. */
export interface AccessSystem {
  grant(user: string, resource: string, idempotencyKey: string): Promise<string>;
}

export interface AccessRequestDeps {
  /** Resources that can be requested. */
  readonly resources: readonly string[];
  readonly notify: (n: Notification) => Promise<void> | void;
  readonly accessSystem: AccessSystem;
}

/** An access system that keeps grants in memory, one per idempotency key. */
export function inMemoryAccessSystem(): AccessSystem & {
  readonly grants: Map<string, { user: string; resource: string; grantId: string }>;
} {
  const grants = new Map<string, { user: string; resource: string; grantId: string }>();
  return {
    grants,
    async grant(user, resource, idempotencyKey) {
      const existing = grants.get(idempotencyKey);
      if (existing) return existing.grantId;
      const grantId = `grant-${grants.size + 1}`;
      grants.set(idempotencyKey, { user, resource, grantId });
      return grantId;
    },
  };
}

const EMAIL = /^[^@\s]+@[^@\s]+$/;

export function createActivities(deps: AccessRequestDeps) {
  return {
    /** Rejects a malformed request or an unknown resource; not retried (retrying cannot fix it). */
    async validateRequest(req: AccessRequest): Promise<void> {
      for (const field of ['requester', 'manager', 'managersManager'] as const) {
        if (typeof req[field] !== 'string' || !EMAIL.test(req[field])) {
          throw ApplicationFailure.nonRetryable(`${field} must be an e-mail address`, 'InvalidRequest');
        }
      }
      if (!deps.resources.includes(req.resource)) {
        throw ApplicationFailure.nonRetryable(
          `unknown resource '${req.resource}'; known: ${deps.resources.join(', ')}`,
          'InvalidRequest',
        );
      }
      if (typeof req.justification !== 'string' || req.justification.trim() === '') {
        throw ApplicationFailure.nonRetryable('a justification is required', 'InvalidRequest');
      }
    },

    /** Tells the manager's manager that the manager has not decided in time. */
    async escalate(req: AccessRequest, waitedMs: number): Promise<void> {
      await deps.notify({
        to: req.managersManager,
        subject: `Escalated: ${req.requester} requests ${req.resource}`,
        body: `${req.manager} has not decided within ${formatDuration(waitedMs)}. Please approve or reject.`,
      });
    },

    /** Grants the access; idempotent across retries of this scheduling. */
    async provisionAccess(req: AccessRequest): Promise<string> {
      return deps.accessSystem.grant(req.requester, req.resource, activityInfo().idempotencyKey);
    },

    async notifyRequester(req: AccessRequest, result: AccessRequestResult): Promise<void> {
      const subject =
        result.outcome === 'approved'
          ? `Access to ${req.resource} granted`
          : `Access to ${req.resource} ${result.outcome}`;
      const by = result.decidedBy ? ` by ${result.decidedBy}` : '';
      const reason = result.reason ? `: ${result.reason}` : '';
      await deps.notify({
        to: req.requester,
        subject,
        body: `Your request was ${result.outcome}${by}${reason}.`,
      });
    },
  };
}

export type AccessRequestActivities = ReturnType<typeof createActivities>;
