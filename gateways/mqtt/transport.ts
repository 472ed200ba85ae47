// How the gateway talks MQTT: one small interface, two implementations. With an external broker it is an MQTT
// client (mqtt.js) that reconnects; with the embedded broker it is aedes' in-process publish/subscribe, which
// skips encoding, the loopback socket and the PUBACK round trip. Everything above this interface (topics,
// discovery, liveness, writes) is the same code in both modes.
import { readFileSync } from 'node:fs';
import type { Aedes, AedesPublishPacket, PublishPacket } from 'aedes';
import { connect, type IClientOptions, type MqttClient } from 'mqtt';
import type { Logger } from '../../services/common/log.ts';

export interface TransportEvents {
  /** Called on every (re)connection: subscriptions must be (re)made here. */
  onConnect(reconnect: boolean): void;
  onDisconnect(): void;
  onMessage(topic: string, payload: Buffer): void;
}

export interface MqttTransport {
  readonly connected: boolean;
  /** Where the gateway's MQTT traffic goes, for logs. */
  readonly description: string;
  start(events: TransportEvents): Promise<void>;
  stop(): Promise<void>;
  /** Subscribes with QoS 1. */
  subscribe(filter: string): Promise<void>;
  /** Publishes with QoS 1; resolves once the broker has taken the message (PUBACK, or aedes' callback). */
  publish(topic: string, payload: string): Promise<void>;
}

/** In-process transport over the embedded aedes broker. It cannot be disconnected. */
export class AedesTransport implements MqttTransport {
  private events?: TransportEvents;
  private readonly filters: string[] = [];
  private active = false;

  constructor(private readonly aedes: () => Aedes) {}

  get connected(): boolean {
    return this.active;
  }

  get description(): string {
    return 'embedded broker (in-process)';
  }

  async start(events: TransportEvents): Promise<void> {
    this.events = events;
    this.active = true;
    events.onConnect(false);
  }

  async stop(): Promise<void> {
    if (!this.active) return;
    this.active = false;
    const aedes = this.aedes();
    await Promise.all(
      this.filters.splice(0).map((f) => new Promise<void>((resolve) => aedes.unsubscribe(f, this.deliver, resolve))),
    );
  }

  subscribe(filter: string): Promise<void> {
    this.filters.push(filter);
    return new Promise((resolve) => this.aedes().subscribe(filter, this.deliver, resolve));
  }

  publish(topic: string, payload: string): Promise<void> {
    const packet: PublishPacket = {
      cmd: 'publish',
      topic,
      payload: Buffer.from(payload),
      qos: 1,
      retain: false,
      dup: false,
    };
    return new Promise((resolve, reject) => this.aedes().publish(packet, (err) => (err ? reject(err) : resolve())));
  }

  /** aedes calls this for every matching publish; `cb` releases its delivery slot. */
  private readonly deliver = (packet: AedesPublishPacket, cb: () => void): void => {
    const payload = typeof packet.payload === 'string' ? Buffer.from(packet.payload) : packet.payload;
    this.events?.onMessage(packet.topic, payload);
    cb();
  };
}

export interface ClientTransportOptions {
  /** mqtt://host:port or mqtts://host:port; user and password may be in the URL. */
  url: string;
  username?: string;
  password?: string;
  clientId: string;
  caFile?: string;
  reconnectMs: number;
  connectTimeoutMs: number;
  /** MQTT keep-alive in seconds ([MQTT-3.1.2-24]: the broker drops us after 1.5 times this). */
  keepaliveSeconds: number;
  log: Logger;
}

/** Splits credentials out of the URL, so they are never logged with it; explicit options win. */
export function parseBrokerUrl(url: string): { url: string; username?: string; password?: string } {
  const u = new URL(url);
  if (u.protocol !== 'mqtt:' && u.protocol !== 'mqtts:') {
    throw new Error(`--mqtt-url must start with mqtt:// or mqtts:// (got ${u.protocol}//)`);
  }
  const username = u.username ? decodeURIComponent(u.username) : undefined;
  const password = u.password ? decodeURIComponent(u.password) : undefined;
  u.username = '';
  u.password = '';
  if (u.port === '') u.port = u.protocol === 'mqtts:' ? '8883' : '1883';
  return { url: `${u.protocol}//${u.host}`, username, password };
}

