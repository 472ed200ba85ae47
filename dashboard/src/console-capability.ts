// What an agent offers, read from its `console` resource (issue 12): the commands it allows with their parameter
// patterns, and whether it takes raw shell commands and PTYs. The page only mirrors the agent's own checks, so a
// user sees a bad parameter before sending it; the agent checks again and is the authority (a page can be
// tampered with, the device cannot be widened from here).
import type { Json } from '../../services/protocol/messages.ts';
import { parseJson } from '../../services/protocol/schema.ts';

export { CONSOLE_RESOURCE } from './console-client.ts';
/** Caps on what the page takes from a device: a hostile one cannot make the panel huge or slow. */
export const MAX_COMMANDS = 200;
export const MAX_PARAMS = 16;
export const MAX_PATTERN_LENGTH = 512;
export const MAX_NAME_LENGTH = 64;
export const MAX_PARAM_VALUE_LENGTH = 1024;
const NAME = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;

export interface ConsoleParam {
  name: string;
  pattern: string;
  /** The compiled pattern; undefined when it does not compile here (the command cannot be run from the page). */
  re?: RegExp;
}

export interface ConsoleCommand {
  name: string;
  params: ConsoleParam[];
  /** What the agent says the command does (shown as the button's tooltip, as text). */
  description?: string;
}

/** Longest description the page shows. */
export const MAX_DESCRIPTION_LENGTH = 256;

export interface ConsoleCapability {
  commands: ConsoleCommand[];
  shell: boolean;
  pty: boolean;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function goodName(name: string): boolean {
  // `__proto__` and friends fail the rule (they start with `_`), so they never become keys anywhere.
  return name.length <= MAX_NAME_LENGTH && NAME.test(name);
}

/** As the agent compiles it (services/agent/commands-file.ts): the whole value must match, Unicode mode. */
function compile(pattern: string): RegExp | undefined {
  try {
    return new RegExp(`^(?:${pattern})$`, 'u');
  } catch {
    return undefined;
  }
}

/**
 * The capability in a `console` resource value (JSON text, or an object), or undefined when the value is not
 * one. Entries that break the caps or the name rule are skipped, not fatal: the rest of the panel still works.
 */
export function parseCapability(value: Json | undefined): ConsoleCapability | undefined {
  let v: unknown = value;
  if (typeof v === 'string') {
    const parsed = parseJson(v);
    if (!parsed.ok) return undefined;
    v = parsed.value;
  }
  if (!isObject(v)) return undefined;
  const commands: ConsoleCommand[] = [];
  const raw = isObject(v.commands) ? v.commands : {};
  for (const [name, spec] of Object.entries(raw)) {
    if (commands.length >= MAX_COMMANDS) break;
    if (!goodName(name)) continue;
    const params: ConsoleParam[] = [];
    const rawParams = isObject(spec) && isObject(spec.params) ? spec.params : {};
    let ok = true;
    for (const [p, pattern] of Object.entries(rawParams)) {
      if (!goodName(p) || typeof pattern !== 'string' || pattern.length > MAX_PATTERN_LENGTH) {
        ok = false;
        break;
      }
      params.push({ name: p, pattern, re: compile(pattern) });
    }
    if (!ok || params.length > MAX_PARAMS) continue;
    const description =
      isObject(spec) && typeof spec.description === 'string'
        ? spec.description.slice(0, MAX_DESCRIPTION_LENGTH)
        : undefined;
    commands.push(description === undefined ? { name, params } : { name, params, description });
  }
  commands.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  return { commands, shell: v.shell === true, pty: v.pty === true };
}

export type ParamCheck = { ok: true; params: Record<string, string> } | { ok: false; errors: Map<string, string> };

// biome-ignore lint/suspicious/noControlCharactersInRegex: refusing control characters is the point
const CONTROL = /[\u0000-\u001f\u007f]/;

/** Checks the values typed for a command against its advertised patterns; every failure is named. */
export function checkParams(command: ConsoleCommand, values: Readonly<Record<string, string>>): ParamCheck {
  const errors = new Map<string, string>();
  const params: Record<string, string> = Object.create(null);
  for (const p of command.params) {
    const value = Object.hasOwn(values, p.name) ? values[p.name] : '';
    if (p.re === undefined) errors.set(p.name, 'the agent advertised a pattern this page cannot read');
    else if (value.length > MAX_PARAM_VALUE_LENGTH) errors.set(p.name, `longer than ${MAX_PARAM_VALUE_LENGTH}`);
    else if (CONTROL.test(value)) errors.set(p.name, 'control characters are not allowed');
    else if (!p.re.test(value)) errors.set(p.name, `must match ${p.pattern}`);
    else params[p.name] = value;
  }
  return errors.size > 0 ? { ok: false, errors } : { ok: true, params: { ...params } };
}
