// The MQTT gateway with its embedded aedes broker, over real sockets: a real Mycelium broker on port 0, real MQTT
// clients (mosquitto_pub / mosquitto_sub, mqtt.js, the MQTT test node) on the embedded broker's port 0.
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { MqttGateway } from '../gateways/mqtt/gateway.ts';
import { silentLogger } from '../services/common/log.ts';
import { MqttTestNode } from '../utils/nodes/mqtt-node.ts';
import { startBroker, type TestBroker } from './helpers/broker.ts';
import { MosquittoSub, mosquittoPub } from './helpers/mosquitto.ts';
import { isFrame, metric, mqttClient, operator, startMqttGateway } from './helpers/mqtt-gateway.ts';
import { settle, waitFor } from './helpers/wait.ts';
import type { TestPeer } from './helpers/ws-client.ts';

let tb: TestBroker;
let gw: MqttGateway;
let client: TestPeer;
const cleanups: Array<() => Promise<void> | void> = [];

beforeEach(async () => {
  tb = await startBroker();
  client = await operator(tb);
});
afterEach(async () => {
  for (const f of cleanups.splice(0).reverse()) await f();
  client.close();
  await gw?.stop();
  await tb.stop();
});

async function gateway(args: string[] = []): Promise<MqttGateway> {
  gw = await startMqttGateway(tb, args);
  return gw;
}

async function testNode(id: string, extra: Partial<ConstructorParameters<typeof MqttTestNode>[0]> = {}) {
  const node = new MqttTestNode(
    {
      mqttUrl: `mqtt://127.0.0.1:${gw.mqttPort}`,
      id,
      password: await tb.keys.token('node', id),
      reconnectMs: 50,
      ...extra,
    },
    silentLogger(),
  );
  await node.start();
  cleanups.push(() => node.stop());
  return node;
}

async function creds(id: string) {
  return { username: id, password: await tb.keys.token('node', id) };
}

async function sub(filters: string[], auth = {}): Promise<MosquittoSub> {
  const s = await MosquittoSub.start(gw.mqttPort, filters, auth);
  cleanups.push(() => s.stop());
  return s;
}

