// Broker + WebSocket gateway + test nodes over real sockets on port 0.
import { createServer } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import type { WsGateway, WsGatewayOptions } from '../gateways/ws/gateway.ts';
import { WsTestNode, type WsTestNodeOptions } from '../utils/nodes/ws-node.ts';
import { startBroker, type TestBroker } from './helpers/broker.ts';
import { makeKeys } from './helpers/keys.ts';
import { type Frame, TestPeer } from './helpers/ws-client.ts';
import { is, metricsOf, nodeUrl, operatorClient, rawNode as rawNodeOf, startWsGateway } from './helpers/ws-gateway.ts';
import { settle, waitFor } from './helpers/wait.ts';

const cleanups: (() => unknown)[] = [];
const cleanup = (fn: () => unknown) => cleanups.push(fn);
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function broker(overrides: Parameters<typeof startBroker>[0] = {}, keys = makeKeys()): Promise<TestBroker> {
  const tb = await startBroker(overrides, keys);
  cleanups.push(() => tb.stop());
  return tb;
}

/** A gateway linked to `tb` (waits until the broker link is open). */
function gateway(tb: TestBroker, overrides: Partial<WsGatewayOptions> = {}): Promise<WsGateway> {
  return startWsGateway(tb, cleanup, overrides);
}

async function node(gw: WsGateway, options: Partial<WsTestNodeOptions> = {}): Promise<WsTestNode> {
  const n = new WsTestNode({ gatewayUrl: nodeUrl(gw), led: true, backoffInitialMs: 20, backoffMaxMs: 200, ...options });
  cleanups.push(() => n.stop());
  await n.start();
  await n.opened();
  return n;
}

function rawNode(gw: WsGateway, token?: string, options: object = {}, query = ''): Promise<TestPeer> {
  return rawNodeOf(gw, cleanup, token, options, query);
}

function client(tb: TestBroker): Promise<TestPeer> {
  return operatorClient(tb, cleanup);
}

/** A port that was free a moment ago (for restarting a broker on the same port). */
async function freePort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()));
  const addr = srv.address();
  await new Promise<void>((r) => srv.close(() => r()));
  if (typeof addr !== 'object' || addr === null) throw new Error('no port');
  return addr.port;
}

describe('ws gateway: nodes at the broker', () => {
  it('announces a node to REST and /ws clients and forwards its values', async () => {
    const tb = await broker();
    const gw = await gateway(tb);
    const c = await client(tb);
    const n = await node(gw, { token: await tb.keys.token('node', 'n1'), name: 'kitchen' });
    expect(await c.next(is('new', 'n1'), 'new n1')).toMatchObject({ gateway: 'ws-test', status: 'online' });
    await c.next(
      is('update', 'n1', (f) => f.endpoint === 'name' && f.data === 'kitchen'),
      'name',
    );
    await c.next(
      is('update', 'n1', (f) => f.endpoint === 'led' && f.data === '0'),
      'led',
    );
    // The node got pyaiot's discover request, byte for byte.
    expect(n.received[0]).toEqual({ request: 'discover' });

    n.report({ temperature: '25°C' });
    await c.next(
      is('update', 'n1', (f) => f.endpoint === 'temperature' && f.data === '25°C'),
      'temperature',
    );

    const auth = { authorization: `Bearer ${await tb.keys.token('viewer')}` };
    const rest = await (await fetch(`${tb.http}/api/v1/nodes/n1`, { headers: auth })).json();
    expect(rest).toMatchObject({
      uid: 'n1',
      gateway: 'ws-test',
      protocol: 'WebSocket',
      status: 'online',
      resources: { name: 'kitchen', os: 'riot', led: '0', temperature: '25°C' },
    });
    // Only one `new` for the node: the answer to discover did not announce it again.
    expect(c.frames.filter(is('new', 'n1'))).toHaveLength(1);
  });

  it('serves /healthz and /metrics on --http-port, nothing but upgrades on the node port', async () => {
    const tb = await broker();
    const gw = await gateway(tb);
    await node(gw, { token: await tb.keys.token('node', 'n1') });
    const health = await (await fetch(`http://127.0.0.1:${gw.httpPort}/healthz`)).json();
    expect(health).toEqual({
      status: 'ok',
      protocol: 'WebSocket',
      transport: 'up',
      broker: 'connected',
      nodes: 1,
      down: [],
    });
    const metrics = await metricsOf(gw, tb);
    expect(metrics).toMatch(/mycelium_ws_gateway_connections 1/);
    expect(metrics).toMatch(/mycelium_ws_gateway_broker_link_connected 1/);
    expect((await fetch(`http://127.0.0.1:${gw.httpPort}/nope`)).status).toBe(404);
    expect((await fetch(`http://127.0.0.1:${gw.port}/metrics`)).status).toBe(404);
  });
});

