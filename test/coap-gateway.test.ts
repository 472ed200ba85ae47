// Broker + CoAP gateway + CoAP test nodes over real UDP on port 0. RFC 7252 timing is shrunk, not slept through.
import { createSocket, type Socket } from 'node:dgram';
import { Agent, defaultTiming, type IncomingMessage, updateTiming } from 'coap';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { CoapGateway } from '../gateways/coap/gateway.ts';
import type { CoapGatewayConfig } from '../gateways/coap/options.ts';
import { bindUdp, closeUdp } from '../gateways/coap/transport.ts';
import { silentLogger } from '../services/common/log.ts';
import { type CoapNodeConfig, CoapTestNode } from '../utils/nodes/coap-node.ts';
import { startBroker, type TestBroker } from './helpers/broker.ts';
import { coapGatewayConfig, coapMetric, coapTestNodeConfig } from './helpers/coap.ts';
import { settle, waitFor } from './helpers/wait.ts';
import { type Frame, TestPeer } from './helpers/ws-client.ts';

// ACK_TIMEOUT 2 s -> 125 ms (binary-exact, so node-coap's derived lifetimes stay whole milliseconds).
beforeAll(() => updateTiming({ ackTimeout: 0.125, ackRandomFactor: 1, maxRetransmit: 2 }));

let tb: TestBroker;
let client: TestPeer;
const cleanups: Array<() => Promise<void> | void> = [];

beforeEach(async () => {
  tb = await startBroker();
  cleanups.push(() => tb.stop());
  client = await TestPeer.connect(`${tb.ws}/ws`, await tb.keys.token('operator', 'op'));
  cleanups.push(() => client.close());
  await client.register();
});

afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()!();
});

afterAll(() => defaultTiming());

function gatewayConfig(overrides: Partial<CoapGatewayConfig>): CoapGatewayConfig {
  return coapGatewayConfig(tb.ws, overrides);
}

async function startGateway(overrides: Partial<CoapGatewayConfig> = {}): Promise<CoapGateway> {
  const token = await tb.keys.token('gateway', 'coap-test');
  const gw = new CoapGateway(gatewayConfig(overrides), { log: silentLogger(), tokenSource: async () => token });
  await gw.start();
  cleanups.push(() => gw.stop());
  return gw;
}

async function startNode(
  gw: CoapGateway,
  overrides: Partial<CoapNodeConfig> = {},
  prepare?: (node: CoapTestNode) => void,
): Promise<CoapTestNode> {
  const node = new CoapTestNode(coapTestNodeConfig(gw, overrides), { log: silentLogger() });
  prepare?.(node);
  await node.start();
  cleanups.push(() => node.stop());
  return node;
}

const update = (uid: string, endpoint: string, data?: unknown) => (f: Frame) =>
  f.type === 'update' && f.uid === uid && f.endpoint === endpoint && (data === undefined || f.data === data);
const ofType = (type: string, uid: string) => (f: Frame) => f.type === type && f.uid === uid;
const metric = coapMetric;

/** A bare CoAP endpoint for sending hand-made requests from one UDP socket. */
async function rawPeer(): Promise<{
  socket: Socket;
  post(gw: CoapGateway, path: string, payload: Buffer | string, method?: 'POST' | 'GET'): Promise<IncomingMessage>;
}> {
  const socket = await bindUdp('::', 0);
  const agent = new Agent({ socket });
  cleanups.push(async () => {
    agent.close();
    await closeUdp(socket);
  });
  return {
    socket,
    post: (gw, path, payload, method = 'POST') =>
      new Promise<IncomingMessage>((resolve, reject) => {
        const req = agent.request({ hostname: '::1', port: gw.coapPort, method, pathname: path });
        req.on('response', resolve);
        req.on('error', reject);
        req.end(typeof payload === 'string' ? Buffer.from(payload) : payload);
      }),
  };
}

let writeId = 0;
async function write(uid: string, endpoint: string, payload: unknown): Promise<Frame> {
  const id = `w${++writeId}`;
  client.send({ type: 'update', id, data: { uid, endpoint, payload } });
  return client.next((f) => f.type === 'result' && f.id === id, `result of ${id}`);
}

