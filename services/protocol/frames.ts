import {
  actionResultShape,
  actionShape,
  gatewayActionClientShape,
  gatewayClientShapes,
  inventoryShape,
  statusShape,
} from './gateway-reports.ts';
import {
  type BrokerToClientMessage,
  type BrokerToGatewayMessage,
  type ClientMessage,
  type GatewayMessage,
  OUT_REASONS,
  WRITE_RESULTS,
} from './messages.ts';
import {
  type Check,
  checkShape,
  isAny,
  isIdentifier,
  isIdentifierRecord,
  isRecord,
  isString,
  oneOf,
  optional,
  type Parsed,
  parseFrame,
  type Shape,
  stringifySafe,
} from './schema.ts';

/** Most resources one node may announce in a `new` frame (the gateways cap resources per node too). */
export const MAX_RESOURCES_PER_NODE = 256;

const writeRequest: Shape = { uid: isIdentifier, endpoint: isIdentifier, payload: isAny };
const isWriteRequest: Check = (v) => isRecord(v) ?? checkShape(v as Record<string, unknown>, writeRequest, 'data.');

/** Frames a gateway may send on /gw. */
const gatewayShapes: Record<string, Shape> = {
  new: {
    uid: isIdentifier,
    protocol: optional(isString),
    data: optional(isIdentifierRecord(MAX_RESOURCES_PER_NODE)),
    proof: optional(oneOf(['token'])),
  },
  update: { uid: isIdentifier, endpoint: isIdentifier, data: isAny },
  out: { uid: isIdentifier, reason: oneOf(OUT_REASONS) },
  reset: { uid: isIdentifier },
  result: { id: isIdentifier, result: oneOf(WRITE_RESULTS), reason: optional(isString) },
  inventory: inventoryShape,
  status: statusShape,
  'action-result': actionResultShape,
};

/** Frames a web client may send on /ws (pyaiot's two, plus an optional write id). */
const clientShapes: Record<string, Shape> = {
  new: { data: oneOf(['client']) },
  update: { id: optional(isIdentifier), data: isWriteRequest },
  'gateway-action': gatewayActionClientShape,
};

/** Frames the broker sends to a gateway. */
const brokerToGatewayShapes: Record<string, Shape> = {
  write: { id: isIdentifier, uid: isIdentifier, endpoint: isIdentifier, payload: isAny },
  error: { code: isString, reason: isString },
  action: actionShape,
};

/** Frames the broker sends to a web client (the dashboard validates what it receives too). */
const brokerToClientShapes: Record<string, Shape> = {
  hello: { client: isString, role: isString, broker: isString },
  new: { uid: isString, gateway: isString, status: oneOf(['online', 'offline']), proof: optional(oneOf(['token'])) },
  update: { uid: isString, endpoint: isString, data: isAny },
  out: { uid: isString, reason: isString },
  reset: { uid: isString },
  result: { id: isString, uid: isString, endpoint: isString, result: oneOf(WRITE_RESULTS) },
  synced: {},
  error: { code: isString, reason: isString },
  ...gatewayClientShapes,
};

export function parseGatewayFrame(text: string): Parsed<GatewayMessage> {
  return parseFrame<GatewayMessage>(text, gatewayShapes);
}

export function parseClientFrame(text: string): Parsed<ClientMessage> {
  return parseFrame<ClientMessage>(text, clientShapes);
}

export function parseBrokerToGatewayFrame(text: string): Parsed<BrokerToGatewayMessage> {
  return parseFrame<BrokerToGatewayMessage>(text, brokerToGatewayShapes);
}

export function parseBrokerToClientFrame(text: string): Parsed<BrokerToClientMessage> {
  return parseFrame<BrokerToClientMessage>(text, brokerToClientShapes);
}

/**
 * Serializes an outbound message. One call per message, never per recipient. Never throws: undefined when
 * the message cannot be serialized (see stringifySafe); the caller drops and counts it.
 */
export function encode(
  msg: BrokerToClientMessage | BrokerToGatewayMessage | GatewayMessage | ClientMessage,
): string | undefined {
  return stringifySafe(msg);
}
