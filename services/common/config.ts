// Configuration for every service: one option table per command, resolved with the precedence
// CLI flag > environment variable (MYCELIUM_<NAME>) > --config FILE (JSON or YAML) > default.
// All problems are collected and reported at once.
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { parse as parseYaml } from 'yaml';
import { ErrorCode, MyceliumError } from '../protocol/errors.ts';

interface BaseOption {
  description: string;
  /** Environment variable; defaults to MYCELIUM_<NAME_IN_SNAKE_CASE>. `false` = none. */
  env?: string | false;
}
export interface StringOption extends BaseOption {
  type: 'string';
  default?: string;
}
export interface NumberOption extends BaseOption {
  type: 'number';
  default?: number;
  min?: number;
}
export interface BooleanOption extends BaseOption {
  type: 'boolean';
  default?: boolean;
}
/** Repeatable flag or comma-separated env / file value. */
export interface ListOption extends BaseOption {
  type: 'list';
  default?: readonly string[];
}
export type OptionSpec = StringOption | NumberOption | BooleanOption | ListOption;
export type OptionTable = Record<string, OptionSpec>;

type ValueOf<O extends OptionSpec> = O extends NumberOption
  ? number
  : O extends BooleanOption
    ? boolean
    : O extends ListOption
      ? string[]
      : string;

/** Options with a default are always present; the others may be undefined. */
export type ConfigOf<T extends OptionTable> = {
  -readonly [K in keyof T]: T[K] extends { default: unknown } ? ValueOf<T[K]> : ValueOf<T[K]> | undefined;
};

/** Options every service accepts. */
export const commonOptions = {
  config: { type: 'string', description: 'configuration file (JSON or YAML)', env: 'MYCELIUM_CONFIG' },
  logLevel: { type: 'string', default: 'info', description: 'log level: fatal, error, warn, info, debug, trace' },
  debug: { type: 'boolean', default: false, description: 'shorthand for --log-level debug' },
  help: { type: 'boolean', default: false, description: 'show this help', env: false },
} as const satisfies OptionTable;

export function kebab(name: string): string {
  return name.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);
}

export function envName(name: string, spec: OptionSpec): string | undefined {
  if (spec.env === false) return undefined;
  return spec.env ?? `MYCELIUM_${kebab(name).replace(/-/g, '_').toUpperCase()}`;
}

function coerce(name: string, spec: OptionSpec, raw: unknown, source: string, errors: string[]): unknown {
  const where = `--${kebab(name)} (${source})`;
  switch (spec.type) {
    case 'string':
      if (typeof raw === 'string') return raw;
      if (typeof raw === 'number') return String(raw);
      errors.push(`${where}: expected a string`);
      return undefined;
    case 'number': {
      const n = typeof raw === 'number' ? raw : typeof raw === 'string' && raw.trim() !== '' ? Number(raw) : Number.NaN;
      if (!Number.isFinite(n)) {
        errors.push(`${where}: expected a number, got ${JSON.stringify(raw)}`);
        return undefined;
      }
      if (spec.min !== undefined && n < spec.min) {
        errors.push(`${where}: must be at least ${spec.min}`);
        return undefined;
      }
      return n;
    }
    case 'boolean':
      if (typeof raw === 'boolean') return raw;
      if (typeof raw === 'string' && /^(1|true|yes|on)$/i.test(raw)) return true;
      if (typeof raw === 'string' && /^(0|false|no|off|)$/i.test(raw)) return false;
      errors.push(`${where}: expected true or false, got ${JSON.stringify(raw)}`);
      return undefined;
    case 'list':
      // Repeated flags and comma-separated values both work: --broker-url a,b or --broker-url a --broker-url b.
      if (Array.isArray(raw) || typeof raw === 'string')
        return ([] as unknown[])
          .concat(raw)
          .flatMap((v) => String(v).split(','))
          .map((s) => s.trim())
          .filter(Boolean);
      errors.push(`${where}: expected a list`);
      return undefined;
  }
}

/** Keys that reach an object's prototype machinery when assigned; never option names. */
const FORBIDDEN_KEYS = new Set(['__proto__', 'constructor', 'prototype']);

/**
 * Reads a config file into a null-prototype table of camelCase keys. A key like `__proto__` would otherwise
 * re-prototype the table and smuggle options in through inheritance, so such keys are reported in `errors`
 * and dropped.
 */
