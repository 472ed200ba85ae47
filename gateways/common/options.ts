// Options every gateway shares, and how a gateway gets its broker token.
import { hostname } from 'node:os';
import type { ConfigOf, OptionTable } from '../../services/common/config.ts';
import { defaultKeyFile, readPrivateKey } from '../../services/common/keys.ts';
import { mintToken } from '../../services/common/tokens.ts';
import { ErrorCode, MyceliumError } from '../../services/protocol/errors.ts';

export { type HttpEndpointConfig, httpEndpointOptions, portError } from '../../services/common/http-endpoint.ts';

export const gatewayLinkOptions = {
  brokerUrl: {
    type: 'list',
    default: ['ws://localhost:8000'],
    description: 'broker URL(s); with several, the gateway moves to the next when one fails',
  },
  token: { type: 'string', description: 'gateway token (role gateway); else one is minted from --key-file' },
  keyFile: {
    type: 'string',
    description: 'private key to mint short-lived gateway tokens (default ~/.mycelium/key.pem)',
  },
  gatewayId: { type: 'string', description: 'gateway identity when minting tokens (default <protocol>-<hostname>)' },
  backoffInitialMs: { type: 'number', default: 500, min: 1, description: 'first reconnect delay to the broker' },
  backoffMaxMs: { type: 'number', default: 30000, min: 1, description: 'longest reconnect delay to the broker' },
  brokerPingMs: { type: 'number', default: 15000, min: 10, description: 'ping interval on the broker link' },
  statusInterval: {
    type: 'number',
    default: 10,
    min: 0.01,
    description: 'seconds between the status reports the gateway sends the broker (and one on every connect)',
  },
} as const satisfies OptionTable;

export type GatewayLinkConfig = ConfigOf<typeof gatewayLinkOptions>;

/** Bounds every gateway enforces, whatever the protocol (see docs/security.md). */
export const gatewayLimitOptions = {
  maxNodes: {
    type: 'number',
    default: 100000,
    min: 1,
    description: 'most nodes this gateway holds; a new node beyond it is refused (logged once, counted)',
  },
  maxResourcesPerNode: {
    type: 'number',
    default: 64,
    min: 1,
    description: 'most resources one node may report; more are refused',
  },
  newNodesPerMinute: {
    type: 'number',
    default: 60,
    min: 1,
    description: 'new node ids accepted per source address per minute (bursts up to this many)',
  },
} as const satisfies OptionTable;

export type GatewayLimitConfig = ConfigOf<typeof gatewayLimitOptions>;

/**
 * The metrics and health port of each gateway: one block of ports, one per protocol, on loopback by default
 * (a Prometheus or a health check on the same host; --http-host to open it wider). docs/operations.md, Ports.
 */
export const GATEWAY_HTTP_PORTS = { ws: 9181, coap: 9182, mqtt: 9183 } as const;

/** Minted tokens live this long; a fresh one is minted for every connection attempt. */
export const MINTED_TOKEN_TTL_SECONDS = 600;

/**
 * A static token when one is given, else a function that mints a short-lived gateway token from the key file.
 * Fails at start-up (not at the first reconnect) when neither works.
 */
export function gatewayTokenSource(config: GatewayLinkConfig, protocol: string): () => Promise<string> {
  if (config.token) {
    const token = config.token;
    return async () => token;
  }
  const keyFile = config.keyFile ?? defaultKeyFile();
  let key: ReturnType<typeof readPrivateKey>;
  try {
    key = readPrivateKey(keyFile);
  } catch (err) {
    throw new MyceliumError(ErrorCode.Config, `no --token given and ${(err as Error).message}`, { cause: err });
  }
  const sub = config.gatewayId ?? `${protocol}-${hostname()}`;
  return () => mintToken(key, { role: 'gateway', sub, ttlSeconds: MINTED_TOKEN_TTL_SECONDS });
}
