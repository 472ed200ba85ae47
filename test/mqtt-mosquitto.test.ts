// The MQTT gateway as a client of a real mosquitto broker (--mqtt-url), started on a free port for each test,
// with mosquitto_pub / mosquitto_sub and the MQTT test node as nodes.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { MqttGateway } from '../gateways/mqtt/gateway.ts';
import { silentLogger } from '../services/common/log.ts';
import { MqttTestNode } from '../utils/nodes/mqtt-node.ts';
import { startBroker, type TestBroker } from './helpers/broker.ts';
import { type Mosquitto, MosquittoSub, mosquittoPub, startMosquitto } from './helpers/mosquitto.ts';
import { isFrame, metric, operator, startMqttGateway } from './helpers/mqtt-gateway.ts';
import { settle, waitFor } from './helpers/wait.ts';
import type { TestPeer } from './helpers/ws-client.ts';

let tb: TestBroker;
let mq: Mosquitto;
let gw: MqttGateway;
let client: TestPeer;
const cleanups: Array<() => Promise<void> | void> = [];

beforeEach(async () => {
  [tb, mq] = await Promise.all([startBroker(), startMosquitto()]);
  client = await operator(tb);
});
afterEach(async () => {
  for (const f of cleanups.splice(0).reverse()) await f();
  client.close();
  await gw?.stop();
  await Promise.all([tb.stop(), mq.stop()]);
});

async function gateway(args: string[] = []): Promise<MqttGateway> {
  gw = await startMqttGateway(tb, ['--mqtt-url', mq.url, '--mqtt-reconnect-ms', '50', ...args]);
  await waitFor(() => metric(gw, 'mqtt_connected') === 1, 'gateway connected to mosquitto');
  return gw;
}

async function testNode(id: string, extra: Partial<ConstructorParameters<typeof MqttTestNode>[0]> = {}) {
  const node = new MqttTestNode({ mqttUrl: mq.url, id, reconnectMs: 50, ...extra }, silentLogger());
  await node.start();
  cleanups.push(() => node.stop());
  return node;
}

async function sub(filters: string[]): Promise<MosquittoSub> {
  const s = await MosquittoSub.start(mq.port, filters);
  cleanups.push(() => s.stop());
  return s;
}

