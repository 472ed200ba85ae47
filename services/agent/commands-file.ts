// The device's allow-list (`--commands commands.yaml`): what may run, as argv templates with checked parameters.
//
//   ping:   {argv: [ping, -c, "3", "{host}"], params: {host: "^[a-z0-9.-]+$"}, timeoutMs: 10000}
//   uptime: {argv: [uptime]}
//
// A `{name}` placeholder must be a whole argv element (no partial substitution: a value can never become two
// arguments or part of an option) and every placeholder needs a declared pattern, anchored by us. Values are
// checked against it, then passed as one argv element to spawn, never through a shell.
import { readFileSync } from 'node:fs';
import { parse } from 'yaml';
import { ErrorCode, MyceliumError } from '../protocol/errors.ts';
import {
  COMMAND_NAME_PATTERN,
  type ConsoleCapability,
  type ExecParams,
  MAX_EXEC_PARAMS,
  MAX_TIMEOUT_MS,
  PARAM_NAME_PATTERN,
} from '../protocol/console-messages.ts';

export interface CommandSpec {
  argv: string[];
  /** Parameter name → the pattern its value must match (whole value). */
  params: Record<string, RegExp>;
  /** The pattern texts as written, for the capability the agent advertises. */
  patterns: Record<string, string>;
  timeoutMs?: number;
  description?: string;
}

export type CommandTable = ReadonlyMap<string, CommandSpec>;

/** Most commands one file may declare, and the longest argv. */
export const MAX_COMMANDS = 256;
const MAX_ARGV = 64;
const PLACEHOLDER = /^\{([A-Za-z][A-Za-z0-9_]{0,31})\}$/;

function bad(message: string): never {
  throw new MyceliumError(ErrorCode.Config, `commands file: ${message}`);
}

/** Parses and checks a commands file's text; every problem is a MYC_ERR_CONFIG naming the command. */
export function parseCommands(text: string): CommandTable {
  const doc: unknown = parse(text, { maxAliasCount: 0 }) ?? {};
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) bad('must be a map of command names');
  const table = new Map<string, CommandSpec>();
  const entries = Object.entries(doc as Record<string, unknown>);
  if (entries.length > MAX_COMMANDS) bad(`more than ${MAX_COMMANDS} commands`);
  for (const [name, raw] of entries) {
    if (!new RegExp(COMMAND_NAME_PATTERN).test(name))
      bad(`command name ${JSON.stringify(name)} must match ${COMMAND_NAME_PATTERN}`);
    if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) bad(`${name}: must be a map with argv`);
    const spec = raw as { argv?: unknown; params?: unknown; timeoutMs?: unknown; description?: unknown };
    if (!Array.isArray(spec.argv) || spec.argv.length === 0 || spec.argv.length > MAX_ARGV) {
      bad(`${name}: argv must be a list of 1-${MAX_ARGV} strings`);
    }
    // `{host}` unquoted in YAML is a one-key map with a null value: taken as the placeholder it was meant to be.
    const argv = spec.argv.map((a: unknown) => {
      if (typeof a === 'number') return String(a);
      if (typeof a === 'object' && a !== null && !Array.isArray(a)) {
        const keys = Object.keys(a);
        if (keys.length === 1 && (a as Record<string, unknown>)[keys[0]] === null) return `{${keys[0]}}`;
      }
      return a;
    });
    if (!argv.every((a): a is string => typeof a === 'string' && !a.includes('\0')))
      bad(`${name}: argv must be strings`);
    const declared = spec.params ?? {};
    if (typeof declared !== 'object' || declared === null || Array.isArray(declared))
      bad(`${name}: params must be a map`);
    const params: Record<string, RegExp> = {};
    const patterns: Record<string, string> = {};
    for (const [p, pattern] of Object.entries(declared as Record<string, unknown>)) {
      if (!new RegExp(PARAM_NAME_PATTERN).test(p))
        bad(`${name}: parameter name ${JSON.stringify(p)} must match ${PARAM_NAME_PATTERN}`);
      if (typeof pattern !== 'string') bad(`${name}.${p}: pattern must be a string`);
      try {
        // Anchored whatever the file says: a pattern without ^…$ must not accept a value by matching a part of it.
        params[p] = new RegExp(`^(?:${pattern})$`, 'u');
      } catch (err) {
        bad(`${name}.${p}: bad pattern: ${(err as Error).message}`);
      }
      patterns[p] = pattern;
    }
    if (Object.keys(params).length > MAX_EXEC_PARAMS) bad(`${name}: more than ${MAX_EXEC_PARAMS} params`);
    for (const a of argv) {
      const m = PLACEHOLDER.exec(a);
      if (m !== null && !Object.hasOwn(params, m[1])) bad(`${name}: {${m[1]}} has no pattern in params`);
      if (m === null && /\{[A-Za-z][A-Za-z0-9_]*\}/.test(a))
        bad(`${name}: a placeholder must be a whole argv element: ${a}`);
    }
    if (PLACEHOLDER.test(argv[0])) bad(`${name}: the program (argv[0]) cannot be a parameter`);
    const timeoutMs = spec.timeoutMs;
    if (
      timeoutMs !== undefined &&
      (typeof timeoutMs !== 'number' || !(timeoutMs >= 1 && timeoutMs <= MAX_TIMEOUT_MS))
    ) {
      bad(`${name}: timeoutMs must be 1-${MAX_TIMEOUT_MS}`);
    }
    table.set(name, {
      argv,
      params,
      patterns,
      ...(timeoutMs === undefined ? {} : { timeoutMs: timeoutMs as number }),
      ...(typeof spec.description === 'string' ? { description: spec.description.slice(0, 256) } : {}),
    });
  }
  return table;
}

export function readCommands(file: string): CommandTable {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new MyceliumError(ErrorCode.Config, `cannot read commands file ${file}: ${(err as Error).message}`, {
      cause: err,
    });
  }
  return parseCommands(text);
}

/** The argv for `name` with `params`, or why not (the `reason` of a refused exit). */
export function buildArgv(table: CommandTable, name: string, params: ExecParams = {}): string[] | string {
  const spec = table.get(name);
  if (spec === undefined) return 'command not allowed';
  for (const p of Object.keys(params)) if (!Object.hasOwn(spec.params, p)) return `unknown parameter ${p}`;
  const argv: string[] = [];
  for (const a of spec.argv) {
    const m = PLACEHOLDER.exec(a);
    if (m === null) {
      argv.push(a);
      continue;
    }
    const value = Object.hasOwn(params, m[1]) ? params[m[1]] : undefined;
    if (value === undefined) return `missing parameter ${m[1]}`;
    if (!spec.params[m[1]].test(value)) return `parameter ${m[1]} does not match its pattern`;
    argv.push(value);
  }
  return argv;
}

/** What the agent advertises as resource `console`. */
export function capabilityOf(table: CommandTable, shell: boolean, pty: boolean): ConsoleCapability {
  const commands: ConsoleCapability['commands'] = {};
  for (const [name, spec] of table) {
    commands[name] = {
      params: { ...spec.patterns },
      ...(spec.description === undefined ? {} : { description: spec.description }),
    };
  }
  return { commands, shell, pty };
}
