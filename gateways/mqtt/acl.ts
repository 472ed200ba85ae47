// What an authenticated node may do on the embedded broker. A node is known by its id (the MQTT username its
// token was checked against); it may speak only for itself and listen only to what is addressed to it.
import { parseCheckPayload } from './codec.ts';
import { TOPIC_GATEWAY_CHECK, TOPIC_NODE_CHECK } from './topics.ts';

export type AclDecision = { ok: true } | { ok: false; reason: string };

const ALLOW: AclDecision = { ok: true };

/**
 * Publish: `node/<own id>/…`, and `node/check` only with its own id in the payload (otherwise a node could make
 * the gateway announce and discover any other id).
 */
export function mayPublish(nodeId: string, topic: string, payload: Buffer): AclDecision {
  if (topic === TOPIC_NODE_CHECK) {
    const check = parseCheckPayload(payload);
    if (!check.ok) return { ok: false, reason: `node/check payload: ${check.detail}` };
    return check.value === nodeId ? ALLOW : { ok: false, reason: 'node/check for another node id' };
  }
  // The id has no '/', '+' or '#' (checked at authentication), so this prefix test is exact.
  if (topic.startsWith(`node/${nodeId}/`)) return ALLOW;
  return { ok: false, reason: 'topic outside node/<own id>/' };
}

/** Subscribe: `gateway/<own id>/…` (wildcards allowed below that level) and `gateway/check`. */
export function maySubscribe(nodeId: string, filter: string): AclDecision {
  if (filter === TOPIC_GATEWAY_CHECK) return ALLOW;
  if (filter.startsWith(`gateway/${nodeId}/`)) return ALLOW;
  return { ok: false, reason: 'filter outside gateway/<own id>/ and gateway/check' };
}
