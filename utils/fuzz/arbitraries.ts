// fast-check arbitraries shared by the parser properties: hostile text, deep JSON, names that break the
// identifier rule, and valid frames with fields bent out of shape. No I/O.
import fc from 'fast-check';

/** Strings an attacker would try where a name is expected. */
export const HOSTILE_NAMES: readonly string[] = [
  '',
  '__proto__',
  'constructor',
  'prototype',
  'hasOwnProperty',
  'toString',
  'x\u0000y',
  'x\u0001y',
  'x\u007fy',
  'x\u0085y',
  'x\u009fy',
  ' ',
  'a/b',
  '+',
  '#',
  'node/+/#',
  '\ud800',
  'é',
  '💡',
  'a'.repeat(256),
  'a'.repeat(257),
  'a'.repeat(65),
  'a'.repeat(129),
];

/** Any text: full UTF-16 (lone surrogates included), control-heavy ASCII, and JSON-looking fragments. */
export function anyText(maxLength = 200): fc.Arbitrary<string> {
  return fc.oneof(
    fc.string({ unit: 'binary', maxLength }),
    fc.string({ unit: fc.integer({ min: 0, max: 0x9f }).map((c) => String.fromCharCode(c)), maxLength }),
    fc.string({ unit: fc.constantFrom('{', '}', '[', ']', '"', ':', ',', '\\', 'type', 'new', 'uid', '1'), maxLength }),
    fc.json({ maxDepth: 4 }),
    fc.constantFrom(...HOSTILE_NAMES),
  );
}

/** Any bytes, and the same as UTF-8 text of anyText(). */
export function anyBytes(maxLength = 200): fc.Arbitrary<Buffer> {
  return fc.oneof(
    fc.uint8Array({ maxLength }).map((a) => Buffer.from(a)),
    anyText(maxLength).map((s) => Buffer.from(s, 'utf8')),
  );
}

/** A name: sometimes fine, often hostile. */
export function anyName(): fc.Arbitrary<string> {
  return fc.oneof(
    fc.string({ minLength: 1, maxLength: 12 }),
    fc.constantFrom(...HOSTILE_NAMES),
    fc.string({ unit: 'binary' }),
  );
}

/** JSON text nesting between `min` and `max` levels: arrays, objects, mixed, and unclosed. */
export function deepJson(min: number, max: number): fc.Arbitrary<string> {
  return fc
    .record({
      depth: fc.integer({ min, max }),
      shape: fc.constantFrom('array', 'object', 'mixed', 'unclosed', 'in-frame'),
    })
    .map(({ depth, shape }) => {
      switch (shape) {
        case 'array':
          return `${'['.repeat(depth)}${']'.repeat(depth)}`;
        case 'object':
          return `${'{"a":'.repeat(depth)}1${'}'.repeat(depth)}`;
        case 'mixed':
          return `${'[{"a":'.repeat(Math.ceil(depth / 2))}1${'}]'.repeat(Math.ceil(depth / 2))}`;
        case 'unclosed':
          return '['.repeat(depth);
        default:
          // A well-formed frame whose value is the deep part: the depth must be refused, not the shape.
          return `{"type":"update","uid":"n","endpoint":"e","id":"w","data":${'['.repeat(depth)}${']'.repeat(depth)}}`;
      }
    });
}

/** Nesting depth of a parsed JSON value (a scalar is 0, `[]` is 1); iterative, safe on any depth. */
export function jsonDepth(value: unknown): number {
  let max = 0;
  const stack: Array<[unknown, number]> = [[value, 0]];
  while (stack.length > 0) {
    const [v, d] = stack.pop()!;
    if (typeof v !== 'object' || v === null) continue;
    const depth = d + 1;
    if (depth > max) max = depth;
    for (const child of Object.values(v as Record<string, unknown>)) stack.push([child, depth]);
  }
  return max;
}

/** One change to a frame: a field replaced by a hostile value, removed, or an extra hostile key. */
type Mutation =
  | { op: 'set'; field: string; value: unknown }
  | { op: 'delete'; field: string }
  | { op: 'add'; key: string; value: unknown };

const fieldValue = fc.oneof(
  anyName(),
  fc.jsonValue({ maxDepth: 3 }),
  fc.constantFrom<unknown>(null, true, 0, -1, 1e308, [], {}, { __proto__: null }),
);

/** A valid frame from `seeds` with zero to four mutations applied. */
export function mutatedFrame(seeds: readonly object[]): fc.Arbitrary<Record<string, unknown>> {
  return fc
    .record({
      seed: fc.constantFrom(...seeds),
      mutations: fc.array(
        fc.oneof(
          fc.record({
            op: fc.constant('set' as const),
            field: fc.constantFrom(
              'type',
              'uid',
              'endpoint',
              'id',
              'data',
              'payload',
              'reason',
              'result',
              'proof',
              'protocol',
              'status',
              'code',
            ),
            value: fieldValue,
          }),
          fc.record({
            op: fc.constant('delete' as const),
            field: fc.constantFrom('type', 'uid', 'endpoint', 'id', 'data', 'payload'),
          }),
          fc.record({ op: fc.constant('add' as const), key: anyName(), value: fieldValue }),
        ) as fc.Arbitrary<Mutation>,
        { maxLength: 4 },
      ),
    })
    .map(({ seed, mutations }) => {
      // Built from JSON so a "__proto__" key is an own property, as it would be after JSON.parse.
      const frame = JSON.parse(JSON.stringify(seed)) as Record<string, unknown>;
      for (const m of mutations) {
        if (m.op === 'delete') delete frame[m.field];
        else if (m.op === 'set')
          Object.defineProperty(frame, m.field, {
            value: m.value,
            enumerable: true,
            writable: true,
            configurable: true,
          });
        else
          Object.defineProperty(frame, m.key, { value: m.value, enumerable: true, writable: true, configurable: true });
      }
      return frame;
    });
}
