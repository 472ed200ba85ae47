// The page's picture of every node, changed only by broker frames (already validated by the protocol parser).
import type { BrokerToClientMessage, Json, NodeStatus } from '../../services/protocol/messages.ts';

export interface NodeModel {
  uid: string;
  gateway: string;
  protocol?: string;
  status: NodeStatus;
  reason?: string;
  lastSeen: number;
  values: Map<string, Json>;
  /** Set by `reset` until the first value arrives again. */
  discovering: boolean;
}

/** What a frame changed, for the renderer: a whole node, or some of its resources. */
export type Change = { uid: string; all: true } | { uid: string; all: false; endpoint?: string };

export type NodeFrame = Extract<BrokerToClientMessage, { type: 'new' | 'update' | 'out' | 'reset' }>;

/** Applies one node frame to `nodes`; returns what changed, or undefined when the frame was for nobody. */
export function applyFrame(nodes: Map<string, NodeModel>, msg: NodeFrame, now: number): Change | undefined {
  switch (msg.type) {
    case 'new': {
      const node = nodes.get(msg.uid);
      if (node === undefined) {
        nodes.set(msg.uid, {
          uid: msg.uid,
          gateway: msg.gateway,
          protocol: msg.protocol,
          status: msg.status,
          lastSeen: msg.lastSeen,
          values: new Map(),
          discovering: false,
        });
      } else {
        // A node that comes back keeps its values (the broker keeps them too) and loses its offline reason.
        node.gateway = msg.gateway;
        node.protocol = msg.protocol ?? node.protocol;
        node.status = msg.status;
        node.reason = undefined;
        node.lastSeen = msg.lastSeen;
      }
      return { uid: msg.uid, all: true };
    }
    case 'update': {
      const node = nodes.get(msg.uid);
      // pyaiot ignores updates for unknown nodes too: the broker always announces a node first.
      if (node === undefined) return undefined;
      // pyaiot's devices send endpoints with a leading slash ("/temperature").
      const endpoint = msg.endpoint.replace(/^\/+/, '');
      node.values.set(endpoint, msg.data);
      node.discovering = false;
      if (node.status === 'online') node.lastSeen = now;
      return { uid: msg.uid, all: false, endpoint };
    }
    case 'out': {
      const node = nodes.get(msg.uid);
      if (node === undefined) return undefined;
      // An operator released the uid (DELETE /api/v1/nodes/:uid): the broker forgot the node, so does the page.
      if (msg.reason === 'removed') {
        nodes.delete(msg.uid);
        return { uid: msg.uid, all: true };
      }
      node.status = 'offline';
      node.reason = msg.reason;
      node.lastSeen = msg.lastSeen;
      return { uid: msg.uid, all: false };
    }
    case 'reset': {
      const node = nodes.get(msg.uid);
      if (node === undefined) return undefined;
      node.values.clear();
      node.discovering = true;
      return { uid: msg.uid, all: true };
    }
    default: {
      const never: never = msg;
      return never;
    }
  }
}
