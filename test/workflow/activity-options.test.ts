import { describe, expect, it } from 'vitest';
import { compileActivityOptions, compileRetryPolicy } from '../../src/common/activity-options.js';
import { ValidationError } from '../../src/common/errors.js';
import { defineQuery, defineSignal, proxyActivities, sleep } from '../../src/workflow/index.js';

function validationField(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(ValidationError);
    return (err as ValidationError).field;
  }
  throw new Error('expected a ValidationError');
}

describe('compileActivityOptions', () => {
  it('compiles durations to milliseconds and fills in retry defaults', () => {
    expect(compileActivityOptions({ startToCloseTimeout: '10m', heartbeatTimeout: 30_000 }, 'opts')).toEqual({
      startToCloseTimeoutMs: 600_000,
      heartbeatTimeoutMs: 30_000,
      retry: {
        initialIntervalMs: 1000,
        backoffCoefficient: 2,
        maximumIntervalMs: 100_000,
        maximumAttempts: 0,
        nonRetryableErrorTypes: [],
      },
    });
  });

  it('defaults maximumInterval to 100 × initialInterval', () => {
    expect(compileRetryPolicy({ initialInterval: '2s' }, 'retry').maximumIntervalMs).toBe(200_000);
  });

  it('names the field of each invalid option', () => {
    expect(validationField(() => compileActivityOptions({}, 'opts'))).toBe('opts.startToCloseTimeout');
    expect(validationField(() => compileActivityOptions({ scheduleToCloseTimeout: 'soon' }, 'opts'))).toBe(
      'opts.scheduleToCloseTimeout',
    );
    expect(validationField(() => compileActivityOptions({ startToCloseTimeout: 0 }, 'opts'))).toBe(
      'opts.startToCloseTimeout',
    );
    expect(
      validationField(() => compileActivityOptions({ startToCloseTimeout: '1s', retyr: {} }, 'opts')),
    ).toBe('opts.retyr');
    expect(validationField(() => compileRetryPolicy({ backoffCoefficient: 0.5 }, 'r'))).toBe(
      'r.backoffCoefficient',
    );
    expect(
      validationField(() => compileRetryPolicy({ initialInterval: '10s', maximumInterval: '1s' }, 'r')),
    ).toBe('r.maximumInterval');
    expect(validationField(() => compileRetryPolicy({ maximumAttempts: 1.5 }, 'r'))).toBe(
      'r.maximumAttempts',
    );
    expect(validationField(() => compileRetryPolicy({ maximumAttempts: -1 }, 'r'))).toBe('r.maximumAttempts');
    expect(validationField(() => compileRetryPolicy({ nonRetryableErrorTypes: [1] }, 'r'))).toBe(
      'r.nonRetryableErrorTypes',
    );
    expect(
      validationField(() => compileActivityOptions({ startToCloseTimeout: '1s', taskQueue: '' }, 'o')),
    ).toBe('o.taskQueue');
  });
});

describe('longhaul/workflow outside a worker', () => {
  it('validates proxyActivities options at creation, naming the field', () => {
    expect(validationField(() => proxyActivities({ retry: { maximumAttempts: 3 } }))).toBe(
      'proxyActivities options.startToCloseTimeout',
    );
  });

  it('lets clients use definitions but refuses to run workflow operations', async () => {
    expect(defineSignal<[string]>('approve')).toEqual({ type: 'signal', name: 'approve' });
    expect(defineQuery<string>('status')).toEqual({ type: 'query', name: 'status' });
    const acts = proxyActivities({ startToCloseTimeout: '1s' });
    expect((acts as unknown as { then?: unknown }).then).toBeUndefined();
    expect(() => acts.anything?.()).toThrow(/only be used inside a workflow/);
    expect(() => sleep('1s')).toThrow(/only be used inside a workflow/);
  });
});
