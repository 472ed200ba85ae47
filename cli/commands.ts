// Every `mycelium` subcommand, loaded on demand so `mycelium token` does not pay for fastify, coap or mqtt,
// and no production command loads the demo nodes of utils/.
import type { OptionTable } from '../services/common/config.ts';
import type { CommandSpec } from '../services/common/run.ts';
import { type ServiceName, services } from './services.ts';

export interface CommandEntry {
  summary: string;
  /** Either a service spec (options, help and shutdown handled alike for all) or a plain main. */
  load(): Promise<
    { spec: CommandSpec<OptionTable> } | { main: (argv: string[]) => Promise<void>; options?: OptionTable }
  >;
}

const service = (name: ServiceName): CommandEntry => ({
  summary: services[name].summary,
  load: async () => ({ spec: await services[name].load() }),
});

export const commands: Record<string, CommandEntry> = {
  up: {
    summary: 'run the whole system in one process (add --demo for live test nodes)',
    load: async () => ({ spec: (await import('./up/command.ts')).upCommand as unknown as CommandSpec<OptionTable> }),
  },
  broker: service('broker'),
  'ws-gateway': service('ws-gateway'),
  node: {
    summary: 'run a test node that simulates a device: node ws | node coap | node mqtt',
    load: async () => ({ main: (await import('../utils/nodes/main.ts')).nodeMain }),
  },
  dashboard: service('dashboard'),
  'coap-gateway': service('coap-gateway'),
  'mqtt-gateway': service('mqtt-gateway'),
  // The service, or `history export` (CSV to stdout): one main dispatches.
  history: {
    summary: services.history.summary,
    load: async () => ({ main: (await import('../services/history/export.ts')).historyMain }),
  },
  // [console] the device agent and `mycelium exec` (issue 12)
  agent: {
    summary: 'run the device agent: dials the WebSocket gateway, runs the commands its allow-list names',
    load: async () => ({
      spec: (await import('../services/agent/command.ts')).agentCommand as unknown as CommandSpec<OptionTable>,
    }),
  },
  exec: {
    summary: 'run a command on device agents through the broker: exec NODE -- COMMAND [PARAM=VALUE…]',
    load: async () => {
      const m = await import('./exec-command.ts');
      return { main: m.execMain, options: m.execOptions };
    },
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
