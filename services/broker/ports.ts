// The small interfaces the broker's parts are given (STYLE.md habit 15: narrow dependencies). A session, the
// write router, the peer directory and the REST API each receive the few of these they use, never the whole
// Broker; broker.ts implements them and wires the parts together, and nothing below it imports it.
import type { Counter, Histogram } from '../common/metrics.ts';
import type { NodeEvent } from './node-table.ts';
import type { ErrorCode } from '../protocol/errors.ts';
import type { GatewayRecord, NodeRecord } from '../protocol/messages.ts';
import type { TokenClaims } from '../common/tokens.ts';

/** The broker's counters (made once by counters.ts); each part is given the ones it increments. */
export interface BrokerCounters {
  gatewayFramesIn: Counter;
  clientFramesIn: Counter;
  delivered: Counter;
  toGateways: Counter;
  events: Counter;
  rejected: (reason: string) => Counter;
  writes: (result: string) => Counter;
  evicted: Counter;
  sessionsEnded: (reason: string) => Counter;
  /** Seconds from a gateway frame's arrival to its event handed to every client socket (event-latency.ts). */
  messageSeconds: Histogram;
  /** Seconds from a write's request (REST or /ws) to its result. */
  writeSeconds: Histogram;
}

/** Reading the node table (NodeTable implements it); only the broker applies events to it. */
export interface NodeReader {
  readonly size: number;
  get(uid: string): NodeRecord | undefined;
}

/** Publishes a node event on the bus; every broker applies it when it comes back (the hot path). */
export interface EventPublisher {
  /**
   * `encoded`: the event's JSON when the caller already has it. `receivedAt`: when the frame that caused it
   * arrived (performance.now()), for the message latency histogram.
   */
  /** `gateway`: the gateway the event came from (its organisation names the event's subject), when known. */
  publishEvent(event: NodeEvent, encoded?: string, receivedAt?: number, gateway?: string): void;
}

/** A refusal of a gateway frame for one node: the `error` frame's code and reason, and the counter label. */
export interface NodeRefusal {
  code: ErrorCode;
  counter: string;
  reason: string;
}

/** The table's bounds (--max-nodes, --max-resources-per-node), asked before a gateway frame is published. */
export interface NodeAdmission {
  admitNode(uid: string, resources: number): NodeRefusal | undefined;
  admitResource(uid: string, endpoint: string): NodeRefusal | undefined;
}

/** Whether a session's token still holds (finding 7 of issue 10). */
export interface TokenCheck {
  tokenEnded(claims: TokenClaims, now: number): 'expired' | 'revoked' | undefined;
}

/** The grace period of a gateway that dropped: its nodes go `out` unless it comes back in time. */
export interface GracePeriods {
  startGrace(gatewayId: string): void;
}

/** A connected gateway as the rest of the broker sees it. */
export interface GatewayView {
  readonly gatewayId: string;
  record(): GatewayRecord;
}
