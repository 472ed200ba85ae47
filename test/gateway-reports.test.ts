// Gateway inventory, status reports and actions (issue 11, item 7) against a real broker and real gateways
// (WebSocket, CoAP, MQTT) on port 0; hostile reports from a TestPeer playing a compromised gateway on /gw.
import { Writable } from 'node:stream';
import { defaultTiming, updateTiming } from 'coap';
import { pino } from 'pino';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { CoapGateway } from '../gateways/coap/gateway.ts';
import type { WsGatewayOptions } from '../gateways/ws/gateway.ts';
import { silentLogger } from '../services/common/log.ts';
import { CoapTestNode } from '../utils/nodes/coap-node.ts';
import { startBroker, type TestBroker } from './helpers/broker.ts';
import { coapGatewayConfig, coapMetric, coapTestNodeConfig } from './helpers/coap.ts';
import { mqttClient, startMqttGateway } from './helpers/mqtt-gateway.ts';
import { settle, waitFor } from './helpers/wait.ts';
import { type Frame, TestPeer } from './helpers/ws-client.ts';
import { is, operatorClient, rawNode, startWsGateway } from './helpers/ws-gateway.ts';

const cleanups: (() => unknown)[] = [];
const cleanup = (fn: () => unknown) => cleanups.push(fn);
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});
// RFC 7252 ACK_TIMEOUT shrunk for the CoAP test (as in coap-gateway.test.ts).
beforeAll(() => updateTiming({ ackTimeout: 0.125, ackRandomFactor: 1, maxRetransmit: 2 }));
afterAll(() => defaultTiming());

async function broker(overrides: Parameters<typeof startBroker>[0] = {}): Promise<TestBroker> {
  // Reports are published at once in these tests unless one is about coalescing.
  const tb = await startBroker({ gatewayReportMinIntervalMs: 0, actionTimeoutMs: 2000, ...overrides });
  cleanup(() => tb.stop());
  return tb;
}

function wsGateway(tb: TestBroker, overrides: Partial<WsGatewayOptions> = {}, log = silentLogger()) {
  return startWsGateway(tb, cleanup, { allowAnonymousNodes: true, statusInterval: 60, ...overrides }, { log });
}

async function token(tb: TestBroker, role: 'viewer' | 'operator' | 'admin' = 'operator'): Promise<string> {
  return tb.keys.token(role, `${role}-1`);
}

async function get(tb: TestBroker, path: string, role: 'viewer' | 'operator' = 'viewer') {
  const res = await fetch(`${tb.http}/api/v1${path}`, {
    headers: { authorization: `Bearer ${await token(tb, role)}` },
  });
  return { status: res.status, body: (await res.json()) as Frame };
}

async function act(
  tb: TestBroker,
  gateway: string,
  name: string,
  args?: unknown,
  role: 'viewer' | 'operator' | 'admin' = 'operator',
) {
  const res = await fetch(
    `${tb.http}/api/v1/gateways/${encodeURIComponent(gateway)}/actions/${encodeURIComponent(name)}`,
    {
      method: 'POST',
      headers: {
        authorization: `Bearer ${await token(tb, role)}`,
        ...(args === undefined ? {} : { 'content-type': 'application/json' }),
      },
      body: args === undefined ? undefined : typeof args === 'string' ? args : JSON.stringify(args),
    },
  );
  return { status: res.status, body: (await res.json()) as Frame };
}

const gatewayFrame =
  (id: string, more: (f: Frame) => boolean = () => true) =>
  (f: Frame) =>
    f.type === 'gateway' && f.id === id && more(f);

/** A TestPeer on /gw with a gateway token: a compromised gateway that sends whatever a test wants. */
async function fakeGateway(tb: TestBroker, id = 'evil-gw'): Promise<TestPeer> {
  const p = await TestPeer.connect(`${tb.ws}/gw`, await tb.keys.token('gateway', id));
  cleanup(() => p.close());
  return p;
}

function status(over: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    type: 'status',
    at: Date.now(),
    uptimeS: 1,
    nodes: { online: 1 },
    messages: { in: 5, out: 2 },
    errors: { 'bad-json': 1 },
    reconnects: 0,
    eventLoopLagMs: 1.5,
    ...over,
  };
}

const INVENTORY = {
  type: 'inventory',
  protocol: 'Fake',
  version: '9.9.9',
  startedAt: 1,
  actions: ['rediscover'],
  listen: ['udp://[::1]:5683'],
};

