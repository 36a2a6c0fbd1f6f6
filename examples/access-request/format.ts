/** '48h', '90s' or '1500 ms'. Plain code: used by the workflow (in the sandbox) and by activities. */
export function formatDuration(ms: number): string {
  if (ms % 3_600_000 === 0) return `${ms / 3_600_000}h`;
  if (ms % 1000 === 0) return `${ms / 1000}s`;
  return `${ms} ms`;
}