describe('coap gateway: nodes appear, report values, are discovered', () => {
  it('announces a node by its uid, discovers its resources and forwards value posts', async () => {
    const gw = await startGateway();
    await startNode(gw, { temperature: true, valueIntervalMs: 50 });
    const n = await client.next(ofType('new', '1234'), 'node 1234 appears');
    expect(n.protocol).toBe('CoAP');
    await client.next(update('1234', 'board', 'test_board'), 'board discovered');
    await client.next(update('1234', 'name', 'Python Test Node'), 'name discovered');
    await client.next(update('1234', 'led', '0'), 'led discovered');
    await client.next((f) => update('1234', 'temperature')(f) && /^2\d°C$/.test(f.data), 'posted temperature');
    const ip = client.frames.find(ofType('new', '1234'))?.data?.ip ?? client.frames.find(update('1234', 'ip'))?.data;
    expect(ip).toBe('::1');
  });

  it('reaches the gateway through a host name (localhost may resolve to IPv4 only)', async () => {
    const gw = await startGateway();
    await startNode(gw, { gatewayHost: 'localhost', uid: 'by-name' });
    await client.next(update('by-name', 'led', '0'), 'node behind a host name discovered');
  });

  it('treats beacons from a known uid as a refresh: no second new, no second discovery', async () => {
    const gw = await startGateway();
    const node = await startNode(gw, { beaconIntervalMs: 30 });
    await client.next(update('1234', 'led', '0'), 'discovered');
    await waitFor(() => metric(gw, 'beacons_total') >= 6, 'several beacons');
    expect(client.frames.filter(ofType('new', '1234'))).toHaveLength(1);
    expect(client.frames.filter(ofType('reset', '1234'))).toHaveLength(0);
    expect(node.seen.get('GET /.well-known/core')).toBe(1);
  });

  it('on reset: beacon sends reset (not out) and discovers again', async () => {
    const gw = await startGateway();
    const node = await startNode(gw);
    await client.next(update('1234', 'led', '0'), 'discovered');
    const before = client.frames.length;
    node.beacon('reset');
    await client.next(ofType('reset', '1234'), 'reset');
    await waitFor(() => client.frames.slice(before).find(update('1234', 'board', 'test_board')), 'rediscovered board');
    expect(node.seen.get('GET /.well-known/core')).toBe(2);
    expect(client.frames.filter(ofType('out', '1234'))).toHaveLength(0);
    expect(client.frames.filter(ofType('new', '1234'))).toHaveLength(1);
  });

  it('a reset during discovery discovers again once the node answers', async () => {
    const gw = await startGateway();
    const node = await startNode(gw);
    await client.next(update('1234', 'led', '0'), 'discovered');
    // The node reboots and is slow to answer: the gateway's second discovery waits on it...
    node.mute = true;
    node.beacon('reset');
    await waitFor(() => node.seen.get('GET /.well-known/core') === 2, 'second discovery asked');
    // ... when it reboots again: that discovery's results are void and a third one runs.
    node.mute = false;
    const before = client.frames.length;
    node.beacon('reset');
    await waitFor(() => client.frames.slice(before).find(update('1234', 'led', '0')), 'discovered after the reset');
    expect(node.seen.get('GET /.well-known/core')).toBeGreaterThanOrEqual(3);
  });

  it('a reset beacon from an unknown uid is just a new node', async () => {
    const gw = await startGateway();
    await startNode(gw, { resetBeacon: true, uid: 'fresh' });
    await client.next(update('fresh', 'led', '0'), 'discovered');
    expect(client.frames.filter(ofType('reset', 'fresh'))).toHaveLength(0);
  });
});

describe('coap gateway: writes', () => {
  it('PUT answered 2.04 gives ok and the new value; 4.00 gives error "4.00"; silence gives timeout', async () => {
    const gw = await startGateway();
    const node = await startNode(gw, { robot: true });
    await client.next(update('1234', 'robot', 's'), 'discovered');
    expect(await write('1234', 'led', '1')).toMatchObject({ result: 'ok' });
    await client.next(update('1234', 'led', '1'), 'new led value');
    expect(node.values.get('led')).toBe('1');
    // pyaiot's test node answers 2.05 on /robot; JSON non-strings travel as JSON text.
    expect(await write('1234', 'robot', { dir: 'f' })).toMatchObject({ result: 'ok' });
    expect(node.writes.at(-1)).toEqual({ resource: 'robot', payload: '{"dir":"f"}' });
    expect(await write('1234', 'led', 'x')).toMatchObject({ result: 'error', reason: '4.00' });
    expect(await write('1234', 'nothing', '1')).toMatchObject({ result: 'error', reason: '4.04' });
    node.mute = true;
    expect(await write('1234', 'led', '0')).toMatchObject({ result: 'timeout' });
    expect(metric(gw, 'writes_total{result="ok"}')).toBe(2);
  });

  it('follows a NAT rebinding: the same uid from a new port keeps its identity; writes go to the new port', async () => {
    const gw = await startGateway();
    const node = await startNode(gw);
    await client.next(update('1234', 'led', '0'), 'discovered');
    const oldPort = node.port;
    await node.rebind();
    expect(node.port).not.toBe(oldPort);
    await waitFor(() => gw.nodeEndpoint('1234')?.port === node.port, 'gateway follows the new port');
    expect(await write('1234', 'led', '1')).toMatchObject({ result: 'ok' });
    expect(node.writes).toEqual([{ resource: 'led', payload: '1' }]);
    expect(client.frames.filter(ofType('new', '1234'))).toHaveLength(1);
    expect(client.frames.filter((f) => f.uid === '1234' && (f.type === 'out' || f.type === 'reset'))).toEqual([]);
    expect(metric(gw, 'rebinds_total')).toBe(1);
  });
});

