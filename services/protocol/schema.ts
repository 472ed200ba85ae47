// The parse points' shared rules: the one depth-capped JSON parse for outside input, the identifier rule with a
// message per violation, and never-throwing serialization. The broker's frames are declared as TypeBox schemas
// (messages.ts) and checked by frame-parser.ts; the small hand-written combinators below (`Shape`, `parseFrame`)
// remain for the WebSocket gateway's node frames (gateways/ws/node-frames.ts), outside the broker protocol.
import { CloseCode, ErrorCode, type FrameError } from './errors.ts';
import { MAX_ID_LENGTH } from './schema-parts.ts';

export { MAX_ID_LENGTH };

export type Parsed<T> = { ok: true; value: T } | FrameError;

/** A checker returns an error text, or undefined when the value fits. */
export type Check = (value: unknown) => string | undefined;

/**
 * Deepest JSON nesting accepted at any parse point (frames, REST bodies, device payloads). Device values are
 * flat in practice; the cap exists because `JSON.stringify` recurses and throws "Maximum call stack size
 * exceeded" at a few thousand levels, so a value accepted here must always be serializable again.
 */
export const MAX_JSON_DEPTH = 32;

/**
 * Levels a frame adds around a value (`{"data":{"payload":<value>}}` is the deepest), so a frame carrying a
 * value of MAX_JSON_DEPTH levels still parses.
 */
export const FRAME_WRAPPER_DEPTH = 2;

/** Names that would reach an object's prototype machinery if a table were ever keyed by them. */
const RESERVED_IDS: ReadonlySet<string> = new Set(['__proto__', 'constructor', 'prototype']);

export const isString: Check = (v) => (typeof v === 'string' ? undefined : 'must be a string');

/**
 * The one identifier rule for uids, resource names, gateway ids and write ids, applied by the broker and by
 * every gateway before a frame leaves it: a non-empty string of at most MAX_ID_LENGTH characters, without
 * C0/C1 control characters, and none of the reserved prototype names. messages.ts's IDENTIFIER_PATTERN is the
 * same rule for schemas (test/schemas.test.ts holds the two to agreeing); this one says what was broken.
 */
export const isIdentifier: Check = (v) => {
  if (typeof v !== 'string') return 'must be a string';
  if (v.length === 0) return 'must not be empty';
  if (v.length > MAX_ID_LENGTH) return `must be at most ${MAX_ID_LENGTH} characters`;
  // biome-ignore lint/suspicious/noControlCharactersInRegex: rejecting control characters is the point
  if (/[\u0000-\u001f\u007f-\u009f]/.test(v)) return 'must not contain control characters';
  if (RESERVED_IDS.has(v)) return `must not be "${v}"`;
  return undefined;
};

/**
 * True when the JSON text nests arrays and objects deeper than `maxDepth`. A linear scan of the text before
 * parsing, skipping strings: cheaper than walking the parsed value, and it refuses the value before any
 * recursive code sees it.
 */
export function jsonTooDeep(text: string, maxDepth: number = MAX_JSON_DEPTH): boolean {
  // Fast path for the hot path's flat frames: fewer opening brackets than the cap cannot nest past it, and
  // indexOf runs at native speed where the scan below is a JavaScript loop per character.
  if (countUpTo(text, '{', maxDepth + 1) + countUpTo(text, '[', maxDepth + 1) <= maxDepth) return false;
  let depth = 0;
  const n = text.length;
  for (let i = 0; i < n; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x22 /* " */) {
      for (i++; i < n; i++) {
        const d = text.charCodeAt(i);
        if (d === 0x5c /* \ */) i++;
        else if (d === 0x22) break;
      }
    } else if (c === 0x5b /* [ */ || c === 0x7b /* { */) {
      if (++depth > maxDepth) return true;
    } else if (c === 0x5d /* ] */ || c === 0x7d /* } */) {
      depth--;
    }
  }
  return false;
}

/** Occurrences of `ch` in `text`, counting no further than `limit`. */
function countUpTo(text: string, ch: string, limit: number): number {
  let n = 0;
  for (let i = text.indexOf(ch); i >= 0 && n < limit; i = text.indexOf(ch, i + 1)) n++;
  return n;
}

