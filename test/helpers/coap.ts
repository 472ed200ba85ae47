// Shared by the CoAP gateway tests: a config with test timings, metric reading, hand-encoded CoAP datagrams.
import type { CoapGateway } from '../../gateways/coap/coap-gateway.ts';
import type { CoapGatewayConfig } from '../../gateways/coap/options.ts';

/** Every option spelled out (a new option breaks the build here, not silently in a test). */
export function coapGatewayConfig(brokerUrl: string, overrides: Partial<CoapGatewayConfig> = {}): CoapGatewayConfig {
  return {
    coapPort: 0,
    coapHost: '::',
    maxTime: 120,
    checkIntervalMs: 50,
    requestTimeoutMs: 400,
    maxPayloadBytes: 256,
    nodePort: 0,
    fallbackNodePort: 0,
    allowRebinding: false,
    discoveriesPerMinute: 600,
    discoveryConcurrency: 8,
    discoveryRetryMs: 60_000,
    ignoreObs: false,
    pollIntervalMs: 30_000,
    observeRefreshMs: 300_000,
    dedupCacheBytes: 1 << 20,
    httpPort: -1,
    httpHost: '127.0.0.1',
    maxNodes: 100_000,
    maxResourcesPerNode: 64,
    newNodesPerMinute: 600,
    brokerUrl: [brokerUrl],
    token: undefined,
    keyFile: undefined,
    gatewayId: undefined,
    backoffInitialMs: 50,
    backoffMaxMs: 500,
    brokerPingMs: 15_000,
    ...overrides,
  };
}

/** The value of one `mycelium_coap_…` sample, 0 when absent. `name` may carry labels: `x_total{reason="y"}`. */
export function coapMetric(gw: CoapGateway, name: string): number {
  const m = gw.metrics().match(new RegExp(`^mycelium_coap_${name.replace(/[{}"]/g, '\\$&')} (\\d+)$`, 'm'));
  return m ? Number(m[1]) : 0;
}

/**
 * A CoAP POST (RFC 7252 §3) with one Uri-Path segment and a payload, hand-encoded so a test knows every byte
 * it sends. Confirmable by default; `tkl` token bytes taken from the message id.
 */
export function coapPost(path: string, payload: string | Buffer, mid: number, confirmable = true): Buffer {
  const p = typeof payload === 'string' ? Buffer.from(payload, 'utf8') : payload;
  const seg = Buffer.from(path, 'utf8');
  if (seg.length > 12) throw new Error('path segment too long for this encoder');
  const head = Buffer.from([
    0x40 | (confirmable ? 0 : 0x10) | 2, // version 1, CON/NON, TKL 2
    0x02, // POST
    (mid >> 8) & 0xff,
    mid & 0xff,
    (mid >> 8) & 0xff,
    mid & 0xff,
    (11 << 4) | seg.length, // Uri-Path
  ]);
  return Buffer.concat([head, seg, Buffer.from([0xff]), p]);
}

/** The response code of a CoAP datagram as "c.dd". */
export function coapCode(msg: Buffer): string {
  return `${msg[1] >> 5}.${String(msg[1] & 0x1f).padStart(2, '0')}`;
}