describe('ws gateway: writes', () => {
  it('carries a client write to an acking node and returns ok; the node reports the new value', async () => {
    const tb = await broker();
    const gw = await gateway(tb);
    const c = await client(tb);
    const n = await node(gw, { token: await tb.keys.token('node', 'n1') });
    await c.next(
      is('update', 'n1', (f) => f.endpoint === 'led'),
      'led',
    );
    c.send({ type: 'update', id: 'w1', data: { uid: 'n1', endpoint: 'led', payload: '1' } });
    expect(await c.next(is('result'), 'result')).toMatchObject({ id: 'w1', uid: 'n1', result: 'ok' });
    expect(n.values.led).toBe('1');
    await c.next(
      is('update', 'n1', (f) => f.endpoint === 'led' && f.data === '1'),
      'led = 1',
    );
    const write = n.received.find((f) => f.endpoint === 'led');
    expect(write).toMatchObject({ endpoint: 'led', payload: '1', id: expect.any(String) });
  });

  it('answers delivered for a pyaiot node that does not acknowledge', async () => {
    const tb = await broker();
    const gw = await gateway(tb, { allowAnonymousNodes: true });
    const c = await client(tb);
    const n = await node(gw, { id: 'old-style', pyaiot: true });
    await c.next(
      is('update', 'old-style', (f) => f.endpoint === 'led'),
      'led',
    );
    c.send({ type: 'update', id: 'w2', data: { uid: 'old-style', endpoint: 'led', payload: '1' } });
    expect(await c.next(is('result'), 'result')).toMatchObject({ id: 'w2', result: 'delivered' });
    await c.next(
      is('update', 'old-style', (f) => f.endpoint === 'led' && f.data === '1'),
      'led = 1',
    );
    expect(n.received.some((f) => f.type === 'ack')).toBe(false);
  });

  it('answers timeout when an acking node does not ack, and error when it refuses', async () => {
    const tb = await broker();
    const gw = await gateway(tb, { writeTimeoutMs: 200 });
    const c = await client(tb);
    const mute = await rawNode(gw, await tb.keys.token('node', 'mute'));
    mute.send({ type: 'hello', ack: true });
    mute.send({ type: 'update', data: { led: '0' } });
    await c.next(is('update', 'mute'), 'mute online');
    c.send({ type: 'update', id: 'w3', data: { uid: 'mute', endpoint: 'led', payload: '1' } });
    expect(
      await c.next(
        is('result', undefined, (f) => f.id === 'w3'),
        'timeout',
      ),
    ).toMatchObject({
      result: 'timeout',
    });
    const write = await mute.next((f) => f.endpoint === 'led', 'write at node');
    c.send({ type: 'update', id: 'w4', data: { uid: 'mute', endpoint: 'led', payload: 'x' } });
    const second = await mute.next((f) => f.endpoint === 'led' && f.id !== write.id, 'second write');
    mute.send({ type: 'ack', id: second.id, result: 'error', reason: 'bad value' });
    expect(
      await c.next(
        is('result', undefined, (f) => f.id === 'w4'),
        'error',
      ),
    ).toMatchObject({
      result: 'error',
      reason: 'bad value',
    });
  });
});

