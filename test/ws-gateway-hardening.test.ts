// Attacks on the WebSocket gateway (issue 10), each against the real gateway over real sockets on port 0: a real
// Mycelium broker, raw WebSocket and TCP peers. Every test plays the attack, then checks a well-behaved node is
// still served.
import { connect as tcpConnect, type Socket } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import type { WsGateway, WsGatewayDeps, WsGatewayOptions } from '../gateways/ws/gateway.ts';
import { addRevocations, revocationFileFor } from '../services/common/revocations.ts';
import type { GatewayMessage } from '../services/protocol/messages.ts';
import { startBroker, type TestBroker } from './helpers/broker.ts';
import { TestPeer } from './helpers/ws-client.ts';
import { waitFor } from './helpers/wait.ts';
import { is, metricsOf, nodeUrl, operatorClient, rawNode as rawNodeOf, startWsGateway } from './helpers/ws-gateway.ts';

const cleanups: (() => unknown)[] = [];
const cleanup = (fn: () => unknown) => cleanups.push(fn);
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function broker(): Promise<TestBroker> {
  const tb = await startBroker();
  cleanups.push(() => tb.stop());
  return tb;
}

function gateway(
  tb: TestBroker,
  overrides: Partial<WsGatewayOptions> = {},
  deps: Partial<WsGatewayDeps> = {},
): Promise<WsGateway> {
  return startWsGateway(tb, cleanup, { gatewayId: 'ws-hard', ...overrides }, deps);
}

function rawNode(gw: WsGateway, token?: string, query = ''): Promise<TestPeer> {
  return rawNodeOf(gw, cleanup, token, {}, query);
}

function client(tb: TestBroker): Promise<TestPeer> {
  return operatorClient(tb, cleanup);
}

/** A well-behaved node's value still reaches the broker's clients. */
async function stillServes(gw: WsGateway, tb: TestBroker, c: TestPeer, uid = 'good'): Promise<void> {
  const good = await rawNode(gw, await tb.keys.token('node', uid));
  good.send({ type: 'update', data: { led: 'on' } });
  await c.next(
    is('update', uid, (f) => f.data === 'on'),
    `${uid} served`,
  );
}

function claimsOf(token: string): Record<string, unknown> {
  return JSON.parse(Buffer.from(token.split('.')[1], 'base64url').toString());
}

/** Frames the gateway sends to the broker, recorded by wrapping its link. */
function recordFrames(gw: WsGateway): GatewayMessage[] {
  const frames: GatewayMessage[] = [];
  const link = gw.core.link;
  const send = link.send.bind(link);
  link.send = (frame: string) => {
    frames.push(JSON.parse(frame) as GatewayMessage);
    return send(frame);
  };
  return frames;
}

/** A raw TCP connection to the gateway's HTTP port; resolves `closed` with the time the gateway closed it. */
async function tcp(gw: WsGateway): Promise<{ socket: Socket; closed: Promise<number>; data: () => string }> {
  const socket = tcpConnect(gw.port, '127.0.0.1');
  cleanups.push(() => socket.destroy());
  let text = '';
  socket.on('data', (d) => {
    text += d.toString();
  });
  socket.on('error', () => undefined);
  const closed = new Promise<number>((resolve) => socket.once('close', () => resolve(Date.now())));
  await new Promise<void>((resolve) => socket.once('connect', () => resolve()));
  return { socket, closed, data: () => text };
}

describe('ws gateway: deep and oversized frames (finding 1)', () => {
  it('closes a node sending a 7,000-level value with 1003, counts MYC_ERR_TOO_DEEP, and still serves another node', async () => {
    const tb = await broker();
    const gw = await gateway(tb, { maxFrameBytes: 65536 });
    const c = await client(tb);
    const bad = await rawNode(gw, await tb.keys.token('node', 'deep'));
    bad.ws.send(`{"type":"update","data":{"v":${'['.repeat(7000)}${']'.repeat(7000)}}}`);
    expect((await bad.closed()).code).toBe(1003);
    const bad2 = await rawNode(gw, await tb.keys.token('node', 'deep2'));
    bad2.ws.send(`{"type":"update","data":{"v":${'['.repeat(40)}${']'.repeat(40)}}}`);
    expect((await bad2.closed()).code).toBe(1003);
    await stillServes(gw, tb, c);
    expect(await metricsOf(gw, tb)).toMatch(/rejections_total\{reason="MYC_ERR_TOO_DEEP"\} 2/);
    expect(c.frames.some((f) => f.endpoint === 'v')).toBe(false);
  });

  it('closes a node sending a frame over --max-frame-bytes with 1009, counted as MYC_ERR_TOO_BIG', async () => {
    const tb = await broker();
    const gw = await gateway(tb, { maxFrameBytes: 1024 });
    const c = await client(tb);
    const bad = await rawNode(gw, await tb.keys.token('node', 'big'));
    bad.send({ type: 'update', data: { blob: 'x'.repeat(2000) } });
    expect((await bad.closed()).code).toBe(1009);
    await stillServes(gw, tb, c);
    expect(await metricsOf(gw, tb)).toMatch(/rejections_total\{reason="MYC_ERR_TOO_BIG"\} 1/);
  });
});

