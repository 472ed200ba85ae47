// Every message exchanged over the broker's two WebSocket endpoints and its REST API, declared once as a
// TypeBox schema; each TypeScript type is derived from its schema (`Static`), so the check and the type cannot
// drift apart. This module has no I/O and no logging: the broker, the gateways and the browser dashboard import
// it. It builds schemas only; how they are checked (compiled on the server, interpreted in the browser, whose
// CSP forbids eval) is frames.ts's and dashboard-frames.ts's business.
// The vocabulary (`new`, `update`, `out`, `reset`) is pyaiot's, so a pyaiot-style web client still works;
// everything else here (reasons, status, write ids and results) is what pyaiot lacked. See docs/protocol.md.
import type { Static, TSchema } from '@sinclair/typebox';
import {
  BrAction,
  ClGatewayAction,
  GwActionResult,
  GwInventory,
  GwStatus,
  Status,
  ToClientActionResult,
  ToClientGateway,
  ToClientGatewayGone,
} from './gateway-reports.ts';
import { IDENTIFIER_PATTERN, IDENTIFIER_RULE, Identifier, MAX_ID_LENGTH, OneOf, Type } from './schema-parts.ts';
// [console] the device console's frames (issue 12), on every link
import {
  type ExecAnswerFrame,
  type ExecRequestFrame,
  execAnswerFrames,
  execRequestFrames,
} from './console-messages.ts';

export * from './console-messages.ts';
// [accounts] device keys checked by the broker for the gateways (issue 15)
import {
  type BrKeysRevoked,
  type BrKeyVerified,
  type GwVerifyKey,
  keyAnswerFrames,
  keyRequestFrames,
} from './key-frames.ts';

export * from './key-frames.ts';

export { IDENTIFIER_PATTERN, IDENTIFIER_RULE, Identifier, MAX_ID_LENGTH };

/** Any JSON value a device can report. */
export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

/** Most resources one node may announce in a `new` frame (the gateways cap resources per node too). */
export const MAX_RESOURCES_PER_NODE = 256;

/**
 * Any JSON value, present. Not checked deeper: it came out of JSON.parse behind the depth cap (schema.ts
 * parseJson), so it is JSON by construction, and walking every value would cost the hot path for nothing.
 */
export const JsonValue = Type.Unsafe<Json>(Type.Unknown({ description: 'any JSON value' }));

/** A map whose keys obey the identifier rule (resource names), with any JSON values. */
function IdentifierRecord(maxKeys: number) {
  return Type.Record(Type.String({ pattern: IDENTIFIER_PATTERN }), JsonValue, {
    additionalProperties: false,
    maxProperties: maxKeys,
    [IDENTIFIER_RULE]: 'identifier-keys',
  });
}

/** Milliseconds since the epoch. */
const EpochMs = Type.Number({ description: 'milliseconds since the epoch' });

/** Why a node went offline. */
export const OUT_REASONS = ['timeout', 'closed', 'gateway-lost', 'replaced', 'shutdown', 'removed'] as const;
export const OutReason = OneOf(OUT_REASONS, 'why the node went offline');
export type OutReason = Static<typeof OutReason>;

/** Outcome of a write: `ok` = node confirmed, `delivered` = sent but the node does not acknowledge. */
export const WRITE_RESULTS = ['ok', 'delivered', 'error', 'timeout'] as const;
export const WriteResult = OneOf(WRITE_RESULTS, 'ok: the node confirmed; delivered: sent, the node does not ack');
export type WriteResult = Static<typeof WriteResult>;

export const ROLES = ['viewer', 'operator', 'admin', 'gateway', 'node'] as const;
export const Role = OneOf(ROLES);
export type Role = Static<typeof Role>;

export const NODE_STATUSES = ['online', 'offline'] as const;
export const NodeStatus = OneOf(NODE_STATUSES);
export type NodeStatus = Static<typeof NodeStatus>;

/**
 * How the node proved its uid to the gateway: `token` when it presented a node token whose subject is the uid
 * (WebSocket, MQTT). Absent for unauthenticated protocols (CoAP). A proven uid never goes to an unproven node.
 */
const Proof = Type.Literal('token');

/** Roles allowed to write to nodes through the broker. */
export function canWrite(role: Role): boolean {
  return role === 'operator' || role === 'admin';
}

// Frame objects tolerate unknown extra fields (forward compatibility): TypeBox objects allow them by default.

// ---------------------------------------------------------------------------------------------
// Gateway -> broker (path /gw)