describe('mqtt gateway (embedded broker): discovery, values, writes', () => {
  it('discovers a node: new, discover resources, then discover values, then its values', async () => {
    await gateway();
    const auth = await creds('n1');
    const watch = await sub(['gateway/n1/#'], { ...auth, clientId: 'n1/watch' });
    expect(watch.granted).toEqual([1]);
    expect((await mosquittoPub(gw.mqttPort, 'node/check', '{"id":"n1"}', auth)).code).toBe(0);
    expect(await client.next(isFrame('new', 'n1'), 'new n1')).toMatchObject({ protocol: 'MQTT', gateway: 'mqtt-test' });
    await watch.next((l) => l === 'gateway/n1/discover resources', 'discover resources');
    expect(watch.lines.includes('gateway/n1/discover values')).toBe(false);
    await mosquittoPub(gw.mqttPort, 'node/n1/resources', '["temperature","led"]', auth);
    await watch.next((l) => l === 'gateway/n1/discover values', 'discover values');
    await mosquittoPub(gw.mqttPort, 'node/n1/temperature', '{"value":"21°C"}', auth);
    expect((await client.next(isFrame('update', 'n1', 'temperature'), 'temperature')).data).toBe('21°C');
    expect(watch.lines.slice(0, 2)).toEqual(['gateway/n1/discover resources', 'gateway/n1/discover values']);
  });

  it('gets every value of the pyaiot-style test node and writes its led (result ok)', async () => {
    await gateway();
    const node = await testNode('node-a');
    for (const r of ['name', 'os', 'board', 'led', 'temperature', 'pressure']) {
      await client.next(isFrame('update', 'node-a', r), `value of ${r}`);
    }
    client.send({ type: 'update', id: 'w1', data: { uid: 'node-a', endpoint: 'led', payload: '1' } });
    expect(await client.next((f) => f.type === 'result' && f.id === 'w1', 'write result')).toMatchObject({
      result: 'ok',
      uid: 'node-a',
    });
    expect(node.led).toBe('1');
    await client.next((f) => isFrame('update', 'node-a', 'led')(f) && f.data === '1', 'led 1');
    expect(metric(gw, 'writes_total', 'result="ok"')).toBe(1);
  });

  it('reports delivered when the node does not publish the written value; a write to an unknown uid is an error', async () => {
    await gateway(['--write-confirm-ms', '100']);
    await testNode('ro', { publishOnly: true });
    await client.next(isFrame('update', 'ro', 'led'), 'led of publish-only node');
    client.send({ type: 'update', id: 'w2', data: { uid: 'ro', endpoint: 'led', payload: 1 } });
    expect((await client.next((f) => f.type === 'result' && f.id === 'w2', 'result')).result).toBe('delivered');
    expect(metric(gw, 'writes_total', 'result="delivered"')).toBe(1);
    // No gateway has the uid, so the broker answers for it; the gateway never sees the write.
    client.send({ type: 'update', id: 'w4', data: { uid: 'nobody', endpoint: 'led', payload: 1 } });
    expect(await client.next((f) => f.type === 'result' && f.id === 'w4', 'unknown-node result')).toMatchObject({
      result: 'error',
      reason: 'unknown-node',
    });
    expect(metric(gw, 'writes_total', 'result="error"')).toBe(0);
  });

  it('does not take a report of another value as confirmation of a write', async () => {
    await gateway(['--write-confirm-ms', '300']);
    const auth = await creds('stubborn');
    const sets = await sub(['gateway/stubborn/led/set'], { ...auth, clientId: 'stubborn/sub' });
    await mosquittoPub(gw.mqttPort, 'node/stubborn/led', '{"value":"0"}', auth);
    await client.next(isFrame('update', 'stubborn', 'led'), 'led 0');
    client.send({ type: 'update', id: 'w3', data: { uid: 'stubborn', endpoint: 'led', payload: '1' } });
    await sets.next((l) => l === 'gateway/stubborn/led/set 1', 'the set on the wire');
    await mosquittoPub(gw.mqttPort, 'node/stubborn/led', '{"value":"0"}', auth);
    expect((await client.next((f) => f.type === 'result' && f.id === 'w3', 'result')).result).toBe('delivered');
  });

  it('replays its nodes to a restarted Mycelium broker; MQTT nodes see nothing of it', async () => {
    await gateway();
    const watch = await sub(['gateway/steady/#'], { ...(await creds('steady')), clientId: 'steady/watch' });
    const node = await testNode('steady');
    await client.next(isFrame('update', 'steady', 'pressure'), 'pressure');
    await watch.next((l) => l === 'gateway/steady/discover values', 'discovery of the node');
    const seenByNode = [...watch.lines];
    const port = tb.broker.port;
    const keys = tb.keys;
    client.close();
    await tb.stop();
    tb = await startBroker({ port }, keys);
    client = await operator(tb);
    const viewer = { authorization: `Bearer ${await tb.keys.token('viewer')}` };
    await waitFor(async () => {
      const res = await fetch(`${tb.http}/api/v1/nodes/steady`, { headers: viewer });
      return res.status === 200 && ((await res.json()) as { status: string }).status === 'online';
    }, 'node replayed to the new broker');
    await client.next(isFrame('update', 'steady', 'temperature'), 'its values in the new broker snapshot');
    // Negative check: the replay comes from the gateway's table, so no discovery (nor anything else under the
    // node's gateway/ topics) may go out, and the node stays connected. The replay is done once the
    // broker shows the node; 200 ms bounds the wait for a publish in flight.
    await settle(200);
    expect(watch.lines).toEqual(seenByNode);
    expect(node.connected).toBe(true);
  });

  it('discovers a publish-only node (RIOT MQTT-SN firmware) from what it publishes', async () => {
    await gateway();
    const watch = await sub(['gateway/riot-1/#'], { ...(await creds('riot-1')), clientId: 'riot-1/watch' });
    await testNode('riot-1', { publishOnly: true });
    await client.next(isFrame('new', 'riot-1'), 'new');
    for (const r of ['name', 'os', 'board', 'led', 'temperature', 'pressure']) {
      await client.next(isFrame('update', 'riot-1', r), `value of ${r}`);
    }
    // The gateway still asked (pyaiot's flow); the node ignored it.
    await watch.next((l) => l === 'gateway/riot-1/discover values', 'discover values after its resource list');
  });

  it('puts a silent node out with reason timeout after --max-time', async () => {
    await gateway(['--max-time', '0.3']);
    await mosquittoPub(gw.mqttPort, 'node/check', '{"id":"quiet"}', await creds('quiet'));
    await client.next(isFrame('new', 'quiet'), 'new');
    const out = await client.next(isFrame('out', 'quiet'), 'out', 3000);
    expect(out.reason).toBe('timeout');
    expect(gw.nodeIds()).not.toContain('quiet');
    expect(metric(gw, 'nodes_out_total', 'reason="timeout"')).toBe(1);
  });

  it('keeps a node alive on any message it publishes, not only node/check', async () => {
    await gateway(['--max-time', '1']);
    const auth = await creds('chatty');
    await mosquittoPub(gw.mqttPort, 'node/check', '{"id":"chatty"}', auth);
    await client.next(isFrame('new', 'chatty'), 'new');
    // Negative check: for twice --max-time, publishing but never node/check, the node must not go out.
    const until = Date.now() + 2000;
    while (Date.now() < until) await mosquittoPub(gw.mqttPort, 'node/chatty/temperature', '{"value":1}', auth);
    expect(client.frames.some(isFrame('out', 'chatty'))).toBe(false);
  });

  it('sends gateway/check every --check-interval; the test node answers with node/check', async () => {
    await gateway(['--check-interval', '0.1']);
    const watch = await sub(['gateway/check'], { ...(await creds('w')), clientId: 'w' });
    await watch.next((l) => l.startsWith('gateway/check'), 'gateway/check');
  });
});

