/** The task queue the file-processing workers poll. */
export const TASK_QUEUE = 'file-processing';
