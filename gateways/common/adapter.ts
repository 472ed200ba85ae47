// The one contract between the gateway core and a protocol (node-wot's ProtocolServer/ProtocolClient shape):
// the core owns nodes, liveness, metrics, health, the broker link and write routing; an adapter owns a
// transport and knows how to discover, read and write one node of its protocol. The core drives the adapter
// through this interface; the adapter reports node events through the core's methods (GatewayNodes).
import type { Json, WriteOutcome } from '../../services/protocol/messages.ts';

/** Declared once, with the bus reply it travels in (services/protocol/messages.ts). */
export type { WriteOutcome };
import type { GatewayNode, NodeStatus } from './node-table.ts';

/** What a write to a node came to; sent to the broker as the `result` frame. */
/** Whether the adapter's transport can reach nodes now (the socket is bound, the MQTT broker connected...). */
export interface TransportHealth {
  up: boolean;
  /** Said in /healthz when down, e.g. "MQTT broker mqtt://host:1883 not connected". */
  detail?: string;
}

/**
 * Why the core dropped a node and tells its adapter to let it go: silent past the liveness timeout, or forgotten
 * by an operator's `forget` action (both reported `out`, with reason `timeout` / `removed`), or refused by the
 * broker with an error code (a duplicate uid...; not reported `out`).
 */
export type ForgetReason = { reason: 'timeout' } | { reason: 'removed' } | { reason: 'refused'; code: string };

export interface ProtocolAdapter<S> {
  /** The protocol name the broker and the dashboard show ("CoAP", "MQTT", "WebSocket"). */
  readonly protocol: string;
  /** Binds the transport (listen, connect); rejects when it cannot (a busy port is a config error). */
  start(): Promise<void>;
  /** Stops accepting, closes the transport and every node connection. Safe to call twice. */
  stop(): Promise<void>;
  /** Delivers one value to one resource of one node. Never rejects for a node's failure: returns the outcome. */
  write(node: GatewayNode<S>, endpoint: string, payload: Json): Promise<WriteOutcome>;
  /** Asks the node for its resources and values again (after a broker outage, a reset). */
  discover(node: GatewayNode<S>): void;
  /**
   * The core has dropped the node (silent too long, refused by the broker): release what the adapter holds
   * for it (close its socket, drop its observations, settle its pending writes). The core reports `out` itself.
   */
  forget(node: GatewayNode<S>, reason: ForgetReason): void;
  health(): TransportHealth;
  /** Where the adapter listens for nodes (`udp://127.0.0.1:5683`), for the gateway's inventory. */
  listen?(): string[];
  /** Periodic work run on the core's one sweep timer (pings, observation renewal), before timeouts are checked. */
  tick?(now: number): void;
}

export type { GatewayNode, NodeStatus };
