// `mycelium up` (and `npm start`): the whole system in one process on embedded defaults — broker on the
// in-process bus, the CoAP, MQTT (embedded broker) and WebSocket gateways, and the dashboard.
// Each service is built from its own command with the flags a user would type, so `up` runs exactly what
// the separate commands run; only the process is shared.
import { hostname } from 'node:os';
import { commands } from '../cli/commands.ts';
import { type commonOptions, type OptionTable, resolveConfig } from '../common/config.ts';
import { defaultKeyFile, ensureKeyPair, readPrivateKey } from '../common/keys.ts';
import type { Logger } from '../common/log.ts';
import type { CommandSpec, Component } from '../common/run.ts';
import { mintToken } from '../common/tokens.ts';
import type { upOptions } from './options.ts';
import type { ConfigOf } from '../common/config.ts';

export type UpConfig = ConfigOf<typeof upOptions> & ConfigOf<typeof commonOptions>;

/** Login links carry an operator token that lives this long. */
export const LOGIN_TOKEN_TTL_SECONDS = 12 * 3600;

interface Planned {
  name: string;
  command: string;
  argv: string[];
  /** The `mycelium up` flag that sets this service's port, for error messages. */
  portFlag?: string;
  port?: number;
}

async function loadSpec(command: string, sub?: string): Promise<CommandSpec<OptionTable>> {
  if (command === 'node') {
    const mod = {
      ws: async () => (await import('../../utils/nodes/ws-node.ts')).wsNodeCommand,
      coap: async () => (await import('../../utils/nodes/coap-node.ts')).coapNodeCommand,
      mqtt: async () => (await import('../../utils/nodes/mqtt-node.ts')).mqttNodeCommand,
    }[sub as 'ws' | 'coap' | 'mqtt'];
    return (await mod()) as unknown as CommandSpec<OptionTable>;
  }
  const loaded = await commands[command].load();
  if (!('spec' in loaded)) throw new Error(`${command} is not a service`);
  return loaded.spec;
}

export class Up implements Component {
  private running: Array<{ name: string; component: Component }> = [];
  private readonly keyFile: string;

  constructor(
    private readonly config: UpConfig,
    private readonly log: Logger,
  ) {
    this.keyFile = config.keyFile ?? defaultKeyFile();
  }

  async start(): Promise<void> {
    if (ensureKeyPair(this.keyFile)) this.log.info({ keyFile: this.keyFile }, 'created a new key pair');
    const key = readPrivateKey(this.keyFile);
    const c = this.config;
    const enabled = new Set(c.services);
    const brokerWs = `ws://127.0.0.1:${c.port}`;
    const common = ['--key-file', this.keyFile, '--log-level', c.logLevel];
    const host = hostname();
    const plan: Planned[] = [
      {
        name: 'broker',
        command: 'broker',
        argv: ['--port', String(c.port), '--host', c.host, ...common, ...(c.natsUrl ? ['--nats-url', c.natsUrl] : [])],
        portFlag: '--port',
        port: c.port,
      },
      {
        name: 'ws',
        command: 'ws-gateway',
        argv: [
          '--port',
          String(c.wsPort),
          '--host',
          c.host,
          '--broker-url',
          brokerWs,
          '--gateway-id',
          `ws-${host}`,
          ...common,
        ],
        portFlag: '--ws-port',
        port: c.wsPort,
      },
      {
        name: 'coap',
        command: 'coap-gateway',
        argv: ['--coap-port', String(c.coapPort), '--broker-url', brokerWs, '--gateway-id', `coap-${host}`, ...common],
        portFlag: '--coap-port',
        port: c.coapPort,
      },
      {
        name: 'mqtt',
        command: 'mqtt-gateway',
        argv: [
          '--mqtt-port',
          String(c.mqttPort),
          '--mqtt-host',
          c.host,
          '--broker-url',
          brokerWs,
          '--gateway-id',
          `mqtt-${host}`,
          ...common,
        ],
        portFlag: '--mqtt-port',
        port: c.mqttPort,
      },
      {
        name: 'dashboard',
        command: 'dashboard',
        argv: [
          '--port',
          String(c.dashboardPort),
          '--host',
          c.host,
          '--broker-url',
          c.publicBrokerUrl ?? `ws://localhost:${c.port}`,
          '--log-level',
          c.logLevel,
        ],
        portFlag: '--dashboard-port',
        port: c.dashboardPort,
      },
    ].filter((p) => enabled.has(p.name));
    for (const p of plan) await this.startOne(p);
    if (c.demo) await this.startDemoNodes(key);
    const token = await mintToken(key, { role: 'operator', sub: 'up-operator', ttlSeconds: LOGIN_TOKEN_TTL_SECONDS });
    this.printBanner(plan, token);
  }

