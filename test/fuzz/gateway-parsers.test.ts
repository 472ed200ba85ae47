// Property tests of the gateways' parse points: CoAP beacons, value posts and link format, MQTT topics,
// payloads and the packet-size guard, WebSocket node frames. Whatever a device sends, the parser returns a
// typed result and never throws. Runs scale with FUZZ_RUNS (npm run test:fuzz).
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { parseLinkFormat, resourceName } from '../../gateways/coap/link-format.ts';
import {
  decodeUtf8,
  MAX_RESOURCE_LENGTH,
  MAX_UID_LENGTH,
  parseBeacon,
  parseValuePost,
} from '../../gateways/coap/codec.ts';
import { PacketSizeScanner } from '../../gateways/mqtt/frame-guard.ts';
import {
  type BadInput,
  MAX_RESOURCES_PER_NODE,
  nodeIdProblem,
  parseNodeTopic,
  resourceNameProblem,
} from '../../gateways/mqtt/topics.ts';
import { parseCheckPayload, parseResourcesPayload, parseValuePayload } from '../../gateways/mqtt/codec.ts';
import { parseNodeFrame } from '../../gateways/ws/codec.ts';
import { ErrorCode } from '../../services/protocol/errors.ts';
import { isIdentifier, MAX_JSON_DEPTH, stringifySafe } from '../../services/protocol/schema.ts';
import { anyBytes, anyName, anyText, deepJson, jsonDepth } from '../../utils/fuzz/arbitraries.ts';
import { propertyRuns } from '../../utils/fuzz/budget.ts';

const BAD_INPUTS = new Set<BadInput | 'too-deep'>([
  'bad-topic',
  'bad-id',
  'bad-resource',
  'bad-json',
  'bad-shape',
  'too-deep',
  'oversized',
  'unknown-node',
  'too-many-resources',
  'too-many-nodes',
]);
const runs = { numRuns: propertyRuns() };

describe('CoAP payloads (fast-check)', () => {
  it('decodeUtf8 never throws and accepts exactly the valid UTF-8', () => {
    fc.assert(
      fc.property(anyBytes(), (bytes) => {
        const text = decodeUtf8(bytes);
        // Valid UTF-8 is what survives a lenient decode and re-encode unchanged.
        const valid = Buffer.from(bytes.toString('utf8'), 'utf8').equals(bytes);
        expect(text !== undefined).toBe(valid);
      }),
      runs,
    );
  });

  it('parseBeacon never throws; an accepted uid is the trimmed text after the last colon, within the length cap', () => {
    const beacon = fc.oneof(
      anyText(),
      fc
        .tuple(fc.constantFrom('alive:', 'Alive:', 'reset:', 'RESET:', ':', 'alive::'), anyName())
        .map(([p, u]) => p + u),
    );
    fc.assert(
      fc.property(beacon, (text) => {
        const b = parseBeacon(text);
        if (!b.ok) {
          expect(['4.00', '4.13']).toContain(b.code);
          return;
        }
        expect(b.uid.length).toBeGreaterThan(0);
        expect(b.uid.length).toBeLessThanOrEqual(MAX_UID_LENGTH);
        expect(b.uid).toBe(b.uid.trim());
        expect(b.uid.includes(':')).toBe(false);
        expect(b.reset).toBe(text.slice(0, 5).toLowerCase() === 'reset');
      }),
      runs,
    );
  });

  it('parseValuePost never throws; an accepted post splits at the first colon with a bounded resource name', () => {
    fc.assert(
      fc.property(
        fc.oneof(
          anyText(),
          fc.tuple(anyName(), anyText()).map(([r, v]) => `${r}:${v}`),
        ),
        (text) => {
          const p = parseValuePost(text);
          if (!p.ok) {
            expect(['4.00', '4.13']).toContain(p.code);
            return;
          }
          expect(p.resource.length).toBeGreaterThan(0);
          expect(p.resource.length).toBeLessThanOrEqual(MAX_RESOURCE_LENGTH);
          expect(p.resource.includes(':')).toBe(false);
          expect(text.endsWith(p.value)).toBe(true);
        },
      ),
      runs,
    );
  });
});

/** A link the generator serializes, to check the parser reads it back. */
interface GenLink {
  target: string;
  attrs: Array<[string, string | true]>;
}

const ptoken = fc.string({
  unit: fc.constantFrom(...'abcXYZ019!#$&+-.^_`|~*:/'.split('')),
  minLength: 1,
  maxLength: 8,
});
const linkArb: fc.Arbitrary<GenLink> = fc.record({
  target: fc.string({ unit: 'binary', maxLength: 20 }).map((t) => t.replace(/>/g, '')),
  attrs: fc.uniqueArray(
    fc.tuple(
      fc.string({ unit: fc.constantFrom(...'abcdefgxyz019-_.'.split('')), minLength: 1, maxLength: 6 }),
      fc.oneof(fc.constant(true as const), ptoken, fc.string({ unit: 'binary', maxLength: 12 })),
    ),
    { maxLength: 4, selector: ([name]) => name },
  ),
});

