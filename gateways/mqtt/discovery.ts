// How the MQTT gateway learns its nodes and their resources (pyaiot-protocol §5.2): a node announces itself on
// node/check (or, unless --strict-presence, by publishing anything), the gateway asks it for its resource list
// and then its values on gateway/<id>/discover, and every --check-interval it asks all nodes to report presence
// on gateway/check. RIOT's MQTT-SN firmware never answers discover: it is found from what it publishes.
import { KeyedRateLimiter } from '../../services/common/limits.ts';
import type { Logger } from '../../services/common/log.ts';
import type { Counter } from '../../services/common/metrics.ts';
import type { GatewayCore } from '../common/gateway-core.ts';
import type { MqttGatewayConfig } from './options.ts';
import { type BadInput, DISCOVER_RESOURCES, DISCOVER_VALUES, discoverTopic, TOPIC_GATEWAY_CHECK } from './topics.ts';

/** Most ids admitted by the new-node rate limit while their first message is still on its way. */
const MAX_ADMITTED_PENDING = 4096;

/** What the MQTT adapter keeps per node, in the core's node table. */
export interface MqttState {
  /** The node's MQTT id (the uid is --uid-prefix + id). */
  id: string;
  /** Writes waiting for the node to publish the written resource. */
  waiters?: WriteWaiter[];
}

export interface WriteWaiter {
  resource: string;
  /** The set payload as sent; the write is confirmed when the node reports this value. */
  expected: string;
  /** true: the node published the written resource; false: no confirmation (window over, node out, stop). */
  finish: (echoed: boolean) => void;
}

export interface DiscoveryContext {
  config: MqttGatewayConfig;
  core: GatewayCore<MqttState>;
  log: Logger;
  discovered: Counter;
  /** Fire-and-forget publish (failures counted by the adapter). */
  publish(topic: string, payload: string): void;
  bad(reason: BadInput, topic: string, detail: string): void;
  /** 'token' when a node's id is proven by its token (embedded broker with tokens). */
  proof(): 'token' | undefined;
}

export class Discovery {
  private checkTimer?: NodeJS.Timeout;
  /** New node ids per source address (anonymous nodes of the embedded broker; see EmbeddedBroker.admitNode). */
  private readonly newNodes: KeyedRateLimiter;
  /**
   * Ids admitted by the rate limit but not yet heard by the gateway (aedes authorizes a burst of publishes
   * before delivering the first): one new node costs one token, not one per message of its start-up burst.
   */
  private readonly admitted = new Set<string>();
  private readonly prefix: string;

  constructor(private readonly ctx: DiscoveryContext) {
    const n = ctx.config.newNodesPerMinute;
    this.newNodes = new KeyedRateLimiter({ perSecond: n / 60, burst: n });
    this.prefix = ctx.config.uidPrefix ?? '';
  }

  start(): void {
    this.checkTimer = setInterval(
      () => this.ctx.publish(TOPIC_GATEWAY_CHECK, ''),
      this.ctx.config.checkInterval * 1000,
    );
    this.checkTimer.unref();
  }

  stop(): void {
    clearInterval(this.checkTimer);
  }

  uidOf(id: string): string {
    return this.prefix + id;
  }

  /** Asks one node for its resource list (pyaiot's step 2); a publish-only node ignores it and sends it unasked. */
  discover(id: string): void {
    this.ctx.publish(discoverTopic(id), DISCOVER_RESOURCES);
  }

  /** With the list known, ask for every value (pyaiot's step 3). */
  resourcesListed(id: string): void {
    const node = this.ctx.core.node(this.uidOf(id));
    if (node !== undefined) node.status = 'online';
    this.ctx.publish(discoverTopic(id), DISCOVER_VALUES);
  }

  /** The MQTT broker came back: every node again, then presence. */
  rediscoverAll(): void {
    this.ctx.core.rediscoverAll();
    this.ctx.publish(TOPIC_GATEWAY_CHECK, '');
  }

  /** The embedded broker asks before a publish naming a node id: a new id costs its source address a token. */
  admit(id: string, address: string): boolean {
    if (this.ctx.core.has(this.uidOf(id)) || this.admitted.has(id)) return true;
    if (!this.newNodes.take(address)) return false;
    // Bounded: ids admitted but never heard of (refused later, say) must not pile up.
    if (this.admitted.size >= MAX_ADMITTED_PENDING) this.admitted.delete(this.admitted.values().next().value as string);
    this.admitted.add(id);
    return true;
  }

  /** node/check: a new id is announced and discovered; a known one is refreshed. Returns the node's uid. */
  presence(id: string): string | undefined {
    const { core, config } = this.ctx;
    const uid = this.uidOf(id);
    const known = core.node(uid);
    if (known !== undefined) {
      known.lastSeen = Date.now();
      return uid;
    }
    if (core.size >= config.maxNodes) {
      this.ctx.bad('too-many-nodes', `node/${id}`, `node limit ${config.maxNodes} reached`);
      return undefined;
    }
    this.admitted.delete(id);
    // Refused by the core (a prefixed uid that breaks the identifier rule): counted there, never held here.
    const added = core.add(uid, { id }, { proof: this.ctx.proof(), status: 'discovering' });
    if (typeof added === 'string') return undefined;
    this.ctx.discovered.inc();
    this.ctx.log.debug({ id, uid }, 'node discovered');
    this.discover(id);
    return uid;
  }

  /** Any message from a node proves it alive; an unknown id is discovered unless --strict-presence. */
  heardFrom(id: string, topic: string): string | undefined {
    const uid = this.uidOf(id);
    const node = this.ctx.core.node(uid);
    if (node !== undefined) {
      node.lastSeen = Date.now();
      return uid;
    }
    if (this.ctx.config.strictPresence) {
      this.ctx.bad('unknown-node', topic, 'node has not sent node/check');
      return undefined;
    }
    return this.presence(id);
  }
}
