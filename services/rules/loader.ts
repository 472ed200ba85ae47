// Turns one rule file (TypeScript or JavaScript) into the code of its worker: esbuild bundles the file, the
// relative files it imports and the worker harness (worker.ts) into one ES module, which the runner starts as a
// worker from a data: URL. esbuild is a runtime dependency for this: it strips types and bundles in a few ms
// without type-checking (that is `mycelium rules check`'s job, which uses the TypeScript compiler, a dev tool),
// and it is the one bundler already in the tree (tsx and vite run on it).
import { existsSync } from 'node:fs';
import { basename, dirname, extname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { projectRoot } from '../common/project-root.ts';

export const RULE_EXTENSIONS = ['.ts', '.mts', '.js', '.mjs'];

export type Compiled = { ok: true; code: string } | { ok: false; message: string };

/** Rule files are the .ts/.js files of a folder, not declarations or tests. */
export function isRuleFile(name: string): boolean {
  if (name.startsWith('.') || name.endsWith('.d.ts') || /\.test\.[mc]?[jt]s$/.test(name)) return false;
  return RULE_EXTENSIONS.includes(extname(name));
}

/**
 * A source file of the rules service (the worker harness, the rule API's types): esbuild and TypeScript read the
 * `.ts` sources, which sit in services/rules/ of the checkout or the image whether the sources, tsc's dist/ or the
 * bundle runs (the bundle has no services/rules/ beside it).
 */
export function rulesSource(name: string): string {
  const ts = join(projectRoot(), 'services', 'rules', `${name}.ts`);
  if (existsSync(ts)) return ts;
  // An install without the sources: the compiled file beside this module (tsc's dist/).
  return resolve(dirname(fileURLToPath(import.meta.url)), `${name}.js`);
}

export async function compileRule(file: string): Promise<Compiled> {
  const esbuild = await import('esbuild');
  // ES modules run in import order: the guard before the rule file's top-level code.
  const entry =
    `import ${JSON.stringify(rulesSource('worker-guard'))};\n` +
    `import * as mod from ${JSON.stringify(resolve(file))};\n` +
    `import { startRule } from ${JSON.stringify(rulesSource('worker'))};\n` +
    'startRule(mod);\n';
  try {
    const out = await esbuild.build({
      stdin: { contents: entry, resolveDir: dirname(resolve(file)), sourcefile: `${basename(file)}.entry.js` },
      bundle: true,
      write: false,
      format: 'esm',
      platform: 'node',
      target: 'node20',
      logLevel: 'silent',
      sourcemap: false,
    });
    const code = out.outputFiles[0]?.text;
    if (code === undefined) return { ok: false, message: 'esbuild produced no output' };
    return { ok: true, code };
  } catch (err) {
    const errors = (
      err as { errors?: Array<{ text: string; location?: { file: string; line: number; column: number } | null }> }
    ).errors;
    if (Array.isArray(errors) && errors.length > 0) {
      const first = errors
        .slice(0, 3)
        .map((e) =>
          e.location ? `${basename(e.location.file)}:${e.location.line}:${e.location.column}: ${e.text}` : e.text,
        );
      return { ok: false, message: first.join('; ') };
    }
    return { ok: false, message: (err as Error).message };
  }
}
