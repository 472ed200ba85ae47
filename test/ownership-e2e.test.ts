// Issue 10, finding 2 (broker side) end to end: the real WebSocket and CoAP gateways in front of one broker. A
// token-authenticated WebSocket node goes offline; one CoAP beacon naming its uid must not take it over, and the
// node must be accepted when it comes back with its token (through the same gateway or another one).
import { createSocket } from 'node:dgram';
import { once } from 'node:events';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { defaultTiming, updateTiming } from 'coap';
import { CoapGateway } from '../gateways/coap/gateway.ts';
import { WS_GATEWAY_DEFAULTS } from '../gateways/ws/options.ts';
import { WsGateway, type WsGatewayOptions } from '../gateways/ws/gateway.ts';
import { silentLogger } from '../services/common/log.ts';
import { startBroker, type TestBroker } from './helpers/broker.ts';
import { coapGatewayConfig, coapPost } from './helpers/coap.ts';
import { waitFor } from './helpers/wait.ts';
import { type Frame, TestPeer } from './helpers/ws-client.ts';

const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});
// RFC 7252 timing shrunk (ACK_TIMEOUT 125 ms) so the CoAP gateway's discovery of the silent beacon socket ends fast.
beforeAll(() => updateTiming({ ackTimeout: 0.125, ackRandomFactor: 1, maxRetransmit: 2 }));
afterAll(() => defaultTiming());

async function wsGateway(tb: TestBroker, gatewayId: string): Promise<WsGateway> {
  const config = {
    ...WS_GATEWAY_DEFAULTS,
    port: 0,
    host: '127.0.0.1',
    allowAnonymousNodes: false,
    nodeKeyFile: undefined,
    brokerUrl: [tb.ws],
    token: undefined,
    keyFile: tb.keys.keyFile,
    gatewayId,
    backoffInitialMs: 20,
    backoffMaxMs: 200,
    brokerPingMs: 15000,
  } as WsGatewayOptions;
  const gw = new WsGateway(config, { log: silentLogger() });
  cleanups.push(() => gw.stop());
  await gw.start();
  await waitFor(() => gw.core.link.connected, `${gatewayId} at the broker`);
  return gw;
}

async function coapGateway(tb: TestBroker): Promise<CoapGateway> {
  const token = await tb.keys.token('gateway', 'coap-gw');
  const gw = new CoapGateway(coapGatewayConfig(tb.ws), { log: silentLogger(), tokenSource: async () => token });
  cleanups.push(() => gw.stop());
  await gw.start();
  await waitFor(() => tb.broker.gateways.has('coap-gw'), 'the CoAP gateway at the broker');
  return gw;
}

/** One `alive:<uid>` beacon from a fresh UDP socket, as an attacker anywhere on the network could send. */
async function beacon(gw: CoapGateway, uid: string): Promise<void> {
  const sock = createSocket('udp6');
  cleanups.push(() => sock.close());
  sock.bind(0, '::1');
  await once(sock, 'listening');
  sock.send(coapPost('alive', `alive:${uid}`, 0x1234), gw.coapPort, '::1');
  await once(sock, 'message');
}

async function wsNode(gw: WsGateway, token: string): Promise<TestPeer> {
  const p = await TestPeer.connect(`ws://127.0.0.1:${gw.port}/node`, token);
  cleanups.push(() => p.close());
  return p;
}

describe('ownership end to end: WebSocket node, CoAP beacon', () => {
  it('keeps an offline token-authenticated WebSocket node from a CoAP beacon, and takes the node back with its token', async () => {
    const tb = await startBroker();
    cleanups.push(() => tb.stop());
    const c = await TestPeer.connect(`${tb.ws}/ws`, await tb.keys.token('viewer'));
    cleanups.push(() => c.close());
    await c.register();
    const ws1 = await wsGateway(tb, 'ws-1');
    const ws2 = await wsGateway(tb, 'ws-2');
    const coap = await coapGateway(tb);
    const token = await tb.keys.token('node', 'lamp');
    const news = () => c.frames.filter((f: Frame) => f.type === 'new' && f.uid === 'lamp');

    const first = await wsNode(ws1, token);
    first.send({ type: 'update', data: { led: '0' } });
    await waitFor(() => tb.broker.table.get('lamp')?.resources.led === '0', 'lamp online through ws-1');
    first.close();
    await c.next((f) => f.type === 'out' && f.uid === 'lamp', 'lamp offline');

    // The attack: one beacon naming the uid. The broker refuses the CoAP gateway's announcement.
    await beacon(coap, 'lamp');
    await waitFor(() => tb.broker.counters.rejected('duplicate-uid').value >= 1, 'the CoAP announcement refused');
    expect(tb.broker.table.get('lamp')).toMatchObject({ gateway: 'ws-1', status: 'offline', proof: 'token' });
    expect(news().map((f) => f.gateway)).toEqual(['ws-1']);

    // The real node comes back with its token: accepted (through its own gateway, then through another one).
    const again = await wsNode(ws1, token);
    again.send({ type: 'update', data: { led: '1' } });
    await waitFor(() => tb.broker.table.get('lamp')?.resources.led === '1', 'lamp back through ws-1');
    expect(again.closeCode).toBeUndefined();
    again.close();
    await waitFor(() => tb.broker.table.get('lamp')?.status === 'offline', 'lamp offline again');
    const moved = await wsNode(ws2, token);
    moved.send({ type: 'update', data: { led: '2' } });
    await waitFor(() => tb.broker.table.get('lamp')?.resources.led === '2', 'lamp through ws-2');
    expect(tb.broker.table.get('lamp')?.gateway).toBe('ws-2');
    expect(news().map((f) => f.gateway)).toEqual(['ws-1', 'ws-1', 'ws-2']);
  });
});