describe('coap gateway: observe (RFC 7641)', () => {
  it('observes resources whose link carries obs, and re-registers when notifications stop', async () => {
    const gw = await startGateway({ observeRefreshMs: 150 });
    const node = await startNode(gw, { temperature: true, observe: true });
    await client.next(update('1234', 'temperature', '23°C'), 'first notification');
    // At least one: a silent resource is re-registered every refresh period, and the test node only forgets an old
    // registration when its next notification is answered with a RST (RFC 7641 §3.6), so `led` may hold several.
    await waitFor(() => node.observerCount('temperature') >= 1 && node.observerCount('led') >= 1, 'observers');
    node.setValue('temperature', '42°C');
    await client.next(update('1234', 'temperature', '42°C'), 'notification');
    // The node forgets its observers silently (reboot without reset beacon): the gateway must register again.
    // ... and keep trying while the node does not answer.
    node.mute = true;
    node.dropObservers();
    await waitFor(() => metric(gw, 'observe_renewals_total') >= 4, 'renewals retried while the node is mute', 5000);
    expect(node.observerCount('temperature')).toBe(0);
    node.mute = false;
    await waitFor(() => node.observerCount('temperature') >= 1, 're-registration', 3000);
    node.setValue('temperature', '25°C');
    await client.next(update('1234', 'temperature', '25°C'), 'notification after re-registration');
    // No value travelled as a POST.
    expect(metric(gw, 'values_total')).toBe(0);
  });
  it('with --ignore-obs reads observable resources once, like the others', async () => {
    const gw = await startGateway({ ignoreObs: true });
    const node = await startNode(gw, { temperature: true, observe: true });
    await client.next(update('1234', 'temperature', '23°C'), 'read by GET');
    expect(node.observerCount('temperature')).toBe(0);
    expect(node.seen.get('GET /temperature')).toBe(1);
    expect(metric(gw, 'observe_registrations_total')).toBe(0);
  });
});

describe('coap gateway: liveness', () => {
  it('sends out timeout for a silent node, and none while nodes beacon', async () => {
    const gw = await startGateway({ maxTime: 0.5, checkIntervalMs: 20 });
    const node = await startNode(gw, { beaconIntervalMs: 50 });
    await client.next(update('1234', 'led', '0'), 'discovered');
    // Negative check: longer than max-time (500 ms), the node beaconing every 50 ms must not go out.
    await settle(700);
    expect(client.frames.filter(ofType('out', '1234'))).toEqual([]);
    const stoppedAt = Date.now();
    await node.stop();
    const out = await client.next(ofType('out', '1234'), 'out after silence');
    expect(out.reason).toBe('timeout');
    // max-time + one check interval, plus room for a loaded CI machine to deliver the frame.
    expect(Date.now() - stoppedAt).toBeLessThan(500 + 20 + 1000);
    expect(gw.nodeCount).toBe(0);
  });
});

