// THE node table of a gateway: one map, keyed by uid, whatever the protocol. Each entry carries what the core
// needs (liveness, the resources it replays to the broker, the proof of identity) and the adapter's own state
// for that node (a socket, an address, observations), so no gateway keeps a second map of its nodes.
import type { Json } from '../../services/protocol/messages.ts';

/**
 * unverified: heard from, but not yet proven reachable (CoAP probes first); discovering: its resources are being
 * asked for; online: discovered (or it reports values unasked).
 */
export type NodeStatus = 'unverified' | 'discovering' | 'online';

export const NODE_STATUSES: readonly NodeStatus[] = ['unverified', 'discovering', 'online'];

export interface GatewayNode<S> {
  readonly uid: string;
  status: NodeStatus;
  /** Date.now() of the last sign of life (a frame, a beacon, a pong, a notification). */
  lastSeen: number;
  /** Null-prototype: keyed by names a device chose. */
  resources: Record<string, Json>;
  resourceCount: number;
  /** 'token' when the node proved its uid with a token: the broker lets such a uid move between gateways. */
  proof?: 'token';
  /** The adapter's per-node state. */
  state: S;
}

export class NodeTable<S> {
  private readonly nodes = new Map<string, GatewayNode<S>>();

  get size(): number {
    return this.nodes.size;
  }

  get(uid: string): GatewayNode<S> | undefined {
    return this.nodes.get(uid);
  }

  has(uid: string): boolean {
    return this.nodes.has(uid);
  }

  set(node: GatewayNode<S>): void {
    this.nodes.set(node.uid, node);
  }

  delete(uid: string): boolean {
    return this.nodes.delete(uid);
  }

  values(): IterableIterator<GatewayNode<S>> {
    return this.nodes.values();
  }

  uids(): IterableIterator<string> {
    return this.nodes.keys();
  }

  /** One pass over the table (called per report or scrape, not per message). */
  countByStatus(): Record<NodeStatus, number> {
    const counts: Record<NodeStatus, number> = { unverified: 0, discovering: 0, online: 0 };
    for (const node of this.nodes.values()) counts[node.status]++;
    return counts;
  }
}
