// The MQTT binding: pyaiot's MQTT topics (docs/gateways/mqtt.md) on one side, the gateway core on the other.
// It subscribes once to node/#, so nodes are found from whatever they publish (discovery.ts), turns each message
// into a core event, and writes with a QoS 1 publish confirmed by the node's echo. The MQTT side is a transport:
// an embedded aedes broker (default) or a client of an external broker (transport.ts).
import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import type { Logger } from '../../services/common/log.ts';
import { ErrorCode, MyceliumError } from '../../services/protocol/errors.ts';
import type { Json } from '../../services/protocol/messages.ts';
import type { ForgetReason, ProtocolAdapter, TransportHealth, WriteOutcome } from '../common/adapter.ts';
import type { GatewayCore } from '../common/gateway-core.ts';
import type { GatewayNode } from '../common/node-table.ts';
import { TimeoutError, withTimeout } from '../common/timeouts.ts';
import type { TokenChecks } from '../../services/common/token-checks.ts';
import { parseCheckPayload, parseResourcesPayload, parseValuePayload, setPayload } from './codec.ts';
import { Discovery, type MqttState, type WriteWaiter } from './discovery.ts';
import { EmbeddedBroker } from './embedded-broker.ts';
import type { MqttGatewayConfig } from './options.ts';
import { type BadInput, FILTER_ALL_NODES, parseNodeTopic, resourceNameProblem, setTopic } from './topics.ts';
import { AedesTransport, ClientTransport, type MqttTransport } from './transport.ts';

export const PROTOCOL = 'MQTT';
/** The liveness sweep runs at least this often (pyaiot: every second), and four times per --max-time. */
export const LIVENESS_SWEEP_MAX_MS = 1000;
/** Slack above --max-payload-bytes for the topic and header of a packet, for the embedded broker's size guard. */
export const PACKET_OVERHEAD_BYTES = 1024;

type MqttNode = GatewayNode<MqttState>;

export class MqttAdapter implements ProtocolAdapter<MqttState> {
  readonly protocol = PROTOCOL;
  readonly discovery: Discovery;
  private transport?: MqttTransport;
  private broker?: EmbeddedBroker;
  /** Bad-input reasons already logged at warn: each is logged once, then only counted. */
  private readonly warned = new Set<BadInput>();
  private readonly counters;

  constructor(
    private readonly config: MqttGatewayConfig,
    private readonly core: GatewayCore<MqttState>,
    private readonly log: Logger,
    /** Node token checks of the embedded broker; undefined with anonymous nodes or an external broker. */
    private readonly nodeTokens: () => TokenChecks | undefined,
  ) {
    const m = core.metrics;
    this.counters = {
      messages: m.counter('messages_total', 'MQTT messages received from nodes'),
      bad: m.counterFamily('bad_input_total', 'node messages refused, by reason', 'reason'),
      discovered: m.counter('nodes_discovered_total', 'nodes announced to the broker'),
      reconnects: m.counter('mqtt_reconnects_total', 'reconnections to the external MQTT broker'),
      publishErrors: m.counter('publish_errors_total', 'gateway publishes the MQTT broker did not take'),
    };
    m.gauge('mqtt_connected', '1 when the gateway is connected to its MQTT broker', () =>
      this.transport?.connected ? 1 : 0,
    );
    this.discovery = new Discovery({
      config,
      core,
      log,
      discovered: this.counters.discovered,
      publish: (topic, payload) => this.publish(topic, payload),
      bad: (reason, topic, detail) => this.bad(reason, topic, detail),
      // A node token proves the uid on the embedded broker (the ACL lets a node publish only under its own id);
      // anonymous nodes and clients of an external broker prove nothing.
      proof: () => (this.broker !== undefined && !this.broker.anonymous ? 'token' : undefined),
    });
  }

  /** Port of the embedded MQTT broker (0 when using an external one or not started). */
  get mqttPort(): number {
    return this.broker?.port ?? 0;
  }

  get description(): string | undefined {
    return this.transport?.description;
  }

