// The MQTT gateway: pyaiot's MQTT topics (docs/gateways/mqtt.md) on one side, the shared GatewayCore on the
// other. It subscribes once to node/#, so nodes are found from whatever they publish (RIOT's MQTT-SN firmware
// never answers discover), and it owns the node cache, liveness and writes. The MQTT side is a transport: an
// embedded aedes broker (default) or a client of an external broker.
import { randomBytes } from 'node:crypto';
import { createServer, type Server as HttpServer } from 'node:http';
import { hostname } from 'node:os';
import { Metrics } from '../../services/common/metrics.ts';
import { KeyedRateLimiter } from '../../services/common/limits.ts';
import { parseMaxTokenTtl, TokenPolicy } from '../../services/common/token-policy.ts';
import type { VerifyOptions } from '../../services/common/tokens.ts';
import type { Logger } from '../../services/common/log.ts';
import { defaultKeyFile, readPublicKey } from '../../services/common/keys.ts';
import { ErrorCode, MyceliumError } from '../../services/protocol/errors.ts';
import type { Json } from '../../services/protocol/messages.ts';
import { GatewayCore, type WriteOutcome } from '../common/gateway-core.ts';
import { type ActionHandler, setLoggerLevels, unknownNode } from '../common/actions.ts'; // [gw-reports]
import { gatewayTokenSource } from '../common/options.ts';
import { EmbeddedBroker, type Revocations } from './embedded-broker.ts';
import type { MqttGatewayConfig } from './options.ts';
import {
  type BadInput,
  DISCOVER_RESOURCES,
  DISCOVER_VALUES,
  discoverTopic,
  FILTER_ALL_NODES,
  parseCheckPayload,
  parseNodeTopic,
  parseResourcesPayload,
  parseValuePayload,
  resourceNameProblem,
  setPayload,
  setTopic,
  TOPIC_GATEWAY_CHECK,
} from './topics.ts';
import { AedesTransport, ClientTransport, type MqttTransport } from './transport.ts';

export const PROTOCOL = 'MQTT';
/** The liveness sweep runs at least this often (pyaiot: every second), and four times per --max-time. */
export const LIVENESS_SWEEP_MAX_MS = 1000;
/** Slack above --max-payload-bytes for the topic and header of a packet, for the embedded broker's size guard. */
export const PACKET_OVERHEAD_BYTES = 1024;
/** Most ids admitted by the new-node rate limit while their first message is still on its way. */
const MAX_ADMITTED_PENDING = 4096;

export interface MqttGatewayDeps {
  log: Logger;
  /** Token for the broker link; default: --token, or minted from --key-file. */
  tokenSource?: () => Promise<string>;
  /**
   * Revoked token ids: the embedded broker refuses them at CONNECT and ends sessions that use them. Default:
   * the RevocationList of --revocation-file (revoked.json beside --key-file), polled every --revocation-poll-ms.
   */
  revocations?: Revocations;
}

interface WriteWaiter {
  resource: string;
  /** The set payload as sent; the write is confirmed when the node reports this value. */
  expected: string;
  /** true: the node published the written resource; false: no confirmation (window over, node out, stop). */
  finish: (echoed: boolean) => void;
}

interface MqttNode {
  id: string;
  uid: string;
  lastSeen: number;
  /** Writes waiting for the node to publish the written resource. */
  waiters?: WriteWaiter[];
}

export class MqttGateway {
  readonly core: GatewayCore;
  readonly registry = new Metrics('mycelium_mqtt_');
  private readonly nodes = new Map<string, MqttNode>();
  private readonly log: Logger;
  private transport?: MqttTransport;
  private broker?: EmbeddedBroker;
  private http?: HttpServer;
  private tokenSource?: () => Promise<string>;
  private sweepTimer?: NodeJS.Timeout;
  /** The token policy when built from the config (embedded broker with tokens, no revocations given). */
  private policy?: TokenPolicy;
  private checkTimer?: NodeJS.Timeout;
  private started = false;
  private stopping?: Promise<void>;
  private readonly maxTimeMs: number;
  /** New node ids per source address (anonymous nodes of the embedded broker; see EmbeddedBroker.admitNode). */
  private readonly newNodes: KeyedRateLimiter;
  /**
   * Ids admitted by the rate limit but not yet heard by the gateway (aedes authorizes a burst of publishes
   * before delivering the first): one new node costs one token, not one per message of its start-up burst.
   */
  private readonly admitted = new Set<string>();
  /** Bad-input reasons already logged at warn: each is logged once, then only counted. */
  private readonly warned = new Set<BadInput>();

