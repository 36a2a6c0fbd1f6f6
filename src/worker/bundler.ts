import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { readFile, stat } from 'node:fs/promises';
import { builtinModules } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as esbuild from 'esbuild';
import { BundleError } from '../common/errors.js';

/**
 * A workflows module bundled for the sandbox. `code` is a classic script: evaluated in a fresh realm it
 * installs the longhaul runtime and returns the host slot (see src/workflow/worker-interface.ts); each
 * run then gets its own instance of the user's module. `hash` is the sha256 of `code`, hex.
 */
export interface WorkflowBundle {
  readonly code: string;
  readonly hash: string;
  readonly workflowsPath: string;
}

/** Imports that do I/O or are not deterministic, with the reason given in the error. */
const FORBIDDEN_PACKAGES: ReadonlyMap<string, string> = new Map([
  ['longhaul/activity', 'the activity API only works inside activities'],
  ['longhaul/client', 'a client does I/O'],
  ['longhaul/worker', 'the worker does I/O'],
  ['longhaul', 'the package root is not importable; workflow code uses longhaul/workflow'],
  ['better-sqlite3', 'a database driver does I/O'],
  ['pg', 'a database driver does I/O'],
]);
const BUILTINS = new Set(builtinModules);

/** Why `specifier` may not be imported by workflow code, or undefined when it may. */
function forbiddenReason(specifier: string): string | undefined {
  if (specifier.startsWith('node:')) return 'a Node built-in does I/O or is not deterministic';
  const root = specifier.split('/')[0] ?? specifier;
  if (BUILTINS.has(specifier) || BUILTINS.has(root))
    return 'a Node built-in does I/O or is not deterministic';
  const pkg = specifier.startsWith('@') ? specifier.split('/').slice(0, 2).join('/') : root;
  return FORBIDDEN_PACKAGES.get(specifier) ?? (pkg === 'longhaul' ? undefined : FORBIDDEN_PACKAGES.get(pkg));
}

/**
 * The workflow runtime of THIS package, so a bundle always uses the worker's own version:
 * `src/workflow/worker-interface.ts` when running from source, `dist/workflow/worker-interface.js` when built.
 */
function runtimeEntry(): string {
  const here = path.dirname(fileURLToPath(import.meta.url));
  for (const candidate of ['../workflow/worker-interface.ts', '../workflow/worker-interface.js']) {
    const p = path.resolve(here, candidate);
    if (existsSync(p)) return p;
  }
  throw new BundleError(`the longhaul workflow runtime was not found next to ${here}; the package is broken`);
}

interface CacheEntry {
  readonly inputs: readonly string[];
  readonly fingerprint: string;
  readonly bundle: WorkflowBundle;
}
const cache = new Map<string, CacheEntry>();
const inFlight = new Map<string, Promise<WorkflowBundle>>();

/** sha256 over the paths and contents of every input; undefined when an input can no longer be read. */
async function fingerprintOf(inputs: readonly string[]): Promise<string | undefined> {
  const h = createHash('sha256');
  for (const file of inputs) {
    try {
      h.update(file)
        .update('\0')
        .update(await readFile(file))
        .update('\0');
    } catch {
      return undefined;
    }
  }
  return h.digest('hex');
}

/**
 * Bundles a workflows module (TypeScript or JavaScript, no configuration needed) with esbuild, in
 * memory. Type-only imports are erased. `longhaul/workflow` resolves to this package's runtime.
 *
 * Imports of Node built-ins, `longhaul/activity`, `longhaul/client`, `longhaul/worker`, `better-sqlite3`
 * and `pg` fail with a BundleError naming each import chain (workflows.ts → helper.ts → node:fs) and the
 * fix. A missing file fails with a BundleError naming the path.
 *
 * Bundles are cached in memory by the path and a hash of the contents of every input file: asking
 * again for an unchanged module returns the same bundle object without bundling; concurrent calls for
 * the same path share one build.
 */
export async function bundleWorkflows(workflowsPath: string): Promise<WorkflowBundle> {
  const entry = path.resolve(workflowsPath);
  const running = inFlight.get(entry);
  if (running) return running;
  const p = cachedOrBuild(entry).finally(() => inFlight.delete(entry));
  inFlight.set(entry, p);
  return p;
}

async function cachedOrBuild(entry: string): Promise<WorkflowBundle> {
  try {
    const s = await stat(entry);
    if (!s.isFile()) throw new BundleError(`workflows module ${entry} is not a file`);
  } catch (err) {
    if (err instanceof BundleError) throw err;
    throw new BundleError(`workflows module not found: ${entry} (check workflowsPath)`);
  }
  const hit = cache.get(entry);
  if (hit && (await fingerprintOf(hit.inputs)) === hit.fingerprint) return hit.bundle;
  const built = await build(entry);
  cache.set(entry, built);
  return built.bundle;
}