describe('ws gateway: liveness and identity', () => {
  it('reports a killed node out with reason closed', async () => {
    const tb = await broker();
    const gw = await gateway(tb);
    const c = await client(tb);
    const p = await rawNode(gw, await tb.keys.token('node', 'k1'));
    p.send({ type: 'update', data: { led: '0' } });
    await c.next(is('update', 'k1'), 'k1 online');
    p.close(); // terminate: no closing handshake, like a crashed process
    expect(await c.next(is('out', 'k1'), 'out k1')).toMatchObject({ reason: 'closed' });
    expect(gw.core.size).toBe(0);
  });

  it('reports a half-open node (no pongs) out with reason timeout', async () => {
    const tb = await broker();
    const gw = await gateway(tb, { pingIntervalMs: 50 });
    const c = await client(tb);
    await rawNode(gw, await tb.keys.token('node', 'h1'), { autoPong: false });
    await c.next(is('new', 'h1'), 'h1 online');
    expect(await c.next(is('out', 'h1'), 'out h1', 3000)).toMatchObject({ reason: 'timeout' });
    expect(await metricsOf(gw, tb)).toMatch(/mycelium_ws_gateway_nodes_out_total\{reason="timeout"\} 1/);
  });

  it('replaces a connection when the same id reconnects, without an out/new flap', async () => {
    const tb = await broker();
    const gw = await gateway(tb);
    const c = await client(tb);
    const token = await tb.keys.token('node', 'same');
    const first = await rawNode(gw, token);
    first.send({ type: 'update', data: { led: '0' } });
    await c.next(is('update', 'same'), 'first online');
    const second = await rawNode(gw, token);
    expect(await first.closed()).toEqual({ code: 4001, reason: 'replaced by a newer connection' });
    second.send({ type: 'update', data: { led: '1' } });
    await c.next(
      is('update', 'same', (f) => f.data === '1'),
      'value through the second connection',
    );
    // Negative check: the replaced connection must cause no out/new flap; 200 ms bounds the wait for one in flight.
    await settle(200);
    expect(c.frames.filter((f) => f.uid === 'same').map((f) => f.type)).toEqual(['new', 'update', 'update']);
    expect(gw.core.size).toBe(1);
    const auth = { authorization: `Bearer ${await tb.keys.token('viewer')}` };
    expect((await (await fetch(`${tb.http}/api/v1/nodes/same`, { headers: auth })).json()).status).toBe('online');
    // The replaced socket said nothing on the way out; the current one still goes out when it closes.
    second.close();
    expect(await c.next(is('out', 'same'), 'out')).toMatchObject({ reason: 'closed' });
  });

  it('closes a node with 4409 when the broker refuses its uid as held by another gateway, and claims it on reconnect once free', async () => {
    const tb = await broker();
    const a = await gateway(tb, { gatewayId: 'ws-w1' });
    const b = await gateway(tb, { gatewayId: 'ws-w2' });
    const c = await client(tb);
    const token = await tb.keys.token('node', 'roamer');
    const onA = await rawNode(a, token);
    onA.send({ type: 'update', data: { led: '0' } });
    await c.next(is('update', 'roamer'), 'roamer at w1');
    // The device reconnects through another worker while its old link still looks alive there.
    const refused = await rawNode(b, token);
    expect(await refused.closed()).toEqual({ code: 4409, reason: 'uid held by another gateway' });
    expect(b.core.has('roamer')).toBe(false);
    expect(b.core.has('roamer')).toBe(false);
    onA.close();
    await c.next(is('out', 'roamer'), 'w1 lets go');
    // The device reconnects (as the test node does after any close) and w2 announces it afresh.
    const onB = await rawNode(b, token);
    onB.send({ type: 'update', data: { led: '1' } });
    expect(
      await c.next(
        is('new', 'roamer', (f) => f.gateway === 'ws-w2'),
        'w2 claims it',
      ),
    ).toMatchObject({
      status: 'online',
    });
    await c.next(
      is('update', 'roamer', (f) => f.data === '1'),
      'value through w2',
    );
  });

  it('gives anonymous nodes their ?id= or a fresh uuid, only with --allow-anonymous-nodes', async () => {
    const tb = await broker();
    const strict = await gateway(tb, { gatewayId: 'ws-strict' });
    const err = await TestPeer.connect(nodeUrl(strict, '?id=anon')).catch((e) => e);
    expect(err).toMatchObject({ status: 401, body: 'token missing' });

    const open = await gateway(tb, { allowAnonymousNodes: true, gatewayId: 'ws-open' });
    const c = await client(tb);
    await rawNode(open, undefined, {}, '?id=anon-1');
    await c.next(is('new', 'anon-1'), 'anon-1');
    await rawNode(open);
    const fresh = await c.next(
      is('new', undefined, (f) => f.uid !== 'anon-1'),
      'uuid node',
    );
    expect(fresh.uid).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}$/);
    expect((await TestPeer.connect(nodeUrl(open, '?id=%01bad')).catch((e) => e)).status).toBe(400);
    // An anonymous connection cannot take over the id of a node that authenticated.
    await rawNode(open, await tb.keys.token('node', 'secure'));
    await c.next(is('new', 'secure'), 'secure');
    expect((await TestPeer.connect(nodeUrl(open, '?id=secure')).catch((e) => e)).status).toBe(403);
  });
});