describe('ws gateway: identifiers and prototypes (finding 9)', () => {
  it.each([
    ['__proto__', '{"type":"update","data":{"__proto__":{"polluted":true}}}'],
    ['constructor', '{"type":"update","data":{"constructor":1}}'],
    ['a C1 control character', '{"type":"update","data":{"a\\u0085b":1}}'],
  ])('refuses %s as a resource name (1003) and re-prototypes nothing', async (_name, text) => {
    const tb = await broker();
    const gw = await gateway(tb);
    const c = await client(tb);
    const bad = await rawNode(gw, await tb.keys.token('node', 'proto'));
    bad.send({ type: 'update', data: { led: '0' } });
    await c.next(is('update', 'proto'), 'proto online');
    bad.ws.send(text);
    expect((await bad.closed()).code).toBe(1003);
    const resources = gw.core.resources('proto');
    if (resources !== undefined) {
      expect(Object.getPrototypeOf(resources)).toBeNull();
      expect(Object.keys(resources)).toEqual(['led']);
    }
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
    await stillServes(gw, tb, c);
  });
});

describe('ws gateway: caps and rates (finding 4)', () => {
  it('passes at most --max-resources-per-node resources of one node token to the broker, then closes it with 1008', async () => {
    const tb = await broker();
    const gw = await gateway(tb, { maxResourcesPerNode: 10 });
    const c = await client(tb);
    const greedy = await rawNode(gw, await tb.keys.token('node', 'greedy'));
    const data: Record<string, number> = {};
    for (let i = 0; i < 200; i++) data[`r${i}`] = i;
    greedy.send({ type: 'update', data });
    expect(await greedy.closed()).toEqual({ code: 1008, reason: 'more than 10 resources' });
    await c.next(is('out', 'greedy'), 'greedy out');
    const names = new Set(c.frames.filter(is('update', 'greedy')).map((f) => f.endpoint));
    expect(names.size).toBe(10);
    const metrics = await metricsOf(gw, tb);
    expect(metrics).toMatch(/node_refusals_total\{reason="max-resources"\} 1/);
    expect(metrics).toMatch(/rejections_total\{reason="MYC_ERR_LIMIT_REACHED"\} 1/);
    await stillServes(gw, tb, c);
  });

  it('refuses a new node beyond --max-nodes with 503 before the upgrade; known nodes still reconnect', async () => {
    const tb = await broker();
    const gw = await gateway(tb, { maxNodes: 2 });
    const c = await client(tb);
    const a = await rawNode(gw, await tb.keys.token('node', 'a'));
    await rawNode(gw, await tb.keys.token('node', 'b'));
    expect(await TestPeer.connect(nodeUrl(gw), await tb.keys.token('node', 'c')).catch((e) => e)).toMatchObject({
      status: 503,
    });
    a.close();
    await c.next(is('out', 'a'), 'a out');
    await stillServes(gw, tb, c, 'a');
    expect(await metricsOf(gw, tb)).toMatch(/node_refusals_total\{reason="max-nodes"\} 1/);
  });

  it('limits new anonymous node ids per address (--new-nodes-per-minute) with 429; a known id reconnects', async () => {
    const tb = await broker();
    const gw = await gateway(tb, { allowAnonymousNodes: true, newNodesPerMinute: 3 });
    const c = await client(tb);
    for (let i = 0; i < 3; i++) await rawNode(gw, undefined, `?id=anon-${i}`);
    for (let i = 3; i < 6; i++) {
      expect(await TestPeer.connect(nodeUrl(gw, `?id=anon-${i}`)).catch((e) => e)).toMatchObject({ status: 429 });
    }
    const again = await rawNode(gw, undefined, '?id=anon-0');
    again.send({ type: 'update', data: { led: '1' } });
    await c.next(is('update', 'anon-0'), 'known id served');
    expect(await metricsOf(gw, tb)).toMatch(/rejections_total\{reason="new-node-rate"\} 3/);
    expect(gw.core.size).toBe(3);
  });
});