  private readonly counters;

  constructor(
    readonly config: MqttGatewayConfig,
    private readonly deps: MqttGatewayDeps,
  ) {
    this.log = deps.log;
    this.maxTimeMs = config.maxTime * 1000;
    this.core = new GatewayCore({
      protocol: PROTOCOL,
      urls: config.brokerUrl,
      token: () => this.token(),
      log: deps.log.child({ component: 'broker-link' }),
      backoffInitialMs: config.backoffInitialMs,
      backoffMaxMs: config.backoffMaxMs,
      pingIntervalMs: config.brokerPingMs,
      maxNodes: config.maxNodes,
      maxResourcesPerNode: config.maxResourcesPerNode,
      onRefused: (reason) => this.counters.refused(reason).inc(),
      // [gw-reports] status reports, inventory and actions
      statusIntervalMs: config.statusInterval * 1000,
      listen: () =>
        this.broker !== undefined
          ? [`mqtt://${config.mqttHost}:${this.broker.port}`]
          : this.transport === undefined
            ? []
            : [this.transport.description],
      nodeCounts: () => ({ online: this.nodes.size }),
    });
    this.core.onAction(this.actions()); // [gw-reports]
    this.newNodes = new KeyedRateLimiter({
      perSecond: config.newNodesPerMinute / 60,
      burst: config.newNodesPerMinute,
    });
    const m = this.registry;
    this.counters = {
      messages: m.counter('messages_total', 'MQTT messages received from nodes'),
      bad: m.counterFamily('bad_input_total', 'node messages refused, by reason', 'reason'),
      out: m.counterFamily('nodes_out_total', 'nodes reported out, by reason', 'reason'),
      discovered: m.counter('nodes_discovered_total', 'nodes announced to the broker'),
      writes: m.counterFamily('writes_total', 'writes to nodes, by result', 'result'),
      reconnects: m.counter('mqtt_reconnects_total', 'reconnections to the external MQTT broker'),
      publishErrors: m.counter('publish_errors_total', 'gateway publishes the MQTT broker did not take'),
      refused: m.counterFamily(
        'node_refusals_total',
        'nodes and values refused before reaching the broker (identifier rule, depth, caps), by reason',
        'reason',
      ),
    };
    m.gauge('nodes', 'nodes this gateway holds', () => this.nodes.size);
    m.gauge('mqtt_connected', '1 when the gateway is connected to its MQTT broker', () =>
      this.transport?.connected ? 1 : 0,
    );
    m.gauge('broker_link_connected', '1 when the gateway is connected to the Mycelium broker', () =>
      this.core.link.connected ? 1 : 0,
    );
  }

  /** Port of the embedded MQTT broker (0 when using an external one or not started). */
  get mqttPort(): number {
    return this.broker?.port ?? 0;
  }

  /** Port of the /metrics endpoint (0 when off or not started). */
  get httpPort(): number {
    const addr = this.http?.address();
    return typeof addr === 'object' && addr !== null ? addr.port : 0;
  }

  /** Node ids currently held. */
  nodeIds(): string[] {
    return [...this.nodes.keys()];
  }

  /** Counters and gauges in Prometheus text format (the embedded broker's included). */
  metrics(): string {
    return this.registry.render();
  }

  async start(): Promise<void> {
    if (this.started) return;
    this.started = true;
    try {
      await this.startParts();
    } catch (err) {
      // Release what did start (a listening port, the broker link) before reporting the failure.
      await this.shutdown().catch(() => undefined);
      throw err;
    }
  }

