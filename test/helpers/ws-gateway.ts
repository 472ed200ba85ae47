// A real WebSocket gateway linked to a test broker, and the small probes its tests share. Every resource made here
// is handed to `cleanup`, which the test file drains after each test.
import { WS_GATEWAY_DEFAULTS } from '../../gateways/ws/options.ts';
import { WsGateway, type WsGatewayDeps, type WsGatewayOptions } from '../../gateways/ws/gateway.ts';
import { silentLogger } from '../../services/common/log.ts';
import type { TestBroker } from './broker.ts';
import { waitFor } from './wait.ts';
import { type Frame, TestPeer } from './ws-client.ts';

export type Cleanup = (fn: () => unknown) => void;

/** The gateway's defaults with loopback, port 0, the broker's key, and short reconnect delays. */
export function wsGatewayConfig(tb: TestBroker, overrides: Partial<WsGatewayOptions> = {}): WsGatewayOptions {
  return {
    ...WS_GATEWAY_DEFAULTS,
    port: 0,
    host: '127.0.0.1',
    allowAnonymousNodes: false,
    nodeKeyFile: undefined,
    brokerUrl: [tb.ws],
    token: undefined,
    keyFile: tb.keys.keyFile,
    gatewayId: 'ws-test',
    backoffInitialMs: 20,
    backoffMaxMs: 200,
    brokerPingMs: 15000,
    // /metrics and /healthz on a port of their own, any free one.
    httpPort: 0,
    ...overrides,
  };
}

/** A gateway linked to `tb` (waits until the broker link is open). */
export async function startWsGateway(
  tb: TestBroker,
  cleanup: Cleanup,
  overrides: Partial<WsGatewayOptions> = {},
  deps: Partial<WsGatewayDeps> = {},
): Promise<WsGateway> {
  const gw = new WsGateway(wsGatewayConfig(tb, overrides), { log: silentLogger(), ...deps });
  cleanup(() => gw.stop());
  await gw.start();
  await waitFor(() => gw.core.link.connected, 'the gateway to reach the broker');
  return gw;
}

export const nodeUrl = (gw: WsGateway, query = '') => `ws://127.0.0.1:${gw.port}/node${query}`;

/** A raw node socket, for frames and behaviours the test node would never produce. */
export async function rawNode(
  gw: WsGateway,
  cleanup: Cleanup,
  token?: string,
  options: object = {},
  query = '',
): Promise<TestPeer> {
  const p = await TestPeer.connect(nodeUrl(gw, query), token, options);
  cleanup(() => p.close());
  return p;
}

/** A registered web client with an operator token. */
export async function operatorClient(tb: TestBroker, cleanup: Cleanup): Promise<TestPeer> {
  const c = await TestPeer.connect(`${tb.ws}/ws`, await tb.keys.token('operator', 'op'));
  cleanup(() => c.close());
  await c.register();
  return c;
}

/** Matches a frame of `type`, for `uid` if given, and passing `more`. */
export const is =
  (type: string, uid?: string, more: (f: Frame) => boolean = () => true) =>
  (f: Frame) =>
    f.type === type && (uid === undefined || f.uid === uid) && more(f);

/** The gateway's /metrics, read with a viewer token of the key the gateway verifies with. */
export async function metricsOf(gw: WsGateway, tb: TestBroker): Promise<string> {
  const headers = { authorization: `Bearer ${await tb.keys.token('viewer')}` };
  return (await fetch(`http://127.0.0.1:${gw.httpPort}/metrics`, { headers })).text();
}
