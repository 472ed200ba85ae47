// `mycelium node coap`: pyaiot's CoAP test node (pyaiot-protocol §8.1), behaving like a RIOT node on the wire:
// it beacons and posts values from the same UDP socket its CoAP server listens on (RIOT gcoap has one socket),
// so the gateway can discover it at the beacon's source address and port.
import type { Socket } from 'node:dgram';
import { lookup } from 'node:dns/promises';
import {
  Agent,
  createServer,
  type IncomingMessage,
  type ObserveWriteStream,
  type OutgoingMessage,
  type Server,
} from 'coap';
import { type ConfigOf, kebab, type OptionTable } from '../../services/common/config.ts';
import type { Logger } from '../../services/common/log.ts';
import type { CommandSpec } from '../../services/common/run.ts';
import { bindUdp, closeUdp } from '../../gateways/coap/transport.ts';

export const coapNodeOptions = {
  gatewayHost: { type: 'string', default: 'localhost', description: 'CoAP gateway host' },
  gatewayPort: { type: 'number', default: 5683, min: 1, description: 'CoAP gateway UDP port' },
  port: {
    type: 'number',
    default: 5683,
    min: 0,
    description: "this node's CoAP port (0 = any; use it beside a gateway)",
  },
  host: { type: 'string', default: '::', description: "this node's bind address" },
  uid: { type: 'string', default: '1234', description: 'node uid sent in beacons (pyaiot: 1234)' },
  temperature: { type: 'boolean', default: false, description: 'serve and post /temperature' },
  pressure: { type: 'boolean', default: false, description: 'serve and post /pressure' },
  led: { type: 'boolean', default: false, description: 'serve /led (GET, PUT 0|1)' },
  imu: { type: 'boolean', default: false, description: 'serve and post /imu' },
  robot: { type: 'boolean', default: false, description: 'serve /robot (PUT answers 2.05)' },
  version: { type: 'boolean', default: false, description: 'serve and post /version' },
  observe: {
    type: 'boolean',
    default: false,
    description: 'mark sensor resources observable (obs) and notify observers instead of posting',
  },
  beaconIntervalMs: { type: 'number', default: 30000, min: 10, description: 'POST /alive period' },
  valueIntervalMs: { type: 'number', default: 5000, min: 10, description: 'temperature/pressure period' },
  imuIntervalMs: { type: 'number', default: 200, min: 10, description: 'imu period' },
  versionIntervalMs: { type: 'number', default: 2000, min: 10, description: 'version period' },
  resetBeacon: { type: 'boolean', default: false, description: 'first beacon is reset:<uid> (as RIOT at boot)' },
} as const satisfies OptionTable;

// Environment names of their own (MYCELIUM_COAP_NODE_PORT, ...): the generic MYCELIUM_PORT belongs to services.
for (const [name, spec] of Object.entries(coapNodeOptions) as Array<[string, { env?: string | false }]>) {
  spec.env = `MYCELIUM_COAP_NODE_${kebab(name).replace(/-/g, '_').toUpperCase()}`;
}

export type CoapNodeConfig = ConfigOf<typeof coapNodeOptions>;

const OBSERVABLE = new Set(['temperature', 'pressure', 'imu', 'version', 'led']);

const rand = (lo: number, hi: number) => lo + Math.floor(Math.random() * (hi - lo + 1));
const imuValue = () =>
  JSON.stringify(
    ['acc', 'mag', 'gyro'].map((type) => ({ type, values: [rand(-500, 499), rand(-500, 499), rand(-500, 499)] })),
  );

export class CoapTestNode {
  readonly config: CoapNodeConfig;
  /** Current resource values (GET answers these). */
  readonly values = new Map<string, string>();
  /** Requests seen, by "METHOD /path" (tests check what the gateway asked). */
  readonly seen = new Map<string, number>();
  /** PUT payloads received, in order. */
  readonly writes: Array<{ resource: string; payload: string }> = [];
  private readonly log: Logger;
  private socket?: Socket;
  private server?: Server;
  private agent?: Agent;
  private timers: NodeJS.Timeout[] = [];
  private readonly observers = new Map<string, Set<ObserveWriteStream>>();
  private running = false;
  /** The gateway's address in the form this node's socket can send to. */
  private gatewayAddress = '';
  /** When true, requests are left unanswered (a node that never answers discovery). */
  mute = false;
  /** When set, /.well-known/core answers this text instead of the real links. */
  linkFormatOverride?: string;

