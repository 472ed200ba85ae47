// The two payloads RIOT nodes POST to the gateway (pyaiot-protocol §4.1, §4.7), validated at the edge.
// No I/O here: the gateway maps each failure to its CoAP response code and counts it under `kind`.
import { isIdentifier } from '../../services/protocol/schema.ts';

export interface PayloadError {
  ok: false;
  code: '4.00';
  /** Counter label: a malformed payload, or a uid / resource name that breaks the identifier rule. */
  kind: 'bad-beacon' | 'bad-uid' | 'bad-value' | 'bad-resource';
  reason: string;
}

export interface Beacon {
  ok: true;
  uid: string;
  /** `reset:<uid>` is sent once at boot: the node's values are void until discovery refills them. */
  reset: boolean;
}

export interface ValuePost {
  ok: true;
  resource: string;
  value: string;
}

/** Longest uid accepted: RIOT sends 15-16 hex chars; pyaiot-era nodes sent uuids (36). */
export const MAX_UID_LENGTH = 128;
/** Longest resource name accepted in a `/server` post. */
export const MAX_RESOURCE_LENGTH = 128;

const utf8 = new TextDecoder('utf-8', { fatal: true });

/** Strict UTF-8 (RFC 7252 §5.5.2: text/plain payloads are UTF-8); undefined on invalid bytes. */
export function decodeUtf8(payload: Buffer): string | undefined {
  try {
    return utf8.decode(payload);
  } catch {
    return undefined;
  }
}

/** `alive:<uid>`, `Alive:<uid>` or `reset:<uid>`: the uid is the text after the LAST colon (pyaiot §4.1). */
export function parseBeacon(text: string): Beacon | PayloadError {
  const colon = text.lastIndexOf(':');
  if (colon < 0) return bad('bad-beacon', 'beacon must be "alive:<uid>" or "reset:<uid>"');
  const uid = text.slice(colon + 1).trim();
  if (uid.length === 0) return bad('bad-beacon', 'empty uid');
  if (uid.length > MAX_UID_LENGTH) return bad('bad-uid', 'uid too long');
  // The one identifier rule of the whole system (no control characters, no prototype names): refused here,
  // at the edge, so the broker never sees it (issue 10 finding 3).
  const problem = isIdentifier(uid);
  if (problem !== undefined) return bad('bad-uid', `uid ${problem}`);
  // pyaiot: "If the payload starts with reset it is flagged as a reset."
  const reset = text.slice(0, 5).toLowerCase() === 'reset';
  return { ok: true, uid, reset };
}

/** `<resource>:<value>`, split at the FIRST colon so values may contain colons (JSON, times). */
export function parseValuePost(text: string): ValuePost | PayloadError {
  const colon = text.indexOf(':');
  if (colon < 0) return bad('bad-value', 'value post must be "<resource>:<value>"');
  const resource = text.slice(0, colon).trim();
  if (resource.length === 0) return bad('bad-value', 'empty resource name');
  if (resource.length > MAX_RESOURCE_LENGTH) return bad('bad-resource', 'resource name too long');
  const problem = isIdentifier(resource);
  if (problem !== undefined) return bad('bad-resource', `resource name ${problem}`);
  // The value is kept verbatim: the SUIT firmware sends "dwnld: 6" and pyaiot forwarded " 6".
  return { ok: true, resource, value: text.slice(colon + 1) };
}

function bad(kind: PayloadError['kind'], reason: string): PayloadError {
  return { ok: false, code: '4.00', kind, reason };
}