describe('mqtt gateway with mosquitto: discovery, values, writes, liveness', () => {
  it('discovers a node with mosquitto_pub: resources asked first, then values', async () => {
    await gateway();
    const watch = await sub(['gateway/m1/#']);
    expect((await mosquittoPub(mq.port, 'node/check', '{"id":"m1"}')).code).toBe(0);
    expect(await client.next(isFrame('new', 'm1'), 'new m1')).toMatchObject({ protocol: 'MQTT' });
    await watch.next((l) => l === 'gateway/m1/discover resources', 'discover resources');
    await mosquittoPub(mq.port, 'node/m1/resources', '["pressure"]');
    await watch.next((l) => l === 'gateway/m1/discover values', 'discover values');
    await mosquittoPub(mq.port, 'node/m1/pressure', '{"value":"1013hPa"}');
    expect((await client.next(isFrame('update', 'm1', 'pressure'), 'pressure')).data).toBe('1013hPa');
  });

  it('serves the test node: all values, a write confirmed by the node (ok)', async () => {
    await gateway();
    const node = await testNode('mq-node');
    for (const r of ['name', 'os', 'board', 'led', 'temperature', 'pressure']) {
      await client.next(isFrame('update', 'mq-node', r), `value of ${r}`);
    }
    const watch = await sub(['gateway/mq-node/led/set']);
    client.send({ type: 'update', id: 'w1', data: { uid: 'mq-node', endpoint: 'led', payload: '1' } });
    expect((await client.next((f) => f.type === 'result' && f.id === 'w1', 'write result')).result).toBe('ok');
    expect(node.led).toBe('1');
    await watch.next((l) => l === 'gateway/mq-node/led/set 1', 'the raw set payload on the wire');
  });

  it('test node: answers discover with its resource list and values, and gateway/check with node/check', async () => {
    await gateway(['--check-interval', '0.3']);
    const watch = await sub(['node/tn/#', 'node/check']);
    await testNode('tn');
    await watch.next(
      (l) => l === 'node/tn/resources ["name","os","board","led","temperature","pressure"]',
      'resource list after discover resources',
    );
    await watch.next((l) => l.startsWith('node/tn/board {"value":"HP"}'), 'values');
    const checks = () => watch.lines.filter((l) => l === 'node/check {"id":"tn"}').length;
    const before = checks();
    // Its own node/check runs every 30 s; more within a second are answers to gateway/check.
    await waitFor(() => checks() >= before + 2, 'node/check answers to gateway/check');
  });

  it('discovers a publish-only node and reports writes to it as delivered', async () => {
    await gateway(['--write-confirm-ms', '100']);
    await testNode('riot', { publishOnly: true });
    await client.next(isFrame('update', 'riot', 'pressure'), 'pressure');
    client.send({ type: 'update', id: 'w2', data: { uid: 'riot', endpoint: 'led', payload: '0' } });
    expect((await client.next((f) => f.type === 'result' && f.id === 'w2', 'write result')).result).toBe('delivered');
  });

  it('puts a silent node out with reason timeout', async () => {
    await gateway(['--max-time', '0.3']);
    await mosquittoPub(mq.port, 'node/check', '{"id":"gone"}');
    await client.next(isFrame('new', 'gone'), 'new');
    expect((await client.next(isFrame('out', 'gone'), 'out', 3000)).reason).toBe('timeout');
  });

  it('counts bad input from any client of the external broker; other nodes unaffected', async () => {
    await gateway(['--max-payload-bytes', '64']);
    await mosquittoPub(mq.port, 'node/check', '{"id":"ok"}');
    await client.next(isFrame('new', 'ok'), 'new ok');
    const cases: Array<[string, string, string]> = [
      ['node/check', '{not json', 'bad-json'],
      ['node/check', '{"id":5}', 'bad-shape'],
      ['node/check', '{"id":"a#b"}', 'bad-id'],
      ['node/ok/a/b/c', '{"value":1}', 'bad-topic'],
      ['node/x', '{"value":1}', 'bad-topic'],
      ['node/ok/temperature', JSON.stringify({ value: 'z'.repeat(100) }), 'oversized'],
    ];
    for (const [topic, payload] of cases) await mosquittoPub(mq.port, topic, payload);
    for (const [, , reason] of cases) {
      await waitFor(() => metric(gw, 'bad_input_total', `reason="${reason}"`) >= 1, `${reason} counted`);
    }
    await mosquittoPub(mq.port, 'node/ok/temperature', '{"value":"19°C"}');
    await client.next((f) => isFrame('update', 'ok', 'temperature')(f) && f.data === '19°C', 'ok still served');
    expect(gw.nodeIds()).toEqual(['ok']);
  });
});

describe('mqtt gateway with mosquitto: the broker goes away and comes back', () => {
  it('reconnects, resubscribes and rediscovers without losing nodes or sending outs', async () => {
    // --max-time leaves room for both the gateway and the node to reconnect on a busy machine.
    await gateway(['--max-time', '2']);
    const node = await testNode('survivor', { checkIntervalMs: 200, temperatureIntervalMs: 100 });
    await client.next(isFrame('update', 'survivor', 'temperature'), 'first temperature');
    await mq.pause();
    await waitFor(() => metric(gw, 'mqtt_connected') === 0, 'gateway notices the outage');
    // Longer than --max-time: without the pause of liveness during the outage the node would go out here.
    await settle(2500);
    expect(client.frames.some(isFrame('out', 'survivor'))).toBe(false);
    expect(gw.nodeIds()).toEqual(['survivor']);
    // A write while MQTT is down fails at once instead of being queued.
    client.send({ type: 'update', id: 'w-down', data: { uid: 'survivor', endpoint: 'led', payload: '1' } });
    const down = await client.next((f) => f.type === 'result' && f.id === 'w-down', 'write result during outage');
    expect(down).toMatchObject({ result: 'error', reason: 'mqtt-disconnected' });

    await mq.restart();
    await waitFor(() => metric(gw, 'mqtt_reconnects_total') === 1, 'gateway reconnected', 10_000);
    await waitFor(() => node.connected, 'node reconnected', 10_000);
    // Resubscribed: fresh values flow again.
    const before = client.frames.length;
    await waitFor(
      () => client.frames.slice(before).find(isFrame('update', 'survivor', 'temperature')),
      'a value after the restart',
    );
    // Writes work end to end again.
    client.send({ type: 'update', id: 'w-up', data: { uid: 'survivor', endpoint: 'led', payload: '1' } });
    expect((await client.next((f) => f.type === 'result' && f.id === 'w-up', 'write after restart')).result).toBe('ok');
    expect(client.frames.some(isFrame('out', 'survivor'))).toBe(false);
  });

  it('re-sends discover to every known node after reconnecting', async () => {
    // A reconnection delay long enough for mosquitto_sub to subscribe to the restarted broker first.
    await gateway(['--mqtt-reconnect-ms', '1500']);
    await mosquittoPub(mq.port, 'node/check', '{"id":"k1"}');
    await mosquittoPub(mq.port, 'node/check', '{"id":"k2"}');
    await waitFor(() => gw.nodeIds().length === 2, 'both nodes known');
    await mq.restart();
    const watch = await sub(['gateway/+/discover', 'gateway/check']);
    await watch.next((l) => l === 'gateway/k1/discover resources', 'rediscover k1', 10_000);
    await watch.next((l) => l === 'gateway/k2/discover resources', 'rediscover k2', 10_000);
    await watch.next((l) => l.startsWith('gateway/check'), 'gateway/check right after reconnecting');
    expect(metric(gw, 'mqtt_reconnects_total')).toBe(1);
    expect(client.frames.some((f) => f.type === 'out')).toBe(false);
  });
});

