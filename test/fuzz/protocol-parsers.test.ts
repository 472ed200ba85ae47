// Property tests of the broker's parse points: every frame parser and the one JSON parse. Whatever arrives,
// a parser returns a typed result (ok, or an error with a stable code and a close code) and never throws;
// what it accepts can always be serialized again. Runs scale with FUZZ_RUNS (npm run test:fuzz).
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { ErrorCode } from '../../services/protocol/errors.ts';
import {
  encode,
  parseBrokerToClientFrame,
  parseBrokerToGatewayFrame,
  parseClientFrame,
  parseGatewayFrame,
} from '../../services/protocol/frames.ts';
import {
  FRAME_WRAPPER_DEPTH,
  isIdentifier,
  jsonTooDeep,
  MAX_JSON_DEPTH,
  parseJson,
  type Parsed,
} from '../../services/protocol/schema.ts';
import { propertyRuns } from '../../utils/fuzz/budget.ts';
import { anyText, deepJson, jsonDepth, mutatedFrame } from '../../utils/fuzz/arbitraries.ts';

const ERROR_CODES = new Set<string>(Object.values(ErrorCode));

const parsers: Record<string, (text: string) => Parsed<{ type: string }>> = {
  parseGatewayFrame,
  parseClientFrame,
  parseBrokerToGatewayFrame,
  parseBrokerToClientFrame,
};

/** Valid frames of every kind each parser knows, as the seeds that mutatedFrame() bends. */
const seeds: Record<string, object[]> = {
  parseGatewayFrame: [
    { type: 'new', uid: 'n1', protocol: 'coap', data: { led: 0 }, proof: 'token' },
    { type: 'update', uid: 'n1', endpoint: 'led', data: 1 },
    { type: 'out', uid: 'n1', reason: 'timeout' },
    { type: 'reset', uid: 'n1' },
    { type: 'result', id: 'w1', result: 'ok' },
  ],
  parseClientFrame: [
    { type: 'new', data: 'client' },
    { type: 'update', id: 'w1', data: { uid: 'n1', endpoint: 'led', payload: '1' } },
  ],
  parseBrokerToGatewayFrame: [
    { type: 'write', id: 'w1', uid: 'n1', endpoint: 'led', payload: 1 },
    { type: 'error', code: 'MYC_ERR_BAD_SHAPE', reason: 'x' },
  ],
  parseBrokerToClientFrame: [
    { type: 'hello', client: 'c', role: 'viewer', broker: 'b' },
    { type: 'new', uid: 'n1', gateway: 'g', status: 'online' },
    { type: 'update', uid: 'n1', endpoint: 'led', data: 1 },
    { type: 'result', id: 'w1', uid: 'n1', endpoint: 'led', result: 'ok' },
    { type: 'synced' },
  ],
};

/** A frame carries a value of MAX_JSON_DEPTH levels inside its own wrapper levels. */
const FRAME_DEPTH = MAX_JSON_DEPTH + FRAME_WRAPPER_DEPTH;

/** The names an accepted frame carries that the identifier rule governs, per parser and frame type. */
function identifierFields(parser: string, v: Record<string, unknown>): unknown[] {
  const data = (typeof v.data === 'object' && v.data !== null ? v.data : {}) as Record<string, unknown>;
  switch (`${parser} ${v.type}`) {
    case 'parseGatewayFrame new':
      return [v.uid, ...Object.keys(data)];
    case 'parseGatewayFrame update':
      return [v.uid, v.endpoint];
    case 'parseGatewayFrame out':
    case 'parseGatewayFrame reset':
      return [v.uid];
    case 'parseGatewayFrame result':
      return [v.id];
    case 'parseClientFrame update':
      return [...(v.id === undefined ? [] : [v.id]), data.uid, data.endpoint];
    case 'parseBrokerToGatewayFrame write':
      return [v.id, v.uid, v.endpoint];
    default:
      return [];
  }
}

/** The contract every frame parser keeps, whatever the input. */
function checkParsed(result: Parsed<{ type: string }>): void {
  if (result.ok) {
    // Accepted means: an object with a string type, that serializes again (no hot path can throw on it).
    expect(typeof result.value.type).toBe('string');
    expect(encode(result.value as never)).toBeTypeOf('string');
  } else {
    expect(ERROR_CODES.has(result.code)).toBe(true);
    expect(typeof result.reason).toBe('string');
    expect(Number.isInteger(result.close)).toBe(true);
  }
}

