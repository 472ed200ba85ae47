// Options of `mycelium coap-gateway`: every limit and interval with its named default.
import type { ConfigOf, OptionTable } from '../../services/common/config.ts';
import { tokenPolicyOptions } from '../../services/common/token-policy.ts';
import { GATEWAY_HTTP_PORTS, httpEndpointOptions, gatewayLimitOptions, gatewayLinkOptions } from '../common/options.ts';

export const coapGatewayOptions = {
  coapPort: {
    type: 'number',
    default: 5683,
    min: 0,
    description: 'UDP port nodes POST /alive and /server to (0 = any)',
  },
  coapHost: {
    type: 'string',
    default: '::',
    description: 'address to bind; "::" is dual-stack (IPv6 and IPv4), falls back to 0.0.0.0 without IPv6',
  },
  maxTime: { type: 'number', default: 120, min: 0.01, description: 'seconds of silence before a node goes out' },
  checkIntervalMs: {
    type: 'number',
    default: 1000,
    min: 1,
    description: 'how often one sweep looks for silent nodes (an out comes at most this late)',
  },
  requestTimeoutMs: {
    type: 'number',
    default: 8000,
    min: 1,
    description: 'how long a discovery GET or a write PUT waits for the node (then timeout)',
  },
  maxPayloadBytes: {
    type: 'number',
    default: 1024,
    min: 16,
    description: 'largest /alive or /server payload accepted (bigger: 4.13)',
  },
  nodePort: {
    type: 'number',
    default: 0,
    min: 0,
    description:
      'port the gateway sends GET/PUT to on a node; 0 = the source port of its last beacon (RIOT gcoap beacons from its server port), else --fallback-node-port',
  },
  fallbackNodePort: {
    type: 'number',
    default: 5683,
    min: 0,
    description:
      'port tried when a node does not answer at its beacon source port (nodes that beacon from another socket than they serve on); 0 = none',
  },
  allowRebinding: {
    type: 'boolean',
    default: false,
    description:
      'let a known uid move to another source address (NAT rebinding); off: a uid stays bound to its first address (trust on first use)',
  },
  discoveriesPerMinute: {
    type: 'number',
    default: 60,
    min: 1,
    description:
      'discoveries started per source address per minute (bursts up to this many); more wait for a later beacon',
  },
  discoveryConcurrency: {
    type: 'number',
    default: 64,
    min: 1,
    description: 'nodes discovered at the same time (more wait their turn, so a gateway restart is no storm)',
  },
  discoveryRetryMs: {
    type: 'number',
    default: 60000,
    min: 0,
    description: 'a discovery that got no answer is retried at a beacon this long after (at once if the node moved)',
  },
  ignoreObs: {
    type: 'boolean',
    default: false,
    description: 'do not observe (RFC 7641) resources whose link carries "obs"; read them once like the others',
  },
  pollIntervalMs: {
    type: 'number',
    default: 30000,
    min: 10,
    description: 'period of the plain GET that replaces an observation the node refused (or did not register)',
  },
  observeRefreshMs: {
    type: 'number',
    default: 300000,
    min: 10,
    description: 're-register an observation silent for this long (or for its Max-Age, if longer)',
  },
  dedupCacheBytes: {
    type: 'number',
    // node-coap keeps each cached response with its response stream and a retransmission timer (~5 KiB of heap
    // per ~45-byte entry), and everything it keeps for over a second is promoted to the old generation. Beacons
    // and value posts are idempotent, and RFC 7252 §4.5 allows relaxing duplicate detection for requests handled
    // idempotently, so the budget is small: 32 KiB ~ 700 responses. bench:coap at 20k nodes: 256 KiB cost
    // +5 points of CPU and twice the RSS.
    default: 32768,
    min: 1024,
    description: 'bytes of recent responses kept to answer retransmitted requests alike (RFC 7252 §4.5)',
  },
  ...httpEndpointOptions(GATEWAY_HTTP_PORTS.coap),
  ...gatewayLimitOptions,
  // --max-token-ttl, --revocation-file, --revocation-poll-ms: the policy /metrics tokens are checked by.
  ...tokenPolicyOptions,
  ...gatewayLinkOptions,
} as const satisfies OptionTable;

export type CoapGatewayConfig = ConfigOf<typeof coapGatewayOptions>;