describe('mqtt gateway (embedded broker): authentication and ACL', () => {
  it('refuses bad credentials with CONNACK 4 and a missing or foreign token with 5, counting each', async () => {
    await gateway();
    const port = gw.mqttPort;
    const bad = await mosquittoPub(port, 'node/check', '{"id":"n1"}', { username: 'n1', password: 'not-a-token' });
    expect(bad.code).not.toBe(0);
    expect(bad.stderr).toMatch(/bad user name or password/i);
    const foreign = await mosquittoPub(
      port,
      'node/check',
      '{"id":"n1"}',
      await creds('n2').then((c) => ({ ...c, username: 'n1' })),
    );
    expect(foreign.stderr).toMatch(/not authori[sz]ed/i);
    const none = await mosquittoPub(port, 'node/check', '{"id":"n1"}');
    expect(none.stderr).toMatch(/not authori[sz]ed/i);
    const viewer = await mosquittoPub(port, 'node/check', '{"id":"n1"}', {
      username: 'n1',
      password: await tb.keys.token('viewer', 'n1'),
    });
    expect(viewer.stderr).toMatch(/not authori[sz]ed/i);
    expect(metric(gw, 'broker_refused_total', 'reason="token-malformed"')).toBe(1);
    expect(metric(gw, 'broker_refused_total', 'reason="token-subject-mismatch"')).toBe(1);
    expect(metric(gw, 'broker_refused_total', 'reason="missing-credentials"')).toBe(1);
    expect(metric(gw, 'broker_refused_total', 'reason="token-wrong-role"')).toBe(1);
    // Negative check: every CONNECT was refused before any publish, so nothing about n1 is in flight; 100 ms bounds
    // the wait for a frame that would prove otherwise.
    await settle(100);
    expect(client.frames.some(isFrame('new', 'n1'))).toBe(false);
  });

  it('refuses a client id that belongs to another node (CONNACK 2), so a node cannot kick another off', async () => {
    await gateway();
    const r = await mosquittoPub(gw.mqttPort, 'node/check', '{"id":"n1"}', { ...(await creds('n1')), clientId: 'n2' });
    expect(r.stderr).toMatch(/identifier rejected/i);
    expect(metric(gw, 'broker_refused_total', 'reason="client-id-mismatch"')).toBe(1);
  });

  it("closes a node's connection when it publishes under another node's id, and never announces that id", async () => {
    await gateway();
    const auth = await creds('n1');
    const c = await mqttClient(`mqtt://127.0.0.1:${gw.mqttPort}`, { ...auth, clientId: 'n1' });
    cleanups.push(() => {
      c.end(true);
    });
    const closed = new Promise<void>((resolve) => c.once('close', () => resolve()));
    c.publish('node/n2/temperature', '{"value":1}', { qos: 1 });
    await closed;
    const c2 = await mqttClient(`mqtt://127.0.0.1:${gw.mqttPort}`, { ...auth, clientId: 'n1' });
    cleanups.push(() => {
      c2.end(true);
    });
    const closed2 = new Promise<void>((resolve) => c2.once('close', () => resolve()));
    c2.publish('node/check', '{"id":"n2"}', { qos: 1 });
    await closed2;
    expect(metric(gw, 'broker_refused_total', 'reason="acl-publish"')).toBe(2);
    // Negative check: both publishes were refused and their connections closed; 100 ms bounds the wait for a
    // `new n2` that must never come.
    await settle(100);
    expect(client.frames.some(isFrame('new', 'n2'))).toBe(false);
    expect(gw.nodeIds()).toEqual([]);
  });

  it("answers SUBACK 0x80 to a subscription on another node's set topic, and grants its own", async () => {
    await gateway();
    const s = await sub(['gateway/n2/led/set', 'gateway/n1/led/set', 'gateway/check', '#'], {
      ...(await creds('n1')),
      clientId: 'n1',
    });
    expect(s.granted).toEqual([128, 1, 1, 128]);
    expect(metric(gw, 'broker_refused_total', 'reason="acl-subscribe"')).toBe(2);
  });

  it('accepts pyaiot-style anonymous nodes with --allow-anonymous-nodes', async () => {
    await gateway(['--allow-anonymous-nodes']);
    expect((await mosquittoPub(gw.mqttPort, 'node/check', '{"id":"anon"}')).code).toBe(0);
    await client.next(isFrame('new', 'anon'), 'new anon');
  });

  it('a node token is not a gateway: the internal client is the only one to publish under gateway/', async () => {
    await gateway();
    const r = await mqttClient(`mqtt://127.0.0.1:${gw.mqttPort}`, { ...(await creds('n1')), clientId: 'n1' });
    cleanups.push(() => {
      r.end(true);
    });
    const closed = new Promise<void>((resolve) => r.once('close', () => resolve()));
    r.publish('gateway/n2/led/set', '1', { qos: 1 });
    await closed;
    expect(metric(gw, 'broker_refused_total', 'reason="acl-publish"')).toBe(1);
  });
});

