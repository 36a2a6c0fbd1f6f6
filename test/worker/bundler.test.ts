import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { BundleError } from '../../src/common/errors.js';
import { bundleWorkflows } from '../../src/worker/bundler.js';
import { WorkflowSandbox } from '../../src/worker/sandbox.js';
import { fixturePath } from './helpers/workflow-fixtures.js';

async function bundleError(file: string): Promise<BundleError> {
  try {
    await bundleWorkflows(file);
  } catch (err) {
    expect(err).toBeInstanceOf(BundleError);
    return err as BundleError;
  }
  throw new Error(`bundling ${file} unexpectedly succeeded`);
}

const tmpDirs: string[] = [];
afterAll(async () => {
  await Promise.all(tmpDirs.map((d) => rm(d, { recursive: true, force: true })));
});

describe('bundleWorkflows', () => {
  it('bundles a TypeScript module whose activities are imported as types only (their node:fs import is erased)', async () => {
    const bundle = await bundleWorkflows(fixturePath('basic.ts'));
    expect(bundle.workflowsPath).toBe(fixturePath('basic.ts'));
    expect(bundle.hash).toMatch(/^[0-9a-f]{64}$/);
    expect(bundle.code).not.toContain('node:fs');
    expect(bundle.code).not.toContain('readFile');
    expect(WorkflowSandbox.create(bundle).workflowTypes()).toContain('greeting');
  });

  it('fails on node:fs two imports deep, naming the whole chain and the fix', async () => {
    const err = await bundleError(fixturePath('forbidden-node-fs.ts'));
    expect(err.message).toContain('forbidden-node-fs.ts → lib/config-helper.ts → lib/fs-helper.ts → node:fs');
    expect(err.message).toContain('Move this into an activity');
  });

  it('fails on longhaul/activity', async () => {
    const err = await bundleError(fixturePath('forbidden-activity-import.ts'));
    expect(err.message).toContain(
      "forbidden-activity-import.ts → longhaul/activity: workflow code cannot import 'longhaul/activity'",
    );
  });

  it('fails on bare Node built-ins and database drivers', async () => {
    const dir = await mkdtemp(path.join(tmpdir(), 'longhaul-bundler-'));
    tmpDirs.push(dir);
    const file = path.join(dir, 'wf.ts');
    await writeFile(file, "import 'fs';\nimport 'pg';\nexport async function w() {}\n");
    const err = await bundleError(file);
    expect(err.message).toContain("wf.ts → fs: workflow code cannot import 'fs'");
    expect(err.message).toContain("wf.ts → pg: workflow code cannot import 'pg'");
  });

  it('fails with the path when the file is missing', async () => {
    const missing = path.join(tmpdir(), 'longhaul-no-such-dir', 'workflows.ts');
    const err = await bundleError(missing);
    expect(err.message).toContain(missing);
  });

  it('reports syntax errors with their location', async () => {
    const dir = await mkdtemp(path.join(tmpdir(), 'longhaul-bundler-'));
    tmpDirs.push(dir);
    const file = path.join(dir, 'broken.ts');
    await writeFile(file, 'export async function w( {\n');
    const err = await bundleError(file);
    expect(err.message).toMatch(/broken\.ts:\d+:\d+/);
  });

  it('bundles an unchanged module once (same object, same hash) and rebuilds when an input changes', async () => {
    const dir = await mkdtemp(path.join(tmpdir(), 'longhaul-bundler-'));
    tmpDirs.push(dir);
    const file = path.join(dir, 'wf.ts');
    await writeFile(
      file,
      "import { helper } from './helper.js';\nexport async function w() { return helper(); }\n",
    );
    await writeFile(path.join(dir, 'helper.ts'), 'export const helper = () => 1;\n');
    const [a, b] = await Promise.all([bundleWorkflows(file), bundleWorkflows(file)]);
    const c = await bundleWorkflows(file);
    expect(b).toBe(a);
    expect(c).toBe(a);
    await writeFile(path.join(dir, 'helper.ts'), 'export const helper = () => 2;\n');
    const d = await bundleWorkflows(file);
    expect(d).not.toBe(a);
    expect(d.hash).not.toBe(a.hash);
  });
});
