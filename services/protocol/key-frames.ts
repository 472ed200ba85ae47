// API keys at the gateways (issue 15): a gateway has no bus, so it asks the broker over its authenticated link
// whether a device key presented to it (WebSocket `/node` bearer, embedded MQTT broker password) is good, and the
// broker tells it which keys were revoked so it can close the sessions they opened. See docs/protocol.md.
// No I/O, no logging: schemas only.
import type { Static } from '@sinclair/typebox';
import { Identifier, OneOf, Type } from './schema-parts.ts';

/** An API key is `myk_<16 hex>_<43 base64url>` (64 characters); anything longer is refused before it is sent. */
export const MAX_KEY_TEXT = 64;
/** Key ids in one `keys-revoked` frame (the revoked keys not yet expired, of every organisation). */
export const MAX_REVOKED_KEYS = 100_000;

/** Gateway -> broker: is this device key good at this gateway? `id` pairs the answer. */
export const GwVerifyKey = Type.Object({
  type: Type.Literal('verify-key'),
  id: Identifier,
  key: Type.String({ minLength: 1, maxLength: MAX_KEY_TEXT }),
});
export type GwVerifyKey = Static<typeof GwVerifyKey>;

/**
 * Why a key was refused: `unknown` (no such key, or the text does not match), `revoked`, `expired`, `wrong-role`
 * (not a device key), `wrong-org` (the key's organisation is not the gateway's), `busy` (too many checks in flight
 * on this link), `unavailable` (the accounts service did not answer).
 */
export const KEY_REFUSALS = [
  'unknown',
  'revoked',
  'expired',
  'wrong-role',
  'wrong-org',
  'busy',
  'unavailable',
] as const;
export const KeyRefusal = OneOf(KEY_REFUSALS);
export type KeyRefusal = Static<typeof KeyRefusal>;

/** Broker -> gateway: the answer to `verify-key`. On ok, the node the key is bound to and its token id. */
export const BrKeyVerified = Type.Object({
  type: Type.Literal('key-verified'),
  id: Identifier,
  ok: Type.Boolean(),
  reason: Type.Optional(KeyRefusal),
  node: Type.Optional(Identifier),
  org: Type.Optional(Type.String({ maxLength: 64 })),
  role: Type.Optional(Type.String({ maxLength: 16 })),
  /** Seconds since the epoch, when the key expires. */
  exp: Type.Optional(Type.Number()),
  /** `key.<id>`: the sessions opened with the key carry it, and `keys-revoked` names the id. */
  jti: Type.Optional(Type.String({ maxLength: 64 })),
});
export type BrKeyVerified = Static<typeof BrKeyVerified>;

/** Broker -> gateway: the ids of every revoked (not yet expired) key, whenever the list changes. */
export const BrKeysRevoked = Type.Object({
  type: Type.Literal('keys-revoked'),
  keys: Type.Array(Type.String({ maxLength: 64 }), { maxItems: MAX_REVOKED_KEYS }),
});
export type BrKeysRevoked = Static<typeof BrKeysRevoked>;

export const keyRequestFrames = { 'verify-key': GwVerifyKey };
export const keyAnswerFrames = { 'key-verified': BrKeyVerified, 'keys-revoked': BrKeysRevoked };
