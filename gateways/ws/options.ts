// Options of `mycelium ws-gateway`. Every limit and interval has a named default here and nowhere else.
import type { ConfigOf, OptionTable } from '../../services/common/config.ts';
import { gatewayLinkOptions } from '../common/options.ts';

export const WS_GATEWAY_DEFAULTS = {
  port: 8001,
  /** A node that misses one ping round (no pong, no frame) is dropped on the next: detection in 30-60 s. */
  pingIntervalMs: 30_000,
  /** pyaiot nodes send a few short key/value pairs; 4 KiB leaves room and keeps per-socket buffers small. */
  maxFrameBytes: 4096,
  /** Sustained frames per second per node; a node reports every few seconds, so this is generous. */
  rateLimit: 10,
  /** Frames a node may send back-to-back above the rate (start-up burst: hello, update, discover answer). */
  rateBurst: 20,
  /** How long an acking node has to acknowledge a write (below the broker's own write timeout, 10 s). */
  writeTimeoutMs: 5000,
  /** How long a peer has to finish the closing handshake before its socket is destroyed. */
  closeTimeoutMs: 2000,
  /** Unsent bytes queued to one node before writes to it are refused (a stuck node cannot pile up memory). */
  nodeBufferBytes: 65536,
} as const;

export const wsGatewayOptions = {
  port: {
    type: 'number',
    default: WS_GATEWAY_DEFAULTS.port,
    min: 0,
    description: 'port for nodes (/node), /healthz and /metrics (0 = any free port)',
  },
  host: { type: 'string', default: '0.0.0.0', description: 'address to listen on' },
  allowAnonymousNodes: {
    type: 'boolean',
    default: false,
    description: 'accept nodes without a token (pyaiot style); they may name themselves with ?id=',
  },
  nodeKeyFile: {
    type: 'string',
    description: 'key file whose public half verifies node tokens (default: --key-file, else ~/.mycelium/key.pem)',
  },
  pingIntervalMs: {
    type: 'number',
    default: WS_GATEWAY_DEFAULTS.pingIntervalMs,
    min: 10,
    description: 'ping sweep interval; a node silent for a whole interval goes out with reason timeout',
  },
  maxFrameBytes: {
    type: 'number',
    default: WS_GATEWAY_DEFAULTS.maxFrameBytes,
    min: 64,
    description: 'largest frame a node may send (bigger: close 1009)',
  },
  rateLimit: {
    type: 'number',
    default: WS_GATEWAY_DEFAULTS.rateLimit,
    min: 0.01,
    description: 'frames per second a node may send on average (above: close 1008)',
  },
  rateBurst: {
    type: 'number',
    default: WS_GATEWAY_DEFAULTS.rateBurst,
    min: 1,
    description: 'frames a node may send back-to-back before the rate limit applies',
  },
  writeTimeoutMs: {
    type: 'number',
    default: WS_GATEWAY_DEFAULTS.writeTimeoutMs,
    min: 10,
    description: 'how long a node that acknowledges writes has to answer one (then result timeout)',
  },
  closeTimeoutMs: {
    type: 'number',
    default: WS_GATEWAY_DEFAULTS.closeTimeoutMs,
    min: 10,
    description: 'how long a node has to complete the closing handshake',
  },
  nodeBufferBytes: {
    type: 'number',
    default: WS_GATEWAY_DEFAULTS.nodeBufferBytes,
    min: 1024,
    description: 'unsent bytes queued to one node before writes to it fail',
  },
  workers: {
    type: 'number',
    default: 1,
    min: 1,
    description: 'worker processes sharing the port (each is gateway <gateway-id>-w<n>; needs a key file, not --token)',
  },
  ...gatewayLinkOptions,
} as const satisfies OptionTable;

export type WsGatewayConfig = ConfigOf<typeof wsGatewayOptions>;