  async start(): Promise<void> {
    const config = this.config;
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
      const tokens = this.nodeTokens();
      if (!config.allowAnonymousNodes && tokens?.key === undefined) {
        throw new MyceliumError(ErrorCode.Config, 'the embedded MQTT broker needs a key to check node tokens');
      }
      const broker = new EmbeddedBroker({
        port: config.mqttPort,
        host: config.mqttHost,
        publicKey: config.allowAnonymousNodes ? undefined : tokens?.key,
        maxPacketBytes: config.maxPayloadBytes + PACKET_OVERHEAD_BYTES,
        connectTimeoutMs: config.mqttConnectTimeoutMs,
        log: this.log,
        metrics: this.core.metrics,
        tokenSweepMs: config.tokenSweepMs,
        revocations: config.allowAnonymousNodes ? undefined : tokens?.revocations,
        verifyOptions: config.allowAnonymousNodes ? undefined : tokens?.verifyOptions,
        nodeKeys: config.allowAnonymousNodes ? undefined : tokens?.nodeKeys, // [accounts]
        admitNode: (id, address) => this.discovery.admit(id, address),
      });
      this.broker = broker;
      await broker.start();
      this.transport = new AedesTransport(() => broker.aedes);
    }
    await this.transport.start({
      onConnect: (reconnect) => {
        this.onMqttConnect(reconnect).catch((err: unknown) =>
          this.log.error({ err }, 'MQTT (re)connect handling failed'),
        );
      },
      onDisconnect: () => this.log.warn({ nodes: this.core.size }, 'MQTT broker lost; node liveness paused'),
      onMessage: (topic, payload) => this.onMessage(topic, payload),
    });
    this.discovery.start();
  }

  async stop(): Promise<void> {
    this.discovery.stop();
    for (const node of this.core.nodes()) this.releaseWaiters(node);
    await this.transport?.stop();
    await this.broker?.stop();
  }

  /** Down while the MQTT broker is away: then no node is timed out for the broker's outage. */
  health(): TransportHealth {
    const transport = this.transport;
    if (transport?.connected === true) return { up: true };
    return {
      up: false,
      detail: transport === undefined ? 'MQTT not started' : `MQTT ${transport.description} not connected`,
    };
  }

  /** The embedded broker's port, or the external broker the gateway subscribes to. */
  listen(): string[] {
    if (this.broker !== undefined) return [`mqtt://${this.config.mqttHost}:${this.broker.port}`];
    return this.transport === undefined ? [] : [this.transport.description];
  }

  discover(node: MqttNode): void {
    this.discovery.discover(node.state.id);
  }

  forget(node: MqttNode, why: ForgetReason): void {
    this.releaseWaiters(node);
    if (why.reason === 'timeout')
      this.log.info({ id: node.state.id, silentMs: Date.now() - node.lastSeen }, 'node timed out');
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
    this.discovery.rediscoverAll();
    this.log.info({ nodes: this.core.size }, 'MQTT broker back; resubscribed and rediscovering nodes');
  }

  /** Fire-and-forget publish from the gateway (discover, gateway/check); failures are counted, not thrown. */
  private publish(topic: string, payload: string): void {
    const transport = this.transport;
    if (transport === undefined || !transport.connected) return;
    this.core.noteOut();
    transport.publish(topic, payload).catch((err: Error) => {
      this.counters.publishErrors.inc();
      this.core.noteError('publish-error');
      this.log.debug({ topic, err: err.message }, 'publish failed');
    });
  }

  /** One dispatcher for everything under node/#; never throws. */
  private onMessage(topic: string, payload: Buffer): void {
    this.counters.messages.inc();
    this.core.noteIn();
    if (payload.length > this.config.maxPayloadBytes) {
      return this.bad('oversized', topic, `payload of ${payload.length} bytes`);
    }
    const t = parseNodeTopic(topic);
    switch (t.kind) {
      case 'check': {
        const id = parseCheckPayload(payload);
        if (!id.ok) return this.bad(id.reason, topic, id.detail);
        this.discovery.presence(id.value);
        return;
      }
      case 'resources': {
        const uid = this.discovery.heardFrom(t.id, topic);
        if (uid === undefined) return;
        const list = parseResourcesPayload(payload);
        if (!list.ok) return this.bad(list.reason, topic, list.detail);
        this.discovery.resourcesListed(t.id);
        return;
      }
      case 'value': {
        const uid = this.discovery.heardFrom(t.id, topic);
        if (uid === undefined) return;
        const value = parseValuePayload(payload);
        if (!value.ok) return this.bad(value.reason, topic, value.detail);
        this.value(uid, t.resource, value.value, topic);
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
    this.core.noteError(reason);
    // One warn line per reason, then debug: a misbehaving node can send thousands of these.
    if (this.warned.has(reason)) return this.log.debug({ reason, topic, detail }, 'node message refused');
    this.warned.add(reason);
    this.log.warn(
      { reason, topic: JSON.stringify(topic.slice(0, 128)), detail },
      'node message refused (logged once per reason, then counted)',
    );
  }

  private value(uid: string, resource: string, value: Json, topic: string): void {
    // The core bounds resources per node (--max-resources-per-node) and counts what it refuses.
    if (this.core.update(uid, resource, value) !== undefined) {
      return this.bad('too-many-resources', topic, 'refused by the gateway core (see node_refusals_total)');
    }
    const node = this.core.node(uid);
    if (node?.state.waiters !== undefined) this.confirmWrites(node, resource, value);
  }

  // ----------------------------------------------------------------------------------------------------------
  // Writes

  /**
   * pyaiot nodes do not acknowledge a set. The result is `delivered` once the broker took the QoS 1 publish, and
   * `ok` when the node publishes the written value on that resource within --write-confirm-ms.
   */
  async write(node: MqttNode, endpoint: string, payload: Json): Promise<WriteOutcome> {
    const problem = resourceNameProblem(endpoint);
    if (problem !== undefined) return { result: 'error', reason: `bad endpoint: ${problem}` };
    const transport = this.transport;
    if (transport === undefined || !transport.connected) return { result: 'error', reason: 'mqtt-disconnected' };
    const text = setPayload(payload);
    if (text === undefined) return { result: 'error', reason: 'payload cannot be serialized' };
    // Registered before publishing, so an echo that overtakes the broker's acknowledgement still counts.
    const confirmed = this.config.writeConfirmMs > 0 ? this.waitForEcho(node, endpoint, text) : undefined;
    try {
      await withTimeout(transport.publish(setTopic(node.state.id, endpoint), text), this.config.publishTimeoutMs);
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
    const state = node.state;
    let settle!: (echoed: boolean) => void;
    const done = new Promise<boolean>((resolve) => {
      settle = resolve;
    });
    const waiter: WriteWaiter = { resource, expected, finish: (echoed) => finish(echoed) };
    const timer = setTimeout(() => finish(false), this.config.writeConfirmMs);
    timer.unref();
    const finish = (echoed: boolean) => {
      clearTimeout(timer);
      if (state.waiters !== undefined) {
        const i = state.waiters.indexOf(waiter);
        if (i >= 0) state.waiters.splice(i, 1);
        if (state.waiters.length === 0) state.waiters = undefined;
      }
      settle(echoed);
    };
    if (state.waiters === undefined) state.waiters = [waiter];
    else state.waiters.push(waiter);
    return { done, cancel: () => finish(false) };
  }

  /** A value that merely happens to be published (periodic report, answer to discover) is not a confirmation. */
  private confirmWrites(node: MqttNode, resource: string, value: Json): void {
    const text = setPayload(value);
    if (text === undefined) return;
    for (const w of [...(node.state.waiters ?? [])]) if (w.resource === resource && w.expected === text) w.finish(true);
  }

  /** A node going out or the gateway stopping: the set did reach the broker, so pending writes end `delivered`. */
  private releaseWaiters(node: MqttNode): void {
    for (const w of [...(node.state.waiters ?? [])]) w.finish(false);
  }
}
