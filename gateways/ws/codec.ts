// The frames a WebSocket node exchanges with the gateway, as pure functions (no I/O): pyaiot's (§6 of the
// protocol reference) plus two optional additions, `hello` (the node says it acknowledges writes) and `ack` (the
// answer to a write `id`). Parse once at the edge, then the adapter works on typed frames.
import type { Json } from '../../services/protocol/messages.ts';
import {
  type Check,
  isIdentifier,
  isRecord,
  isString,
  oneOf,
  optional,
  type Parsed,
  parseFrame,
  type Shape,
} from '../../services/protocol/schema.ts';

/** pyaiot: `{"type":"update","data":{"<resource>":<value>,...}}`. */
export interface NodeUpdate {
  type: 'update';
  data: Record<string, Json>;
}
/** Ours: a node that will acknowledge writes says so up front. */
export interface NodeHello {
  type: 'hello';
  ack?: boolean;
}
/** Ours: the answer to a write that carried an `id`. */
export interface NodeAck {
  type: 'ack';
  id: string;
  result: 'ok' | 'error';
  reason?: string;
}
/** [console] An agent's answer to a console request; exec-relay.ts checks the whole frame against its schema. */
export interface NodeExecAnswer {
  type: 'exec-output' | 'exec-exit';
  id: string;
}
export type NodeFrame = NodeUpdate | NodeHello | NodeAck | NodeExecAnswer;

/** Every key of an update is a resource name, so it must be an identifier like any endpoint. */
const isResourceMap: Check = (v) => {
  const notRecord = isRecord(v);
  if (notRecord !== undefined) return notRecord;
  for (const key in v as Record<string, unknown>) {
    const problem = isIdentifier(key);
    if (problem !== undefined) return `key ${JSON.stringify(key.slice(0, 40))} ${problem}`;
  }
  return undefined;
};

const isBoolean: Check = (v) => (typeof v === 'boolean' ? undefined : 'must be true or false');

const nodeShapes: Record<string, Shape> = {
  update: { data: isResourceMap },
  hello: { ack: optional(isBoolean) },
  ack: { id: isIdentifier, result: oneOf(['ok', 'error']), reason: optional(isString) },
  'exec-output': { id: isIdentifier }, // [console]
  'exec-exit': { id: isIdentifier },
};

export function parseNodeFrame(text: string): Parsed<NodeFrame> {
  return parseFrame<NodeFrame>(text, nodeShapes);
}

/** pyaiot's `Message.discover_node()`; pyaiot nodes compare the text, so the spacing is theirs, byte for byte. */
export const DISCOVER_FRAME = '{"request": "discover"}';

/** A write as a node receives it. pyaiot nodes read `endpoint` and `payload` and ignore the extra `id`. */
export function writeFrame(endpoint: string, payload: Json, id: string): string {
  return JSON.stringify({ endpoint, payload, id });
}
