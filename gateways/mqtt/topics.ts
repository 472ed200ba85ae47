// pyaiot's MQTT topics (docs/gateways/mqtt.md, pyaiot-protocol.md §5.2): their names, builders and the one
// parser of a topic received under node/#. The payloads are codec.ts's. No I/O here: the gateway, the embedded
// broker's ACL, the test node and the tests all use these functions.
import { isIdentifier } from '../../services/protocol/schema.ts';

/** Longest node id and resource name accepted; they become topic levels and broker uids. */
export const MAX_NODE_ID_LENGTH = 64;
export const MAX_RESOURCE_NAME_LENGTH = 64;
/** Longest resource list a node may announce (bounds the per-node cache). */
export const MAX_RESOURCES_PER_NODE = 64;

export const TOPIC_NODE_CHECK = 'node/check';
export const TOPIC_GATEWAY_CHECK = 'gateway/check';
/** The one subscription the gateway needs: presence, resource lists and values of every node. */
export const FILTER_ALL_NODES = 'node/#';

export const DISCOVER_RESOURCES = 'resources';
export const DISCOVER_VALUES = 'values';

/** Why a message from a node was refused; also the label of the `bad_input` counter. */
export type BadInput =
  | 'bad-topic'
  | 'bad-id'
  | 'bad-resource'
  | 'bad-json'
  | 'bad-shape'
  | 'too-deep'
  | 'oversized'
  | 'unknown-node'
  | 'too-many-resources'
  | 'too-many-nodes';

/** A topic under `node/` as the gateway understands it. */
export type NodeTopic =
  | { kind: 'check' }
  | { kind: 'resources'; id: string }
  | { kind: 'value'; id: string; resource: string }
  | { kind: 'bad'; reason: BadInput; detail: string };

/**
 * A name that may become one topic level: not empty, bounded, and free of the MQTT wildcards and the level
 * separator ([MQTT-4.7.1-1..3]) and of control characters (U+0000 is forbidden in topics, [MQTT-4.7.3-2]).
 * It also keeps the identifier rule every gateway applies (isIdentifier: no C1 controls, not `__proto__`,
 * `constructor` or `prototype`), so nothing the broker would refuse leaves the gateway.
 * Returns why it is refused, or undefined.
 */
export function topicLevelProblem(name: string, maxLength: number): string | undefined {
  if (name.length === 0) return 'empty';
  if (name.length > maxLength) return `longer than ${maxLength} characters`;
  for (let i = 0; i < name.length; i++) {
    const c = name.charCodeAt(i);
    // '#' 0x23, '+' 0x2b, '/' 0x2f; C0 controls and DEL
    if (c === 0x23 || c === 0x2b || c === 0x2f) return 'contains an MQTT wildcard or separator (+ # /)';
    if (c < 0x20 || c === 0x7f) return 'contains a control character';
  }
  return isIdentifier(name);
}

export function nodeIdProblem(id: string): string | undefined {
  return topicLevelProblem(id, MAX_NODE_ID_LENGTH);
}

export function resourceNameProblem(name: string): string | undefined {
  return topicLevelProblem(name, MAX_RESOURCE_NAME_LENGTH);
}

/**
 * Classifies a topic received under `node/#`. pyaiot accepted only `node/check` and three-level topics; so do we,
 * but every other shape is reported instead of raising (pyaiot §10.15).
 */
export function parseNodeTopic(topic: string): NodeTopic {
  if (topic === TOPIC_NODE_CHECK) return { kind: 'check' };
  const parts = topic.split('/');
  if (parts[0] !== 'node') return { kind: 'bad', reason: 'bad-topic', detail: 'not under node/' };
  if (parts.length < 3) return { kind: 'bad', reason: 'bad-topic', detail: 'too few levels' };
  if (parts.length > 3) return { kind: 'bad', reason: 'bad-topic', detail: 'too many levels' };
  const id = parts[1];
  const idProblem = nodeIdProblem(id);
  if (idProblem !== undefined) return { kind: 'bad', reason: 'bad-id', detail: `node id ${idProblem}` };
  const resource = parts[2];
  if (resource === 'resources') return { kind: 'resources', id };
  const resProblem = resourceNameProblem(resource);
  if (resProblem !== undefined) return { kind: 'bad', reason: 'bad-resource', detail: `resource name ${resProblem}` };
  return { kind: 'value', id, resource };
}

export function discoverTopic(id: string): string {
  return `gateway/${id}/discover`;
}

export function setTopic(id: string, resource: string): string {
  return `gateway/${id}/${resource}/set`;
}

export function valueTopic(id: string, resource: string): string {
  return `node/${id}/${resource}`;
}

export function resourcesTopic(id: string): string {
  return `node/${id}/resources`;
}