async function build(entry: string): Promise<CacheEntry> {
  const runtime = runtimeEntry();
  const baseDir = path.dirname(entry);
  /** First importer of each resolved file, to name import chains. */
  const importedBy = new Map<string, string>();
  const violations: string[] = [];
  const display = (file: string): string => path.relative(baseDir, file) || path.basename(file);
  const chainTo = (importer: string): string[] => {
    const chain = [display(importer)];
    const seen = new Set([importer]);
    for (let at = importedBy.get(importer); at !== undefined && !seen.has(at); at = importedBy.get(at)) {
      seen.add(at);
      chain.unshift(display(at));
    }
    return chain;
  };

  const SKIP = Symbol('longhaul.resolve.skip');
  const guard: esbuild.Plugin = {
    name: 'longhaul-workflow-guard',
    setup(b) {
      b.onResolve({ filter: /.*/ }, async (args) => {
        if ((args.pluginData as Record<symbol, unknown> | undefined)?.[SKIP]) return undefined;
        if (args.kind === 'entry-point') return undefined;
        // The user's module gets the runtime's own API object (see worker-interface.ts).
        if (args.path === 'longhaul/workflow') return { path: 'longhaul/workflow', external: true };
        const reason = forbiddenReason(args.path);
        if (reason !== undefined) {
          const chain = [...chainTo(args.importer), args.path].join(' → ');
          violations.push(
            `${chain}: workflow code cannot import '${args.path}' (${reason}). Move this into an activity and call it through proxyActivities; for activity types use \`import type\`.`,
          );
          return { path: args.path, external: true };
        }
        const r = await b.resolve(args.path, {
          kind: args.kind,
          importer: args.importer,
          resolveDir: args.resolveDir,
          pluginData: { [SKIP]: true },
        });
        if (r.errors.length > 0) return { errors: r.errors };
        if (!r.external && r.path && !importedBy.has(r.path)) importedBy.set(r.path, args.importer);
        return {
          path: r.path,
          external: r.external,
          namespace: r.namespace,
          sideEffects: r.sideEffects,
          suffix: r.suffix,
        };
      });
    },
  };

  let result: esbuild.BuildResult<{ write: false; metafile: true }>;
  try {
    result = await esbuild.build({
      entryPoints: { runtime, workflows: entry },
      absWorkingDir: baseDir,
      outdir: path.join(baseDir, '.longhaul-bundle'),
      bundle: true,
      write: false,
      metafile: true,
      format: 'cjs',
      platform: 'neutral',
      mainFields: ['module', 'main'],
      target: 'es2022',
      // Class and function names are behaviour: failure types come from them (errorType).
      keepNames: true,
      logLevel: 'silent',
      plugins: [guard],
    });
  } catch (err) {
    if (violations.length > 0) throw new BundleError(violations.join('\n'));
    const messages = (err as { errors?: esbuild.Message[] }).errors;
    if (messages && messages.length > 0) {
      const text = messages
        .map((m) =>
          m.location ? `${m.location.file}:${m.location.line}:${m.location.column}: ${m.text}` : m.text,
        )
        .join('\n');
      throw new BundleError(`could not bundle ${entry}:\n${text}`);
    }
    throw new BundleError(`could not bundle ${entry}: ${err instanceof Error ? err.message : String(err)}`);
  }
  if (violations.length > 0) throw new BundleError(violations.join('\n'));

  const outputFor = (name: string): string => {
    const file = result.outputFiles.find((f) => path.basename(f.path) === `${name}.js`);
    if (!file) throw new BundleError(`esbuild produced no ${name}.js for ${entry}`);
    return file.text;
  };
  const code = [
    '(function () {',
    "'use strict';",
    'var runtime = (function () { var module = { exports: {} }; var exports = module.exports;',
    outputFor('runtime'),
    'return module.exports; })();',
    'var factory = function (require) { var module = { exports: {} }; var exports = module.exports;',
    outputFor('workflows'),
    'return module.exports; };',
    'return runtime.boot(factory);',
    '})()',
  ].join('\n');
  const hash = createHash('sha256').update(code).digest('hex');
  const inputs = Object.keys(result.metafile.inputs)
    .filter((k) => !k.includes(':'))
    .map((k) => path.resolve(baseDir, k))
    .sort();
  const fingerprint = (await fingerprintOf(inputs)) ?? '';
  return { inputs, fingerprint, bundle: { code, hash, workflowsPath: entry } };
}
