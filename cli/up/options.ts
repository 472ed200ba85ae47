import type { OptionTable } from '../../services/common/config.ts';
import { tokenPolicyOptions } from '../../services/common/token-policy.ts';

export const upOptions = {
  port: { type: 'number', default: 8000, min: 0, description: 'broker port (HTTP, /gw, /ws)' },
  wsPort: { type: 'number', default: 8001, min: 0, description: 'WebSocket gateway port (nodes connect to /node)' },
  coapPort: { type: 'number', default: 5683, min: 0, description: 'CoAP gateway UDP port' },
  mqttPort: { type: 'number', default: 1883, min: 0, description: 'embedded MQTT broker port' },
  dashboardPort: { type: 'number', default: 8080, min: 0, description: 'dashboard port' },
  host: {
    type: 'string',
    // Loopback by default: a first `mycelium up` on a laptop must not open a device hub to the whole network.
    default: '127.0.0.1',
    description: 'address every service listens on (TCP and the CoAP UDP port); 0.0.0.0 or :: = all interfaces',
  },
  publicBrokerUrl: { type: 'string', description: 'broker URL as browsers reach it (default ws://localhost:<port>)' },
  // [accounts-ui] the broker lets these pages sign in and write cross-origin (services/broker/cors.ts)
  dashboardOrigin: {
    type: 'list',
    description: "more dashboard origins the broker accepts for sign-in (the dashboard's own is always passed)",
  },
  keyFile: { type: 'string', description: 'key file; created on first run (default ~/.mycelium/key.pem)' },
  natsUrl: { type: 'string', description: 'NATS server URL; empty = in-process bus' },
  services: {
    type: 'list',
    default: ['broker', 'history', 'ws', 'coap', 'mqtt', 'dashboard'],
    description: 'which services to start',
  },
  db: {
    type: 'string',
    description: 'history database: sqlite:<path> or postgres://… (default: history.db beside the key file)',
  },
  rulesDir: { type: 'string', description: 'also run the rules service on this folder of rule files' },
  demo: { type: 'boolean', default: false, description: 'also start one test node per protocol' },
  accounts: {
    type: 'string',
    default: 'on',
    description:
      'the accounts service (sign-in, API keys, PINs) on the history database: on, or off for hand-minted tokens only',
  },
  smtpUrl: { type: 'string', description: "the accounts service's --smtp-url: invitations by mail (smtp://host:port)" },
  smtpFrom: { type: 'string', description: "the accounts service's --smtp-from" },
  ...tokenPolicyOptions,
} as const satisfies OptionTable;
