// Message types exchanged over the broker's two WebSocket endpoints.
// This module has no I/O and no logging: the broker, the gateways and the browser dashboard import it.
// The vocabulary (`new`, `update`, `out`, `reset`) is pyaiot's, so a pyaiot-style web client still works;
// everything else here (reasons, status, write ids and results) is what pyaiot lacked. See docs/protocol.md.
import type {
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

/** Any JSON value a device can report. */
export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

/** Why a node went offline. */
export const OUT_REASONS = ['timeout', 'closed', 'gateway-lost', 'replaced', 'shutdown', 'removed'] as const;
export type OutReason = (typeof OUT_REASONS)[number];

/** Outcome of a write: `ok` = node confirmed, `delivered` = sent but the node does not acknowledge. */
export const WRITE_RESULTS = ['ok', 'delivered', 'error', 'timeout'] as const;
export type WriteResult = (typeof WRITE_RESULTS)[number];

export const ROLES = ['viewer', 'operator', 'admin', 'gateway', 'node'] as const;
export type Role = (typeof ROLES)[number];

/** Roles allowed to write to nodes through the broker. */
export function canWrite(role: Role): boolean {
  return role === 'operator' || role === 'admin';
}

// ---------------------------------------------------------------------------------------------
// Gateway -> broker (path /gw)

/** A node appeared (or the gateway replays it after reconnecting). `data` may carry initial resources. */
export interface GwNew {
  type: 'new';
  uid: string;
  protocol?: string;
  data?: Record<string, Json>;
  /**
   * How the node proved its uid to the gateway: `token` when it presented a node token whose subject is the uid
   * (WebSocket, MQTT). Absent for unauthenticated protocols (CoAP). A proven uid never goes to an unproven node.
   */
  proof?: 'token';
}
/** One resource value of a node. */
export interface GwUpdate {
  type: 'update';
  uid: string;
  endpoint: string;
  data: Json;
}
export interface GwOut {
  type: 'out';
  uid: string;
  reason: OutReason;
}
/** The node rebooted: its values are void until discovery refills them. */
export interface GwReset {
  type: 'reset';
  uid: string;
}
/** Answer to a `write` the broker sent. */
export interface GwResult {
  type: 'result';
  id: string;
  result: WriteResult;
  reason?: string;
}
/** Node frames, plus the gateway's own reports (gateway-reports.ts). */
export type GatewayMessage = GwNew | GwUpdate | GwOut | GwReset | GwResult | GwInventory | GwStatus | GwActionResult;

// Broker -> gateway
export interface BrWrite {
  type: 'write';
  id: string;
  uid: string;
  endpoint: string;
  payload: Json;
}
export interface BrError {
  type: 'error';
  code: string;
  reason: string;
  uid?: string;
  id?: string;
}
export type BrokerToGatewayMessage = BrWrite | BrError | BrAction;

// ---------------------------------------------------------------------------------------------
// Web client -> broker (path /ws)

/** pyaiot's registration: `{"type":"new","data":"client"}`. The broker answers with a full snapshot. */
export interface ClNew {
  type: 'new';
  data: 'client';
}
/** pyaiot's write request; `id` is our addition and is echoed in the `result`. */
export interface ClUpdate {
  type: 'update';
  id?: string;
  data: { uid: string; endpoint: string; payload: Json };
}
export type ClientMessage = ClNew | ClUpdate | ClGatewayAction;

// Broker -> web client
export interface ToClientHello {
  type: 'hello';
  client: string;
  role: Role;
  broker: string;
}
export interface ToClientNew {
  type: 'new';
  uid: string;
  gateway: string;
  protocol?: string;
  status: NodeStatus;
  lastSeen: number;
  /** The node proved its uid with a token (see GwNew.proof); carried so every broker's table knows it. */
  proof?: 'token';
}
export interface ToClientUpdate {
  type: 'update';
  uid: string;
  endpoint: string;
  data: Json;
}
export interface ToClientOut {
  type: 'out';
  uid: string;
  reason: OutReason;
  lastSeen: number;
}
export interface ToClientReset {
  type: 'reset';
  uid: string;
}
export interface ToClientResult {
  type: 'result';
  id: string;
  uid: string;
  endpoint: string;
  result: WriteResult;
  reason?: string;
}
/** Sent after the last frame of a snapshot. */
export interface ToClientSynced {
  type: 'synced';
  nodes: number;
}
export interface ToClientError {
  type: 'error';
  code: string;
  reason: string;
  id?: string;
}
export type BrokerToClientMessage =
  | ToClientHello
  | ToClientNew
  | ToClientUpdate
  | ToClientOut
  | ToClientReset
  | ToClientResult
  | ToClientSynced
  | ToClientError
  | ToClientGateway
  | ToClientGatewayGone
  | ToClientActionResult;

// ---------------------------------------------------------------------------------------------
// Node state as the broker holds it (REST body, snapshot source)

export type NodeStatus = 'online' | 'offline';

export interface NodeRecord {
  uid: string;
  gateway: string;
  protocol?: string;
  status: NodeStatus;
  /** Milliseconds since the epoch. */
  lastSeen: number;
  reason?: OutReason;
  resources: Record<string, Json>;
  /** `token`: the node proved its uid with a token; only a token-proven announcement may take it elsewhere. */
  proof?: 'token';
}

export interface GatewayRecord {
  id: string;
  broker: string;
  connectedAt: number;
  nodes: number;
  /** The gateway's last status report (`GET /api/v1/gateways`), when it sent one. */
  status?: Status;
}
