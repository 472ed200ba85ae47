// The state of one node connection. Kept deliberately small, because tens of thousands of these live in one
// process: plain fields, no closures, no timers, no child logger (the gateway's shared event handlers reach the
// session through the socket, and log lines carry the uid instead).
import WebSocket from 'ws';
import type { OutReason } from '../../services/protocol/messages.ts';
import type { GatewayNode } from '../common/node-table.ts';

/** The socket class the gateway's WebSocketServer creates: a `ws` WebSocket that points back at its session. */
export class NodeSocket extends WebSocket {
  session?: NodeSession;
}

export class NodeSession {
  /** The node table's entry while this is the node's current connection (its lastSeen is the liveness clock). */
  node?: GatewayNode<NodeSession>;
  /** The node has said (`hello` with `ack: true`) or shown (by acking) that it acknowledges writes. */
  acks = false;
  /** Why the node goes out when its socket closes. */
  outReason: OutReason = 'closed';
  /** Token bucket of the per-connection rate limit. */
  private tokens: number;
  private refilledAt: number;

  constructor(
    readonly uid: string,
    readonly ws: NodeSocket,
    /** Authenticated with a token (an anonymous connection may not take over its id). */
    readonly authenticated: boolean,
    private readonly rate: { perSecond: number; burst: number },
    now: number,
    /** When the token expires, ms since the epoch (Infinity: anonymous); the session is closed with 4401 then. */
    readonly expiresAt: number = Number.POSITIVE_INFINITY,
    /** The token's id, checked against the revocation list by the token sweep. */
    readonly jti?: string,
  ) {
    this.tokens = rate.burst;
    this.refilledAt = now;
  }

  /** Takes one frame from the bucket; false when the node is over its rate. */
  admit(now: number): boolean {
    const elapsed = now - this.refilledAt;
    if (elapsed > 0) {
      this.tokens = Math.min(this.rate.burst, this.tokens + (elapsed * this.rate.perSecond) / 1000);
      this.refilledAt = now;
    }
    if (this.tokens < 1) return false;
    this.tokens -= 1;
    return true;
  }
}
