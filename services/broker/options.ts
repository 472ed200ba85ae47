import type { OptionTable } from '../common/config.ts';

export const brokerOptions = {
  port: { type: 'number', default: 8000, min: 0, description: 'HTTP and WebSocket port (0 = any free port)' },
  host: { type: 'string', default: '0.0.0.0', description: 'address to listen on' },
  keyFile: {
    type: 'string',
    description: 'Ed25519 key file (default ~/.mycelium/key.pem); the public half verifies tokens',
  },
  publicKeyFile: {
    type: 'string',
    description:
      'Ed25519 public key (SPKI PEM) that verifies tokens; a broker never needs the private key (overrides --key-file)',
  },
  natsUrl: { type: 'string', description: 'NATS server URL(s), comma-separated; empty = in-process bus' },
  brokerId: { type: 'string', description: 'name of this broker on the bus (default: host-pid)' },
  allowAnonymousViewers: {
    type: 'boolean',
    default: false,
    description: 'admit read-only web clients without a token',
  },
  publicMetrics: { type: 'boolean', default: false, description: 'serve /metrics without a token' },
  maxFrameBytes: {
    type: 'number',
    default: 65536,
    min: 256,
    description: 'largest inbound WebSocket frame (bigger: close 1009)',
  },
  pingIntervalMs: {
    type: 'number',
    default: 15000,
    min: 10,
    description: 'WebSocket ping interval; a peer silent for two intervals is dropped',
  },
  gatewayGraceMs: {
    type: 'number',
    default: 10000,
    min: 0,
    description: "how long a lost gateway's nodes stay online before `out` gateway-lost",
  },
  writeTimeoutMs: { type: 'number', default: 10000, min: 10, description: 'how long a write waits for its result' },
  clientBufferBytes: {
    type: 'number',
    default: 1048576,
    min: 1024,
    description: 'unsent bytes a slow client may pile up before it is dropped (close 1013)',
  },
  peerHeartbeatMs: {
    type: 'number',
    default: 2000,
    min: 10,
    description: 'heartbeat between brokers on NATS; a broker silent for 3 intervals is dead',
  },
  stateSyncMs: {
    type: 'number',
    default: 500,
    min: 0,
    description: 'how long a starting broker gathers state from its peers on NATS',
  },
} as const satisfies OptionTable;
