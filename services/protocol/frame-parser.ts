// Turns frame schemas (messages.ts) into a parser: one depth-capped JSON parse, a dispatch on `type`, one schema
// check, then typed. How a schema is checked is given by the caller: compiled to JavaScript on the server
// (frames.ts, the hot path), interpreted in the browser, whose Content-Security-Policy forbids eval
// (dashboard-frames.ts). Errors name the field and what is wrong with it, in the words of the identifier rule.
import { Kind, type TSchema } from '@sinclair/typebox';
import type { ValueError } from '@sinclair/typebox/errors';
import { ErrorCode } from './errors.ts';
import { type FrameSchemas, IDENTIFIER_RULE } from './messages.ts';
import { FRAME_WRAPPER_DEPTH, fail, isIdentifier, MAX_JSON_DEPTH, type Parsed, parseJson } from './schema.ts';

/** A schema made checkable: `check` on every frame, `firstError` only for a frame that failed it. */
export interface SchemaCheck {
  check(value: unknown): boolean;
  firstError(value: unknown): ValueError | undefined;
}

export type CheckFactory = (schema: TSchema) => SchemaCheck;

/** A parser for one frame family: typed frame, or the error code, reason and close code to answer with. */
export function frameParser<T extends { type: string }>(
  schemas: FrameSchemas,
  makeCheck: CheckFactory,
): (text: string) => Parsed<T> {
  // A Map, not an object: a frame's `type` is outside input and must never reach a prototype (`constructor`).
  const checks = new Map<string, SchemaCheck>();
  for (const type of Object.keys(schemas)) checks.set(type, makeCheck(schemas[type]));
  return (text) => {
    const json = parseJson(text, MAX_JSON_DEPTH + FRAME_WRAPPER_DEPTH);
    if (!json.ok) return json.code === ErrorCode.BadJson ? fail(ErrorCode.BadJson, 'frame is not valid JSON') : json;
    const raw = json.value;
    if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
      return fail(ErrorCode.BadShape, 'frame must be a JSON object');
    }
    const type = (raw as { type?: unknown }).type;
    if (typeof type !== 'string') return fail(ErrorCode.BadShape, 'frame has no string "type"');
    const check = checks.get(type);
    if (check === undefined) return fail(ErrorCode.BadType, `unknown message type "${type.slice(0, 40)}"`);
    if (!check.check(raw)) return fail(ErrorCode.BadShape, `${type}: ${describeError(check.firstError(raw))}`);
    return { ok: true, value: raw as T };
  };
}

/** `/data/uid` → `data.uid` (JSON Pointer, RFC 6901 §4 unescaping). */
function fieldOf(path: string): string {
  return path
    .split('/')
    .slice(1)
    .map((s) => s.replace(/~1/g, '/').replace(/~0/g, '~'))
    .join('.');
}

/** One schema error in the project's words: `"<field> <problem>"`, e.g. `uid must not be empty`. */
export function describeError(error: ValueError | undefined): string {
  if (error === undefined) return 'does not match its schema';
  const schema = error.schema as TSchema & Record<string, unknown>;
  const field = fieldOf(error.path);
  const subject = field === '' ? 'value' : field;
  if (error.value === undefined) return `${subject} is required`;
  const rule = schema[IDENTIFIER_RULE];
  if (rule === 'identifier') return `${subject} ${isIdentifier(error.value) ?? error.message}`;
  if (rule === 'identifier-keys' && field.includes('.')) {
    // An error inside a map of resource names is about a key: say which, and what is wrong with it.
    const key = field.slice(field.lastIndexOf('.') + 1);
    const record = field.slice(0, field.lastIndexOf('.'));
    const problem = isIdentifier(key);
    if (problem !== undefined) return `${record} key ${JSON.stringify(key.slice(0, 40))} ${problem}`;
  }
  if (schema[Kind] === 'Union' && Array.isArray(schema.anyOf)) {
    const literals = (schema.anyOf as TSchema[]).map((s) => s.const).filter((c) => typeof c === 'string');
    if (literals.length === schema.anyOf.length) return `${subject} must be one of ${literals.join(', ')}`;
  }
  if (schema[Kind] === 'Literal') return `${subject} must be ${JSON.stringify(schema.const)}`;
  return `${subject}: ${error.message.charAt(0).toLowerCase()}${error.message.slice(1)}`;
}