/** How long stop() waits for in-flight messages before closing the connection anyway. */
export const END_GRACE_MS = 1000;

/** Client of an external broker (mosquitto, EMQX...). Reconnects forever, every `reconnectMs`. */
export class ClientTransport implements MqttTransport {
  private client?: MqttClient;
  private everConnected = false;
  private wasConnected = false;
  private readonly target: { url: string; username?: string; password?: string };

  constructor(private readonly options: ClientTransportOptions) {
    this.target = parseBrokerUrl(options.url);
  }

  get connected(): boolean {
    return this.client?.connected === true;
  }

  get description(): string {
    return this.target.url;
  }

  async start(events: TransportEvents): Promise<void> {
    if (this.client !== undefined) return;
    const { log } = this.options;
    const opts: IClientOptions = {
      clientId: this.options.clientId,
      username: this.options.username ?? this.target.username,
      password: this.options.password ?? this.target.password,
      clean: true,
      protocolVersion: 4,
      keepalive: this.options.keepaliveSeconds,
      reconnectPeriod: this.options.reconnectMs,
      connectTimeout: this.options.connectTimeoutMs,
      // Subscriptions are made again in onConnect, after every reconnection, by the gateway itself.
      resubscribe: false,
      queueQoSZero: false,
      ...(this.options.caFile ? { ca: readFileSync(this.options.caFile) } : {}),
    };
    const client = connect(this.target.url, opts);
    this.client = client;
    client.on('connect', () => {
      this.wasConnected = true;
      const reconnect = this.everConnected;
      this.everConnected = true;
      log.info({ url: this.target.url, reconnect }, 'connected to MQTT broker');
      events.onConnect(reconnect);
    });
    client.on('close', () => {
      if (!this.wasConnected) return;
      this.wasConnected = false;
      log.warn({ url: this.target.url }, 'MQTT broker connection lost; reconnecting');
      events.onDisconnect();
    });
    client.on('error', (err) => log.warn({ url: this.target.url, err: err.message }, 'MQTT client error'));
    client.on('message', (topic, payload) => events.onMessage(topic, payload));
  }

  async stop(): Promise<void> {
    const client = this.client;
    this.client = undefined;
    if (client === undefined) return;
    // A clean DISCONNECT when connected ([MQTT-3.14.4-3]), but never wait long for a broker that is gone:
    // a graceful end waits for in-flight QoS 1 messages, so it is cut short after END_GRACE_MS.
    if (!client.connected) return client.endAsync(true);
    let timer: NodeJS.Timeout | undefined;
    const cut = new Promise<void>((resolve) => {
      timer = setTimeout(() => {
        // mqtt.js ignores a second end() while one is pending, so the socket is closed directly.
        client.stream?.destroy();
        resolve();
      }, END_GRACE_MS);
    });
    await Promise.race([client.endAsync(false), cut]);
    clearTimeout(timer);
  }

  async subscribe(filter: string): Promise<void> {
    const client = this.requireConnected();
    const granted = await client.subscribeAsync(filter, { qos: 1 });
    // [MQTT-3.9.3]: 0x80 in the SUBACK means the broker refused this filter.
    if (granted.some((g) => g.qos === 128)) throw new Error(`MQTT broker refused the subscription ${filter}`);
  }

  async publish(topic: string, payload: string): Promise<void> {
    await this.requireConnected().publishAsync(topic, payload, { qos: 1 });
  }

  private requireConnected(): MqttClient {
    const client = this.client;
    // mqtt.js would queue the message until the next connection; the gateway prefers to know now.
    if (client === undefined || !client.connected) throw new Error('MQTT broker not connected');
    return client;
  }
}
