// `mycelium node mqtt`: an MQTT test node with the behaviour of pyaiot's utils/mqtt/mqtt-test-node.py (protocol
// reference §8.2): resources name, os, board, led, temperature, pressure; answers `discover` and `led/set`;
// `node/check` every 30 s. Fixed on the way: the LED value is kept after a set, it answers `gateway/check`, it
// can authenticate (username = node id, password = node token) and reconnects.
// With --publish-only it behaves like RIOT's MQTT-SN firmware (§5.4): it publishes node/check, its resource list
// and every value at start, then values in a loop, and subscribes to nothing.
import { connect, type MqttClient } from 'mqtt';
import type { OptionTable } from '../../services/common/config.ts';
import type { Logger } from '../../services/common/log.ts';
import type { CommandSpec } from '../../services/common/run.ts';
import type { Json } from '../../services/protocol/messages.ts';
import { keyByPin, type PinNodeOptions, pinOptions } from '../../services/agent/pin.ts';
import {
  DISCOVER_RESOURCES,
  discoverTopic,
  nodeIdProblem,
  resourcesTopic,
  setTopic,
  TOPIC_GATEWAY_CHECK,
  TOPIC_NODE_CHECK,
  valueTopic,
} from '../../gateways/mqtt/topics.ts';

export const MQTT_NODE_DEFAULTS = {
  mqttUrl: 'mqtt://localhost:1883',
  id: 'mqtt_test_node',
  name: 'MQTT test node',
  board: 'HP',
  checkIntervalMs: 30_000,
  temperatureIntervalMs: 5_000,
  pressureIntervalMs: 10_000,
  reconnectMs: 1_000,
} as const;

/** Largest message from the gateway the node looks at (a set payload is short text). */
export const MAX_INBOUND_PAYLOAD = 1024;

export const mqttNodeOptions = {
  mqttUrl: { type: 'string', default: MQTT_NODE_DEFAULTS.mqttUrl, description: 'MQTT broker URL' },
  id: { type: 'string', default: MQTT_NODE_DEFAULTS.id, description: 'node id (used in topics)' },
  username: { type: 'string', description: 'MQTT user name (default: the node id when a token is given)' },
  token: { type: 'string', description: 'node token as MQTT password (mycelium token --role node --sub <id>)' },
  password: { type: 'string', description: 'MQTT password (same as --token)' },
  ...pinOptions, // [accounts] with no token: a device key by PIN; the node's id becomes the claimed name
  name: { type: 'string', default: MQTT_NODE_DEFAULTS.name, description: 'value of the `name` resource' },
  board: { type: 'string', default: MQTT_NODE_DEFAULTS.board, description: 'value of the `board` resource' },
  checkIntervalMs: {
    type: 'number',
    default: MQTT_NODE_DEFAULTS.checkIntervalMs,
    min: 10,
    description: 'how often node/check is published',
  },
  temperatureIntervalMs: {
    type: 'number',
    default: MQTT_NODE_DEFAULTS.temperatureIntervalMs,
    min: 10,
    description: 'how often temperature is published',
  },
  pressureIntervalMs: {
    type: 'number',
    default: MQTT_NODE_DEFAULTS.pressureIntervalMs,
    min: 10,
    description: 'how often pressure is published',
  },
  publishOnly: {
    type: 'boolean',
    default: false,
    description: 'behave like the RIOT MQTT-SN firmware: publish everything unasked, subscribe to nothing',
  },
  reconnectMs: {
    type: 'number',
    default: MQTT_NODE_DEFAULTS.reconnectMs,
    min: 10,
    description: 'delay between reconnection attempts',
  },
} as const satisfies OptionTable;

export interface MqttTestNodeOptions {
  mqttUrl: string;
  id: string;
  username?: string;
  /** MQTT password: the node token on the embedded broker. */
  password?: string;
  name?: string;
  board?: string;
  checkIntervalMs?: number;
  temperatureIntervalMs?: number;
  pressureIntervalMs?: number;
  publishOnly?: boolean;
  reconnectMs?: number;
  /** [accounts] With no password: get a device key by PIN; the id becomes the node the claim names. */
  pin?: PinNodeOptions;
}

export class MqttTestNode {
  private client?: MqttClient;
  private timers: NodeJS.Timeout[] = [];
  private ledValue = '0';
  private readonly opts: Required<Omit<MqttTestNodeOptions, 'username' | 'password' | 'pin'>> &
    Pick<MqttTestNodeOptions, 'username' | 'password' | 'pin'>;
  /** [accounts] Ends the wait for a PIN's claim when the node stops. */
  private pinWait?: AbortController;
  private running = false;
  /** Set payloads received, in order (for tests and logs). */
  readonly sets: string[] = [];
  /** The last CONNACK refusal or connection error. */
  lastError?: Error;

  constructor(
    options: MqttTestNodeOptions,
    private readonly log: Logger,
  ) {
    this.opts = { ...MQTT_NODE_DEFAULTS, publishOnly: false, ...options };
  }

  get id(): string {
    return this.opts.id;
  }

  get led(): string {
    return this.ledValue;
  }

  get connected(): boolean {
    return this.client?.connected === true;
  }

  /** Starts connecting; the node keeps retrying in the background (see `connected` / `lastError`). */
  async start(): Promise<void> {
    if (this.running) return;
    this.running = true;
    if (this.opts.pin === undefined || this.opts.password !== undefined) return this.open();
    this.pinWait = new AbortController();
    keyByPin(this.opts.pin, this.log, this.pinWait.signal, ({ key, node }) => {
      // The key names one node: the user name and every topic must be that node's.
      this.opts.id = node;
      this.opts.password = key;
      if (this.running) this.open().catch((err: unknown) => this.log.error({ err }, 'MQTT node cannot start'));
    });
  }

