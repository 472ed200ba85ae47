// The broker's view of every node: resources and values, status, owning gateway, last seen.
// It changes only by applying node events as they come off the bus, so every broker that sees the same
// events holds the same table, and a snapshot taken between two events is consistent with the live stream.
import type { BrokerToClientMessage, Json, NodeRecord, ToClientNew, ToClientOut } from '../protocol/messages.ts';

/**
 * A resource table keyed by outside input (resource names): no prototype, so a name like `__proto__` can
 * never reach prototype machinery even if a check upstream missed it (finding 9 of issue 10).
 */
function emptyResources(): Record<string, Json> {
  return Object.create(null) as Record<string, Json>;
}

/** Node events are the client frames `new`, `update`, `out`, `reset`. */
export type NodeEvent = Extract<BrokerToClientMessage, { type: 'new' | 'update' | 'out' | 'reset' }>;

/** Why a node left its gateway: another gateway took it, an operator removed it, or it was offline too long. */
export type OwnerLost = 'moved' | 'removed' | 'evicted';

export class NodeTable {
  private nodes = new Map<string, NodeRecord>();
  /**
   * Told (as the event is applied, so in bus order on every broker) when a node leaves its gateway: the
   * broker makes that gateway's session forget the uid, so it can no longer update a node it lost.
   */
  onOwnerLost?: (node: NodeRecord, why: OwnerLost) => void;

  get size(): number {
    return this.nodes.size;
  }

  get(uid: string): NodeRecord | undefined {
    return this.nodes.get(uid);
  }

  all(): IterableIterator<NodeRecord> {
    return this.nodes.values();
  }

  countByStatus(status: NodeRecord['status']): number {
    let n = 0;
    for (const node of this.nodes.values()) if (node.status === status) n++;
    return n;
  }

  /** Nodes of one gateway, by uid. */
  ownedBy(gateway: string): NodeRecord[] {
    const out: NodeRecord[] = [];
    for (const node of this.nodes.values()) if (node.gateway === gateway) out.push(node);
    return out;
  }

  apply(event: NodeEvent, now: number): void {
    switch (event.type) {
      case 'new': {
        const existing = this.nodes.get(event.uid);
        if (existing && existing.gateway === event.gateway) {
          existing.status = event.status;
          existing.lastSeen = event.lastSeen;
          existing.protocol = event.protocol ?? existing.protocol;
          existing.reason = undefined;
          if (event.proof !== undefined) existing.proof = event.proof;
        } else {
          const node: NodeRecord = {
            uid: event.uid,
            gateway: event.gateway,
            protocol: event.protocol,
            status: event.status,
            lastSeen: event.lastSeen,
            resources: emptyResources(),
          };
          if (event.proof !== undefined) node.proof = event.proof;
          this.nodes.set(event.uid, node);
          if (existing !== undefined) this.onOwnerLost?.(existing, 'moved');
        }
        return;
      }
      case 'update': {
        const node = this.nodes.get(event.uid);
        if (node === undefined) return;
        node.resources[event.endpoint] = event.data;
        node.lastSeen = now;
        return;
      }
      case 'out': {
        const node = this.nodes.get(event.uid);
        if (node === undefined) return;
        if (event.reason === 'removed') {
          // An operator released the uid (DELETE /api/v1/nodes/:uid): the node is forgotten, not dimmed.
          this.nodes.delete(event.uid);
          this.onOwnerLost?.(node, 'removed');
          return;
        }
        node.status = 'offline';
        node.reason = event.reason;
        node.lastSeen = event.lastSeen;
        return;
      }
      case 'reset': {
        const node = this.nodes.get(event.uid);
        if (node === undefined) return;
        node.resources = emptyResources();
        node.lastSeen = now;
        return;
      }
      default: {
        const never: never = event;
        return never;
      }
    }
  }

  /** Takes a node as a peer broker reported it (state sync); a node already known here is kept. */
  adopt(node: NodeRecord): boolean {
    if (this.nodes.has(node.uid)) return false;
    this.nodes.set(node.uid, { ...node, resources: Object.assign(emptyResources(), node.resources) });
    return true;
  }

  /** Forgets a node. */
  remove(uid: string): boolean {
    return this.nodes.delete(uid);
  }

  /** Forgets every offline node last seen before `before` (ms since the epoch); returns how many. */
  evictOffline(before: number): number {
    let n = 0;
    for (const [uid, node] of this.nodes) {
      if (node.status === 'offline' && node.lastSeen < before) {
        this.nodes.delete(uid);
        this.onOwnerLost?.(node, 'evicted');
        n++;
      }
    }
    return n;
  }

  /** How many resources `node` has, counting no further than `upTo`. */
  static resourceCount(node: NodeRecord, upTo: number): number {
    let n = 0;
    for (const _ in node.resources) if (++n >= upTo) break;
    return n;
  }

  /** The frames that bring a fresh client up to date with one node. */
  static snapshotFrames(node: NodeRecord): NodeEvent[] {
    const frames: NodeEvent[] = [newFrame(node)];
    for (const endpoint in node.resources) {
      frames.push({ type: 'update', uid: node.uid, endpoint, data: node.resources[endpoint] as Json });
    }
    if (node.status === 'offline') frames.push(outFrame(node));
    return frames;
  }
}

export function newFrame(node: NodeRecord): ToClientNew {
  const frame: ToClientNew = {
    type: 'new',
    uid: node.uid,
    gateway: node.gateway,
    status: node.status,
    lastSeen: node.lastSeen,
  };
  if (node.protocol !== undefined) frame.protocol = node.protocol;
  if (node.proof !== undefined) frame.proof = node.proof;
  return frame;
}

function outFrame(node: NodeRecord): ToClientOut {
  return { type: 'out', uid: node.uid, reason: node.reason ?? 'timeout', lastSeen: node.lastSeen };
}