describe('gateway reports: inventory and status', () => {
  it('a real gateway sends its inventory and a status on connect; clients, the snapshot and REST have them', async () => {
    const tb = await broker();
    const live = await operatorClient(tb, cleanup);
    const gw = await wsGateway(tb);
    const f = await live.next(
      gatewayFrame('ws-test', (g) => g.status !== undefined),
      'the gateway report',
    );
    expect(f.broker).toBe(tb.broker.id);
    expect(f.inventory).toMatchObject({
      protocol: 'WebSocket',
      actions: ['rediscover', 'forget', 'set-log-level'],
      listen: [`ws://127.0.0.1:${gw.port}/node`],
    });
    expect(f.inventory.version).toMatch(/^\d+\.\d+\.\d+/);
    expect(f.status).toMatchObject({ nodes: { online: 0 }, messages: { in: 0, out: 0 }, reconnects: 0 });
    expect(f.status.eventLoopLagMs).toBeGreaterThanOrEqual(0);

    // A client that registers later gets the report in its snapshot, before `synced`.
    const late = await operatorClient(tb, cleanup);
    const synced = late.frames.findIndex((x) => x.type === 'synced');
    const inSnapshot = late.frames.findIndex(gatewayFrame('ws-test'));
    expect(inSnapshot).toBeGreaterThanOrEqual(0);
    expect(inSnapshot).toBeLessThan(synced);

    const one = await get(tb, '/gateways/ws-test');
    expect(one.status).toBe(200);
    expect(one.body).toMatchObject({ id: 'ws-test', broker: tb.broker.id, inventory: { protocol: 'WebSocket' } });
    expect(one.body.history).toHaveLength(1);
    const list = await get(tb, '/gateways');
    expect(list.body.find((g: Frame) => g.id === 'ws-test').status.messages).toEqual({ in: 0, out: 0 });
  });

  it('sends a status every --status-interval with totals that move; the broker keeps a history of counts', async () => {
    const tb = await broker();
    const gw = await wsGateway(tb, { statusInterval: 0.05 });
    const node = await rawNode(gw, cleanup, undefined, {}, '?id=counted');
    for (let i = 0; i < 3; i++) node.send({ type: 'update', data: { temperature: 20 + i } });
    const report = await waitFor(async () => {
      const r = await get(tb, '/gateways/ws-test');
      // Three value frames (the connection itself is no message from the node).
      return r.body.history?.length >= 4 && r.body.status?.messages.in >= 3 ? r.body : undefined;
    }, 'several status reports counting the node messages');
    expect(report.status.nodes.online).toBe(1);
    const ats = report.history.map((h: Frame) => h.at);
    expect([...ats].sort((a, b) => a - b)).toEqual(ats);
    expect(report.history.at(-1).in).toBeGreaterThanOrEqual(3);
  });

  it('drops the report when the gateway disconnects (gateway-gone, then 404)', async () => {
    const tb = await broker();
    const live = await operatorClient(tb, cleanup);
    const gw = await wsGateway(tb);
    await live.next(gatewayFrame('ws-test'), 'the report');
    await gw.stop();
    await live.next((f) => f.type === 'gateway-gone' && f.id === 'ws-test', 'gateway-gone');
    expect((await get(tb, '/gateways/ws-test')).status).toBe(404);
  });

  it('counts reconnects after the broker link comes back', async () => {
    const tb = await broker();
    const gw = await wsGateway(tb);
    await waitFor(async () => (await get(tb, '/gateways/ws-test')).body.status, 'first status');
    // The broker drops the gateway's socket: the link reconnects and reports it.
    for (const s of tb.broker.gateways.values()) s.ws.terminate();
    const r = await waitFor(async () => {
      const b = (await get(tb, '/gateways/ws-test')).body;
      return b.status?.reconnects === 1 ? b : undefined;
    }, 'a status with one reconnect');
    expect(r.inventory.protocol).toBe('WebSocket');
    expect(gw.core.stats().brokerLinkReconnects).toBe(1);
  });
});

