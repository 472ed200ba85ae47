import type { CommandSpec } from '../../services/common/run.ts';
import { CoapGateway } from './gateway.ts';
import { coapGatewayOptions } from './options.ts';

export { coapGatewayOptions } from './options.ts';
export { CoapGateway } from './gateway.ts';

export const coapGatewayCommand: CommandSpec<typeof coapGatewayOptions> = {
  name: 'coap-gateway',
  summary:
    'Run the CoAP gateway: RIOT nodes POST /alive and /server; the gateway discovers, observes and writes to them.',
  options: coapGatewayOptions,
  build(config, log) {
    return new CoapGateway(config, { log });
  },
};
