import { readdirSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { HistoryFile } from 'longhaul/worker';
import { NonDeterminismError, Worker } from 'longhaul/worker';
import { describe, expect, it } from 'vitest';

const dir = fileURLToPath(new URL('../histories/', import.meta.url));
const workflowsPath = `${dir}workflows.ts`;
const changedPath = `${dir}workflows-changed.ts`;
const files = readdirSync(dir).filter((f) => f.endsWith('.json'));

function load(file: string): HistoryFile {
  return JSON.parse(readFileSync(`${dir}${file}`, 'utf8')) as HistoryFile;
}

describe('saved histories replay against the current engine', () => {
  it('has saved histories to replay', () => {
    expect(files.length).toBeGreaterThanOrEqual(2);
  });

  for (const file of files) {
    it(`${file} replays without divergence`, async () => {
      await expect(Worker.runReplayHistory({ workflowsPath }, load(file))).resolves.toBeUndefined();
    });
  }

  it('a deliberately changed workflow fails replay, naming the event and both commands', async () => {
    const err = await Worker.runReplayHistory({ workflowsPath: changedPath }, load('order.json')).catch(
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(NonDeterminismError);
    const message = (err as Error).message;
    expect(message).toMatch(/event 5\b/);
    expect(message).toContain('charge');
    expect(message).toContain('ship');
  });

  it('a changed workflow result in the last task is caught too', async () => {
    await expect(
      Worker.runReplayHistory({ workflowsPath: changedPath }, load('cancellable.json')),
    ).rejects.toBeInstanceOf(NonDeterminismError);
  });

  it('a malformed history file is a validation error naming the field', async () => {
    const bad = { ...load('order.json'), formatVersion: 2 };
    await expect(Worker.runReplayHistory({ workflowsPath }, bad as unknown as HistoryFile)).rejects.toThrow(
      /formatVersion/,
    );
  });
});