describe('ws gateway: proof of identity (finding 2)', () => {
  it("announces a token-authenticated node with proof 'token', an anonymous one without", async () => {
    const tb = await broker();
    const gw = await gateway(tb, { allowAnonymousNodes: true });
    const frames = recordFrames(gw);
    const c = await client(tb);
    await rawNode(gw, await tb.keys.token('node', 'proven'));
    await rawNode(gw, undefined, '?id=anon');
    await c.next(is('new', 'proven'), 'new proven');
    await c.next(is('new', 'anon'), 'new anon');
    expect(frames.find((f) => f.type === 'new' && f.uid === 'proven')).toMatchObject({ proof: 'token' });
    expect(frames.find((f) => f.type === 'new' && f.uid === 'anon')).not.toHaveProperty('proof');
  });
});

describe('ws gateway: token lifetime (finding 7)', () => {
  it('closes a node session with 4401 "token expired" at its token exp (2 s ttl); the node goes out', async () => {
    const tb = await broker();
    const gw = await gateway(tb, { tokenSweepMs: 100 });
    const c = await client(tb);
    const token = await tb.keys.token('node', 'brief', 2);
    const n = await rawNode(gw, token);
    n.send({ type: 'update', data: { led: '0' } });
    await c.next(is('update', 'brief'), 'brief online');
    const started = Date.now();
    expect(await n.closed()).toEqual({ code: 4401, reason: 'token expired' });
    expect(Date.now() - started).toBeLessThan(5000);
    await c.next(is('out', 'brief'), 'brief out');
    expect(await metricsOf(gw, tb)).toMatch(/sessions_ended_total\{reason="expired"\} 1/);
    // The broker-side verifier allows 30 s of clock skew, but the session itself ended at exp.
    expect(claimsOf(token).exp).toBeLessThanOrEqual(Math.ceil(Date.now() / 1000));
  });

  it('never processes a frame sent after exp, even before the token sweep runs', async () => {
    const tb = await broker();
    const gw = await gateway(tb, { tokenSweepMs: 600_000 });
    const c = await client(tb);
    const token = await tb.keys.token('node', 'late', 2);
    const exp = claimsOf(token).exp as number;
    const n = await rawNode(gw, token);
    n.send({ type: 'update', data: { led: 'before' } });
    await c.next(is('update', 'late'), 'late online');
    await waitFor(() => Date.now() > exp * 1000 + 50, 'the token to expire', 5000);
    n.send({ type: 'update', data: { led: 'after' } });
    expect(await n.closed()).toEqual({ code: 4401, reason: 'token expired' });
    await c.next(is('out', 'late'), 'late out');
    expect(c.frames.some((f) => f.uid === 'late' && f.data === 'after')).toBe(false);
  });

  it('closes a session whose token is revoked with 4401 "token revoked", and refuses the token at the upgrade (401)', async () => {
    const tb = await broker();
    const revoked = new Set<string>();
    const gw = await gateway(
      tb,
      { tokenSweepMs: 100 },
      { revocations: { isRevoked: (jti) => jti !== undefined && revoked.has(jti) } },
    );
    const c = await client(tb);
    const token = await tb.keys.token('node', 'rev');
    const n = await rawNode(gw, token);
    n.send({ type: 'update', data: { led: '0' } });
    await c.next(is('update', 'rev'), 'rev online');
    revoked.add(claimsOf(token).jti as string);
    expect(await n.closed()).toEqual({ code: 4401, reason: 'token revoked' });
    expect(await TestPeer.connect(nodeUrl(gw), token).catch((e) => e)).toMatchObject({
      status: 401,
      body: 'token revoked',
    });
    await stillServes(gw, tb, c);
  });
});