describe('ws gateway: authentication before the upgrade', () => {
  it('refuses missing, forged, expired, foreign and wrong-role tokens with 401 and the reason', async () => {
    const tb = await broker();
    const gw = await gateway(tb);
    const refuse = async (token?: string, query = '') => TestPeer.connect(nodeUrl(gw, query), token).catch((e) => e);
    expect(await refuse()).toMatchObject({ status: 401, body: 'token missing' });
    expect(await refuse('not.a.token')).toMatchObject({ status: 401, body: 'token malformed' });
    expect(await refuse(await tb.keys.token('node', 'n', -120))).toMatchObject({ status: 401, body: 'token expired' });
    expect(await refuse(await makeKeys().token('node', 'n'))).toMatchObject({
      status: 401,
      body: 'token bad-signature',
    });
    expect(await refuse(await tb.keys.token('gateway', 'n'))).toMatchObject({ status: 401, body: 'token wrong-role' });
    expect(await refuse(await tb.keys.token('operator', 'n'))).toMatchObject({ status: 401, body: 'token wrong-role' });
    // The query parameter works for devices that cannot set headers.
    const ok = await rawNode(gw, undefined, {}, `?token=${await tb.keys.token('node', 'q1')}`);
    await ok.next((f) => f.request === 'discover', 'discover');
    expect(gw.core.has('q1')).toBe(true);
    expect((await TestPeer.connect(`ws://127.0.0.1:${gw.port}/elsewhere`).catch((e) => e)).status).toBe(404);
    const metrics = await metricsOf(gw, tb);
    expect(metrics).toMatch(/rejections_total\{reason="auth-wrong-role"\} 2/);
    expect(metrics).toMatch(/rejections_total\{reason="auth-missing"\} 1/);
  });
});

