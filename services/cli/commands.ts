// Every `mycelium` subcommand, loaded on demand so `mycelium token` does not pay for fastify, coap or mqtt.
import type { CommandSpec } from '../common/run.ts';
import type { OptionTable } from '../common/config.ts';

export interface CommandEntry {
  summary: string;
  /** Either a service spec (options, help and shutdown handled alike for all) or a plain main. */
  load(): Promise<
    { spec: CommandSpec<OptionTable> } | { main: (argv: string[]) => Promise<void>; options?: OptionTable }
  >;
}

const spec = <T extends OptionTable>(s: CommandSpec<T>) => ({ spec: s as unknown as CommandSpec<OptionTable> });

export const commands: Record<string, CommandEntry> = {
  up: {
    summary: 'run the whole system in one process (add --demo for live test nodes)',
    load: async () => spec((await import('../up/command.ts')).upCommand),
  },
  broker: {
    summary: 'run the broker (WebSocket /gw and /ws, REST API)',
    load: async () => spec((await import('../broker/command.ts')).brokerCommand),
  },
  'ws-gateway': {
    summary: 'run the WebSocket gateway (nodes connect to /node)',
    load: async () => spec((await import('../../gateways/ws/command.ts')).wsGatewayCommand),
  },
  node: {
    summary: 'run a test node that simulates a device: node ws | node coap | node mqtt',
    load: async () => ({ main: (await import('../../utils/nodes/main.ts')).nodeMain }),
  },
  dashboard: {
    summary: 'serve the live dashboard page (the browser connects to the broker)',
    load: async () => spec((await import('../../dashboard/server/command.ts')).dashboardCommand),
  },
  'coap-gateway': {
    summary: 'run the CoAP gateway (RIOT nodes POST /alive and /server over UDP)',
    load: async () => spec((await import('../../gateways/coap/command.ts')).coapGatewayCommand),
  },
  'mqtt-gateway': {
    summary: 'run the MQTT gateway (embedded MQTT broker, or a client of --mqtt-url)',
    load: async () => spec((await import('../../gateways/mqtt/command.ts')).mqttGatewayCommand),
  },
  keys: {
    summary: 'write an Ed25519 key pair',
    load: async () => {
      const m = await import('./keys-command.ts');
      return { main: m.keysMain, options: m.keysOptions };
    },
  },
  token: {
    summary: 'print a signed token for a role and subject',
    load: async () => {
      const m = await import('./keys-command.ts');
      return { main: m.tokenMain, options: m.tokenOptions };
    },
  },
};
