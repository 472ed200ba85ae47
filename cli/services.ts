// The services `mycelium up` assembles, each loaded on demand: the long-running commands (broker, gateways,
// dashboard) and the demo nodes. `commands.ts` (the whole `mycelium` table) and `up/up.ts` both read this
// registry, so neither imports the other and the assembly has no import cycle.
import type { OptionTable } from '../services/common/config.ts';
import type { CommandSpec } from '../services/common/run.ts';

export type AnySpec = CommandSpec<OptionTable>;

export interface ServiceEntry {
  summary: string;
  load(): Promise<AnySpec>;
}

const spec = <T extends OptionTable>(s: CommandSpec<T>) => s as unknown as AnySpec;

export const services = {
  broker: {
    summary: 'run the broker (WebSocket /gw and /ws, REST API)',
    load: async () => spec((await import('../services/broker/command.ts')).brokerCommand),
  },
  'ws-gateway': {
    summary: 'run the WebSocket gateway (nodes connect to /node)',
    load: async () => spec((await import('../gateways/ws/command.ts')).wsGatewayCommand),
  },
  dashboard: {
    summary: 'serve the live dashboard page (the browser connects to the broker)',
    load: async () => spec((await import('../dashboard/server/command.ts')).dashboardCommand),
  },
  'coap-gateway': {
    summary: 'run the CoAP gateway (RIOT nodes POST /alive and /server over UDP)',
    load: async () => spec((await import('../gateways/coap/command.ts')).coapGatewayCommand),
  },
  'mqtt-gateway': {
    summary: 'run the MQTT gateway (embedded MQTT broker, or a client of --mqtt-url)',
    load: async () => spec((await import('../gateways/mqtt/command.ts')).mqttGatewayCommand),
  },
  history: {
    summary: 'run the history service (stores values, presence and writes; `history export` writes CSV)',
    load: async () => spec((await import('../services/history/command.ts')).historyCommand),
  },
  rules: {
    summary: 'run the rules service (rule files react to nodes; `rules check DIR` type-checks a folder)',
    load: async () => spec((await import('../services/rules/command.ts')).rulesCommand),
  },
  accounts: {
    summary: 'run the accounts service (sign-in, API keys, PIN provisioning; `mycelium org|user|key` administer it)',
    load: async () => spec((await import('../services/accounts/command.ts')).accountsCommand),
  },
} satisfies Record<string, ServiceEntry>;

export type ServiceName = keyof typeof services;

/**
 * The simulated devices of `utils/nodes/`, test tools rather than production code: imported only when
 * `mycelium node …` or `mycelium up --demo` runs, never by the other commands.
 */
export const demoNodes = {
  ws: async () => spec((await import('../utils/nodes/ws-node.ts')).wsNodeCommand),
  coap: async () => spec((await import('../utils/nodes/coap-node.ts')).coapNodeCommand),
  mqtt: async () => spec((await import('../utils/nodes/mqtt-node.ts')).mqttNodeCommand),
} satisfies Record<string, () => Promise<AnySpec>>;

export type DemoNodeName = keyof typeof demoNodes;