describe('ws gateway: bad input', () => {
  it.each([
    ['a frame that is not JSON', 'not json', 1003, 'MYC_ERR_BAD_JSON'],
    ['an unknown type', { type: 'explode', data: {} }, 1003, 'MYC_ERR_BAD_TYPE'],
    ['an update whose data is not an object', { type: 'update', data: 'led=1' }, 1003, 'MYC_ERR_BAD_SHAPE'],
    ['an ack without an id', { type: 'ack', result: 'ok' }, 1003, 'MYC_ERR_BAD_SHAPE'],
    ['an oversized frame', { type: 'update', data: { blob: 'x'.repeat(600) } }, 1009, 'MYC_ERR_TOO_BIG'],
  ])('closes a node that sends %s and keeps serving the others', async (_name, frame, code, counter) => {
    const tb = await broker();
    const gw = await gateway(tb, { maxFrameBytes: 512 });
    const c = await client(tb);
    const good = await rawNode(gw, await tb.keys.token('node', 'good'));
    const bad = await rawNode(gw, await tb.keys.token('node', 'bad'));
    await c.next(is('new', 'bad'), 'bad online');
    bad.send(frame as Frame);
    expect((await bad.closed()).code).toBe(code);
    expect(await c.next(is('out', 'bad'), 'bad out')).toMatchObject({ reason: 'closed' });
    good.send({ type: 'update', data: { led: '1' } });
    await c.next(is('update', 'good'), 'the other node still served');
    expect(good.closeCode).toBeUndefined();
    expect(await metricsOf(gw, tb)).toContain(`reason="${counter}"`);
  });

  it('closes a node that sends binary frames with 1003', async () => {
    const tb = await broker();
    const gw = await gateway(tb);
    const bad = await rawNode(gw, await tb.keys.token('node', 'bin'));
    bad.ws.send(Buffer.from([1, 2, 3]));
    expect((await bad.closed()).code).toBe(1003);
  });

  it('closes a flooding node with 1008 and keeps serving a node within its rate', async () => {
    const tb = await broker();
    const gw = await gateway(tb, { rateLimit: 5, rateBurst: 10 });
    const c = await client(tb);
    const calm = await rawNode(gw, await tb.keys.token('node', 'calm'));
    const flood = await rawNode(gw, await tb.keys.token('node', 'flood'));
    for (let i = 0; i < 50; i++) flood.send({ type: 'update', data: { n: i } });
    expect(await flood.closed()).toEqual({ code: 1008, reason: 'rate limit exceeded' });
    // The burst got through; the rest was refused.
    await c.next(
      is('update', 'flood', (f) => f.data === 9),
      'burst delivered',
    );
    expect(c.frames.some(is('update', 'flood', (f) => f.data === 10))).toBe(false);
    calm.send({ type: 'update', data: { led: '1' } });
    await c.next(is('update', 'calm'), 'calm node served');
    expect(await metricsOf(gw, tb)).toMatch(/rejections_total\{reason="MYC_ERR_RATE_LIMITED"\} 1/);
  });
});

describe('ws gateway: restarts', () => {
  it('a restarted gateway gets its nodes back without an out for clients', async () => {
    const tb = await broker({ gatewayGraceMs: 5000 });
    const first = await gateway(tb);
    const port = first.port;
    const c = await client(tb);
    const n = await node(first, { token: await tb.keys.token('node', 'r1') });
    await c.next(
      is('update', 'r1', (f) => f.endpoint === 'led'),
      'r1 online',
    );
    await first.stop();
    const second = await gateway(tb, { port });
    // The gateway registers the session at the upgrade; the node counts its open when the 101 arrives.
    await waitFor(() => second.core.has('r1') && n.opens === 2, 'the node to reconnect to the new gateway');
    n.report({ temperature: '21°C' });
    await c.next(
      is('update', 'r1', (f) => f.endpoint === 'temperature'),
      'value through the new gateway',
    );
    expect(c.frames.some(is('out', 'r1'))).toBe(false);
    // Writes work through the new gateway.
    c.send({ type: 'update', id: 'w9', data: { uid: 'r1', endpoint: 'led', payload: '1' } });
    expect(await c.next(is('result'), 'result')).toMatchObject({ id: 'w9', result: 'ok' });
  });

  it('after a broker restart on the same port, the gateway reconnects and replays its nodes', async () => {
    const keys = makeKeys();
    const port = await freePort();
    const tb1 = await startBroker({ port }, keys);
    let tb1Stopped = false;
    cleanups.push(() => (tb1Stopped ? undefined : tb1.stop()));
    const gw = await gateway(tb1);
    const n = await node(gw, { token: await keys.token('node', 'b1'), temperature: true });
    await waitFor(() => gw.core.resources('b1')?.temperature, 'the node values in the gateway cache');
    await tb1.stop();
    tb1Stopped = true;
    await waitFor(() => !gw.core.link.connected, 'the link to drop');
    const tb2 = await broker({ port }, keys);
    const c = await client(tb2);
    await waitFor(() => gw.core.link.connected, 'the link to come back', 5000);
    expect(await c.next(is('new', 'b1'), 'b1 replayed')).toMatchObject({ gateway: 'ws-test', status: 'online' });
    await c.next(
      is('update', 'b1', (f) => f.endpoint === 'temperature'),
      'cached value replayed',
    );
    // The node itself never noticed.
    expect(n.opens).toBe(1);
  });
});
