// Virtual nodes: values a rule derives (ctx.emit) published as node events of a gateway that is the rules
// service itself (`--gateway-id`, default `rules`), so every broker applies them to its node table, the
// dashboard shows them and the history stores them like any node's. The uid is the rule's choice; a uid a real
// gateway holds is refused (a virtual node must never take a device's place). The service answers the brokers'
// state sync with its virtual nodes, so a broker started later knows them, and reports them `out` (shutdown)
// when it stops.
import type { Bus, BusMsg, BusSubscription } from '../bus/bus.ts';
import { subjects } from '../bus/subjects.ts';
import type { NodeTable } from '../broker/node-table.ts';
import type { Json, NodeRecord } from '../protocol/messages.ts';
import { stringifySafe } from '../protocol/schema.ts';

export interface VirtualNodeDeps {
  bus: Pick<Bus, 'publish' | 'subscribe'>;
  table: Pick<NodeTable, 'get'>;
  /** This service's events subject (`myc.events.<id>`). */
  eventsSubject: string;
  /** The id that answers state syncs (a broker id must not collide with it). */
  serviceId: string;
  gatewayId: string;
  maxNodes: number;
}

export class VirtualNodes {
  private readonly nodes = new Map<string, NodeRecord>();
  private sub?: BusSubscription;

  constructor(private readonly deps: VirtualNodeDeps) {}

  get size(): number {
    return this.nodes.size;
  }

  owns(uid: string): boolean {
    return this.nodes.has(uid);
  }

  start(): void {
    this.sub = this.deps.bus.subscribe(subjects.stateSync, (msg) => this.onStateSync(msg));
  }

  /** Reports every virtual node out (reason shutdown) and stops answering state syncs. */
  stop(): void {
    this.sub?.unsubscribe();
    this.sub = undefined;
    const now = Date.now();
    for (const node of this.nodes.values())
      this.publish({ type: 'out', uid: node.uid, reason: 'shutdown', lastSeen: now });
    this.nodes.clear();
  }

  /** Publishes a value; a problem (a real node's uid, too many nodes) is returned, not thrown. */
  emit(uid: string, resource: string, value: Json): string | undefined {
    let node = this.nodes.get(uid);
    const now = Date.now();
    if (node === undefined) {
      const known = this.deps.table.get(uid);
      if (known !== undefined && known.gateway !== this.deps.gatewayId) {
        return `${uid} is a node of gateway ${known.gateway}; a rule may emit only on a virtual node`;
      }
      if (this.nodes.size >= this.deps.maxNodes)
        return `the rules service holds its maximum of ${this.deps.maxNodes} virtual nodes`;
      node = {
        uid,
        gateway: this.deps.gatewayId,
        protocol: 'rules',
        status: 'online',
        lastSeen: now,
        resources: Object.create(null),
      };
      this.nodes.set(uid, node);
      this.publish({
        type: 'new',
        uid,
        gateway: this.deps.gatewayId,
        protocol: 'rules',
        status: 'online',
        lastSeen: now,
      });
    }
    node.resources[resource] = value;
    node.lastSeen = now;
    this.publish({ type: 'update', uid, endpoint: resource, data: value });
    return undefined;
  }

  private publish(event: object): void {
    const text = stringifySafe(event);
    if (text !== undefined) this.deps.bus.publish(this.deps.eventsSubject, Buffer.from(text));
  }

  private onStateSync(msg: BusMsg): void {
    if (!msg.reply || this.nodes.size === 0) return;
    const text = stringifySafe({ broker: this.deps.serviceId, nodes: [...this.nodes.values()], gateways: [] });
    if (text !== undefined) this.deps.bus.publish(msg.reply, Buffer.from(text));
  }
}
