// The building blocks every schema module shares: the identifier rule as a pattern, the TypeBox builders by name
// and a string enumeration. Apart from messages.ts so that a module of more frames (gateway-reports.ts) can use
// them while messages.ts gathers its frames into the families: neither imports the other's importer (no cycle).
// No I/O, no logging: the dashboard imports it too.
import {
  Array as ArrayType,
  Boolean as BooleanType,
  Integer,
  Literal,
  Number as NumberType,
  Object as ObjectType,
  Optional,
  Record,
  String as StringType,
  type TLiteral,
  type TUnion,
  Union,
  Unknown,
  Unsafe,
} from '@sinclair/typebox';

/**
 * The builders the protocol modules use, by name rather than TypeBox's `Type` (which holds every builder): the
 * page's bundle then carries only these.
 */
export const Type = {
  Array: ArrayType,
  Boolean: BooleanType,
  Integer,
  Literal,
  Number: NumberType,
  Object: ObjectType,
  Optional,
  Record,
  String: StringType,
  Union,
  Unknown,
  Unsafe,
};

export const MAX_ID_LENGTH = 256;

/**
 * The identifier rule as a regular expression, for identifiers of at most `maxLength` UTF-16 code units
 * (JavaScript's `length`; the pattern is compiled without the `u` flag): no C0/C1 control characters, and none
 * of the names that reach an object's prototype machinery.
 */
export function identifierPattern(maxLength: number): string {
  return `^(?!(?:__proto__|constructor|prototype)$)[^\\u0000-\\u001f\\u007f-\\u009f]{1,${maxLength}}$`;
}

/**
 * The identifier rule (uids, resource names, gateway ids, write ids) as one regular expression. schema.ts's
 * `isIdentifier` states the same rule with a message per violation, for error texts.
 */
export const IDENTIFIER_PATTERN = identifierPattern(MAX_ID_LENGTH);

/** Marks a schema as the identifier rule, so an error about it can say which part of the rule was broken. */
export const IDENTIFIER_RULE = 'x-mycelium-rule';

export const Identifier = Type.String({
  pattern: IDENTIFIER_PATTERN,
  [IDENTIFIER_RULE]: 'identifier',
  description: `1-${MAX_ID_LENGTH} characters, no control characters, not __proto__/constructor/prototype`,
});

/** A string one of `values`. */
export function OneOf<const T extends readonly string[]>(
  values: T,
  description?: string,
): TUnion<TLiteral<T[number]>[]> {
  return Type.Union(
    values.map((v) => Type.Literal(v)),
    description === undefined ? {} : { description },
  );
}
