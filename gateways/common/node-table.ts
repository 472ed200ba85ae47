// THE node table of a gateway: one map, keyed by uid, whatever the protocol. Each entry carries what the core
// needs (liveness, the resources it replays to the broker, the proof of identity) and the adapter's own state
// for that node (a socket, an address, observations), so no gateway keeps a second map of its nodes.
import { MAX_RESOURCES_PER_NODE } from '../../services/protocol/frames.ts';
import type { Json } from '../../services/protocol/messages.ts';
import { isIdentifier, valueTooDeep } from '../../services/protocol/schema.ts';

/** Why the table refused a node or a value before it left the gateway (counted in node_refusals_total). */
export type Refusal = 'bad-uid' | 'bad-resource' | 'too-deep' | 'max-nodes' | 'max-resources' | 'unknown-node';

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

export interface NodeLimits {
  maxNodes: number;
  maxResourcesPerNode: number;
}

export interface AddOptions {
  resources?: Record<string, Json>;
  proof?: 'token';
  status?: NodeStatus;
}

export class NodeTable<S> {
  private readonly nodes = new Map<string, GatewayNode<S>>();
  private readonly maxResourcesPerNode: number;

  constructor(
    private readonly limits: NodeLimits,
    /** Told about every refusal (the core counts and logs it); returns the reason. */
    private readonly refuse: (reason: Refusal, uid: string) => Refusal,
  ) {
    this.maxResourcesPerNode = Math.min(limits.maxResourcesPerNode, MAX_RESOURCES_PER_NODE);
  }

  /**
   * Adds (or replaces) a node after the identifier rule, the depth limit and the caps. Returns the node, or why
   * it was refused; nothing refused is stored.
   */
  admit(uid: string, state: S, options: AddOptions): GatewayNode<S> | Refusal {
    if (isIdentifier(uid) !== undefined) return this.refuse('bad-uid', uid);
    if (!this.nodes.has(uid) && this.nodes.size >= this.limits.maxNodes) return this.refuse('max-nodes', uid);
    const resources: Record<string, Json> = Object.create(null);
    let count = 0;
    const given = options.resources ?? {};
    for (const name in given) {
      if (isIdentifier(name) !== undefined) return this.refuse('bad-resource', uid);
      if (valueTooDeep(given[name])) return this.refuse('too-deep', uid);
      if (++count > this.maxResourcesPerNode) return this.refuse('max-resources', uid);
      resources[name] = given[name];
    }
    const node: GatewayNode<S> = {
      uid,
      status: options.status ?? 'online',
      lastSeen: Date.now(),
      resources,
      resourceCount: count,
      proof: options.proof,
      state,
    };
    this.nodes.set(uid, node);
    return node;
  }

  /** Sets one value of a known node, within the same rules. Undefined when accepted, else why not. */
  setValue(uid: string, endpoint: string, data: Json): Refusal | undefined {
    const node = this.nodes.get(uid);
    if (node === undefined) return this.refuse('unknown-node', uid);
    if (isIdentifier(endpoint) !== undefined) return this.refuse('bad-resource', uid);
    if (valueTooDeep(data)) return this.refuse('too-deep', uid);
    if (!(endpoint in node.resources)) {
      if (node.resourceCount >= this.maxResourcesPerNode) return this.refuse('max-resources', uid);
      node.resourceCount++;
    }
    node.resources[endpoint] = data;
    return undefined;
  }

  /** Forgets a node's values (it rebooted); false when the node is unknown. */
  clearValues(uid: string): boolean {
    const node = this.nodes.get(uid);
    if (node === undefined) return false;
    node.resources = Object.create(null);
    node.resourceCount = 0;
    return true;
  }

  get size(): number {
    return this.nodes.size;
  }

  get(uid: string): GatewayNode<S> | undefined {
    return this.nodes.get(uid);
  }

  has(uid: string): boolean {
    return this.nodes.has(uid);
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