  constructor(config: CoapNodeConfig, deps: { log: Logger }) {
    this.config = config;
    this.log = deps.log;
    this.values.set('board', 'test_board');
    this.values.set('name', 'Python Test Node');
    if (config.led) this.values.set('led', '0');
    if (config.temperature) this.values.set('temperature', '23°C');
    if (config.pressure) this.values.set('pressure', '1015.03hPa');
    if (config.imu) this.values.set('imu', imuValue());
    if (config.robot) this.values.set('robot', 's');
    if (config.version) this.values.set('version', '1.0.0');
  }

  get port(): number {
    return this.socket?.address().port ?? this.config.port;
  }

  observerCount(resource: string): number {
    return this.observers.get(resource)?.size ?? 0;
  }

  async start(): Promise<void> {
    if (this.running) return;
    this.running = true;
    await this.open(this.config.port);
    this.gatewayAddress = await this.resolveGateway();
    const c = this.config;
    this.beacon(c.resetBeacon ? 'reset' : 'Alive');
    this.every(c.beaconIntervalMs, () => this.beacon('Alive'));
    const periodic: Array<[boolean, number, string, () => string]> = [
      [c.temperature, c.valueIntervalMs, 'temperature', () => `${rand(20, 29)}°C`],
      [c.pressure, c.valueIntervalMs, 'pressure', () => `${rand(990, 1014)}hPa`],
      [c.imu, c.imuIntervalMs, 'imu', imuValue],
      [c.version, c.versionIntervalMs, 'version', () => `${rand(1, 8)}.${rand(1, 8)}.${rand(1, 8)}`],
    ];
    for (const [on, ms, name, make] of periodic) if (on) this.every(ms, () => this.setValue(name, make()));
    this.log.info({ port: this.port, uid: c.uid }, 'CoAP test node running');
  }

  async stop(): Promise<void> {
    if (!this.running) return;
    this.running = false;
    for (const t of this.timers) clearInterval(t);
    this.timers = [];
    await this.close();
  }

  /** Changes a value and tells the gateway: a notification to observers, else a POST /server. */
  setValue(resource: string, value: string): void {
    this.values.set(resource, value);
    if (this.config.observe && OBSERVABLE.has(resource)) {
      for (const o of this.observers.get(resource) ?? []) o.write(value);
    } else this.post('/server', `${resource}:${value}`);
  }

  /** POST /alive `Alive:<uid>` (pyaiot's test node) or `reset:<uid>` (RIOT at boot). */
  beacon(kind: 'Alive' | 'alive' | 'reset' = 'Alive'): void {
    this.post('/alive', `${kind}:${this.config.uid}`);
  }

  /** Simulates a reboot that loses observer state silently (the gateway must notice and re-register). */
  dropObservers(): void {
    this.observers.clear();
  }

  /** Moves to a new source port, as after a NAT rebinding, and beacons from there. */
  async rebind(port = 0): Promise<void> {
    await this.close();
    await this.open(port);
    this.beacon('Alive');
  }

  /**
   * Resolves --gateway-host once. "localhost" may resolve to 127.0.0.1 only, which a dual-stack IPv6 socket
   * reaches as ::ffff:127.0.0.1; an IPv4-only socket needs an IPv4 address.
   */
  private async resolveGateway(): Promise<string> {
    const v6 = this.socket?.address().family === 'IPv6';
    const { address, family } = await lookup(this.config.gatewayHost, v6 ? {} : { family: 4 });
    return v6 && family === 4 ? `::ffff:${address}` : address;
  }

  private every(ms: number, fn: () => void): void {
    const t = setInterval(fn, ms);
    t.unref();
    this.timers.push(t);
  }

