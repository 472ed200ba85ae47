// Property tests of the two inputs a service reads before it trusts anything: its config file and the tokens
// peers present. A config file either resolves or fails with one MYC_ERR_CONFIG error (never another
// exception, never an option set through the prototype); a token is refused with a typed reason, never a
// throw, and no change to a signed token's bytes is ever accepted. Runs scale with FUZZ_RUNS.
import { generateKeyPairSync, type KeyObject } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { SignJWT } from 'jose';
import { afterAll, describe, expect, it } from 'vitest';
import { type OptionTable, resolveConfig } from '../../services/common/config.ts';
import { AUDIENCE, extractToken, ISSUER, mintToken, verifyToken } from '../../services/common/tokens.ts';
import { ErrorCode, MyceliumError } from '../../services/protocol/errors.ts';
import { ROLES } from '../../services/protocol/messages.ts';
import { anyName, anyText, HOSTILE_NAMES } from '../../utils/fuzz/arbitraries.ts';
import { propertyRuns } from '../../utils/fuzz/budget.ts';

const dir = mkdtempSync(join(tmpdir(), 'myc-fuzz-config-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const table = {
  allowAnonymousViewers: { type: 'boolean', default: false, description: 'a security switch that must stay off' },
  name: { type: 'string', default: 'gw', description: 'a string' },
  limit: { type: 'number', default: 10, min: 0, description: 'a number' },
  urls: { type: 'list', default: [], description: 'a list' },
} as const satisfies OptionTable;

/** Resolves `text` as a config file; returns the config, or the MyceliumError it failed with. */
function resolveFile(text: string, ext: 'json' | 'yaml') {
  const file = join(dir, `c.${ext}`);
  writeFileSync(file, text);
  try {
    return { ok: true as const, config: resolveConfig(table, ['--config', file], {}) };
  } catch (err) {
    return { ok: false as const, err };
  }
}

/** A config file's JSON value: mostly mappings, with real, unknown and prototype keys. */
const configValue = fc.oneof(
  fc.dictionary(
    fc.oneof(fc.constantFrom('allowAnonymousViewers', 'allow-anonymous-viewers', 'name', 'limit', 'urls'), anyName()),
    fc.jsonValue({ maxDepth: 3 }),
    { maxKeys: 6 },
  ),
  fc.jsonValue({ maxDepth: 3 }),
);

describe('config files (fast-check)', () => {
  it('a JSON or YAML config file of any content resolves or fails with MYC_ERR_CONFIG, never another error', () => {
    fc.assert(
      fc.property(
        fc.oneof(
          configValue.map((v) => JSON.stringify(v)),
          anyText(),
        ),
        fc.constantFrom<'json' | 'yaml'>('json', 'yaml'),
        (text, ext) => {
          const r = resolveFile(text, ext);
          if (!r.ok) {
            expect(r.err).toBeInstanceOf(MyceliumError);
            expect((r.err as MyceliumError).code).toBe(ErrorCode.Config);
          } else {
            expect(typeof r.config.allowAnonymousViewers).toBe('boolean');
            expect(typeof r.config.name).toBe('string');
            expect(typeof r.config.limit).toBe('number');
            expect(Array.isArray(r.config.urls)).toBe(true);
          }
        },
      ),
      { numRuns: propertyRuns(0.3) },
    );
  });

  // Finding 9: `{"__proto__":{"allowAnonymousViewers":true}}` turned the option on (fixed in config.ts:
  // file keys go into a Map, prototype names are refused).
  it('no prototype key in a config file sets an option (it is refused or ignored)', () => {
    const protoKey = fc.constantFrom('__proto__', 'constructor', 'prototype', 'toString', 'hasOwnProperty', 'valueOf');
    fc.assert(
      fc.property(protoKey, fc.constantFrom<'json' | 'yaml'>('json', 'yaml'), (key, ext) => {
        const inner = '{"allowAnonymousViewers": true, "name": "evil", "limit": 99}';
        const text = ext === 'json' ? `{${JSON.stringify(key)}: ${inner}}` : `${key}: ${inner}\n`;
        const r = resolveFile(text, ext);
        if (r.ok) {
          expect(r.config.allowAnonymousViewers).toBe(false);
          expect(r.config.name).toBe('gw');
          expect(r.config.limit).toBe(10);
        } else {
          expect((r.err as MyceliumError).code).toBe(ErrorCode.Config);
        }
      }),
      { numRuns: 12 },
    );
  });

  // Finding 9 again: `key in all` found "constructor" and "toString" on the prototype (fixed: Object.hasOwn).
  it('every key of a config file that is not an option is reported as unknown', () => {
    fc.assert(
      fc.property(
        fc.constantFrom(...HOSTILE_NAMES.filter((n) => n !== ''), 'hasOwnProperty', 'valueOf', 'debugx'),
        (key) => {
          const r = resolveFile(JSON.stringify({ [key]: 1 }), 'json');
          expect(r.ok).toBe(false);
        },
      ),
      { numRuns: 40 },
    );
  });
});

const { privateKey, publicKey } = generateKeyPairSync('ed25519');
const other = generateKeyPairSync('ed25519');
const AUTH_FAILURES = new Set([
  'missing',
  'malformed',
  'bad-signature',
  'expired',
  'not-yet-valid',
  'bad-claims',
  'wrong-role',
  'revoked',
  'ttl-too-long',
]);

async function checkRefusedOrOk(key: KeyObject, token: string) {
  const r = await verifyToken(key, token, ROLES);
  if (!r.ok) expect(AUTH_FAILURES.has(r.reason)).toBe(true);
  return r;
}

const b64 = (b: Buffer) => b.toString('base64url');

describe('tokens (fast-check)', () => {
  it('verifyToken answers arbitrary strings with a typed refusal, never a throw', async () => {
    const dotted = fc
      .array(
        fc.oneof(
          anyText(40),
          fc.base64String().map((s) => s.replace(/=/g, '')),
        ),
        { maxLength: 5 },
      )
      .map((p) => p.join('.'));
    await fc.assert(
      fc.asyncProperty(fc.oneof(anyText(), dotted), async (text) => {
        const r = await checkRefusedOrOk(publicKey, text);
        expect(r.ok).toBe(false);
      }),
      { numRuns: propertyRuns() },
    );
  });

  it('a valid token with any byte of its header, payload or signature changed is never accepted', async () => {
    const token = await mintToken(privateKey, { sub: 'n1', role: 'node', ttlSeconds: 3600 });
    expect((await verifyToken(publicKey, token, ROLES)).ok).toBe(true);
    const parts = token.split('.').map((p) => Buffer.from(p, 'base64url'));
    await fc.assert(
      fc.asyncProperty(fc.nat(2), fc.nat(), fc.integer({ min: 1, max: 255 }), async (part, at, xor) => {
        const bytes = parts.map((p) => Buffer.from(p));
        const target = bytes[part];
        target[at % target.length] ^= xor;
        const r = await checkRefusedOrOk(publicKey, bytes.map(b64).join('.'));
        expect(r.ok).toBe(false);
      }),
      { numRuns: propertyRuns(0.5) },
    );
  });

  it('forged tokens (alg none, HS256 keyed with the public key, another key pair) are refused', async () => {
    const claims = {
      role: 'admin',
      sub: 'mallory',
      iss: ISSUER,
      aud: AUDIENCE,
      exp: Math.floor(Date.now() / 1000) + 600,
    };
    const none = `${b64(Buffer.from('{"alg":"none","typ":"JWT"}'))}.${b64(Buffer.from(JSON.stringify(claims)))}.`;
    const hs = await new SignJWT(claims)
      .setProtectedHeader({ alg: 'HS256' })
      .sign(publicKey.export({ format: 'der', type: 'spki' }));
    const foreign = await mintToken(other.privateKey, { sub: 'mallory', role: 'admin', ttlSeconds: 600 });
    for (const t of [none, hs, foreign]) expect((await checkRefusedOrOk(publicKey, t)).ok).toBe(false);
  });

  it('a correctly signed token with arbitrary claims is accepted only with a known role and a string subject', async () => {
    const claimValue = fc.oneof(anyName(), fc.jsonValue({ maxDepth: 2 }), fc.constantFrom(...ROLES));
    await fc.assert(
      fc.asyncProperty(claimValue, claimValue, claimValue, async (role, sub, jti) => {
        const payload: Record<string, unknown> = {
          role,
          sub,
          jti,
          iss: ISSUER,
          aud: AUDIENCE,
          exp: Math.floor(Date.now() / 1000) + 600,
        };
        // jose refuses to sign some claim types itself; those never reach a verifier.
        let token: string;
        try {
          token = await new SignJWT(payload).setProtectedHeader({ alg: 'EdDSA' }).sign(privateKey);
        } catch {
          return;
        }
        const r = await checkRefusedOrOk(publicKey, token);
        if (r.ok) {
          expect(ROLES).toContain(r.claims.role);
          expect(typeof r.claims.sub).toBe('string');
          if (r.claims.jti !== undefined) expect(typeof r.claims.jti).toBe('string');
        }
      }),
      { numRuns: propertyRuns(0.3) },
    );
  });

  it('extractToken never throws on arbitrary headers and URLs', () => {
    fc.assert(
      fc.property(anyText(), anyText(), anyText(), (auth, proto, url) => {
        const r = extractToken({ authorization: auth, 'sec-websocket-protocol': proto }, url);
        if (r.token !== undefined) expect(typeof r.token).toBe('string');
      }),
      { numRuns: propertyRuns() },
    );
  });
});