  private async startParts(): Promise<void> {
    const config = this.config;
    this.tokenSource = this.deps.tokenSource ?? gatewayTokenSource(config, 'mqtt');
    if (config.mqttUrl) {
      this.transport = new ClientTransport({
        url: config.mqttUrl,
        username: config.mqttUsername,
        password: config.mqttPassword,
        clientId: config.mqttClientId ?? `mycelium-gw-${hostname()}-${process.pid}-${randomBytes(3).toString('hex')}`,
        caFile: config.mqttCaFile,
        reconnectMs: config.mqttReconnectMs,
        connectTimeoutMs: config.mqttConnectTimeoutMs,
        keepaliveSeconds: config.mqttKeepalive,
        log: this.log.child({ component: 'mqtt-client' }),
      });
    } else {
      const tokens = config.allowAnonymousNodes ? undefined : await this.tokenChecks();
      const broker = new EmbeddedBroker({
        port: config.mqttPort,
        host: config.mqttHost,
        publicKey: config.allowAnonymousNodes ? undefined : this.nodeKey(),
        maxPacketBytes: config.maxPayloadBytes + PACKET_OVERHEAD_BYTES,
        connectTimeoutMs: config.mqttConnectTimeoutMs,
        log: this.log,
        metrics: this.registry,
        tokenSweepMs: config.tokenSweepMs,
        revocations: tokens?.revocations,
        verifyOptions: tokens?.verifyOptions,
        admitNode: (id, address) => this.admitNode(id, address),
      });
      this.broker = broker;
      await broker.start();
      this.transport = new AedesTransport(() => broker.aedes);
    }
    if (config.httpPort >= 0) await this.startHttp();
    this.core.onWrite((uid, endpoint, payload) => this.write(uid, endpoint, payload));
    await this.core.start();
    await this.transport.start({
      onConnect: (reconnect) => {
        this.onMqttConnect(reconnect).catch((err) => this.log.error({ err }, 'MQTT (re)connect handling failed'));
      },
      onDisconnect: () => this.log.warn({ nodes: this.nodes.size }, 'MQTT broker lost; node liveness paused'),
      onMessage: (topic, payload) => this.onMessage(topic, payload),
    });
    const sweepMs = Math.min(LIVENESS_SWEEP_MAX_MS, this.maxTimeMs / 4);
    this.sweepTimer = setInterval(() => this.sweep(), sweepMs);
    this.sweepTimer.unref();
    this.checkTimer = setInterval(() => this.publish(TOPIC_GATEWAY_CHECK, ''), config.checkInterval * 1000);
    this.checkTimer.unref();
    this.log.info(
      { mqtt: this.transport.description, mqttPort: this.mqttPort || undefined, httpPort: this.httpPort || undefined },
      'MQTT gateway started',
    );
  }

  stop(): Promise<void> {
    this.stopping ??= this.shutdown();
    return this.stopping;
  }

  private async shutdown(): Promise<void> {
    clearInterval(this.sweepTimer);
    clearInterval(this.checkTimer);
    this.policy?.stop();
    for (const node of this.nodes.values()) this.releaseWaiters(node);
    await this.transport?.stop();
    await this.broker?.stop();
    await this.core.stop();
    const http = this.http;
    if (http !== undefined) {
      http.closeAllConnections();
      await new Promise<void>((resolve) => http.close(() => resolve()));
    }
  }

  /** What node tokens are checked against besides the signature: the revocation list and the lifetime per role. */
  private async tokenChecks(): Promise<{ revocations: Revocations; verifyOptions: VerifyOptions }> {
    const given = this.deps.revocations;
    if (given !== undefined) {
      return {
        revocations: given,
        verifyOptions: { revocations: given, maxTtlSeconds: parseMaxTokenTtl(this.config.maxTokenTtl) },
      };
    }
    const policy = new TokenPolicy(this.config, this.config.keyFile ?? defaultKeyFile(), this.log);
    this.policy = policy;
    await policy.start();
    return { revocations: policy.revocations, verifyOptions: policy.verifyOptions };
  }

  private token(): Promise<string> {
    if (this.tokenSource === undefined) return Promise.reject(new Error('gateway not started'));
    return this.tokenSource();
  }

  /** The key that verifies node tokens on the embedded broker: the public half of --key-file. */
  private nodeKey() {
    try {
      return readPublicKey(this.config.keyFile ?? defaultKeyFile());
    } catch (err) {
      throw new MyceliumError(
        ErrorCode.Config,
        `the embedded MQTT broker checks node tokens with --key-file, but ${(err as Error).message}; ` +
          'or pass --allow-anonymous-nodes',
        { cause: err },
      );
    }
  }