describe('gateway actions', () => {
  it('rediscover on a WebSocket gateway sends the node the discover request again', async () => {
    const tb = await broker();
    const gw = await wsGateway(tb);
    const node = await rawNode(gw, cleanup, undefined, {}, '?id=n1');
    await waitFor(() => node.frames.filter((f) => f.request === 'discover').length === 1, 'discover on connect');
    await waitFor(() => gw.core.has('n1'), 'node held');
    const one = await act(tb, 'ws-test', 'rediscover', { uid: 'n1' });
    expect(one).toEqual({ status: 200, body: { id: 'ws-test', result: 'ok', detail: { nodes: 1 } } });
    await waitFor(() => node.frames.filter((f) => f.request === 'discover').length === 2, 'discover again');
    const all = await act(tb, 'ws-test', 'rediscover');
    expect(all.body.result).toBe('ok');
    await waitFor(() => node.frames.filter((f) => f.request === 'discover').length === 3, 'discover of all');
    const unknown = await act(tb, 'ws-test', 'rediscover', { uid: 'nobody' });
    expect(unknown.status).toBe(502);
    expect(unknown.body).toMatchObject({ result: 'error', reason: expect.stringContaining('no node nobody') });
  });

  it('forget on a WebSocket gateway puts the node out (removed) at the broker and closes it', async () => {
    const tb = await broker();
    const live = await operatorClient(tb, cleanup);
    const gw = await wsGateway(tb);
    const node = await rawNode(gw, cleanup, undefined, {}, '?id=gone-soon');
    await live.next(is('new', 'gone-soon'), 'node announced');
    const r = await act(tb, 'ws-test', 'forget', { uid: 'gone-soon' });
    expect(r).toEqual({ status: 200, body: { id: 'ws-test', result: 'ok' } });
    const out = await live.next(is('out', 'gone-soon'), 'node out');
    expect(out.reason).toBe('removed');
    expect((await node.closed()).code).toBe(1000);
    await waitFor(async () => (await get(tb, '/nodes/gone-soon')).status === 404, 'the broker forgot the node');
  });

  it('forget on an MQTT gateway puts the node out (removed) at the broker', async () => {
    const tb = await broker();
    const live = await operatorClient(tb, cleanup);
    const gw = await startMqttGateway(tb, ['--allow-anonymous-nodes', '--status-interval', '60']);
    cleanup(() => gw.stop());
    const c = await mqttClient(`mqtt://127.0.0.1:${gw.mqttPort}`, { clientId: 'm1' });
    cleanup(() => c.end(true));
    await c.publishAsync('node/m1/temperature', JSON.stringify({ value: 21 }));
    await live.next(is('new', 'm1'), 'mqtt node announced');
    const report = await live.next(
      gatewayFrame('mqtt-test', (g) => g.inventory?.protocol === 'MQTT'),
      'mqtt report',
    );
    expect(report.inventory.listen[0]).toMatch(/mqtt/);
    const r = await act(tb, 'mqtt-test', 'forget', { uid: 'm1' });
    expect(r.body.result).toBe('ok');
    expect((await live.next(is('out', 'm1'), 'node out')).reason).toBe('removed');
    expect(gw.nodeIds()).not.toContain('m1');
  });

  it('rediscover on a CoAP gateway fetches the node resources again', async () => {
    const tb = await broker();
    const live = await operatorClient(tb, cleanup);
    const gwToken = await tb.keys.token('gateway', 'coap-test');
    const gw = new CoapGateway(coapGatewayConfig(tb.ws, { statusInterval: 60 }), {
      log: silentLogger(),
      tokenSource: async () => gwToken,
    });
    cleanup(() => gw.stop());
    await gw.start();
    const node = new CoapTestNode(coapTestNodeConfig(gw), { log: silentLogger() });
    cleanup(() => node.stop());
    await node.start();
    await live.next((f) => f.type === 'update' && f.uid === '1234' && f.endpoint === 'led', 'discovered');
    expect(node.seen.get('GET /.well-known/core')).toBe(1);
    const r = await act(tb, 'coap-test', 'rediscover', { uid: '1234' });
    expect(r.body).toMatchObject({ result: 'ok', detail: { nodes: 1 } });
    await waitFor(() => node.seen.get('GET /.well-known/core') === 2, 'the node discovered again');
    await waitFor(() => coapMetric(gw, 'discovery_total{result="ok"}') === 2, 'second discovery done');
    expect(node.seen.get('GET /led')).toBe(2);
    const inv = await get(tb, '/gateways/coap-test');
    expect(inv.body.inventory).toMatchObject({ protocol: 'CoAP', listen: [`udp://[::]:${gw.coapPort}`] });
  });

  it('set-log-level changes what the gateway logs', async () => {
    const tb = await broker();
    const lines: string[] = [];
    const sink = new Writable({
      write(chunk, _enc, done) {
        lines.push(chunk.toString());
        done();
      },
    });
    const gw = await wsGateway(tb, {}, pino({ level: 'info' }, sink));
    await rawNode(gw, cleanup, undefined, {}, '?id=quiet');
    await waitFor(() => gw.core.has('quiet'), 'node held');
    expect(lines.some((l) => l.includes('node connected'))).toBe(false);
    const r = await act(tb, 'ws-test', 'set-log-level', { level: 'debug' });
    expect(r.body).toEqual({ id: 'ws-test', result: 'ok', detail: { level: 'debug', previous: 'info' } });
    await rawNode(gw, cleanup, undefined, {}, '?id=loud');
    await waitFor(() => lines.some((l) => l.includes('node connected') && l.includes('loud')), 'a debug line');
  });

  it('checks roles, ids, names and args before anything reaches a gateway', async () => {
    const tb = await broker();
    await wsGateway(tb);
    expect((await act(tb, 'ws-test', 'rediscover', undefined, 'viewer')).status).toBe(403);
    expect((await act(tb, 'ws-test', 'rediscover', undefined, 'admin')).status).toBe(200);
    const unknownGw = await act(tb, 'nobody', 'rediscover');
    expect(unknownGw).toMatchObject({ status: 404, body: { error: 'MYC_ERR_UNKNOWN_GATEWAY' } });
    expect((await get(tb, '/gateways/nobody')).status).toBe(404);
    const unknownName = await act(tb, 'ws-test', 'reboot');
    expect(unknownName).toMatchObject({ status: 400, body: { error: 'MYC_ERR_UNKNOWN_ACTION' } });
    for (const bad of [
      { uid: 7 },
      { uid: 'n1', extra: 1 },
      { uid: '__proto__' },
      { uid: 'a\u0000b' },
      { uid: 'x'.repeat(300) },
      [],
      'null',
      '{"__proto__":{"uid":"x"}}',
    ]) {
      const r = await act(tb, 'ws-test', 'forget', bad);
      expect(r.status, JSON.stringify(bad)).toBe(400);
      expect(r.body.error).toBeTypeOf('string');
    }
    expect((await act(tb, 'ws-test', 'set-log-level', { level: 'trace' })).status).toBe(400);
    expect((await act(tb, 'ws-test', 'forget')).status).toBe(400);
    const noToken = await fetch(`${tb.http}/api/v1/gateways/ws-test/actions/rediscover`, { method: 'POST' });
    expect(noToken.status).toBe(401);
    // The broker still serves.
    expect((await act(tb, 'ws-test', 'rediscover')).status).toBe(200);
  });

  it('answers 504 when the gateway does not answer, ignores unknown result ids, and acts over /ws for the page', async () => {
    const tb = await broker({ actionTimeoutMs: 300 });
    const silent = await fakeGateway(tb, 'silent-gw');
    silent.send(INVENTORY);
    await waitFor(async () => (await get(tb, '/gateways/silent-gw')).status === 200, 'report');
    const timedOut = await act(tb, 'silent-gw', 'rediscover');
    expect(timedOut).toMatchObject({ status: 504, body: { result: 'timeout' } });
    const sent = silent.frames.find((f) => f.type === 'action');
    expect(sent).toMatchObject({ name: 'rediscover', args: {} });
    // A late or foreign result id is counted and ignored; the link stays.
    silent.send({ type: 'action-result', id: sent?.id, result: 'ok' });
    silent.send({ type: 'action-result', id: 'made-up', result: 'ok' });

    // The page's way: a gateway-action frame on /ws.
    const gw = await wsGateway(tb);
    const page = await operatorClient(tb, cleanup);
    page.send({ type: 'gateway-action', id: 'a1', gateway: gw.config.gatewayId, name: 'rediscover' });
    expect(await page.next(is('action-result'), 'result')).toMatchObject({
      id: 'a1',
      result: 'ok',
      gateway: 'ws-test',
    });
    page.send({ type: 'gateway-action', id: 'a2', gateway: 'ws-test', name: 'forget', args: { uid: 1 } });
    expect(await page.next((f) => f.id === 'a2', 'refusal')).toMatchObject({ result: 'bad-args' });
    const viewer = await TestPeer.connect(`${tb.ws}/ws`, await tb.keys.token('viewer', 'v'));
    cleanup(() => viewer.close());
    await viewer.register();
    viewer.send({ type: 'gateway-action', id: 'a3', gateway: 'ws-test', name: 'rediscover' });
    expect(await viewer.next((f) => f.id === 'a3', 'forbidden')).toMatchObject({
      type: 'error',
      code: 'MYC_ERR_FORBIDDEN',
    });
    expect(silent.closeCode).toBeUndefined();
    silent.close();
    await waitFor(async () => (await get(tb, '/gateways/silent-gw')).status === 404, 'silent gateway gone');
  });
});