/** A node appeared (or the gateway replays it after reconnecting). `data` may carry initial resources. */
export const GwNew = Type.Object({
  type: Type.Literal('new'),
  uid: Identifier,
  protocol: Type.Optional(Type.String()),
  data: Type.Optional(IdentifierRecord(MAX_RESOURCES_PER_NODE)),
  proof: Type.Optional(Proof),
});
export type GwNew = Static<typeof GwNew>;
/** One resource value of a node. */
export const GwUpdate = Type.Object({
  type: Type.Literal('update'),
  uid: Identifier,
  endpoint: Identifier,
  data: JsonValue,
});
export type GwUpdate = Static<typeof GwUpdate>;
export const GwOut = Type.Object({ type: Type.Literal('out'), uid: Identifier, reason: OutReason });
export type GwOut = Static<typeof GwOut>;
/** The node rebooted: its values are void until discovery refills them. */
export const GwReset = Type.Object({ type: Type.Literal('reset'), uid: Identifier });
export type GwReset = Static<typeof GwReset>;
/** Answer to a `write` the broker sent. */
export const GwResult = Type.Object({
  type: Type.Literal('result'),
  id: Identifier,
  result: WriteResult,
  reason: Type.Optional(Type.String()),
});
export type GwResult = Static<typeof GwResult>;
/** Node frames, plus the gateway's own reports (gateway-reports.ts). */
export type GatewayMessage =
  | GwNew
  | GwUpdate
  | GwOut
  | GwReset
  | GwResult
  | GwInventory
  | GwStatus
  | GwActionResult
  | GwVerifyKey // [accounts]
  | ExecAnswerFrame; // [console]
/** Frames a gateway may send on /gw, by type. */
export const gatewayFrames = {
  new: GwNew,
  update: GwUpdate,
  out: GwOut,
  reset: GwReset,
  result: GwResult,
  inventory: GwInventory,
  status: GwStatus,
  'action-result': GwActionResult,
  ...keyRequestFrames, // [accounts]
  ...execAnswerFrames, // [console]
};

// Broker -> gateway
export const BrWrite = Type.Object({
  type: Type.Literal('write'),
  id: Identifier,
  uid: Identifier,
  endpoint: Identifier,
  payload: JsonValue,
});
export type BrWrite = Static<typeof BrWrite>;
export const BrError = Type.Object({
  type: Type.Literal('error'),
  code: Type.String(),
  reason: Type.String(),
  uid: Type.Optional(Type.String()),
  id: Type.Optional(Type.String()),
});
export type BrError = Static<typeof BrError>;
export type BrokerToGatewayMessage =
  | BrWrite
  | BrError
  | BrAction
  | BrKeyVerified // [accounts]
  | BrKeysRevoked // [accounts]
  | ExecRequestFrame; // [console]
export const brokerToGatewayFrames = {
  write: BrWrite,
  error: BrError,
  action: BrAction,
  ...keyAnswerFrames, // [accounts]
  ...execRequestFrames,
};

// ---------------------------------------------------------------------------------------------
// Web client -> broker (path /ws)

/** pyaiot's registration: `{"type":"new","data":"client"}`. The broker answers with a full snapshot. */
export const ClNew = Type.Object({ type: Type.Literal('new'), data: Type.Literal('client') });
export type ClNew = Static<typeof ClNew>;
/** A write request, as a client frame's `data` and as the bus request on `myc.write.<gateway>`. */
export const WriteRequest = Type.Object({ uid: Identifier, endpoint: Identifier, payload: JsonValue });
export type WriteRequest = Static<typeof WriteRequest>;
/** How a write ended: the bus reply on `myc.write.<gateway>`, and what a gateway's protocol adapter returns. */
export const WriteOutcome = Type.Object({ result: WriteResult, reason: Type.Optional(Type.String()) });
export type WriteOutcome = Static<typeof WriteOutcome>;
/** pyaiot's write request; `id` is our addition and is echoed in the `result`. */
export const ClUpdate = Type.Object({
  type: Type.Literal('update'),
  id: Type.Optional(Identifier),
  data: WriteRequest,
});
export type ClUpdate = Static<typeof ClUpdate>;
/** [ws-renew] Longest token text a `token` frame may carry (a JWT is about 400 characters, an API key less). */
export const MAX_TOKEN_LENGTH = 4096;
/**
 * [ws-renew] A renewed token for the open session: the broker checks it as at the upgrade and takes it only when it
 * names the same principal (same `sub`, same `org`); answered `token-ok` or an `error` (both echo `id`).
 */
export const ClToken = Type.Object({
  type: Type.Literal('token'),
  token: Type.String({ minLength: 1, maxLength: MAX_TOKEN_LENGTH }),
  id: Type.Optional(Identifier),
});
export type ClToken = Static<typeof ClToken>;
export type ClientMessage = ClNew | ClUpdate | ClGatewayAction | ClToken | ExecRequestFrame; // [console]
export const clientFrames = {
  new: ClNew,
  update: ClUpdate,
  'gateway-action': ClGatewayAction,
  token: ClToken, // [ws-renew]
  ...execRequestFrames, // [console]
};