  private async startHttp(): Promise<void> {
    // A connection that sends nothing, or its headers too slowly, is closed after --http-timeout-ms; Node checks
    // header and request deadlines every connectionsCheckingInterval (30 s by default, hence set here).
    const ms = this.config.httpTimeoutMs;
    const options = { headersTimeout: ms, requestTimeout: ms, connectionsCheckingInterval: Math.min(1000, ms / 2) };
    const http = createServer(options, (req, res) => {
      if (req.method === 'GET' && req.url === '/metrics') {
        res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4' });
        res.end(this.metrics());
      } else if (req.method === 'GET' && req.url === '/healthz') {
        const body = {
          mqtt: this.transport?.connected ?? false,
          broker: this.core.link.connected,
          nodes: this.nodes.size,
        };
        res.writeHead(body.mqtt ? 200 : 503, { 'content-type': 'application/json' });
        res.end(JSON.stringify(body));
      } else {
        res.writeHead(404).end();
      }
    });
    // Idle sockets (no 'timeout' listener on the server) are destroyed after this long.
    http.setTimeout(ms);
    this.http = http;
    await new Promise<void>((resolve, reject) => {
      http.once('error', (err) => reject(portError(err, this.config.httpPort, '--http-port')));
      http.listen(this.config.httpPort, this.config.httpHost, () => {
        http.off('error', reject);
        resolve();
      });
    });
  }

  // ----------------------------------------------------------------------------------------------------------
  // MQTT side

  private async onMqttConnect(reconnect: boolean): Promise<void> {
    const transport = this.transport;
    if (transport === undefined) return;
    try {
      await transport.subscribe(FILTER_ALL_NODES);
    } catch (err) {
      this.log.error({ err: (err as Error).message }, 'cannot subscribe to node/#; nodes will not be heard');
      return;
    }
    if (!reconnect) return;
    this.counters.reconnects.inc();
    // The outage was the broker's, not the nodes': give every node a fresh --max-time, then ask for everything
    // again (lost values, and resource lists of nodes whose discovery was cut short).
    const now = Date.now();
    for (const node of this.nodes.values()) {
      node.lastSeen = now;
      this.publish(discoverTopic(node.id), DISCOVER_RESOURCES);
    }
    this.publish(TOPIC_GATEWAY_CHECK, '');
    this.log.info({ nodes: this.nodes.size }, 'MQTT broker back; resubscribed and rediscovering nodes');
  }

  /** Fire-and-forget publish from the gateway (discover, gateway/check); failures are counted, not thrown. */
  private publish(topic: string, payload: string): void {
    const transport = this.transport;
    if (transport === undefined || !transport.connected) return;
    transport.publish(topic, payload).catch((err: Error) => {
      this.counters.publishErrors.inc();
      this.log.debug({ topic, err: err.message }, 'publish failed');
    });
  }

  /** One dispatcher for everything under node/#; never throws. */
  private onMessage(topic: string, payload: Buffer): void {
    this.counters.messages.inc();
    if (payload.length > this.config.maxPayloadBytes) {
      return this.bad('oversized', topic, `payload of ${payload.length} bytes`);
    }
    const t = parseNodeTopic(topic);
    switch (t.kind) {
      case 'check': {
        const id = parseCheckPayload(payload);
        if (!id.ok) return this.bad(id.reason, topic, id.detail);
        this.presence(id.value);
        return;
      }
      case 'resources': {
        const node = this.heardFrom(t.id, topic);
        if (node === undefined) return;
        const list = parseResourcesPayload(payload);
        if (!list.ok) return this.bad(list.reason, topic, list.detail);
        // pyaiot's step 3: with the list known, ask for every value.
        this.publish(discoverTopic(node.id), DISCOVER_VALUES);
        return;
      }
      case 'value': {
        const node = this.heardFrom(t.id, topic);
        if (node === undefined) return;
        const value = parseValuePayload(payload);
        if (!value.ok) return this.bad(value.reason, topic, value.detail);
        this.value(node, t.resource, value.value, topic);
        return;
      }
      case 'bad':
        return this.bad(t.reason, topic, t.detail);
      default: {
        const never: never = t;
        return never;
      }
    }
  }

  private bad(reason: BadInput, topic: string, detail: string): void {
    this.counters.bad(reason).inc();
    this.core.stats.error(reason); // [gw-reports]
    // One warn line per reason, then debug: a misbehaving node can send thousands of these.
    if (this.warned.has(reason)) return this.log.debug({ reason, topic, detail }, 'node message refused');
    this.warned.add(reason);
    this.log.warn(
      { reason, topic: JSON.stringify(topic.slice(0, 128)), detail },
      'node message refused (logged once per reason, then counted)',
    );
  }

  private admitNode(id: string, address: string): boolean {
    if (this.nodes.has(id) || this.admitted.has(id)) return true;
    if (!this.newNodes.take(address)) return false;
    // Bounded: ids admitted but never heard of (refused later, say) must not pile up.
    if (this.admitted.size >= MAX_ADMITTED_PENDING) this.admitted.delete(this.admitted.values().next().value as string);
    this.admitted.add(id);
    return true;
  }

