// Shared by the CoAP gateway tests: a config with test timings, metric reading, hand-encoded CoAP datagrams.
import type { CoapGateway } from '../../gateways/coap/gateway.ts';
import { type CoapGatewayConfig, coapGatewayOptions } from '../../gateways/coap/options.ts';
import { resolveConfig } from '../../services/common/config.ts';
import type { CoapNodeConfig } from '../../utils/nodes/coap-node.ts';

/**
 * What the CoAP tests change from the option table's defaults, and why; everything else is the default a
 * `mycelium coap-gateway` started without flags gets.
 */
export const COAP_TEST_OVERRIDES = {
  // Real sockets on port 0; no node port guessed (5683 may be anyone's on a shared machine).
  coapPort: 0,
  fallbackNodePort: 0,
  // No fixed metrics port either: tests that read /metrics or /healthz ask for port 0.
  httpPort: -1,
  // Timings shrunk so a test waits milliseconds, not the seconds a field deployment uses.
  checkIntervalMs: 50,
  requestTimeoutMs: 400,
  backoffInitialMs: 50,
  backoffMaxMs: 500,
  // Every test node beacons from ::1, one source address: the per-address rates must not throttle a test that
  // is not about them.
  discoveriesPerMinute: 600,
  newNodesPerMinute: 600,
} as const satisfies Partial<CoapGatewayConfig>;

/** The gateway's defaults, as its option table declares them (an env var of this shell does not leak in). */
export function coapGatewayDefaults(): CoapGatewayConfig {
  const resolved = resolveConfig(coapGatewayOptions, [], {});
  const config: Record<string, unknown> = {};
  for (const name of Object.keys(coapGatewayOptions)) config[name] = resolved[name as keyof typeof resolved];
  return config as CoapGatewayConfig;
}

/** A config for tests: the option table's defaults, COAP_TEST_OVERRIDES, the broker, then the test's own. */
export function coapGatewayConfig(brokerUrl: string, overrides: Partial<CoapGatewayConfig> = {}): CoapGatewayConfig {
  return { ...coapGatewayDefaults(), ...COAP_TEST_OVERRIDES, brokerUrl: [brokerUrl], ...overrides };
}

/** A test node beaconing to `gw` over ::1: only an LED, every interval a minute (tests drive it themselves). */
export function coapTestNodeConfig(gw: CoapGateway, overrides: Partial<CoapNodeConfig> = {}): CoapNodeConfig {
  return {
    gatewayHost: '::1',
    gatewayPort: gw.coapPort,
    port: 0,
    host: '::',
    uid: '1234',
    temperature: false,
    pressure: false,
    led: true,
    imu: false,
    robot: false,
    version: false,
    observe: false,
    beaconIntervalMs: 60_000,
    valueIntervalMs: 60_000,
    imuIntervalMs: 60_000,
    versionIntervalMs: 60_000,
    resetBeacon: false,
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
