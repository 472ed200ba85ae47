// A small schema layer: every inbound frame is checked here once, then the rest of the code trusts the types.
// Hand-written checks instead of a schema library: this runs per message on the hot path, and the browser
// bundle stays small.
import { CloseCode, ErrorCode, type FrameError } from './errors.ts';

export type Parsed<T> = { ok: true; value: T } | FrameError;

/** A checker returns an error text, or undefined when the value fits. */
export type Check = (value: unknown) => string | undefined;

export const MAX_ID_LENGTH = 256;

export const isString: Check = (v) => (typeof v === 'string' ? undefined : 'must be a string');

/** Identifiers (uids, endpoints, write ids): non-empty strings without control characters. */
export const isIdentifier: Check = (v) => {
  if (typeof v !== 'string') return 'must be a string';
  if (v.length === 0) return 'must not be empty';
  if (v.length > MAX_ID_LENGTH) return `must be at most ${MAX_ID_LENGTH} characters`;
  // biome-ignore lint/suspicious/noControlCharactersInRegex: rejecting control characters is the point
  if (/[\u0000-\u001f\u007f]/.test(v)) return 'must not contain control characters';
  return undefined;
};

/** Any JSON value, but present. */
export const isAny: Check = (v) => (v === undefined ? 'is required' : undefined);

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
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch {
    return fail(ErrorCode.BadJson, 'frame is not valid JSON');
  }
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