  /**
   * A node token proves the uid on the embedded broker (the ACL lets a node publish only under its own id);
   * anonymous nodes and clients of an external broker prove nothing.
   */
  private get proof(): 'token' | undefined {
    return this.broker !== undefined && !this.broker.anonymous ? 'token' : undefined;
  }

  /** node/check: a new id is announced and discovered; a known one is refreshed. */
  private presence(id: string): MqttNode | undefined {
    const known = this.nodes.get(id);
    if (known !== undefined) {
      known.lastSeen = Date.now();
      return known;
    }
    if (this.nodes.size >= this.config.maxNodes) {
      this.bad('too-many-nodes', `node/${id}`, `node limit ${this.config.maxNodes} reached`);
      return undefined;
    }
    this.admitted.delete(id);
    const node: MqttNode = { id, uid: (this.config.uidPrefix ?? '') + id, lastSeen: Date.now() };
    // Refused by the core (a prefixed uid that breaks the identifier rule): counted there, never held here.
    if (!this.core.nodeNew(node.uid, {}, this.proof)) return undefined;
    this.nodes.set(id, node);
    this.counters.discovered.inc();
    this.log.debug({ id, uid: node.uid }, 'node discovered');
    // pyaiot's step 2. A publish-only node ignores it and sends its list unasked.
    this.publish(discoverTopic(id), DISCOVER_RESOURCES);
    return node;
  }

  /** Any message from a node proves it alive; an unknown id is discovered unless --strict-presence. */
  private heardFrom(id: string, topic: string): MqttNode | undefined {
    const node = this.nodes.get(id);
    if (node !== undefined) {
      node.lastSeen = Date.now();
      return node;
    }
    if (this.config.strictPresence) {
      this.bad('unknown-node', topic, 'node has not sent node/check');
      return undefined;
    }
    return this.presence(id);
  }

  private value(node: MqttNode, resource: string, value: Json, topic: string): void {
    // The core bounds resources per node (--max-resources-per-node) and counts what it refuses.
    if (!this.core.nodeUpdate(node.uid, resource, value)) {
      return this.bad('too-many-resources', topic, 'refused by the gateway core (see node_refusals_total)');
    }
    if (node.waiters !== undefined) this.confirmWrites(node, resource, value);
  }

  private sweep(): void {
    // While the MQTT broker is away, nodes cannot reach us: no node is timed out for the broker's outage.
    if (this.transport?.connected !== true) return;
    const deadline = Date.now() - this.maxTimeMs;
    for (const node of this.nodes.values()) {
      if (node.lastSeen >= deadline) continue;
      this.nodes.delete(node.id);
      this.releaseWaiters(node);
      this.counters.out('timeout').inc();
      this.core.nodeOut(node.uid, 'timeout');
      this.log.info({ id: node.id, silentMs: Date.now() - node.lastSeen }, 'node timed out');
    }
  }

  // ----------------------------------------------------------------------------------------------------------
  // [gw-reports] Actions from the broker

  /**
   * rediscover: pyaiot's step 2 again, `gateway/<id>/discover` with `resources` (a node answers with its list,
   * then the gateway asks for the values); a publish-only node ignores it. forget: the node goes out with reason
   * `removed`; its next message announces it again (unless --strict-presence, then its next node/check).
   */
  private actions(): ActionHandler {
    return {
      rediscover: (uid) => {
        const node = uid === undefined ? undefined : this.nodeByUid(uid);
        if (uid !== undefined && node === undefined) return unknownNode(uid);
        if (this.transport?.connected !== true) return { result: 'error', reason: 'mqtt-disconnected' };
        const nodes = node === undefined ? [...this.nodes.values()] : [node];
        for (const n of nodes) this.publish(discoverTopic(n.id), DISCOVER_RESOURCES);
        return { result: 'ok', detail: { nodes: nodes.length } };
      },
      forget: (uid) => {
        const node = this.nodeByUid(uid);
        if (node === undefined) return unknownNode(uid);
        this.nodes.delete(node.id);
        this.releaseWaiters(node);
        this.counters.out('removed').inc();
        this.core.nodeOut(node.uid, 'removed');
        return { result: 'ok' };
      },
      setLogLevel: (level) => setLoggerLevels(level, this.log),
    };
  }

  // ----------------------------------------------------------------------------------------------------------
  // Writes

