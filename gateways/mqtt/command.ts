import type { CommandSpec } from '../../services/common/run.ts';
import { MqttGateway } from './gateway.ts';
import { mqttGatewayOptions } from './options.ts';

export { mqttGatewayOptions } from './options.ts';
export { MqttGateway } from './gateway.ts';

export const mqttGatewayCommand: CommandSpec<typeof mqttGatewayOptions> = {
  name: 'mqtt-gateway',
  summary:
    'Run the MQTT gateway: pyaiot MQTT topics to the broker. Embeds an MQTT broker (token auth, per-node ACL) ' +
    'unless --mqtt-url names an external one.',
  options: mqttGatewayOptions,
  build(config, log) {
    return new MqttGateway(config, { log });
  },
};
