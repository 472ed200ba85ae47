// pyaiot's MQTT payloads (docs/gateways/mqtt.md, pyaiot-protocol.md §5.2) as pure functions: each parsed once at
// the edge into a typed value or a refusal reason, and the `set` payload serialized. No I/O here.
import { ErrorCode } from '../../services/protocol/errors.ts';
import type { Json } from '../../services/protocol/messages.ts';
import { parseJson as parseJsonText, stringifySafe } from '../../services/protocol/schema.ts';
import { type BadInput, MAX_RESOURCES_PER_NODE, nodeIdProblem, resourceNameProblem } from './topics.ts';

export type PayloadResult<T> = { ok: true; value: T } | { ok: false; reason: BadInput; detail: string };

/** The one JSON parse of a node payload: depth-capped (MAX_JSON_DEPTH), so no value can crash a serializer. */
function parseJson(payload: Buffer): PayloadResult<unknown> {
  const parsed = parseJsonText(payload.toString('utf8'));
  if (parsed.ok) return parsed;
  return parsed.code === ErrorCode.TooDeep
    ? { ok: false, reason: 'too-deep', detail: parsed.reason }
    : { ok: false, reason: 'bad-json', detail: 'payload is not JSON' };
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** `node/check`: `{"id": "<node_id>"}`. The id is checked here, before it can reach a topic. */
export function parseCheckPayload(payload: Buffer): PayloadResult<string> {
  const parsed = parseJson(payload);
  if (!parsed.ok) return parsed;
  const v = parsed.value;
  if (!isObject(v) || typeof v.id !== 'string')
    return { ok: false, reason: 'bad-shape', detail: 'expected {"id": string}' };
  const problem = nodeIdProblem(v.id);
  if (problem !== undefined) return { ok: false, reason: 'bad-id', detail: `node id ${problem}` };
  return { ok: true, value: v.id };
}

/** `node/<id>/resources`: a JSON array of resource names. */
export function parseResourcesPayload(payload: Buffer): PayloadResult<string[]> {
  const parsed = parseJson(payload);
  if (!parsed.ok) return parsed;
  const v = parsed.value;
  if (!Array.isArray(v) || !v.every((r) => typeof r === 'string')) {
    return { ok: false, reason: 'bad-shape', detail: 'expected a JSON array of strings' };
  }
  if (v.length > MAX_RESOURCES_PER_NODE) {
    return { ok: false, reason: 'too-many-resources', detail: `more than ${MAX_RESOURCES_PER_NODE} resources` };
  }
  for (const name of v as string[]) {
    const problem = resourceNameProblem(name);
    if (problem !== undefined || name === 'resources') {
      return { ok: false, reason: 'bad-resource', detail: `resource name ${problem ?? 'is reserved'}` };
    }
  }
  return { ok: true, value: [...new Set(v as string[])] };
}

/** `node/<id>/<resource>`: `{"value": <any JSON>}`. */
export function parseValuePayload(payload: Buffer): PayloadResult<Json> {
  const parsed = parseJson(payload);
  if (!parsed.ok) return parsed;
  const v = parsed.value;
  if (!isObject(v) || !('value' in v)) return { ok: false, reason: 'bad-shape', detail: 'expected {"value": ...}' };
  return { ok: true, value: v.value as Json };
}

/**
 * The payload of a `.../set` publish: pyaiot passed the web client's payload through as a raw string;
 * a non-string JSON value is sent as its JSON text.
 */
export function setPayload(payload: Json): string | undefined {
  return typeof payload === 'string' ? payload : stringifySafe(payload);
}
