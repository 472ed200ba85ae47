// Options of `mycelium ws-gateway`. Every limit and interval has a named default here and nowhere else.
import type { ConfigOf, OptionTable } from '../../services/common/config.ts';
import { DEFAULT_REVOCATION_POLL_MS } from '../../services/common/revocations.ts';
import { DEFAULT_MAX_TOKEN_TTL, tokenPolicyOptions } from '../../services/common/token-policy.ts';
import {
  GATEWAY_HTTP_PORTS,
  type HttpEndpointConfig,
  httpEndpointOptions,
  gatewayLimitOptions,
  gatewayLinkOptions,
} from '../common/options.ts';

export const WS_GATEWAY_DEFAULTS = {
  port: 8001,
  /** Every node is pinged once per interval; one silent (no pong, no frame) for two intervals goes out: 60 s. */
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
  /** A connection has this long to send a complete HTTP request (the upgrade); then it is closed. */
  handshakeTimeoutMs: 10_000,
  /**
   * Open connections from one address. High, because a NAT (or a loopback bench) puts thousands of devices
   * behind one address; it bounds one attacker's share of the process's 20,000 files per worker.
   */
  maxConnectionsPerAddress: 25_000,
  /** How often the token sweep closes sessions whose token expired or was revoked (4401). */
  tokenSweepMs: 1000,
  maxNodes: gatewayLimitOptions.maxNodes.default,
  maxResourcesPerNode: gatewayLimitOptions.maxResourcesPerNode.default,
  newNodesPerMinute: gatewayLimitOptions.newNodesPerMinute.default,
  statusInterval: gatewayLinkOptions.statusInterval.default,
  maxTokenTtl: [...DEFAULT_MAX_TOKEN_TTL] as string[],
  revocationPollMs: DEFAULT_REVOCATION_POLL_MS,
  /** undefined: revoked.json beside the node key file. */
  revocationFile: undefined as string | undefined,
} as const;

export const wsGatewayOptions = {
  port: {
    type: 'number',
    default: WS_GATEWAY_DEFAULTS.port,
    min: 0,
    description: 'port nodes connect to (ws://<host>:<port>/node; 0 = any free port)',
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
    description:
      'every node is pinged once per interval; one silent (no pong, no frame) for two intervals goes out (timeout)',
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
  handshakeTimeoutMs: {
    type: 'number',
    default: WS_GATEWAY_DEFAULTS.handshakeTimeoutMs,
    min: 10,
    description: 'time a connection has to send its HTTP upgrade request before it is closed',
  },
  maxConnectionsPerAddress: {
    type: 'number',
    default: WS_GATEWAY_DEFAULTS.maxConnectionsPerAddress,
    min: 1,
    description: 'open connections one address may hold (per worker); beyond it: HTTP 429 and close',
  },
  tokenSweepMs: {
    type: 'number',
    default: WS_GATEWAY_DEFAULTS.tokenSweepMs,
    min: 10,
    description: 'how often node sessions are checked for an expired or revoked token (then closed with 4401)',
  },
  workers: {
    type: 'number',
    default: 1,
    min: 1,
    description: 'worker processes sharing the port (each is gateway <gateway-id>-w<n>; needs a key file, not --token)',
  },
  ...httpEndpointOptions(GATEWAY_HTTP_PORTS.ws),
  ...gatewayLinkOptions,
  // --max-nodes, --max-resources-per-node, --new-nodes-per-minute (the last one: anonymous nodes).
  ...gatewayLimitOptions,
  // --max-token-ttl, --revocation-file, --revocation-poll-ms: the policy node and /metrics tokens are checked by.
  ...tokenPolicyOptions,
} as const satisfies OptionTable;

export type WsGatewayConfig = ConfigOf<typeof wsGatewayOptions>;

/** The options for building a gateway in code: without the HTTP options, no /metrics and /healthz port. */
export type WsGatewayOptions = Omit<WsGatewayConfig, 'workers' | keyof HttpEndpointConfig> & {
  workers?: number;
} & Partial<HttpEndpointConfig>;