  private nodeByUid(uid: string): MqttNode | undefined {
    const prefix = this.config.uidPrefix ?? '';
    if (!uid.startsWith(prefix)) return undefined;
    return this.nodes.get(uid.slice(prefix.length));
  }

  /**
   * pyaiot nodes do not acknowledge a set. The result is `delivered` once the broker took the QoS 1 publish, and
   * `ok` when the node publishes the written value on that resource within --write-confirm-ms.
   */
  private async write(uid: string, endpoint: string, payload: Json): Promise<WriteOutcome> {
    const outcome = await this.tryWrite(uid, endpoint, payload);
    this.counters.writes(outcome.result).inc();
    return outcome;
  }

  private async tryWrite(uid: string, endpoint: string, payload: Json): Promise<WriteOutcome> {
    const node = this.nodeByUid(uid);
    if (node === undefined) return { result: 'error', reason: 'unknown-node' };
    const problem = resourceNameProblem(endpoint);
    if (problem !== undefined) return { result: 'error', reason: `bad endpoint: ${problem}` };
    const transport = this.transport;
    if (transport === undefined || !transport.connected) return { result: 'error', reason: 'mqtt-disconnected' };
    // Registered before publishing, so an echo that overtakes the broker's acknowledgement still counts.
    const text = setPayload(payload);
    if (text === undefined) return { result: 'error', reason: 'payload cannot be serialized' };
    const confirmed = this.config.writeConfirmMs > 0 ? this.waitForEcho(node, endpoint, text) : undefined;
    try {
      await withTimeout(transport.publish(setTopic(node.id, endpoint), text), this.config.publishTimeoutMs);
    } catch (err) {
      confirmed?.cancel();
      this.counters.publishErrors.inc();
      const timedOut = err instanceof TimeoutError;
      return {
        result: timedOut ? 'timeout' : 'error',
        reason: timedOut ? 'mqtt-publish-timeout' : (err as Error).message,
      };
    }
    if (confirmed === undefined) return { result: 'delivered' };
    return (await confirmed.done) ? { result: 'ok' } : { result: 'delivered' };
  }

  private waitForEcho(node: MqttNode, resource: string, expected: string): { done: Promise<boolean>; cancel(): void } {
    let settle!: (echoed: boolean) => void;
    const done = new Promise<boolean>((resolve) => {
      settle = resolve;
    });
    const waiter: WriteWaiter = { resource, expected, finish: (echoed) => finish(echoed) };
    const timer = setTimeout(() => finish(false), this.config.writeConfirmMs);
    timer.unref();
    const finish = (echoed: boolean) => {
      clearTimeout(timer);
      if (node.waiters !== undefined) {
        const i = node.waiters.indexOf(waiter);
        if (i >= 0) node.waiters.splice(i, 1);
        if (node.waiters.length === 0) node.waiters = undefined;
      }
      settle(echoed);
    };
    if (node.waiters === undefined) node.waiters = [waiter];
    else node.waiters.push(waiter);
    return { done, cancel: () => finish(false) };
  }

  /** A value that merely happens to be published (periodic report, answer to discover) is not a confirmation. */
  private confirmWrites(node: MqttNode, resource: string, value: Json): void {
    const text = setPayload(value);
    if (text === undefined) return;
    for (const w of [...(node.waiters ?? [])]) if (w.resource === resource && w.expected === text) w.finish(true);
  }

  /** A node going out or the gateway stopping: the set did reach the broker, so pending writes end `delivered`. */
  private releaseWaiters(node: MqttNode): void {
    for (const w of [...(node.waiters ?? [])]) w.finish(false);
  }
}

class TimeoutError extends Error {}

/** A busy or forbidden port, named with the option that chooses it. */
export function portError(err: NodeJS.ErrnoException, port: number, flag: string): Error {
  if (err.code === 'EADDRINUSE' || err.code === 'EACCES') {
    const what = err.code === 'EADDRINUSE' ? 'is already in use' : 'needs privileges';
    return new MyceliumError(ErrorCode.Config, `port ${port} ${what} (choose another with ${flag})`, { cause: err });
  }
  return err;
}

function withTimeout<T>(p: Promise<T>, ms: number): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const t = setTimeout(() => reject(new TimeoutError(`no answer within ${ms} ms`)), ms);
    t.unref();
    p.then(
      (v) => {
        clearTimeout(t);
        resolve(v);
      },
      (e) => {
        clearTimeout(t);
        reject(e);
      },
    );
  });
}
