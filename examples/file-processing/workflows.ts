/**
 * Processes one large file with a heartbeating activity. With `heartbeatTimeout: '2s'`, a worker that
 * dies mid-file is noticed about 2 s after its last heartbeat (plus the sweep interval); the retry runs
 * on any worker and resumes from the last checkpoint.
 */
import { proxyActivities } from 'longhaul/workflow';
import type * as activities from './activities.js';

const { processFile } = proxyActivities<typeof activities>({
  startToCloseTimeout: '1h',
  heartbeatTimeout: '2s',
  retry: { initialInterval: '500ms', maximumAttempts: 10, nonRetryableErrorTypes: ['MalformedLine'] },
});

export async function fileProcessing(input: activities.ProcessFileInput): Promise<activities.FileSummary> {
  return await processFile(input);
}