describe('ws gateway: the revocation file (finding 7)', () => {
  it('closes a session within a poll of `revoked.json` naming its jti (4401), as `mycelium token revoke` writes it', async () => {
    const tb = await broker();
    const gw = await gateway(tb, { tokenSweepMs: 100, revocationPollMs: 100 });
    const c = await client(tb);
    const token = await tb.keys.token('node', 'filed');
    const n = await rawNode(gw, token);
    n.send({ type: 'update', data: { led: '0' } });
    await c.next(is('update', 'filed'), 'filed online');
    const claims = claimsOf(token);
    addRevocations(revocationFileFor(tb.keys.keyFile), [{ jti: claims.jti as string, exp: claims.exp as number }]);
    const started = Date.now();
    expect(await n.closed()).toEqual({ code: 4401, reason: 'token revoked' });
    expect(Date.now() - started).toBeLessThan(5000);
    expect(await TestPeer.connect(nodeUrl(gw), token).catch((e) => e)).toMatchObject({ status: 401 });
  });
});

describe('ws gateway: handshakes and connections per address (finding 10)', () => {
  it('closes a TCP connection that sends nothing within --handshake-timeout-ms', async () => {
    const tb = await broker();
    const gw = await gateway(tb, { handshakeTimeoutMs: 300 });
    const c = await client(tb);
    const idle = await tcp(gw);
    const started = Date.now();
    const at = await idle.closed;
    expect(at - started).toBeLessThan(5000);
    await stillServes(gw, tb, c);
    expect(await metricsOf(gw, tb)).toMatch(/rejections_total\{reason="handshake-timeout"\} 1/);
  });

  it('closes a connection that dribbles its request headers slowly (slowloris) within the handshake timeout', async () => {
    const tb = await broker();
    const gw = await gateway(tb, { handshakeTimeoutMs: 300 });
    const slow = await tcp(gw);
    slow.socket.write('GET /node HTTP/1.1\r\nHost: x\r\n');
    const drip = setInterval(() => slow.socket.write('X-A: b\r\n'), 50);
    cleanups.push(() => clearInterval(drip));
    const started = Date.now();
    const at = await slow.closed;
    clearInterval(drip);
    expect(at - started).toBeLessThan(5000);
  });

  it('refuses connections beyond --max-connections-per-address with 429, and accepts again once one closes', async () => {
    const tb = await broker();
    const gw = await gateway(tb, { maxConnectionsPerAddress: 3 });
    const c = await client(tb);
    const held = [await tcp(gw), await tcp(gw), await tcp(gw)];
    const refused = await TestPeer.connect(nodeUrl(gw), await tb.keys.token('node', 'n4')).catch((e) => e);
    expect(refused).toMatchObject({ status: 429 });
    held[0].socket.destroy();
    await held[0].closed;
    // The gateway sees the close a moment later; a node then gets the free slot.
    const token = await tb.keys.token('node', 'n4');
    const admitted = await waitFor(
      () => TestPeer.connect(nodeUrl(gw), token).catch(() => undefined),
      'a free slot for a node',
    );
    cleanups.push(() => admitted.close());
    admitted.send({ type: 'update', data: { led: 'on' } });
    await c.next(
      is('update', 'n4', (f) => f.data === 'on'),
      'n4 served',
    );
    for (const h of held.slice(1)) h.socket.destroy();
    await Promise.all(held.map((h) => h.closed));
    expect(await metricsOf(gw, tb)).toMatch(/rejections_total\{reason="max-connections-per-address"\} [1-9]/);
  });
});

describe('ws gateway: /metrics (finding 12)', () => {
  it('needs a viewer, operator or admin token for /metrics: 401 without one or with a node token', async () => {
    const tb = await broker();
    const gw = await gateway(tb);
    const url = `http://127.0.0.1:${gw.httpPort}/metrics`;
    const none = await fetch(url);
    expect(none.status).toBe(401);
    expect(await none.json()).toEqual({ error: 'unauthorized', message: 'token missing' });
    const node = await fetch(url, { headers: { authorization: `Bearer ${await tb.keys.token('node', 'n')}` } });
    expect(node.status).toBe(401);
    for (const role of ['viewer', 'operator', 'admin'] as const) {
      const ok = await fetch(url, { headers: { authorization: `Bearer ${await tb.keys.token(role)}` } });
      expect(ok.status).toBe(200);
      expect(await ok.text()).toContain('mycelium_ws_gateway_connections');
    }
  });

  it('serves /metrics without a token with --public-metrics', async () => {
    const tb = await broker();
    const gw = await gateway(tb, { publicMetrics: true });
    const res = await fetch(`http://127.0.0.1:${gw.httpPort}/metrics`);
    expect(res.status).toBe(200);
    expect(await res.text()).toContain('mycelium_ws_gateway_connections');
  });
});