describe('hostile reports from a compromised gateway', () => {
  it('refuses bad reports alone (error frame, counted), keeps the link, and never relays unknown fields', async () => {
    const tb = await broker();
    const live = await operatorClient(tb, cleanup);
    const gw = await fakeGateway(tb);
    const manyKinds = Object.fromEntries(Array.from({ length: 33 }, (_, i) => [`k${i}`, 1]));
    const hostile: Record<string, unknown>[] = [
      status({ errors: manyKinds }),
      status({ nodes: { online: -1 } }),
      status({ messages: { in: 1, out: 'many' } }),
      status({ errors: { ['x'.repeat(65)]: 1 } }),
      status({ nodes: { 'bad\u0001key': 1 } }),
      status({ pad: 'x'.repeat(20_000) }),
      { ...INVENTORY, version: 'x'.repeat(257) },
      { ...INVENTORY, protocol: '<b>\u0007</b>' },
      { ...INVENTORY, listen: Array.from({ length: 17 }, () => 'udp://x') },
      { type: 'action-result', id: 'a', result: 'maybe' },
    ];
    for (const frame of hostile) gw.send(frame);
    // Sent as text: JSON.stringify would write Infinity as null and drop a __proto__ key of an object literal.
    gw.send(JSON.stringify(status()).replace('"reconnects":0', '"reconnects":1e400'));
    gw.send(
      `{"type":"status","at":1,"uptimeS":1,"nodes":{"__proto__":1},"messages":{"in":0,"out":0},"errors":{},"reconnects":0,"eventLoopLagMs":0}`,
    );
    await waitFor(
      () => gw.frames.filter((f) => f.type === 'error').length === hostile.length + 2,
      'one error per report',
    );
    expect(gw.closeCode).toBeUndefined();
    // Still a working gateway: a good report (with an extra field) and a node.
    gw.send({ ...INVENTORY, protocol: '<img src=x onerror=alert(1)>', sneaky: { nested: true } });
    gw.send(status({ sneaky: 'not relayed' }));
    gw.send({ type: 'new', uid: 'still-here' });
    await live.next(is('new', 'still-here'), 'node after hostile reports');
    const f = await live.next(
      gatewayFrame('evil-gw', (g) => g.status !== undefined && g.inventory !== undefined),
      'good report',
    );
    expect(f.inventory.protocol).toBe('<img src=x onerror=alert(1)>');
    expect(JSON.stringify(f)).not.toContain('sneaky');
    expect(
      live.frames.filter(gatewayFrame('evil-gw')).every((g) => g.status?.reconnects !== Number.POSITIVE_INFINITY),
    ).toBe(true);
    const metrics = await (
      await fetch(`${tb.http}/metrics`, { headers: { authorization: `Bearer ${await token(tb)}` } })
    ).text();
    expect(metrics).toMatch(/mycelium_rejections_total\{reason="bad-gateway-report"\} 12/);
  });

  it('coalesces a flood of status reports: clients get a few frames with the latest totals, the rest is counted', async () => {
    const tb = await broker({ gatewayReportMinIntervalMs: 200 });
    const live = await operatorClient(tb, cleanup);
    const gw = await fakeGateway(tb);
    const started = Date.now();
    for (let i = 1; i <= 1000; i++) gw.send(status({ at: started + i, messages: { in: i, out: 0 } }));
    await live.next(
      gatewayFrame('evil-gw', (g) => g.status.messages.in === 1000),
      'the last totals',
    );
    const frames = live.frames.filter(gatewayFrame('evil-gw'));
    // 1000 reports arrive within a few windows of 200 ms on a loaded machine; far fewer frames than reports.
    expect(frames.length).toBeLessThan(50);
    const metrics = await (
      await fetch(`${tb.http}/metrics`, { headers: { authorization: `Bearer ${await token(tb)}` } })
    ).text();
    const coalesced = Number(/mycelium_rejections_total\{reason="gateway-report-coalesced"\} (\d+)/.exec(metrics)?.[1]);
    expect(coalesced).toBeGreaterThanOrEqual(1000 - frames.length);
    const history = (await get(tb, '/gateways/evil-gw')).body.history;
    expect(history.length).toBeLessThanOrEqual(60);
    // Negative check, bounded: no late frame arrives once the flood's last totals are out.
    await settle(400);
    expect(live.frames.filter(gatewayFrame('evil-gw')).length).toBe(frames.length);
  });
});
