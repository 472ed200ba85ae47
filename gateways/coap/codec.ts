// The CoAP wire formats, as pure functions (no I/O): the two payloads RIOT nodes POST to the gateway
// (pyaiot-protocol §4.1, §4.7), validated at the edge, and the byte-level bits of CoAP the gateway needs (the
// probe size, the credit a request brings, the Reset for a malformed Confirmable message). RFC 7252 §3.
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

/**
 * The reachability probe: a NON GET with no options and a 4-byte random token (RFC 7252 §3: 4 + 4 bytes).
 * Any answer carrying the token proves the node receives at that address and port; until then the gateway sends
 * it nothing but answers to its own requests and at most one probe per beacon (docs/gateways/coap.md, Amplification).
 */
export const PROBE_TOKEN_BYTES = 4;
export const PROBE_BYTES = 4 + PROBE_TOKEN_BYTES;

/** The packet fields surplus() reads (node-coap's parsed request). */
export interface ParsedRequest {
  _packet: { options?: { value?: Buffer }[] };
  payload: Buffer;
}

/**
 * Bytes a request brought beyond our empty answer to it (which repeats its header and token): a lower bound of
 * its options (at least one header byte each) and payload (with the 0xFF marker). RFC 7252 §3.
 */
export function surplus(req: ParsedRequest): number {
  let n = 0;
  for (const o of req._packet.options ?? []) n += 1 + (o.value?.length ?? 0);
  const p = req.payload.length;
  return n + (p > 0 ? 1 + p : 0);
}

/**
 * RFC 7252 §4.2: a Confirmable message the gateway cannot parse is rejected with a Reset carrying its Message
 * ID (4 bytes, never more than came in). Undefined when the datagram is not version 1 CON (then: silence).
 */
export function resetFor(raw: Buffer): Buffer | undefined {
  if (raw.length < 4 || raw[0] >> 6 !== 1 || ((raw[0] >> 4) & 3) !== 0) return undefined;
  return Buffer.from([0x70, 0x00, raw[2], raw[3]]);
}

/** pyaiot reported the socket's view (::ffff:1.2.3.4); the plain IPv4 form is what people recognise. */
export function displayAddress(address: string): string {
  return address.startsWith('::ffff:') && address.includes('.') ? address.slice(7) : address;
}
