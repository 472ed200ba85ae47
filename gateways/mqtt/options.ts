// Options of `mycelium mqtt-gateway`: every limit and interval with its named default.
import type { ConfigOf, OptionTable } from '../../services/common/config.ts';
import { tokenPolicyOptions } from '../../services/common/token-policy.ts';
import { GATEWAY_HTTP_PORTS, httpEndpointOptions, gatewayLimitOptions, gatewayLinkOptions } from '../common/options.ts';

export const mqttGatewayOptions = {
  ...gatewayLinkOptions,
  // --max-nodes, --max-resources-per-node, --new-nodes-per-minute (the last one: anonymous nodes of the embedded broker).
  ...gatewayLimitOptions,
  // --max-token-ttl, --revocation-file, --revocation-poll-ms: the policy the embedded broker checks node tokens by.
  ...tokenPolicyOptions,
  mqttUrl: {
    type: 'string',
    description:
      'external MQTT broker (mqtt://[user:pass@]host:port or mqtts://...); without it an MQTT broker is embedded',
  },
  mqttUsername: { type: 'string', description: 'user name for the external MQTT broker (overrides the URL)' },
  mqttPassword: { type: 'string', description: 'password for the external MQTT broker (overrides the URL)' },
  mqttClientId: {
    type: 'string',
    description: 'client id at the external MQTT broker (default mycelium-gw-<hostname>-<pid>)',
  },
  mqttCaFile: { type: 'string', description: 'CA certificate (PEM) to check an mqtts:// broker with' },
  mqttReconnectMs: {
    type: 'number',
    default: 1000,
    min: 10,
    description: 'delay between reconnection attempts to the external MQTT broker',
  },
  mqttKeepalive: {
    type: 'number',
    default: 30,
    min: 1,
    description: 'MQTT keep-alive to the external broker, in seconds',
  },
  mqttConnectTimeoutMs: {
    type: 'number',
    default: 10000,
    min: 10,
    description: 'how long an MQTT connection may take to send or answer CONNECT',
  },
  mqttPort: { type: 'number', default: 1883, min: 0, description: 'embedded MQTT broker port (0 = any free port)' },
  mqttHost: { type: 'string', default: '0.0.0.0', description: 'embedded MQTT broker address' },
  allowAnonymousNodes: {
    type: 'boolean',
    default: false,
    description: 'embedded broker: accept nodes without a token and without the per-node ACL (pyaiot style)',
  },
  maxTime: {
    type: 'number',
    default: 120,
    min: 0.01,
    description: 'seconds a node may stay silent before `out` with reason timeout',
  },
  checkInterval: {
    type: 'number',
    default: 30,
    min: 0.01,
    description: 'seconds between `gateway/check` publishes (asks nodes to report presence)',
  },
  writeConfirmMs: {
    type: 'number',
    default: 1000,
    min: 0,
    description: 'after a write, how long to wait for the node to publish the new value (result ok; else delivered)',
  },
  publishTimeoutMs: {
    type: 'number',
    default: 5000,
    min: 10,
    description: 'how long a write waits for the MQTT broker to take the message',
  },
  strictPresence: {
    type: 'boolean',
    default: false,
    description: 'ignore messages from nodes that have not sent node/check (pyaiot); default: they are discovered',
  },
  maxPayloadBytes: {
    type: 'number',
    default: 16384,
    min: 64,
    description: 'largest MQTT payload accepted from a node',
  },
  tokenSweepMs: {
    type: 'number',
    default: 1000,
    min: 10,
    description: 'embedded broker: how often sessions are checked for an expired or revoked token (then disconnected)',
  },
  uidPrefix: {
    type: 'string',
    description: 'prefix for the node uids reported to the broker (uid = prefix + node id; default none)',
  },
  ...httpEndpointOptions(GATEWAY_HTTP_PORTS.mqtt),
} as const satisfies OptionTable;

export type MqttGatewayConfig = ConfigOf<typeof mqttGatewayOptions>;