  private async open(port: number): Promise<void> {
    this.socket = await bindUdp(this.config.host, port);
    const type = this.socket.address().family === 'IPv6' ? 'udp6' : 'udp4';
    this.server = createServer({ type });
    this.server.on('request', (req: IncomingMessage, res: OutgoingMessage) => this.onRequest(req, res));
    this.server.on('error', (err: Error) => this.log.warn({ err }, 'node socket error'));
    await new Promise<void>((resolve) => this.server!.listen(this.socket!, () => resolve()));
    // Requests go out from the server's own socket, like RIOT's gcoap.
    this.agent = new Agent({ socket: this.socket });
    this.agent.on('error', (err: Error) => this.log.debug({ err }, 'node client error'));
  }

  private async close(): Promise<void> {
    for (const set of this.observers.values()) for (const o of set) o.end();
    this.observers.clear();
    this.server?.close();
    this.agent?.close();
    await closeUdp(this.socket);
    this.socket = undefined;
  }

  private post(path: string, payload: string): void {
    if (this.agent === undefined || !this.running) return;
    const req = this.agent.request({
      hostname: this.gatewayAddress,
      port: this.config.gatewayPort,
      method: 'POST',
      pathname: path,
    });
    req.on('error', (err: Error) => this.log.debug({ err, path }, 'post failed'));
    req.on('timeout', () => this.log.debug({ path }, 'post not acknowledged'));
    req.end(Buffer.from(payload, 'utf8'));
  }

  private links(): string {
    const parts = ['</board>;ct=0', '</name>;ct=0;title="Node name; as in pyaiot, with a comma"'];
    for (const name of this.values.keys()) {
      if (name === 'board' || name === 'name') continue;
      parts.push(`</${name}>;ct=0${this.config.observe && OBSERVABLE.has(name) ? ';obs' : ''}`);
    }
    return parts.join(',');
  }

  private onRequest(req: IncomingMessage, res: OutgoingMessage): void {
    const path = req.url.split('?')[0];
    const key = `${req.method} ${path}`;
    this.seen.set(key, (this.seen.get(key) ?? 0) + 1);
    if (this.mute) return;
    const name = path.slice(1);
    if (req.method === 'GET') {
      if (path === '/.well-known/core') {
        res.setOption('Content-Format', 'application/link-format');
        res.end(this.linkFormatOverride ?? this.links());
        return;
      }
      const value = this.values.get(name);
      if (value === undefined) return this.answer(res, '4.04', 'Not Found');
      if (req.headers.Observe === 0 && this.config.observe && OBSERVABLE.has(name)) {
        const stream = res as unknown as ObserveWriteStream;
        let set = this.observers.get(name);
        if (set === undefined) {
          set = new Set();
          this.observers.set(name, set);
        }
        set.add(stream);
        const drop = () => set.delete(stream);
        stream.on('finish', drop);
        stream.on('error', drop);
        stream.write(value);
        return;
      }
      res.end(value);
      return;
    }
    if (req.method === 'PUT') {
      const payload = req.payload.toString('utf8');
      this.writes.push({ resource: name, payload });
      if (name === 'led' && this.values.has('led')) {
        // RIOT's /led takes exactly "0" or "1" (pyaiot-protocol §4.7).
        if (payload !== '0' && payload !== '1') return this.answer(res, '4.00', 'Bad Request');
        this.answer(res, '2.04', 'Updated');
        this.setValue('led', payload);
        return;
      }
      if (name === 'robot' && this.values.has('robot')) {
        this.values.set('robot', payload);
        return this.answer(res, '2.05', 'Updated');
      }
      return this.answer(res, this.values.has(name) ? '4.05' : '4.04', 'Not Allowed');
    }
    this.answer(res, '4.05', 'Method Not Allowed');
  }

  private answer(res: OutgoingMessage, code: string, text: string): void {
    res.code = code;
    res.end(text);
  }
}

export const coapNodeCommand: CommandSpec<typeof coapNodeOptions> = {
  name: 'node coap',
  summary: "A CoAP test node like pyaiot's coap-test-node.py: beacons, posts values, serves resources.",
  options: coapNodeOptions,
  build(config, log) {
    return new CoapTestNode(config, { log });
  },
};