function serializeLink(l: GenLink): string {
  const attrs = l.attrs.map(([name, value]) => {
    if (value === true) return `;${name}`;
    return `;${name}="${value.replace(/["\\]/g, (c) => `\\${c}`)}"`;
  });
  return `<${l.target}>${attrs.join('')}`;
}

describe('CoRE link format (fast-check)', () => {
  it('parseLinkFormat never throws on arbitrary text and every link target is free of ">"', () => {
    const linkish = fc.string({
      unit: fc.constantFrom('<', '>', ';', ',', '=', '"', '\\', ' ', 'a', '/', 'obs', 'rt'),
      maxLength: 200,
    });
    fc.assert(
      fc.property(fc.oneof(anyText(), linkish), (text) => {
        const r = parseLinkFormat(text);
        expect(Array.isArray(r.links)).toBe(true);
        for (const l of r.links) {
          expect(l.target.includes('>')).toBe(false);
          expect(typeof l.obs).toBe('boolean');
          resourceName(l.target);
        }
      }),
      runs,
    );
  });

  it('parseLinkFormat reads back every target and quoted attribute a generator serialized', () => {
    fc.assert(
      fc.property(fc.array(linkArb, { minLength: 1, maxLength: 6 }), (links) => {
        const r = parseLinkFormat(links.map(serializeLink).join(','));
        expect(r.errors).toEqual([]);
        expect(r.links.map((l) => l.target)).toEqual(links.map((l) => l.target));
        r.links.forEach((l, i) => {
          for (const [name, value] of links[i].attrs) expect(l.attrs[name]).toBe(value);
        });
      }),
      runs,
    );
  });

  it('parseLinkFormat stays linear on 200,000-character adversarial documents (under 2 s each)', () => {
    const n = 200_000;
    for (const text of [
      '<'.repeat(n),
      '<a>,'.repeat(n / 4),
      `<a>${';b'.repeat(n / 2)}`,
      `<a>;b="${'\\"'.repeat(n / 2)}`,
      ','.repeat(n),
      `<a>;b=${'x'.repeat(n)}`,
      `${'"'.repeat(n)}`,
    ]) {
      const start = performance.now();
      parseLinkFormat(text);
      expect(performance.now() - start).toBeLessThan(2000);
    }
  });

  it('resourceName never throws and never names the discovery resource', () => {
    fc.assert(
      fc.property(anyText(), (t) => {
        expect(resourceName(t)).not.toBe('.well-known/core');
      }),
      runs,
    );
  });
});