// Broker -> web client
export const ToClientHello = Type.Object({
  type: Type.Literal('hello'),
  client: Type.String(),
  role: Role,
  broker: Type.String(),
});
export type ToClientHello = Static<typeof ToClientHello>;
export const ToClientNew = Type.Object({
  type: Type.Literal('new'),
  uid: Type.String(),
  gateway: Type.String(),
  protocol: Type.Optional(Type.String()),
  status: NodeStatus,
  lastSeen: EpochMs,
  /** The node proved its uid with a token (see GwNew.proof); carried so every broker's table knows it. */
  proof: Type.Optional(Proof),
});
export type ToClientNew = Static<typeof ToClientNew>;
export const ToClientUpdate = Type.Object({
  type: Type.Literal('update'),
  uid: Type.String(),
  endpoint: Type.String(),
  data: JsonValue,
});
export type ToClientUpdate = Static<typeof ToClientUpdate>;
export const ToClientOut = Type.Object({
  type: Type.Literal('out'),
  uid: Type.String(),
  reason: OutReason,
  lastSeen: EpochMs,
});
export type ToClientOut = Static<typeof ToClientOut>;
export const ToClientReset = Type.Object({ type: Type.Literal('reset'), uid: Type.String() });
export type ToClientReset = Static<typeof ToClientReset>;
export const ToClientResult = Type.Object({
  type: Type.Literal('result'),
  id: Type.String(),
  uid: Type.String(),
  endpoint: Type.String(),
  result: WriteResult,
  reason: Type.Optional(Type.String()),
});
export type ToClientResult = Static<typeof ToClientResult>;
/** Sent after the last frame of a snapshot. */
export const ToClientSynced = Type.Object({ type: Type.Literal('synced'), nodes: Type.Integer({ minimum: 0 }) });
export type ToClientSynced = Static<typeof ToClientSynced>;
export const ToClientError = Type.Object({
  type: Type.Literal('error'),
  code: Type.String(),
  reason: Type.String(),
  id: Type.Optional(Type.String()),
});
export type ToClientError = Static<typeof ToClientError>;
/** [ws-renew] The session took the renewed token: it now ends at `exp` (seconds; absent: a key without expiry). */
export const ToClientTokenOk = Type.Object({
  type: Type.Literal('token-ok'),
  exp: Type.Optional(Type.Number({ minimum: 0, description: 'seconds since the epoch' })),
  role: Role,
  id: Type.Optional(Type.String()),
});
export type ToClientTokenOk = Static<typeof ToClientTokenOk>;
export type BrokerToClientMessage =
  | ToClientHello
  | ToClientNew
  | ToClientUpdate
  | ToClientOut
  | ToClientReset
  | ToClientResult
  | ToClientSynced
  | ToClientError
  | ToClientTokenOk // [ws-renew]
  | ToClientGateway
  | ToClientGatewayGone
  | ToClientActionResult
  | ExecAnswerFrame; // [console]
/** Frames the broker sends to a web client, by type (the dashboard and peer brokers check what they receive). */
export const brokerToClientFrames = {
  hello: ToClientHello,
  new: ToClientNew,
  update: ToClientUpdate,
  out: ToClientOut,
  reset: ToClientReset,
  result: ToClientResult,
  synced: ToClientSynced,
  error: ToClientError,
  'token-ok': ToClientTokenOk, // [ws-renew]
  gateway: ToClientGateway,
  'gateway-gone': ToClientGatewayGone,
  'action-result': ToClientActionResult,
  ...execAnswerFrames, // [console]
};

// ---------------------------------------------------------------------------------------------
// Node state as the broker holds it (REST bodies, snapshot source)

export const NodeRecord = Type.Object(
  {
    uid: Type.String(),
    gateway: Type.String(),
    protocol: Type.Optional(Type.String()),
    status: NodeStatus,
    lastSeen: EpochMs,
    reason: Type.Optional(OutReason),
    resources: Type.Record(Type.String(), JsonValue, { description: 'resource name → last value' }),
    /** `token`: the node proved its uid with a token; only a token-proven announcement may take it elsewhere. */
    proof: Type.Optional(Proof),
  },
  { title: 'NodeRecord', description: 'a node as the broker holds it' },
);
export type NodeRecord = Static<typeof NodeRecord>;

export const GatewayRecord = Type.Object(
  {
    id: Type.String(),
    broker: Type.String(),
    connectedAt: EpochMs,
    nodes: Type.Integer({ minimum: 0 }),
    /** The gateway's last status report, when it sent one. */
    status: Type.Optional(Status),
  },
  { title: 'GatewayRecord', description: 'a gateway connection, on this broker or a peer' },
);
export type GatewayRecord = Static<typeof GatewayRecord>;

/** The schemas of one frame family, by `type`. */
export type FrameSchemas = Readonly<Record<string, TSchema>>;
