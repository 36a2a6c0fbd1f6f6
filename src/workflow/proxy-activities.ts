import type { ActivityOptions } from '../common/activity-options.js';
import { compileActivityOptions } from '../common/activity-options.js';
import { toPayloads } from '../common/payload.js';
import { currentActivator } from './run-context.js';

/** The shape of an activities module when only its types are imported. */
export type UntypedActivities = Record<string, (...args: unknown[]) => Promise<unknown>>;

/** What `proxyActivities<typeof activities>()` returns: each activity as a function returning a promise. */
export type ActivityInterfaceFor<A> = {
  readonly [K in keyof A]: A[K] extends (...args: infer P) => infer R
    ? (...args: P) => Promise<Awaited<R>>
    : never;
};

/**
 * Returns an object whose property `name` schedules the activity type `name`. Options are validated and
 * compiled here, once (a ValidationError names the bad field), so this is safe to call at module top
 * level — also outside a worker, e.g. when a client imports the workflows module for its signal
 * definitions.
 *
 * Calling an activity emits `scheduleActivity`; the promise settles with the activity's result, or
 * rejects with an ActivityFailure whose `cause` is the ApplicationFailure, TimeoutFailure or
 * CancelledFailure that ended it. Arguments that JSON cannot hold reject with a ValidationError and
 * emit nothing. After cancellation of the workflow was requested, calls reject with a CancelledFailure.
 */
export function proxyActivities<A extends object = UntypedActivities>(
  options: ActivityOptions,
): ActivityInterfaceFor<A> {
  const compiled = compileActivityOptions(options, 'proxyActivities options');
  const taskQueue = options.taskQueue;
  return new Proxy({} as ActivityInterfaceFor<A>, {
    get(_target, prop) {
      // Not thenable, and symbols (inspection, iteration) are not activities.
      if (typeof prop !== 'string' || prop === 'then') return undefined;
      const activityType = prop;
      const call = {
        [activityType](...args: unknown[]): Promise<unknown> {
          const activator = currentActivator(`activity '${activityType}'`);
          let input: unknown[];
          try {
            input = toPayloads(args, `arguments of activity '${activityType}'`);
          } catch (err) {
            return Promise.reject(err);
          }
          return activator.scheduleActivity({
            activityType,
            ...(taskQueue === undefined ? {} : { taskQueue }),
            input,
            options: compiled,
          });
        },
      };
      return call[activityType];
    },
  });
}