describe('mqtt gateway with mosquitto: per-node users and the ACL from docs/gateways/mqtt.md', () => {
  const ACL = [
    'user mycelium-gateway',
    'topic read node/#',
    'topic write gateway/#',
    'pattern write node/%u/#',
    'pattern write node/check',
    'pattern read gateway/%u/#',
    'pattern read gateway/check',
    '',
  ].join('\n');

  function passwordFile(users: Record<string, string>): string {
    const file = join(mkdtempSync(join(tmpdir(), 'mosq-passwd-')), 'passwd');
    for (const [i, [user, pass]] of Object.entries(users).entries()) {
      execFileSync('/usr/bin/mosquitto_passwd', [...(i === 0 ? ['-c'] : []), '-b', file, user, pass]);
    }
    return readFileSync(file, 'utf8');
  }

  it('works with authenticated users; mosquitto refuses bad passwords and keeps nodes to their own topics', async () => {
    const secured = await startMosquitto({
      allowAnonymous: false,
      files: {
        passwd: passwordFile({ 'mycelium-gateway': 'gw-pass', n1: 'n1-pass', n3: 'n3-pass' }),
        acl: ACL,
      },
      config: ['password_file {dir}/passwd', 'acl_file {dir}/acl'],
    });
    cleanups.push(() => secured.stop());
    gw = await startMqttGateway(tb, [
      '--mqtt-url',
      `mqtt://mycelium-gateway:gw-pass@127.0.0.1:${secured.port}`,
      '--mqtt-reconnect-ms',
      '50',
      '--check-interval',
      '0.2',
    ]);
    await waitFor(() => metric(gw, 'mqtt_connected') === 1, 'gateway connected with its user');
    const n1 = { username: 'n1', password: 'n1-pass' };
    const spy = await MosquittoSub.start(secured.port, ['gateway/#'], n1);
    cleanups.push(() => spy.stop());
    for (const id of ['n1', 'n3']) {
      const node = new MqttTestNode(
        { mqttUrl: secured.url, id, password: `${id}-pass`, reconnectMs: 50 },
        silentLogger(),
      );
      await node.start();
      cleanups.push(() => node.stop());
      await client.next(isFrame('update', id, 'led'), `${id} discovered through the ACL`);
    }
    client.send({ type: 'update', id: 'w', data: { uid: 'n3', endpoint: 'led', payload: '1' } });
    expect((await client.next((f) => f.type === 'result' && f.id === 'w', 'write')).result).toBe('ok');

    const bad = await mosquittoPub(secured.port, 'node/check', '{"id":"n1"}', { username: 'n1', password: 'wrong' });
    expect(bad.code).not.toBe(0);
    // mosquitto acknowledges a denied publish and drops it ([MQTT-3.3.5-2] allows either).
    await mosquittoPub(secured.port, 'node/n2/temperature', '{"value":1}', n1);
    await spy.next((l) => l.startsWith('gateway/check'), 'gateway/check reaches n1');
    // Negative check: a denied topic must stay silent; a bounded moment for anything that should not arrive.
    await settle(200);
    // mosquitto grants the wider subscription but delivers only what the read ACL allows.
    expect(spy.lines).toContain('gateway/n1/discover resources');
    expect(spy.lines.filter((l) => l.startsWith('gateway/n3/'))).toEqual([]);
    expect(gw.nodeIds().sort()).toEqual(['n1', 'n3']);
  });
});
