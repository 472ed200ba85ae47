import type { CommandSpec } from '../../services/common/run.ts';
import { upOptions } from './options.ts';
import { Up } from './up.ts';

export const upCommand: CommandSpec<typeof upOptions> = {
  name: 'up',
  summary: 'Run the whole system in one process: broker, CoAP, MQTT and WebSocket gateways, dashboard.',
  options: upOptions,
  build: (config, log) => new Up(config, log),
};
