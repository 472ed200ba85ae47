// `mycelium node ws`: a WebSocket test node with the behaviour of pyaiot's utils/ws/ws_test_client.py (protocol
// reference §8.3): it sends its values on connect and whenever it receives `{"request": "discover"}`, and
// answers an LED write by reporting the new `led` value. Unlike pyaiot's it can authenticate, carry a stable
// id, simulate temperature and pressure, acknowledge writes (our extension), and reconnect with backoff.
import type { OptionTable } from '../../services/common/config.ts';
import { type Logger, silentLogger } from '../../services/common/log.ts';
import { NodeLink } from '../../services/common/node-link.ts';
import type { CommandSpec } from '../../services/common/run.ts';
import type { Json } from '../../services/protocol/messages.ts';
import { keyByPin, type PinNodeOptions, pinOptions } from '../../services/agent/pin.ts';

export const WS_NODE_DEFAULTS = {
  gatewayUrl: 'ws://localhost:8001/node',
  intervalMs: 5000,
  name: 'websocket',
  backoffInitialMs: 500,
  backoffMaxMs: 30_000,
} as const;

export const wsNodeOptions = {
  gatewayUrl: { type: 'string', default: WS_NODE_DEFAULTS.gatewayUrl, description: 'gateway URL (path /node)' },
  id: { type: 'string', description: 'node id for anonymous gateways (sent as ?id=); with a token its sub is the id' },
  token: { type: 'string', description: 'node token (mycelium token --role node --sub <id>) or device key (myk_…)' },
  ...pinOptions, // [accounts]
  name: { type: 'string', default: WS_NODE_DEFAULTS.name, description: 'value of the `name` resource' },
  led: { type: 'boolean', default: false, description: 'simulate a writable `led` resource' },
  temperature: { type: 'boolean', default: false, description: 'simulate `temperature`, sent every interval' },
  pressure: { type: 'boolean', default: false, description: 'simulate `pressure`, sent every interval' },
  intervalMs: {
    type: 'number',
    default: WS_NODE_DEFAULTS.intervalMs,
    min: 10,
    description: 'how often temperature and pressure are sent',
  },
  pyaiot: {
    type: 'boolean',
    default: false,
    description: 'behave exactly like the pyaiot node: no hello, no write acknowledgements',
  },
  backoffInitialMs: {
    type: 'number',
    default: WS_NODE_DEFAULTS.backoffInitialMs,
    min: 1,
    description: 'first reconnect delay',
  },
  backoffMaxMs: {
    type: 'number',
    default: WS_NODE_DEFAULTS.backoffMaxMs,
    min: 1,
    description: 'longest reconnect delay',
  },
} as const satisfies OptionTable;

export interface WsTestNodeOptions {
  gatewayUrl: string;
  id?: string;
  token?: string;
  name?: string;
  led?: boolean;
  temperature?: boolean;
  pressure?: boolean;
  intervalMs?: number;
  pyaiot?: boolean;
  backoffInitialMs?: number;
  backoffMaxMs?: number;
  log?: Logger;
  /** [accounts] With no token: get a device key by PIN from the broker at `brokerUrl` (services/agent/pin.ts). */
  pin?: PinNodeOptions;
}

type Frame = Record<string, Json>;

export class WsTestNode {
  /** The resource values this node reports. */
  readonly values: Record<string, Json>;
  /** Every frame received from the gateway, parsed (for tests). */
  readonly received: Frame[] = [];
  /** Close code of the last connection (4001 = replaced by a newer one with the same id). */
  lastClose?: { code: number; reason: string };
  private readonly link: NodeLink;
  private readonly opts: Required<Omit<WsTestNodeOptions, 'id' | 'token' | 'pin'>> &
    Pick<WsTestNodeOptions, 'id' | 'token' | 'pin'>;
  /** [accounts] Ends the wait for a PIN's claim when the node stops. */
  private pinWait?: AbortController;
  private readonly log: Logger;
  private timer?: NodeJS.Timeout;
  private running = false;
  private openWaiters: (() => void)[] = [];

  constructor(options: WsTestNodeOptions) {
    this.opts = {
      name: WS_NODE_DEFAULTS.name,
      led: false,
      temperature: false,
      pressure: false,
      intervalMs: WS_NODE_DEFAULTS.intervalMs,
      pyaiot: false,
      backoffInitialMs: WS_NODE_DEFAULTS.backoffInitialMs,
      backoffMaxMs: WS_NODE_DEFAULTS.backoffMaxMs,
      log: silentLogger(),
      ...options,
    };
    this.log = this.opts.log;
    // pyaiot's client reports these four; `node` was its (fixed) IPv6 address.
    this.values = { node: 'fd00:aaaa:bbbb::1', name: this.opts.name, os: 'riot' };
    if (this.opts.led) this.values.led = '0';
    if (this.opts.temperature) this.values.temperature = randomTemperature();
    if (this.opts.pressure) this.values.pressure = randomPressure();
    this.link = new NodeLink(
      {
        url: () => this.url(),
        headers: (): Record<string, string> => (this.opts.token ? { authorization: `Bearer ${this.opts.token}` } : {}),
        backoffInitialMs: this.opts.backoffInitialMs,
        backoffMaxMs: this.opts.backoffMaxMs,
        holdProcess: false,
        role: 'node',
        log: this.log,
      },
      {
        open: () => {
          this.log.info({ url: this.opts.gatewayUrl }, 'connected to gateway');
          if (!this.opts.pyaiot) this.send({ type: 'hello', ack: true });
          this.sendAll();
          for (const w of this.openWaiters.splice(0)) w();
        },
        message: (data) => this.onMessage(data.toString()),
        closed: (code, reason) => {
          this.lastClose = { code, reason };
        },
      },
    );
  }

