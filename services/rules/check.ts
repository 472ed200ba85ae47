// `mycelium rules check DIR`: what the service would say about a folder, before it is deployed. Every rule
// file is type-checked with the TypeScript compiler against the rule API (rule.ts): a small virtual file per
// rule assigns its default export to `RuleDefinition`, so a plain object without `rule()` is checked too. Then
// each file is bundled and loaded in a worker like the service does, and its definition validated (triggers,
// schedule, unique names). TypeScript is a development tool: without it, only the second half runs.
import { readdirSync } from 'node:fs';
import { basename, join, resolve } from 'node:path';
import { compileRule, isRuleFile, rulesSource } from './loader.ts';
import { descriptorProblem, type RuleDescriptor } from './protocol.ts';
import { RulePool, RuleWorker } from './runner.ts';
import { compileSchedule } from './schedule.ts';

export interface CheckReport {
  ok: boolean;
  lines: string[];
  /** Names of the rules that passed. */
  rules: string[];
}

const LIMITS = {
  timeLimitMs: 1000,
  maxTimeLimitMs: 1000,
  memoryMb: 64,
  maxWaitMs: 1000,
  loadTimeoutMs: 5000,
  concurrency: 1,
  maxQueued: 1,
};

export async function checkRules(dir: string): Promise<CheckReport> {
  const files = readdirSync(dir, { withFileTypes: true })
    .filter((d) => d.isFile() && isRuleFile(d.name))
    .map((d) => d.name)
    .sort();
  const lines: string[] = [];
  const problems = new Map<string, string[]>();
  const add = (file: string, p: string) => problems.set(file, [...(problems.get(file) ?? []), p]);
  const typeErrors = await typeCheck(dir, files);
  if (typeErrors === undefined)
    lines.push('note: typescript is not installed; rule files are validated but not type-checked');
  else for (const [file, errs] of typeErrors) for (const e of errs) add(file, e);

  const names = new Map<string, string>();
  const passed: string[] = [];
  // A thread per file: a file that loops or runs out of memory must not fail the others checked with it.
  const watchdog = new RulePool({ threads: 0 });
  for (const file of files) {
    const compiled = await compileRule(join(dir, file));
    if (!compiled.ok) {
      add(file, `does not compile: ${compiled.message}`);
      continue;
    }
    const noRun = async () => {
      throw new Error('rules do not run while checked');
    };
    const host = { call: noRun, log: () => undefined, saveState: () => undefined, state: () => ({}) };
    const worker = new RuleWorker(file, compiled.code, LIMITS, host, watchdog);
    const loaded = await worker.load();
    await worker.stop();
    if (!loaded.ok) {
      add(file, `does not load: ${loaded.message}`);
      continue;
    }
    const problem = descriptorProblem(loaded.definition);
    if (problem !== undefined) {
      add(file, `is not a valid rule: ${problem}`);
      continue;
    }
    const d = loaded.definition as RuleDescriptor;
    if (d.on.schedule !== undefined) {
      try {
        compileSchedule(d.on.schedule);
      } catch (err) {
        add(file, `has a bad schedule: ${(err as Error).message}`);
      }
    }
    const other = names.get(d.name);
    if (other !== undefined) add(file, `the name ${d.name} is already used by ${other}`);
    names.set(d.name, file);
    if (!problems.has(file)) passed.push(d.name);
  }
  for (const file of files) {
    const p = problems.get(file);
    if (p === undefined) lines.push(`ok    ${file}`);
    else for (const line of p) lines.push(`FAIL  ${file}: ${line}`);
  }
  lines.push(`${files.length - problems.size} of ${files.length} rule files pass`);
  return { ok: problems.size === 0, lines, rules: passed };
}

/** Type errors by file; undefined when TypeScript is not installed. */
async function typeCheck(dir: string, files: string[]): Promise<Map<string, string[]> | undefined> {
  let ts: typeof import('typescript');
  try {
    ts = (await import('typescript')).default;
  } catch {
    return undefined;
  }
  const api = rulesSource('rule');
  const virtual = new Map<string, string>();
  const ownerOf = new Map<string, string>();
  for (const file of files) {
    const v = join(dir, `__rules_check__${basename(file)}.ts`);
    virtual.set(
      v,
      `import def from ${JSON.stringify(`./${file}`)};\n` +
        `import type { RuleDefinition } from ${JSON.stringify(api)};\n` +
        'export const checked: RuleDefinition = def;\n',
    );
    ownerOf.set(v, file);
  }
  const options: import('typescript').CompilerOptions = {
    strict: true,
    noEmit: true,
    target: ts.ScriptTarget.ES2022,
    module: ts.ModuleKind.ESNext,
    moduleResolution: ts.ModuleResolutionKind.Bundler,
    allowImportingTsExtensions: true,
    allowJs: true,
    skipLibCheck: true,
    types: ['node'],
    lib: ['lib.es2022.d.ts', 'lib.dom.d.ts'],
  };
  const host = ts.createCompilerHost(options);
  const getSourceFile = host.getSourceFile.bind(host);
  host.getSourceFile = (name, lang, onError, create) => {
    const text = virtual.get(resolve(name));
    return text !== undefined
      ? ts.createSourceFile(name, text, lang, true)
      : getSourceFile(name, lang, onError, create);
  };
  const fileExists = host.fileExists.bind(host);
  host.fileExists = (name) => virtual.has(resolve(name)) || fileExists(name);
  const readFile = host.readFile.bind(host);
  host.readFile = (name) => virtual.get(resolve(name)) ?? readFile(name);
  const program = ts.createProgram([...virtual.keys()], options, host);
  const out = new Map<string, string[]>();
  for (const d of ts.getPreEmitDiagnostics(program)) {
    const name = d.file === undefined ? undefined : resolve(d.file.fileName);
    const owner = name === undefined ? undefined : (ownerOf.get(name) ?? files.find((f) => resolve(dir, f) === name));
    if (owner === undefined || d.file === undefined) continue;
    const message = ts.flattenDiagnosticMessageText(d.messageText, '\n').split('\n').slice(0, 4).join(' ');
    const { line, character } = d.file.getLineAndCharacterOfPosition(d.start ?? 0);
    const where = ownerOf.has(name as string) ? 'default export' : `${line + 1}:${character + 1}`;
    out.set(owner, [...(out.get(owner) ?? []), `type error at ${where}: ${message}`]);
  }
  return out;
}
