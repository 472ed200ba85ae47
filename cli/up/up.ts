// `mycelium up` (and `npm start`): the whole system in one process on embedded defaults — broker on the
// in-process bus, the CoAP, MQTT (embedded broker) and WebSocket gateways, and the dashboard.
// Each service is built from its own command with the flags a user would type, so `up` runs exactly what
// the separate commands run; only the process is shared.
import { hostname } from 'node:os';
import { dirname, join } from 'node:path';
import { type Bus, createBus, type DurableStreams } from '../../services/bus/index.ts';
import { defaultDb } from '../../services/history/open-store.ts';
import { type commonOptions, type OptionTable, resolveConfig } from '../../services/common/config.ts';
import { defaultKeyFile, ensureKeyPair, readPrivateKey } from '../../services/common/keys.ts';
import type { Logger } from '../../services/common/log.ts';
import type { CommandSpec, Component } from '../../services/common/run.ts';
import { revocationFileFor } from '../../services/common/revocations.ts';
import { parseMaxTokenTtl } from '../../services/common/token-policy.ts';
import { mintToken } from '../../services/common/tokens.ts';
import type { Role } from '../../services/protocol/messages.ts';
import { type AnySpec, type DemoNodeName, demoNodes, type ServiceName, services } from '../services.ts';
import type { upOptions } from './options.ts';
import type { ConfigOf } from '../../services/common/config.ts';

export type UpConfig = ConfigOf<typeof upOptions> & ConfigOf<typeof commonOptions>;

/** Login links carry an operator token that lives this long (or the operator maximum, if shorter). */
export const LOGIN_TOKEN_TTL_SECONDS = 12 * 3600;
/** Demo nodes get node tokens that live this long (or the node maximum, if shorter). */
export const DEMO_NODE_TOKEN_TTL_SECONDS = 30 * 24 * 3600;

const WILDCARDS = new Set(['0.0.0.0', '::', '']);

/** The address local clients (gateways, demo nodes) dial to reach a service bound to `host`. */
export function dialAddress(host: string): string {
  if (host === '::') return '::1';
  return WILDCARDS.has(host) ? '127.0.0.1' : host;
}

function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || host.startsWith('127.');
}

/** `host` as it goes in a URL (IPv6 literals in brackets). */
function urlHost(host: string): string {
  return host.includes(':') ? `[${host}]` : host;
}

/**
 * [accounts-ui] The origins the broker lets sign in and write cross-origin (--dashboard-origin): the dashboard's
 * own as the banner names it, plus any the user adds. With --dashboard-port 0 the port is not known before the
 * broker starts, so only the added ones count.
 */
export function dashboardOrigins(
  c: Pick<UpConfig, 'dashboardPort' | 'dashboardOrigin' | 'services'>,
  displayHost: string,
): string[] {
  const own =
    c.services.includes('dashboard') && c.dashboardPort !== 0 ? [`http://${displayHost}:${c.dashboardPort}`] : [];
  return [...own, ...(c.dashboardOrigin ?? [])];
}

interface Planned {
  name: string;
  command: string;
  argv: string[];
  /** The `mycelium up` flag that sets this service's port, for error messages. */
  portFlag?: string;
  port?: number;
}

function loadSpec(command: string, sub?: string): Promise<AnySpec> {
  // Demo nodes come from utils/ and are imported only here, when --demo asks for them.
  if (command === 'node') return demoNodes[sub as DemoNodeName]();
  return services[command as ServiceName].load();
}

