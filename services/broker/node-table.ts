// The broker's view of every node: resources and values, status, owning gateway, last seen.
// It changes only by applying node events as they come off the bus, so every broker that sees the same
// events holds the same table, and a snapshot taken between two events is consistent with the live stream.
import type { BrokerToClientMessage, Json, NodeRecord, ToClientNew, ToClientOut } from '../protocol/messages.ts';

/** Node events are the client frames `new`, `update`, `out`, `reset`. */
export type NodeEvent = Extract<BrokerToClientMessage, { type: 'new' | 'update' | 'out' | 'reset' }>;

export class NodeTable {
  private nodes = new Map<string, NodeRecord>();

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
        } else {
          this.nodes.set(event.uid, {
            uid: event.uid,
            gateway: event.gateway,
            protocol: event.protocol,
            status: event.status,
            lastSeen: event.lastSeen,
            resources: {},
          });
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
        node.status = 'offline';
        node.reason = event.reason;
        node.lastSeen = event.lastSeen;
        return;
      }
      case 'reset': {
        const node = this.nodes.get(event.uid);
        if (node === undefined) return;
        node.resources = {};
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
    this.nodes.set(node.uid, { ...node, resources: { ...node.resources } });
    return true;
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
  return frame;
}

function outFrame(node: NodeRecord): ToClientOut {
  return { type: 'out', uid: node.uid, reason: node.reason ?? 'timeout', lastSeen: node.lastSeen };
}
