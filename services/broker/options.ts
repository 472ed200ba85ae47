import type { OptionTable } from '../common/config.ts';
import { tokenPolicyOptions } from '../common/token-policy.ts';
import { MAX_RESOURCES_PER_NODE } from '../protocol/frames.ts';
import { ownershipOptions } from './ownership.ts';
import { gatewayReportOptions } from './gateway-reports.ts';
import { consoleOptions } from './exec-router.ts'; // [console]
import { corsOptions } from './cors.ts'; // [accounts-ui]

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
  ...ownershipOptions,
  // --gateway-report-min-interval-ms, --gateway-report-ttl-ms, --gateway-history, --action-timeout-ms
  ...gatewayReportOptions,
  // --max-token-ttl, --revocation-file, --revocation-poll-ms: the token policy the broker verifies with.
  ...tokenPolicyOptions,
  // [console] --audit-file, --exec-grace-ms
  ...consoleOptions,
  // [accounts-ui] --dashboard-origin: who may sign in (the refresh cookie) and write cross-origin (cors.ts)
  ...corsOptions,
  maxNodes: {
    type: 'number',
    default: 100000,
    min: 1,
    description: 'most nodes the broker holds; a new node beyond it is refused (MYC_ERR_LIMIT_REACHED)',
  },
  maxResourcesPerNode: {
    type: 'number',
    default: MAX_RESOURCES_PER_NODE,
    min: 1,
    description: `most resources one node may have (at most ${MAX_RESOURCES_PER_NODE}); more are refused`,
  },
  offlineRetentionMs: {
    type: 'number',
    default: 86_400_000,
    min: 0,
    description: 'how long an offline node stays in the table before it is forgotten (default 24 h)',
  },
  offlineSweepMs: {
    type: 'number',
    default: 60_000,
    min: 10,
    description: 'how often offline nodes older than --offline-retention-ms are evicted',
  },
  sessionSweepMs: {
    type: 'number',
    default: 1000,
    min: 10,
    description: 'how often WebSocket sessions are checked for an expired (4401) or revoked token',
  },
  handshakeTimeoutMs: {
    type: 'number',
    default: 10_000,
    min: 10,
    description: 'a connection that has not sent a complete HTTP request or upgrade by then is closed',
  },
  maxConnectionsPerAddress: {
    type: 'number',
    default: 20_000,
    min: 1,
    description: 'open TCP connections one client address may hold; more are refused with 429',
  },
  clientFramesPerSecond: {
    type: 'number',
    default: 100,
    min: 1,
    description: 'frames per second a web client may send (token bucket); beyond: MYC_ERR_RATE_LIMITED',
  },
  clientFrameBurst: {
    type: 'number',
    default: 200,
    min: 1,
    description: 'burst of client frames allowed above the rate; this many refused in a row closes with 1008',
  },
} as const satisfies OptionTable;