describe('MQTT topics and payloads (fast-check)', () => {
  it('parseNodeTopic never throws; an accepted id and resource are valid topic levels', () => {
    const topic = fc.oneof(
      anyText(),
      fc.tuple(fc.constantFrom('node', 'gateway', '', 'node/'), anyName(), anyName()).map((p) => p.join('/')),
    );
    fc.assert(
      fc.property(topic, (t) => {
        const r = parseNodeTopic(t);
        switch (r.kind) {
          case 'check':
            expect(t).toBe('node/check');
            break;
          case 'resources':
            expect(nodeIdProblem(r.id)).toBeUndefined();
            // Finding 3: what becomes a broker uid keeps the one identifier rule before it leaves the gateway.
            expect(isIdentifier(r.id)).toBeUndefined();
            break;
          case 'value':
            expect(nodeIdProblem(r.id)).toBeUndefined();
            expect(resourceNameProblem(r.resource)).toBeUndefined();
            expect(isIdentifier(r.id)).toBeUndefined();
            expect(isIdentifier(r.resource)).toBeUndefined();
            break;
          case 'bad':
            expect(BAD_INPUTS.has(r.reason)).toBe(true);
            break;
        }
      }),
      runs,
    );
  });

  const payload = fc.oneof(
    anyBytes(),
    fc.jsonValue({ maxDepth: 4, stringUnit: 'binary' }).map((v) => Buffer.from(JSON.stringify(v))),
    fc.record({ id: anyName() }).map((v) => Buffer.from(JSON.stringify(v))),
    fc.array(anyName(), { maxLength: MAX_RESOURCES_PER_NODE + 2 }).map((v) => Buffer.from(JSON.stringify(v))),
    fc.record({ value: fc.jsonValue({ maxDepth: 4 }) }).map((v) => Buffer.from(JSON.stringify(v))),
  );

  it('parseCheckPayload, parseResourcesPayload and parseValuePayload never throw and refuse with a known reason', () => {
    fc.assert(
      fc.property(payload, (p) => {
        for (const r of [parseCheckPayload(p), parseResourcesPayload(p), parseValuePayload(p)]) {
          if (!r.ok) expect(BAD_INPUTS.has(r.reason)).toBe(true);
        }
        const check = parseCheckPayload(p);
        if (check.ok) expect(nodeIdProblem(check.value)).toBeUndefined();
        const resources = parseResourcesPayload(p);
        if (resources.ok) {
          expect(resources.value.length).toBeLessThanOrEqual(MAX_RESOURCES_PER_NODE);
          for (const name of resources.value) expect(resourceNameProblem(name)).toBeUndefined();
        }
        const value = parseValuePayload(p);
        if (value.ok) expect(stringifySafe(value.value)).toBeTypeOf('string');
      }),
      runs,
    );
  });

  // Finding 1: a depth cap at every parse point, MQTT node payloads included (not only GatewayCore's check).
  it(`parseValuePayload refuses a value nested deeper than ${MAX_JSON_DEPTH} levels (up to 100,000)`, () => {
    fc.assert(
      fc.property(deepJson(MAX_JSON_DEPTH + 1, 100_000), (deep) => {
        const r = parseValuePayload(Buffer.from(`{"value":${deep}}`));
        expect(r.ok).toBe(false);
      }),
      { numRuns: propertyRuns(0.05) },
    );
  });

  it('PacketSizeScanner gives the same verdict however the bytes are split into chunks', () => {
    fc.assert(
      fc.property(
        fc.uint8Array({ maxLength: 300 }),
        fc.array(fc.nat(300), { maxLength: 8 }),
        fc.integer({ min: 0, max: 200 }),
        (bytes, cuts, limit) => {
          const whole = new PacketSizeScanner(limit).feed(Buffer.from(bytes));
          const scanner = new PacketSizeScanner(limit);
          const points = [...new Set(cuts.map((c) => c % (bytes.length + 1)))].sort((a, b) => a - b);
          let verdict: string | undefined;
          let from = 0;
          for (const to of [...points, bytes.length]) {
            verdict ??= scanner.feed(Buffer.from(bytes.subarray(from, to)));
            from = to;
          }
          expect(verdict).toBe(whole);
        },
      ),
      runs,
    );
  });

  it('PacketSizeScanner refuses exactly the packets whose remaining length exceeds the limit', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 268_435_455 }), fc.integer({ min: 0, max: 1_000_000 }), (length, limit) => {
        const header = [0x30];
        let x = length;
        do {
          let b = x % 128;
          x = Math.floor(x / 128);
          if (x > 0) b |= 0x80;
          header.push(b);
        } while (x > 0);
        const verdict = new PacketSizeScanner(limit).feed(Buffer.from(header));
        expect(verdict).toBe(length > limit ? 'oversized' : undefined);
      }),
      runs,
    );
  });
});

describe('WebSocket node frames (fast-check)', () => {
  const ERROR_CODES = new Set<string>(Object.values(ErrorCode));

  it('parseNodeFrame never throws; accepted updates have identifier keys and serializable values', () => {
    const frame = fc.oneof(
      anyText(),
      fc
        .record({
          type: fc.constantFrom('update', 'hello', 'ack', 'write'),
          data: fc.dictionary(anyName(), fc.jsonValue({ maxDepth: 4 })),
        })
        .map((f) => JSON.stringify(f)),
      fc
        .record({
          type: fc.constant('ack'),
          id: anyName(),
          result: fc.constantFrom('ok', 'error', 'maybe'),
          reason: fc.jsonValue({ maxDepth: 1 }),
        })
        .map((f) => JSON.stringify(f)),
      deepJson(MAX_JSON_DEPTH, 10_000).map((d) => `{"type":"update","data":{"x":${d}}}`),
    );
    fc.assert(
      fc.property(frame, (text) => {
        const r = parseNodeFrame(text);
        if (!r.ok) {
          expect(ERROR_CODES.has(r.code)).toBe(true);
          return;
        }
        const f = r.value;
        if (f.type === 'update') {
          for (const [key, value] of Object.entries(f.data)) {
            expect(isIdentifier(key)).toBeUndefined();
            expect(jsonDepth(value)).toBeLessThanOrEqual(MAX_JSON_DEPTH + 1);
          }
          expect(stringifySafe(f)).toBeTypeOf('string');
        }
        if (f.type === 'ack') expect(isIdentifier(f.id)).toBeUndefined();
      }),
      runs,
    );
  });
});