describe('frame parsers (fast-check)', () => {
  for (const [name, parse] of Object.entries(parsers)) {
    it(`${name} returns a typed result and never throws for arbitrary text`, () => {
      fc.assert(
        fc.property(anyText(), (text) => checkParsed(parse(text))),
        { numRuns: propertyRuns() },
      );
    });

    it(`${name} returns a typed result for arbitrary JSON values, and accepted identifiers obey the rule`, () => {
      fc.assert(
        fc.property(fc.jsonValue({ maxDepth: 6, stringUnit: 'binary' }), (value) => {
          const result = parse(JSON.stringify(value));
          checkParsed(result);
        }),
        { numRuns: propertyRuns() },
      );
    });

    it(`${name} keeps its contract for valid frames with mutated fields`, () => {
      fc.assert(
        fc.property(mutatedFrame(seeds[name]), (frame) => {
          const result = parse(JSON.stringify(frame));
          checkParsed(result);
          if (result.ok) {
            // Wherever an accepted frame names a node, an endpoint, a write or a resource, the name is an identifier.
            for (const n of identifierFields(name, result.value as unknown as Record<string, unknown>)) {
              expect(isIdentifier(n)).toBeUndefined();
            }
          }
        }),
        { numRuns: propertyRuns() },
      );
    });

    it(`${name} refuses frames nested deeper than ${FRAME_DEPTH} with MYC_ERR_TOO_DEEP, up to 100,000 levels`, () => {
      fc.assert(
        fc.property(deepJson(FRAME_DEPTH + 1, 100_000), (text) => {
          const result = parse(text);
          expect(result.ok).toBe(false);
          if (!result.ok) expect(result.code).toBe(ErrorCode.TooDeep);
        }),
        { numRuns: propertyRuns(0.1) },
      );
    });
  }
});

describe('parseJson and jsonTooDeep (fast-check)', () => {
  it('jsonTooDeep agrees with the depth of JSON.parse for valid JSON at every limit', () => {
    fc.assert(
      fc.property(
        fc.jsonValue({ maxDepth: 40, stringUnit: 'binary', depthSize: 'large' }),
        fc.integer({ min: 0, max: 45 }),
        fc.boolean(),
        (value, limit, pretty) => {
          const text = pretty ? JSON.stringify(value, null, 2) : JSON.stringify(value);
          expect(jsonTooDeep(text, limit)).toBe(jsonDepth(JSON.parse(text)) > limit);
        },
      ),
      { numRuns: propertyRuns() },
    );
  });

  it('jsonTooDeep agrees with JSON.parse for strings full of brackets, quotes and escapes', () => {
    const tricky = fc.string({ unit: fc.constantFrom('[', ']', '{', '}', '"', '\\', 'a', ':', ','), maxLength: 30 });
    fc.assert(
      fc.property(fc.array(tricky, { maxLength: 8 }), fc.integer({ min: 0, max: 4 }), (strings, limit) => {
        const text = JSON.stringify(strings.reduce<unknown>((acc, s) => [s, acc], []));
        expect(jsonTooDeep(text, limit)).toBe(jsonDepth(JSON.parse(text)) > limit);
      }),
      { numRuns: propertyRuns() },
    );
  });

  it('parseJson never throws for arbitrary text, and accepts exactly the valid JSON within the depth cap', () => {
    fc.assert(
      fc.property(fc.oneof(anyText(), fc.json({ maxDepth: 40, depthSize: 'large' })), (text) => {
        const result = parseJson(text);
        let reference: { ok: true; value: unknown } | { ok: false };
        try {
          reference = { ok: true, value: JSON.parse(text) };
        } catch {
          reference = { ok: false };
        }
        if (result.ok) {
          expect(reference).toEqual({ ok: true, value: result.value });
          expect(jsonDepth(result.value)).toBeLessThanOrEqual(MAX_JSON_DEPTH);
        } else {
          expect([ErrorCode.BadJson, ErrorCode.TooDeep]).toContain(result.code);
          if (reference.ok) {
            expect(result.code).toBe(ErrorCode.TooDeep);
            expect(jsonDepth(reference.value)).toBeGreaterThan(MAX_JSON_DEPTH);
          }
        }
      }),
      { numRuns: propertyRuns() },
    );
  });
});