  get connected(): boolean {
    return this.link.connected;
  }

  /** How many times a connection opened. */
  get opens(): number {
    return this.link.opens;
  }

  /** Starts connecting (and reconnecting) in the background. */
  async start(): Promise<void> {
    if (this.running) return;
    this.running = true;
    if (this.opts.pin !== undefined && this.opts.token === undefined) {
      this.pinWait = new AbortController();
      keyByPin(this.opts.pin, this.log, this.pinWait.signal, ({ key }) => {
        this.opts.token = key;
        if (this.running) this.link.start();
      });
    } else this.link.start();
    if (this.opts.temperature || this.opts.pressure) {
      this.timer = setInterval(() => this.tick(), this.opts.intervalMs);
      this.timer.unref();
    }
  }

  async stop(): Promise<void> {
    this.running = false;
    this.pinWait?.abort();
    clearInterval(this.timer);
    await this.link.stop(1000, 'node stopping', 1000);
  }

  /** Resolves once a connection is open (at once if one is). */
  opened(): Promise<void> {
    if (this.connected) return Promise.resolve();
    return new Promise((resolve) => this.openWaiters.push(resolve));
  }

  /** Kills the connection without a closing handshake, as a crashed device would (the node reconnects). */
  crash(): void {
    this.link.terminate();
  }

  /** Sends new values, as a sensor reading would. */
  report(values: Record<string, Json>): void {
    Object.assign(this.values, values);
    this.send({ type: 'update', data: values });
  }

  private url(): string {
    if (this.opts.id === undefined || this.opts.token !== undefined) return this.opts.gatewayUrl;
    const u = new URL(this.opts.gatewayUrl);
    u.searchParams.set('id', this.opts.id);
    return u.toString();
  }

  private onMessage(text: string): void {
    let frame: unknown;
    try {
      frame = JSON.parse(text);
    } catch {
      this.log.warn('gateway sent a frame that is not JSON; ignored');
      return;
    }
    if (typeof frame !== 'object' || frame === null || Array.isArray(frame)) return;
    const f = frame as Frame;
    this.received.push(f);
    if (f.request === 'discover') return this.sendAll();
    if (typeof f.endpoint === 'string' && 'payload' in f) return this.onWrite(f.endpoint, f.payload, f.id);
  }

  private onWrite(endpoint: string, payload: Json, id: Json | undefined): void {
    const ack = !this.opts.pyaiot && typeof id === 'string';
    if (endpoint !== 'led' || !this.opts.led) {
      if (ack) this.send({ type: 'ack', id, result: 'error', reason: `no writable resource ${endpoint}` });
      return;
    }
    // pyaiot's client: led is "1" when the payload is "1", else "0".
    const led = String(payload) === '1' ? '1' : '0';
    this.values.led = led;
    this.send({ type: 'update', data: { led } });
    if (ack) this.send({ type: 'ack', id, result: 'ok' });
  }

  private tick(): void {
    const data: Record<string, Json> = {};
    if (this.opts.temperature) data.temperature = randomTemperature();
    if (this.opts.pressure) data.pressure = randomPressure();
    this.report(data);
  }

  private sendAll(): void {
    this.send({ type: 'update', data: this.values });
  }

  private send(frame: Frame): void {
    this.link.send(JSON.stringify(frame));
  }
}

/** pyaiot's test nodes: `<20..29>°C` and `<990..1014>hPa`. */
function randomTemperature(): string {
  return `${20 + Math.floor(Math.random() * 10)}°C`;
}
function randomPressure(): string {
  return `${990 + Math.floor(Math.random() * 25)}hPa`;
}

export const wsNodeCommand: CommandSpec<typeof wsNodeOptions> = {
  name: 'node ws',
  summary: 'Run a WebSocket test node (pyaiot ws_test_client behaviour) against a ws-gateway.',
  options: wsNodeOptions,
  build(config, log) {
    const { pin, brokerUrl, keyOut, pinPollMs, ...rest } = config;
    return new WsTestNode({ ...rest, log, pin: pin ? { brokerUrl, keyOut, pinPollMs } : undefined });
  },
};