describe('coap gateway: bad input', () => {
  it('drops malformed datagrams (RST for a CON header), counts them, keeps serving', async () => {
    const gw = await startGateway();
    const sock = createSocket({ type: 'udp6' });
    cleanups.push(() => closeUdp(sock));
    const got: Buffer[] = [];
    sock.on('message', (m) => got.push(m));
    await new Promise<void>((r) => sock.bind(0, '::1', () => r()));
    sock.send(Buffer.from('hello, not coap'), gw.coapPort, '::1');
    // Version 1, CON, TKL 0, POST, MID 0x1234, then option delta 15 = reserved (RFC 7252 §3.1): a format error.
    sock.send(Buffer.from([0x40, 0x02, 0x12, 0x34, 0xf1, 0x00]), gw.coapPort, '::1');
    sock.send(Buffer.from([0x40]), gw.coapPort, '::1');
    await waitFor(() => metric(gw, 'malformed_total') >= 3, 'three malformed counted');
    await waitFor(() => got.find((m) => m.length === 4 && m[0] === 0x70 && m[2] === 0x12 && m[3] === 0x34), 'RST');
    await startNode(gw);
    await client.next(update('1234', 'led', '0'), 'still serving nodes');
  });

  it('answers 4.04 to value posts from unknown senders, 4.00 to bad payloads, 4.13 to big ones, 4.05 to GET', async () => {
    const gw = await startGateway({ maxPayloadBytes: 64 });
    const peer = await rawPeer();
    expect((await peer.post(gw, '/server', 'temperature:20°C')).code).toBe('4.04');
    expect(metric(gw, 'unknown_sender_total')).toBe(1);
    const ack = await peer.post(gw, '/alive', 'alive:raw-1');
    expect(ack.code).toBe('2.04');
    // No echo of the payload (pyaiot's "Received '...'"): an answer never outweighs its request.
    expect(ack.payload.length).toBe(0);
    await client.next(ofType('new', 'raw-1'), 'raw node appears');
    expect((await peer.post(gw, '/server', 'no colon here')).code).toBe('4.00');
    expect((await peer.post(gw, '/alive', 'nocolon')).code).toBe('4.00');
    expect((await peer.post(gw, '/server', Buffer.from([0x74, 0x3a, 0xff, 0xfe]))).code).toBe('4.00');
    const big = await peer.post(gw, '/server', `t:${'x'.repeat(100)}`);
    expect(big.code).toBe('4.13');
    expect(big.headers.Size1).toBe(64);
    expect((await peer.post(gw, '/alive', '', 'GET')).code).toBe('4.05');
    expect((await peer.post(gw, '/nowhere', 'a:b')).code).toBe('4.04');
    // Values with colons and UTF-8 pass; from the same socket the node beaconed from.
    expect((await peer.post(gw, '/server', 'time:12:30:01 °C')).code).toBe('2.04');
    await client.next(update('raw-1', 'time', '12:30:01 °C'), 'value with colons');
    expect(metric(gw, 'bad_requests_total{reason="bad-utf8"}')).toBe(1);
    expect(metric(gw, 'bad_requests_total{reason="too-large"}')).toBe(1);
  });

  it('keeps a node whose link-format is garbage, with what could be parsed', async () => {
    const gw = await startGateway();
    await startNode(gw, { uid: 'garbled' }, (n) => {
      n.linkFormatOverride = 'garbage,</name>;title="ok",<<<';
    });
    await client.next(update('garbled', 'name', 'Python Test Node'), 'the parsable link');
    await waitFor(() => metric(gw, 'link_format_errors_total') >= 1, 'counted');
    // Negative check: a garbled link-format must not put the node out; 100 ms bounds the wait for a frame in
    // flight after the error was counted.
    await settle(100);
    expect(client.frames.filter(ofType('out', 'garbled'))).toEqual([]);
  });

  it('keeps a node that never answers discovery; its posts still count', async () => {
    const gw = await startGateway({ requestTimeoutMs: 150 });
    const node = await startNode(gw, { uid: 'mute' }, (n) => {
      n.mute = true;
    });
    await client.next(ofType('new', 'mute'), 'mute node appears');
    await waitFor(() => metric(gw, 'discovery_total{result="timeout"}') === 1, 'discovery timed out');
    node.setValue('led', '1');
    await client.next(update('mute', 'led', '1'), 'posted value still accepted');
    expect(gw.nodeCount).toBe(1);
  });

  it('retries a discovery that got no answer at a later beacon', async () => {
    const gw = await startGateway({ requestTimeoutMs: 150, discoveryRetryMs: 0 });
    const node = await startNode(gw, { uid: 'late' }, (n) => {
      n.mute = true;
    });
    await waitFor(() => metric(gw, 'discovery_total{result="timeout"}') === 1, 'first discovery timed out');
    node.mute = false;
    node.beacon('alive');
    await client.next(update('late', 'led', '0'), 'discovered at the next beacon');
    expect(metric(gw, 'discovery_total{result="ok"}')).toBe(1);
  });

  it('serves the counters as Prometheus text on --http-port to a viewer token, and /healthz without one', async () => {
    const gw = await startGateway({ httpPort: 0, keyFile: tb.keys.keyFile });
    await startNode(gw);
    await client.next(update('1234', 'led', '0'), 'discovered');
    const url = `http://127.0.0.1:${gw.httpPort}`;
    const headers = { authorization: `Bearer ${await tb.keys.token('viewer')}` };
    const text = await (await fetch(`${url}/metrics`, { headers })).text();
    expect(text).toMatch(/^mycelium_coap_beacons_total 1$/m);
    expect(text).toMatch(/^mycelium_coap_nodes 1$/m);
    const anonymous = await fetch(`${url}/metrics`);
    expect(anonymous.status).toBe(401);
    expect(await anonymous.json()).toEqual({ error: 'unauthorized', message: 'token missing' });
    const node = await fetch(`${url}/metrics`, {
      headers: { authorization: `Bearer ${await tb.keys.token('node', 'n')}` },
    });
    expect(node.status).toBe(401);
    const health = await fetch(`${url}/healthz`);
    expect(health.status).toBe(200);
    expect(await health.json()).toMatchObject({ status: 'ok', protocol: 'CoAP', transport: 'up', nodes: 1 });
    expect((await fetch(`${url}/other`)).status).toBe(404);
  });
});