function readConfigFile(path: string, errors: string[]): Map<string, unknown> {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new MyceliumError(ErrorCode.Config, `cannot read config file ${path}: ${(err as Error).message}`);
  }
  let data: unknown;
  try {
    data = path.endsWith('.json') ? JSON.parse(text) : parseYaml(text);
  } catch (err) {
    throw new MyceliumError(ErrorCode.Config, `config file ${path}: ${(err as Error).message}`);
  }
  const out = new Map<string, unknown>();
  if (data === null || data === undefined) return out;
  if (typeof data !== 'object' || Array.isArray(data)) {
    throw new MyceliumError(ErrorCode.Config, `config file ${path} must hold a mapping of option names to values`);
  }
  // Object.keys lists own keys only, including an own "__proto__" made by JSON.parse or the YAML parser.
  for (const k of Object.keys(data)) {
    if (FORBIDDEN_KEYS.has(k)) {
      errors.push(`config file: key "${k}" is not allowed`);
      continue;
    }
    // Accept both kebab-case (as on the command line) and camelCase keys.
    out.set(
      k.replace(/-([a-z])/g, (_, c: string) => c.toUpperCase()),
      (data as Record<string, unknown>)[k],
    );
  }
  return out;
}

/**
 * Resolves options from argv, env and an optional config file.
 * Throws one MyceliumError listing every problem found.
 */
export function resolveConfig<T extends OptionTable>(
  table: T,
  argv: string[],
  env: NodeJS.ProcessEnv = process.env,
): ConfigOf<T> & ConfigOf<typeof commonOptions> {
  const all: OptionTable = { ...commonOptions, ...table };
  const parseOptions: Record<string, { type: 'string' | 'boolean'; multiple?: boolean }> = {};
  for (const [name, spec] of Object.entries(all)) {
    parseOptions[kebab(name)] = {
      type: spec.type === 'boolean' ? 'boolean' : 'string',
      ...(spec.type === 'list' ? { multiple: true } : {}),
    };
  }
  let flags: Record<string, unknown>;
  try {
    flags = parseArgs({ args: argv, options: parseOptions, allowPositionals: false, strict: true }).values;
  } catch (err) {
    throw new MyceliumError(ErrorCode.Config, (err as Error).message);
  }
  const errors: string[] = [];
  const configPath = (flags.config as string | undefined) ?? env.MYCELIUM_CONFIG;
  let file = new Map<string, unknown>();
  if (configPath) {
    try {
      file = readConfigFile(configPath, errors);
    } catch (err) {
      errors.push((err as Error).message);
    }
  }
  const out: Record<string, unknown> = {};
  for (const [name, spec] of Object.entries(all)) {
    const flag = flags[kebab(name)];
    const envKey = envName(name, spec);
    const envValue = envKey ? env[envKey] : undefined;
    if (flag !== undefined) out[name] = coerce(name, spec, flag, 'flag', errors);
    else if (envValue !== undefined) out[name] = coerce(name, spec, envValue, `env ${envKey}`, errors);
    else if (file.get(name) !== undefined) out[name] = coerce(name, spec, file.get(name), 'config file', errors);
    else out[name] = spec.default;
  }
  for (const key of file.keys()) {
    if (!Object.hasOwn(all, key)) errors.push(`config file: unknown option "${key}"`);
  }
  if (errors.length > 0) throw new MyceliumError(ErrorCode.Config, errors.join('\n'));
  if (out.debug) out.logLevel = 'debug';
  return out as ConfigOf<T> & ConfigOf<typeof commonOptions>;
}

/** `--help` text: every option with its environment variable and default. */
export function helpText(command: string, summary: string, table: OptionTable): string {
  const all: OptionTable = { ...table, ...commonOptions };
  const rows = Object.entries(all).map(([name, spec]) => {
    const flag = `--${kebab(name)}${spec.type === 'boolean' ? '' : ` <${spec.type === 'list' ? 'a,b' : spec.type}>`}`;
    const def =
      spec.default === undefined || (Array.isArray(spec.default) && spec.default.length === 0)
        ? ''
        : ` (default: ${Array.isArray(spec.default) ? spec.default.join(',') : String(spec.default)})`;
    const env = envName(name, spec);
    return `  ${flag.padEnd(34)} ${spec.description}${def}${env ? ` [env ${env}]` : ''}`;
  });
  return `Usage: mycelium ${command} [options]\n\n${summary}\n\nOptions:\n${rows.join('\n')}\n`;
}