  async stop(): Promise<void> {
    // Reverse order: nodes, then the dashboard and gateways, the broker last.
    for (const { name, component } of this.running.reverse()) {
      try {
        await component.stop();
      } catch (err) {
        this.log.warn({ err, service: name }, 'stop failed');
      }
    }
    this.running = [];
  }

  private async startOne(p: Planned & { spec?: CommandSpec<OptionTable> }): Promise<void> {
    const [command, sub] = p.command.split(' ');
    const spec = p.spec ?? (await loadSpec(command, sub));
    const config = resolveConfig(spec.options, p.argv, {});
    const component = await spec.build(config, this.log.child({ service: p.name }));
    try {
      await component.start();
    } catch (err) {
      await this.stop();
      const e = err as NodeJS.ErrnoException;
      if (e.code === 'EADDRINUSE' && p.portFlag) {
        throw new Error(
          `${p.name}: port ${p.port} is already in use; choose another with \`mycelium up ${p.portFlag} <port>\``,
        );
      }
      if (e.code === 'EACCES' && p.portFlag) {
        throw new Error(
          `${p.name}: no permission to use port ${p.port}; choose another with \`mycelium up ${p.portFlag} <port>\``,
        );
      }
      throw err;
    }
    this.running.push({ name: p.name, component });
  }

  /** One simulated device per protocol, so a new user sees live values and can toggle an LED at once. */
  private async startDemoNodes(key: ReturnType<typeof readPrivateKey>): Promise<void> {
    const c = this.config;
    const nodeToken = (sub: string) => mintToken(key, { role: 'node', sub, ttlSeconds: 30 * 24 * 3600 });
    const enabled = new Set(c.services);
    const nodes: Planned[] = [];
    if (enabled.has('ws')) {
      nodes.push({
        name: 'demo-ws',
        command: 'node ws',
        argv: [
          '--gateway-url',
          `ws://127.0.0.1:${c.wsPort}/node`,
          '--id',
          'demo-ws',
          '--token',
          await nodeToken('demo-ws'),
          '--name',
          'Demo WebSocket node',
          '--led',
          '--temperature',
          '--log-level',
          c.logLevel,
        ],
      });
    }
    if (enabled.has('coap')) {
      nodes.push({
        name: 'demo-coap',
        command: 'node coap',
        argv: [
          '--gateway-host',
          '127.0.0.1',
          '--gateway-port',
          String(c.coapPort),
          '--port',
          '0',
          '--host',
          '127.0.0.1',
          '--uid',
          'demo-coap',
          '--led',
          '--temperature',
          '--pressure',
          '--beacon-interval-ms',
          '30000',
          '--log-level',
          c.logLevel,
        ],
      });
    }
    if (enabled.has('mqtt')) {
      nodes.push({
        name: 'demo-mqtt',
        command: 'node mqtt',
        argv: [
          '--mqtt-url',
          `mqtt://127.0.0.1:${c.mqttPort}`,
          '--id',
          'demo-mqtt',
          '--token',
          await nodeToken('demo-mqtt'),
          '--log-level',
          c.logLevel,
        ],
      });
    }
    for (const n of nodes) await this.startOne(n);
  }

  private printBanner(plan: Planned[], token: string): void {
    const c = this.config;
    const lines = ['', 'Mycelium is up.', ''];
    if (plan.some((p) => p.name === 'dashboard')) {
      lines.push(
        `  Dashboard:      http://localhost:${c.dashboardPort}/#token=${token}`,
        '                  (the link logs you in as an operator for 12 hours)',
      );
    }
    const where: Record<string, string> = {
      broker: `Broker:         http://localhost:${c.port}  (gateways ws://…/gw, web clients ws://…/ws, REST /api/v1)`,
      ws: `WebSocket gw:   ws://localhost:${c.wsPort}/node`,
      coap: `CoAP gw:        coap://localhost:${c.coapPort}  (UDP)`,
      mqtt: `MQTT gw:        mqtt://localhost:${c.mqttPort}  (embedded broker; username = node id, password = node token)`,
    };
    for (const p of plan) if (where[p.name]) lines.push(`  ${where[p.name]}`);
    lines.push('', `  Keys:           ${this.keyFile}`, `  Node tokens:    mycelium token --role node --sub <node-id>`);
    if (c.demo) lines.push('  Demo nodes:     demo-ws, demo-coap, demo-mqtt');
    lines.push('', 'Press Ctrl-C to stop.', '');
    process.stdout.write(`${lines.join('\n')}\n`);
  }
}