export class Up implements Component {
  private running: Array<{ name: string; component: Component }> = [];
  private readonly keyFile: string;
  private maxTtl: Partial<Record<Role, number>> = {};
  /** The in-process bus the broker and the history service share (none on NATS: each connects itself). */
  private sharedBus: (Bus & DurableStreams) | undefined;

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
    this.maxTtl = parseMaxTokenTtl(c.maxTokenTtl);
    const enabled = new Set(c.services);
    // [accounts] on unless --accounts off; tokens from `mycelium token` and the banner's link work either way.
    if (c.accounts === 'on') enabled.add('accounts');
    else if (c.accounts !== 'off') throw new Error(`--accounts must be on or off, got ${JSON.stringify(c.accounts)}`);
    const dial = urlHost(dialAddress(c.host));
    const brokerWs = `ws://${dial}:${c.port}`;
    const common = ['--key-file', this.keyFile, '--log-level', c.logLevel];
    // The gateways', the history's and the rules' /metrics and /healthz ports (9181-9185) stay closed: under `up` the
    // broker's /metrics and /healthz cover the system, and a second `up` on the same host must not collide on them.
    const noHttp = '--http-port=-1';
    // "0.0.0.0" keeps the CoAP gateway's dual-stack default ("::", which falls back to IPv4 on its own).
    const coapHost = c.host === '0.0.0.0' ? '::' : c.host;
    const host = hostname();
    if (!c.natsUrl) {
      this.sharedBus = createBus({ onError: (err, subject) => this.log.error({ err, subject }, 'bus handler failed') });
      await this.sharedBus.start();
    }
    const plan: Planned[] = [
      {
        name: 'broker',
        command: 'broker',
        argv: [
          '--port',
          String(c.port),
          '--host',
          c.host,
          ...common,
          ...(c.natsUrl ? ['--nats-url', c.natsUrl] : []),
          ...dashboardOrigins(c, this.displayHost()).flatMap((o) => ['--dashboard-origin', o]), // [accounts-ui]
        ],
        portFlag: '--port',
        port: c.port,
      },
      {
        name: 'history',
        command: 'history',
        argv: [
          '--db',
          c.db ?? defaultDb(this.keyFile),
          '--log-level',
          c.logLevel,
          noHttp,
          ...(c.natsUrl ? ['--nats-url', c.natsUrl] : []),
        ],
      },
      // [rules] only with --rules-dir; its state sits beside the keys, like the history database.
      ...(c.rulesDir === undefined
        ? []
        : [
            {
              name: 'rules',
              command: 'rules',
              argv: [
                '--dir',
                c.rulesDir,
                '--state-dir',
                join(dirname(this.keyFile), 'rules-state'),
                '--log-level',
                c.logLevel,
                noHttp,
                ...(c.natsUrl ? ['--nats-url', c.natsUrl] : []),
              ],
            },
          ]),
      {
        name: 'accounts',
        command: 'accounts',
        argv: [
          '--db',
          c.db ?? defaultDb(this.keyFile),
          ...common,
          ...(c.natsUrl ? ['--nats-url', c.natsUrl] : []),
          ...(c.smtpUrl ? ['--smtp-url', c.smtpUrl] : []), // [accounts] invitations by mail
          ...(c.smtpFrom ? ['--smtp-from', c.smtpFrom] : []),
          // [invites-ui] invitation links open this up's dashboard (its own origin, as the broker lists it)
          ...dashboardOrigins({ ...c, dashboardOrigin: [] }, this.displayHost()).flatMap((o) => ['--dashboard-url', o]),
        ],
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
          noHttp,
          ...common,
        ],
        portFlag: '--ws-port',
        port: c.wsPort,
      },
      {
        name: 'coap',
        command: 'coap-gateway',
        argv: [
          '--coap-port',
          String(c.coapPort),
          '--coap-host',
          coapHost,
          '--broker-url',
          brokerWs,
          '--gateway-id',
          `coap-${host}`,
          noHttp,
          ...common,
        ],
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
          noHttp,
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
          c.publicBrokerUrl ?? `ws://${this.displayHost()}:${c.port}`,
          '--log-level',
          c.logLevel,
        ],
        portFlag: '--dashboard-port',
        port: c.dashboardPort,
      },
    ].filter((p) => enabled.has(p.name) || p.name === 'rules');
    for (const p of plan) await this.startOne(p);
    if (c.demo) await this.startDemoNodes(key);
    const ttlSeconds = this.ttlFor('operator', LOGIN_TOKEN_TTL_SECONDS);
    const token = await mintToken(key, { role: 'operator', sub: 'up-operator', ttlSeconds });
    this.log.info({ host: c.host }, 'mycelium up listening');
    this.printBanner(plan, token, ttlSeconds);
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
    await this.sharedBus?.stop();
    this.sharedBus = undefined;
  }

  /** The wanted lifetime, cut to the role's maximum so the services accept the token. */
  private ttlFor(role: Role, wanted: number): number {
    const max = this.maxTtl[role];
    return max === undefined ? wanted : Math.min(wanted, max);
  }

  /** How the banner names the host: localhost for loopback and wildcard binds, else the address itself. */
  private displayHost(): string {
    const dial = dialAddress(this.config.host);
    return isLoopback(dial) ? 'localhost' : urlHost(dial);
  }

  /**
   * Flags of the token policy (maximum lifetimes, revocation list) for every service that verifies tokens,
   * so one `mycelium token revoke` reaches them all. Only flags the service's option table has are passed.
   */
  private tokenPolicyArgs(options: OptionTable): string[] {
    const c = this.config;
    const args: string[] = [];
    if (Object.hasOwn(options, 'maxTokenTtl')) args.push('--max-token-ttl', c.maxTokenTtl.join(','));
    if (Object.hasOwn(options, 'revocationFile'))
      args.push('--revocation-file', c.revocationFile ?? revocationFileFor(this.keyFile));
    if (Object.hasOwn(options, 'revocationPollMs')) args.push('--revocation-poll-ms', String(c.revocationPollMs));
    return args;
  }

  private async startOne(p: Planned & { spec?: CommandSpec<OptionTable> }): Promise<void> {
    const [command, sub] = p.command.split(' ');
    const spec = p.spec ?? (await loadSpec(command, sub));
    const argv = command === 'node' ? p.argv : [...p.argv, ...this.tokenPolicyArgs(spec.options)];
    const config = resolveConfig(spec.options, argv, {});
    const component = await spec.build(config, this.log.child({ service: p.name }), { bus: this.sharedBus });
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
    const ttlSeconds = this.ttlFor('node', DEMO_NODE_TOKEN_TTL_SECONDS);
    const nodeToken = (sub: string) => mintToken(key, { role: 'node', sub, ttlSeconds });
    const enabled = new Set(c.services);
    // [accounts] on unless --accounts off; tokens from `mycelium token` and the banner's link work either way.
    if (c.accounts === 'on') enabled.add('accounts');
    else if (c.accounts !== 'off') throw new Error(`--accounts must be on or off, got ${JSON.stringify(c.accounts)}`);
    const dial = urlHost(dialAddress(c.host));
    // The CoAP demo node binds where it dials from, so it is no more exposed than the gateway it talks to.
    // (A wildcard CoAP socket is dual-stack, so 127.0.0.1 reaches it.)
    const coapDial = WILDCARDS.has(c.host) ? '127.0.0.1' : c.host;
    const nodes: Planned[] = [];
    if (enabled.has('ws')) {
      nodes.push({
        name: 'demo-ws',
        command: 'node ws',
        argv: [
          '--gateway-url',
          `ws://${dial}:${c.wsPort}/node`,
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
          coapDial,
          '--gateway-port',
          String(c.coapPort),
          '--port',
          '0',
          '--host',
          coapDial,
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
          `mqtt://${dial}:${c.mqttPort}`,
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

  private printBanner(plan: Planned[], token: string, tokenTtlSeconds: number): void {
    const c = this.config;
    const h = this.displayHost();
    const hours = Math.round((tokenTtlSeconds / 3600) * 10) / 10;
    const lines = ['', 'Mycelium is up.', ''];
    if (plan.some((p) => p.name === 'dashboard')) {
      lines.push(
        `  Dashboard:      http://${h}:${c.dashboardPort}/#token=${token}`,
        `                  (the link logs you in as an operator for ${hours} hours)`,
      );
    }
    const where: Record<string, string> = {
      broker: `Broker:         http://${h}:${c.port}  (gateways ws://…/gw, web clients ws://…/ws, REST /api/v1)`,
      history: `History:        ${c.db ?? defaultDb(this.keyFile)}  (REST /api/v1/nodes/:uid/resources/:name/history)`,
      accounts: `Accounts:       POST /api/v1/login  (mycelium org create, user add, key create; --accounts off)`,
      ws: `WebSocket gw:   ws://${h}:${c.wsPort}/node`,
      coap: `CoAP gw:        coap://${h}:${c.coapPort}  (UDP)`,
      mqtt: `MQTT gw:        mqtt://${h}:${c.mqttPort}  (embedded broker; username = node id, password = node token)`,
    };
    for (const p of plan) if (where[p.name]) lines.push(`  ${where[p.name]}`);
    const exposure = WILDCARDS.has(c.host)
      ? `${c.host} (every interface: other machines can connect)`
      : `${c.host}${isLoopback(c.host) ? ' only (this machine; --host 0.0.0.0 to accept others)' : ''}`;
    lines.push(
      '',
      `  Listening on:   ${exposure}`,
      `  Keys:           ${this.keyFile}`,
      '  Node tokens:    mycelium token --role node --sub <node-id>',
      '  Revoke a token: mycelium token revoke <jti>',
    );
    if (c.demo) lines.push('  Demo nodes:     demo-ws, demo-coap, demo-mqtt');
    lines.push('', 'Press Ctrl-C to stop.', '');
    process.stdout.write(`${lines.join('\n')}\n`);
  }
}