describe('mqtt gateway (embedded broker): bad input', () => {
  const good = async () => {
    await mosquittoPub(gw.mqttPort, 'node/check', '{"id":"good"}');
    await client.next(isFrame('new', 'good'), 'new good');
  };

  it('counts and drops non-JSON, wrong shapes, bad ids and bad topic levels; other nodes are unaffected', async () => {
    await gateway(['--allow-anonymous-nodes']);
    const spy = await sub(['gateway/#']);
    await good();
    const port = gw.mqttPort;
    const cases: Array<[string, string, string]> = [
      ['node/check', 'not json', 'bad-json'],
      ['node/check', '{"idx":"a"}', 'bad-shape'],
      ['node/check', '["good"]', 'bad-shape'],
      ['node/check', '{"id":"a/b"}', 'bad-id'],
      ['node/check', '{"id":"a+b"}', 'bad-id'],
      ['node/check', '{"id":"#"}', 'bad-id'],
      ['node/check', '{"id":""}', 'bad-id'],
      ['node/check', `{"id":"${'x'.repeat(65)}"}`, 'bad-id'],
      ['node/good/temperature', 'nope', 'bad-json'],
      ['node/good/temperature', '{"val":1}', 'bad-shape'],
      ['node/good/resources', '{"a":1}', 'bad-shape'],
      ['node/good/resources', '["ok","x/y"]', 'bad-resource'],
      ['node/good/a/b', '{"value":1}', 'bad-topic'],
      ['node/good', '{"value":1}', 'bad-topic'],
    ];
    for (const [topic, payload] of cases) {
      expect((await mosquittoPub(port, topic, payload)).code).toBe(0);
    }
    const expected = new Map<string, number>();
    for (const [, , reason] of cases) expected.set(reason, (expected.get(reason) ?? 0) + 1);
    await waitFor(
      () => [...expected].every(([r, n]) => metric(gw, 'bad_input_total', `reason="${r}"`) === n),
      'every bad input counted',
    );
    // A refused id never becomes a topic.
    expect(spy.lines.filter((l) => !l.startsWith('gateway/good/'))).toEqual([]);
    await mosquittoPub(port, 'node/good/temperature', '{"value":"22°C"}');
    await client.next((f) => isFrame('update', 'good', 'temperature')(f) && f.data === '22°C', 'good still served');
    expect(gw.nodeIds()).toEqual(['good']);
  });

  it('treats a value from an unknown but valid id as presence (default), and refuses it with --strict-presence', async () => {
    await gateway(['--allow-anonymous-nodes']);
    await mosquittoPub(gw.mqttPort, 'node/late/temperature', '{"value":"20°C"}');
    await client.next(isFrame('new', 'late'), 'late node discovered');
    await client.next(isFrame('update', 'late', 'temperature'), 'its value');
    await gw.stop();
    await gateway(['--allow-anonymous-nodes', '--strict-presence']);
    await mosquittoPub(gw.mqttPort, 'node/other/temperature', '{"value":"20°C"}');
    await waitFor(() => metric(gw, 'bad_input_total', 'reason="unknown-node"') === 1, 'unknown-node counted');
    expect(gw.nodeIds()).toEqual([]);
  });

  it('drops payloads over --max-payload-bytes and cuts connections whose packets exceed the broker limit', async () => {
    await gateway(['--allow-anonymous-nodes', '--max-payload-bytes', '64']);
    await good();
    await mosquittoPub(gw.mqttPort, 'node/good/temperature', JSON.stringify({ value: 'x'.repeat(100) }));
    await waitFor(() => metric(gw, 'bad_input_total', 'reason="oversized"') === 1, 'oversized payload counted');
    const huge = await mosquittoPub(gw.mqttPort, 'node/good/temperature', JSON.stringify({ value: 'y'.repeat(5000) }));
    expect(huge.code).not.toBe(0);
    expect(metric(gw, 'broker_refused_total', 'reason="oversized"')).toBe(1);
    await mosquittoPub(gw.mqttPort, 'node/good/temperature', '{"value":"ok"}');
    await client.next((f) => isFrame('update', 'good', 'temperature')(f) && f.data === 'ok', 'good still served');
    expect(client.frames.some((f) => f.type === 'update' && String(f.data).startsWith('x'))).toBe(false);
  });

  it('serves /metrics to a viewer token and /healthz to anyone over HTTP', async () => {
    await gateway();
    const headers = { authorization: `Bearer ${await tb.keys.token('viewer')}` };
    const res = await fetch(`http://127.0.0.1:${gw.httpPort}/metrics`, { headers });
    expect(res.status).toBe(200);
    expect(await res.text()).toMatch(/mycelium_mqtt_mqtt_connected 1/);
    expect((await fetch(`http://127.0.0.1:${gw.httpPort}/metrics`)).status).toBe(401);
    const health = await (await fetch(`http://127.0.0.1:${gw.httpPort}/healthz`)).json();
    expect(health).toEqual({
      status: 'ok',
      protocol: 'MQTT',
      transport: 'up',
      broker: 'connected',
      nodes: 0,
      down: [],
    });
  });
});