/** True when a parsed value nests deeper than `maxDepth` (for values that arrive already parsed). */
export function valueTooDeep(value: unknown, maxDepth: number = MAX_JSON_DEPTH): boolean {
  // Iterative, so the check itself cannot overflow the stack on a hostile value.
  const stack: Array<[unknown, number]> = [[value, 1]];
  while (stack.length > 0) {
    const [v, depth] = stack.pop()!;
    if (typeof v !== 'object' || v === null) continue;
    if (depth > maxDepth) return true;
    for (const key in v as Record<string, unknown>) stack.push([(v as Record<string, unknown>)[key], depth + 1]);
  }
  return false;
}

export type JsonResult = { ok: true; value: unknown } | FrameError;

/**
 * The one JSON parse for outside input: refuses text nested deeper than `maxDepth` (MYC_ERR_TOO_DEEP, close
 * 1003) and invalid JSON (MYC_ERR_BAD_JSON, close 1003). Size is capped by each transport before this.
 */
export function parseJson(text: string, maxDepth: number = MAX_JSON_DEPTH): JsonResult {
  if (jsonTooDeep(text, maxDepth)) {
    return fail(ErrorCode.TooDeep, `JSON nested deeper than ${maxDepth} levels`);
  }
  try {
    return { ok: true, value: JSON.parse(text) };
  } catch {
    return fail(ErrorCode.BadJson, 'not valid JSON');
  }
}

/**
 * Serializes a value without ever throwing: undefined when it cannot be (a cycle, a BigInt, or nesting
 * beyond what JSON.stringify's recursion survives). Parse points cap depth, so this is the last line of
 * defence for hot paths, which drop and count such a message instead of crashing.
 */
export function stringifySafe(value: unknown): string | undefined {
  try {
    return JSON.stringify(value);
  } catch {
    return undefined;
  }
}

export const isRecord: Check = (v) =>
  typeof v === 'object' && v !== null && !Array.isArray(v) ? undefined : 'must be an object';

export function oneOf(values: readonly string[]): Check {
  return (v) => (typeof v === 'string' && values.includes(v) ? undefined : `must be one of ${values.join(', ')}`);
}

export function optional(check: Check): Check {
  return (v) => (v === undefined ? undefined : check(v));
}

/** Field checkers for one message type. Unknown extra fields are tolerated (forward compatibility). */
export type Shape = Record<string, Check>;

/** Checks `obj` against `shape`; returns the first problem as `"field: problem"`. */
export function checkShape(obj: Record<string, unknown>, shape: Shape, prefix = ''): string | undefined {
  for (const key in shape) {
    const problem = shape[key](obj[key]);
    if (problem !== undefined) return `${prefix}${key} ${problem}`;
  }
  return undefined;
}

export function fail(code: ErrorCode, reason: string, close: number = CloseCode.UnsupportedData): FrameError {
  return { ok: false, code, reason, close };
}

/**
 * Parses one text frame and dispatches on its `type` to the matching shape.
 * Returns the typed message or an error that says what was wrong.
 */
export function parseFrame<T extends { type: string }>(text: string, shapes: Record<string, Shape>): Parsed<T> {
  const json = parseJson(text, MAX_JSON_DEPTH + FRAME_WRAPPER_DEPTH);
  if (!json.ok) return json.code === ErrorCode.BadJson ? fail(ErrorCode.BadJson, 'frame is not valid JSON') : json;
  const raw = json.value;
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
    return fail(ErrorCode.BadShape, 'frame must be a JSON object');
  }
  const obj = raw as Record<string, unknown>;
  const type = obj.type;
  if (typeof type !== 'string') return fail(ErrorCode.BadShape, 'frame has no string "type"');
  const shape = Object.hasOwn(shapes, type) ? shapes[type] : undefined;
  if (shape === undefined) return fail(ErrorCode.BadType, `unknown message type "${type.slice(0, 40)}"`);
  const problem = checkShape(obj, shape);
  if (problem !== undefined) return fail(ErrorCode.BadShape, `${type}: ${problem}`);
  return { ok: true, value: obj as unknown as T };
}