  private async open(): Promise<void> {
    if (this.client !== undefined) return;
    const problem = nodeIdProblem(this.opts.id);
    if (problem !== undefined) throw new Error(`node id ${JSON.stringify(this.opts.id)} ${problem}`);
    const username = this.opts.username ?? (this.opts.password !== undefined ? this.opts.id : undefined);
    const client = connect(this.opts.mqttUrl, {
      // The embedded broker only lets an authenticated node use its own id as client id.
      clientId: this.opts.id,
      username,
      password: this.opts.password,
      clean: true,
      protocolVersion: 4,
      reconnectPeriod: this.opts.reconnectMs,
    });
    this.client = client;
    client.on('connect', () => {
      this.onConnect(client).catch((err) => this.log.warn({ err }, 'MQTT connect handling failed'));
    });
    client.on('error', (err) => {
      this.lastError = err;
      this.log.warn({ err: err.message }, 'MQTT error');
    });
    client.on('message', (topic, payload) => this.onMessage(topic, payload));
    this.every(this.opts.checkIntervalMs, () => this.publishCheck());
    this.every(this.opts.temperatureIntervalMs, () => this.publishValue('temperature'));
    this.every(this.opts.pressureIntervalMs, () => this.publishValue('pressure'));
  }

  async stop(): Promise<void> {
    this.running = false;
    this.pinWait?.abort();
    for (const t of this.timers.splice(0)) clearInterval(t);
    const client = this.client;
    this.client = undefined;
    if (client !== undefined) await client.endAsync(!client.connected);
  }

  /** The node's resources and their current values. */
  values(): Record<string, Json> {
    return {
      name: this.opts.name,
      os: 'riot',
      board: this.opts.board,
      led: this.ledValue,
      temperature: `${20 + Math.floor(Math.random() * 10)}°C`,
      pressure: `${990 + Math.floor(Math.random() * 25)}hPa`,
    };
  }

  /** Publishes one resource as `{"value": ...}` (QoS 1); `value` overrides the simulated one. */
  publishValue(resource: string, value?: Json): void {
    const v = value ?? this.values()[resource];
    if (v === undefined) return;
    this.send(valueTopic(this.opts.id, resource), JSON.stringify({ value: v }));
  }

  publishCheck(): void {
    this.send(TOPIC_NODE_CHECK, JSON.stringify({ id: this.opts.id }));
  }

  private every(ms: number, f: () => void): void {
    const t = setInterval(() => {
      if (this.connected) f();
    }, ms);
    t.unref();
    this.timers.push(t);
  }

  private send(topic: string, payload: string): void {
    const client = this.client;
    if (client === undefined || !client.connected) return;
    client.publish(topic, payload, { qos: 1 }, (err) => {
      if (err) this.log.debug({ topic, err: err.message }, 'publish failed');
    });
  }

  private async onConnect(client: MqttClient): Promise<void> {
    this.log.info({ id: this.opts.id, url: this.opts.mqttUrl }, 'connected');
    if (!this.opts.publishOnly) {
      try {
        await client.subscribeAsync([discoverTopic(this.opts.id), setTopic(this.opts.id, 'led'), TOPIC_GATEWAY_CHECK], {
          qos: 1,
        });
      } catch (err) {
        this.log.warn({ err: (err as Error).message }, 'subscribe failed');
      }
    }
    this.publishCheck();
    if (this.opts.publishOnly) this.publishResources();
    this.publishAll();
  }

  private publishResources(): void {
    this.send(resourcesTopic(this.opts.id), JSON.stringify(Object.keys(this.values())));
  }

  private publishAll(): void {
    for (const [resource, value] of Object.entries(this.values())) this.publishValue(resource, value);
  }

  private onMessage(topic: string, payload: Buffer): void {
    if (payload.length > MAX_INBOUND_PAYLOAD) return;
    const text = payload.toString('utf8');
    if (topic === TOPIC_GATEWAY_CHECK) return this.publishCheck();
    if (topic === discoverTopic(this.opts.id)) {
      // pyaiot: `resources` asks for the list, anything else for every value.
      if (text === DISCOVER_RESOURCES) this.publishResources();
      else this.publishAll();
      return;
    }
    if (topic === setTopic(this.opts.id, 'led')) {
      this.sets.push(text);
      this.ledValue = text;
      this.publishValue('led', text);
    }
  }
}

export const mqttNodeCommand: CommandSpec<typeof mqttNodeOptions> = {
  name: 'node mqtt',
  summary: 'Run an MQTT test node (pyaiot mqtt-test-node behaviour; --publish-only for RIOT MQTT-SN firmware).',
  options: mqttNodeOptions,
  build(config, log) {
    return new MqttTestNode(
      {
        mqttUrl: config.mqttUrl,
        id: config.id,
        username: config.username,
        password: config.token ?? config.password,
        name: config.name,
        board: config.board,
        checkIntervalMs: config.checkIntervalMs,
        temperatureIntervalMs: config.temperatureIntervalMs,
        pressureIntervalMs: config.pressureIntervalMs,
        publishOnly: config.publishOnly,
        reconnectMs: config.reconnectMs,
        pin: config.pin
          ? { brokerUrl: config.brokerUrl, keyOut: config.keyOut, pinPollMs: config.pinPollMs }
          : undefined,
      },
      log.child({ node: config.id }),
    );
  },
};
