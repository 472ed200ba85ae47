// Attacks on the MQTT gateway (issue 10), each against the real gateway: a real Mycelium broker on port 0, the
// embedded aedes broker on port 0, real MQTT clients (mqtt.js, mosquitto_pub). Every test first plays the attack,
// then checks that the gateway still serves a well-behaved node.
import { connect as tcpConnect } from 'node:net';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { MqttGateway } from '../gateways/mqtt/gateway.ts';
import { mqttGatewayOptions } from '../gateways/mqtt/options.ts';
import { resolveConfig } from '../services/common/config.ts';
import { silentLogger } from '../services/common/log.ts';
import { addRevocations, revocationFileFor } from '../services/common/revocations.ts';
import type { GatewayMessage } from '../services/protocol/messages.ts';
import { startBroker, type TestBroker } from './helpers/broker.ts';
import { mosquittoPub, startMosquitto } from './helpers/mosquitto.ts';
import { isFrame, metric, mqttClient, operator, startMqttGateway } from './helpers/mqtt-gateway.ts';
import { waitFor } from './helpers/wait.ts';
import type { TestPeer } from './helpers/ws-client.ts';

let tb: TestBroker;
let gw: MqttGateway | undefined;
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
  gw = undefined;
  await tb.stop();
});

async function gateway(args: string[] = []): Promise<MqttGateway> {
  gw = await startMqttGateway(tb, args);
  return gw;
}

async function creds(id: string, ttlSeconds?: number) {
  return { username: id, password: await tb.keys.token('node', id, ttlSeconds) };
}

/** `{"value": [[[...]]]}` nested `levels` deep. */
function deepValue(levels: number): string {
  return `{"value":${'['.repeat(levels)}${']'.repeat(levels)}}`;
}

describe('mqtt gateway: deep and oversized payloads (finding 1)', () => {
  it('drops a 7,000-level value (counted as too-deep) while a write is pending, and still serves another node', async () => {
    const g = await gateway(['--write-confirm-ms', '3000']);
    const attacker = await mqttClient(`mqtt://127.0.0.1:${g.mqttPort}`, { ...(await creds('evil')), clientId: 'evil' });
    cleanups.push(() => attacker.endAsync(true));
    await attacker.publishAsync('node/evil/led', '{"value":"0"}', { qos: 1 });
    await client.next(isFrame('update', 'evil', 'led'), 'evil led');
    // A write waits for the node to echo the value: the deep answer goes through the write confirmation too.
    const sets: string[] = [];
    attacker.on('message', (topic) => sets.push(topic));
    await attacker.subscribeAsync('gateway/evil/#', { qos: 1 });
    client.send({ type: 'update', id: 'w1', data: { uid: 'evil', endpoint: 'led', payload: '1' } });
    await waitFor(() => sets.includes('gateway/evil/led/set'), 'the write on the wire');
    await attacker.publishAsync('node/evil/led', deepValue(7000), { qos: 1 });
    await attacker.publishAsync('node/evil/temperature', deepValue(40), { qos: 1 });
    await waitFor(() => metric(g, 'bad_input_total', 'reason="too-deep"') === 2, 'both deep values counted');

    const auth = await creds('good');
    expect((await mosquittoPub(g.mqttPort, 'node/good/temperature', '{"value":"21°C"}', auth)).code).toBe(0);
    await client.next((f) => isFrame('update', 'good', 'temperature')(f) && f.data === '21°C', 'good still served');
    expect(client.frames.some((f) => f.uid === 'evil' && f.endpoint === 'temperature')).toBe(false);
  });

  it('with mosquitto (--mqtt-url): drops a 7,000-level value from mosquitto_pub, counted as too-deep; another node still served', async () => {
    const mq = await startMosquitto();
    cleanups.push(() => mq.stop());
    const g = await gateway(['--mqtt-url', mq.url, '--mqtt-reconnect-ms', '50']);
    await waitFor(() => metric(g, 'mqtt_connected') === 1, 'gateway connected to mosquitto');
    expect((await mosquittoPub(mq.port, 'node/evil/led', deepValue(7000))).code).toBe(0);
    await waitFor(() => metric(g, 'bad_input_total', 'reason="too-deep"') === 1, 'the deep value counted');
    await mosquittoPub(mq.port, 'node/good/temperature', '{"value":"19°C"}');
    await client.next((f) => isFrame('update', 'good', 'temperature')(f) && f.data === '19°C', 'good still served');
    expect(client.frames.some((f) => f.uid === 'evil' && f.endpoint === 'led')).toBe(false);
  });

  it('drops a payload over --max-payload-bytes, counted as oversized, and keeps the node connected', async () => {
    const g = await gateway(['--max-payload-bytes', '256']);
    const auth = await creds('big');
    const node = await mqttClient(`mqtt://127.0.0.1:${g.mqttPort}`, { ...auth, clientId: 'big' });
    cleanups.push(() => node.endAsync(true));
    await node.publishAsync('node/big/blob', JSON.stringify({ value: 'x'.repeat(400) }), { qos: 1 });
    await waitFor(() => metric(g, 'bad_input_total', 'reason="oversized"') === 1, 'oversized counted');
    await node.publishAsync('node/big/led', '{"value":"1"}', { qos: 1 });
    await client.next(isFrame('update', 'big', 'led'), 'later value from the same node');
    expect(client.frames.some((f) => f.uid === 'big' && f.endpoint === 'blob')).toBe(false);
  });
});

/** The claims of a JWT, unverified (the test minted it). */
function claimsOf(token: string): Record<string, unknown> {
  return JSON.parse(Buffer.from(token.split('.')[1], 'base64url').toString());
}

/** Frames the gateway sends to the broker, recorded by wrapping its link. */
function recordFrames(g: MqttGateway): GatewayMessage[] {
  const frames: GatewayMessage[] = [];
  const link = g.core.link;
  const send = link.send.bind(link);
  link.send = (frame: string) => {
    frames.push(JSON.parse(frame) as GatewayMessage);
    return send(frame);
  };
  return frames;
}

describe('mqtt gateway: identifiers, caps and rates (findings 3, 4, 9)', () => {
  it('refuses __proto__, constructor and C1 control characters as node ids and resource names; nothing reaches the broker', async () => {
    const g = await gateway(['--allow-anonymous-nodes']);
    const port = g.mqttPort;
    const cases: Array<[string, string, string]> = [
      ['node/check', '{"id":"__proto__"}', 'bad-id'],
      ['node/constructor/temperature', '{"value":1}', 'bad-id'],
      ['node/x\u0085y/temperature', '{"value":1}', 'bad-id'],
      ['node/good/__proto__', '{"value":{"polluted":true}}', 'bad-resource'],
      ['node/good/prototype', '{"value":1}', 'bad-resource'],
      ['node/good/resources', '["led","__proto__"]', 'bad-resource'],
    ];
    const anon = await mqttClient(`mqtt://127.0.0.1:${port}`, { clientId: 'anon' });
    cleanups.push(() => anon.endAsync(true));
    for (const [topic, payload] of cases) await anon.publishAsync(topic, payload, { qos: 1 });
    const expected = new Map<string, number>();
    for (const [, , reason] of cases) expected.set(reason, (expected.get(reason) ?? 0) + 1);
    await waitFor(
      () => [...expected].every(([r, n]) => metric(g, 'bad_input_total', `reason="${r}"`) === n),
      'every refusal counted',
    );
    await mosquittoPub(port, 'node/good/temperature', '{"value":"20°C"}');
    await client.next(isFrame('update', 'good', 'temperature'), 'good served');
    expect(g.nodeIds()).toEqual(['good']);
    expect(client.frames.some((f) => f.uid !== 'good' && f.uid !== undefined)).toBe(false);
    expect(client.frames.some((f) => f.endpoint === '__proto__' || f.endpoint === 'prototype')).toBe(false);
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
  });

  it('passes at most --max-resources-per-node distinct resources of one node to the broker; the rest are counted', async () => {
    const g = await gateway(['--max-resources-per-node', '5']);
    const node = await mqttClient(`mqtt://127.0.0.1:${g.mqttPort}`, { ...(await creds('greedy')), clientId: 'greedy' });
    cleanups.push(() => node.endAsync(true));
    for (let i = 0; i < 30; i++) await node.publishAsync(`node/greedy/r${i}`, `{"value":${i}}`, { qos: 1 });
    await waitFor(() => metric(g, 'node_refusals_total', 'reason="max-resources"') === 25, '25 refusals counted');
    // A known resource still updates.
    await node.publishAsync('node/greedy/r0', '{"value":"again"}', { qos: 1 });
    await client.next((f) => isFrame('update', 'greedy', 'r0')(f) && f.data === 'again', 'r0 updated');
    const names = new Set(client.frames.filter(isFrame('update', 'greedy')).map((f) => f.endpoint));
    expect([...names].sort()).toEqual(['r0', 'r1', 'r2', 'r3', 'r4']);
  });

  it('charges one new-node token per new id, not one per message of its start-up burst', async () => {
    const g = await gateway(['--allow-anonymous-nodes', '--new-nodes-per-minute', '2']);
    const anon = await mqttClient(`mqtt://127.0.0.1:${g.mqttPort}`, { clientId: 'two-nodes' });
    cleanups.push(() => anon.endAsync(true));
    for (const id of ['n1', 'n2']) {
      anon.publish('node/check', `{"id":"${id}"}`, { qos: 0 });
      anon.publish(`node/${id}/resources`, '["a","b","c","d"]', { qos: 0 });
      for (const r of ['a', 'b', 'c', 'd']) anon.publish(`node/${id}/${r}`, `{"value":"${r}"}`, { qos: 0 });
    }
    await client.next(isFrame('update', 'n2', 'd'), 'the last value of n2');
    expect(client.frames.filter(isFrame('update', 'n1'))).toHaveLength(4);
    expect(metric(g, 'broker_refused_total', 'reason="new-node-rate"')).toBe(0);
    expect(anon.connected).toBe(true);
  });

  it('limits new node ids per source address (--new-nodes-per-minute) for anonymous nodes, closing the publisher', async () => {
    const g = await gateway(['--allow-anonymous-nodes', '--new-nodes-per-minute', '3']);
    const spoofer = await mqttClient(`mqtt://127.0.0.1:${g.mqttPort}`, { clientId: 'spoofer' });
    cleanups.push(() => spoofer.endAsync(true));
    const closed = new Promise<void>((resolve) => spoofer.once('close', () => resolve()));
    for (let i = 0; i < 10; i++) spoofer.publish('node/check', `{"id":"fake-${i}"}`, { qos: 0 });
    await closed;
    await waitFor(() => metric(g, 'broker_refused_total', 'reason="new-node-rate"') >= 1, 'refusal counted');
    expect(g.nodeIds().length).toBeLessThanOrEqual(3);
    // A known node from the same address is not limited.
    await mosquittoPub(g.mqttPort, 'node/fake-0/led', '{"value":"1"}');
    await client.next(isFrame('update', 'fake-0', 'led'), 'known id still served');
  });
});

describe('mqtt gateway: proof and token lifetime (findings 2, 7)', () => {
  it("announces a token-authenticated node with proof 'token'; anonymous nodes carry none", async () => {
    const g = await gateway();
    const frames = recordFrames(g);
    await mosquittoPub(g.mqttPort, 'node/check', '{"id":"proven"}', await creds('proven'));
    await client.next(isFrame('new', 'proven'), 'new proven');
    expect(frames.find((f) => f.type === 'new' && f.uid === 'proven')).toMatchObject({ proof: 'token' });
    await g.stop();
    const open = await gateway(['--allow-anonymous-nodes']);
    const openFrames = recordFrames(open);
    await mosquittoPub(open.mqttPort, 'node/check', '{"id":"anon"}');
    await client.next(isFrame('new', 'anon'), 'new anon');
    expect(openFrames.find((f) => f.type === 'new' && f.uid === 'anon')).not.toHaveProperty('proof');
  });

  it('disconnects a node at its token exp (2 s ttl); the disconnect is counted', async () => {
    const g = await gateway(['--token-sweep-ms', '100']);
    const node = await mqttClient(`mqtt://127.0.0.1:${g.mqttPort}`, {
      ...(await creds('brief', 2)),
      clientId: 'brief',
    });
    cleanups.push(() => node.endAsync(true));
    const closed = new Promise<number>((resolve) => node.once('close', () => resolve(Date.now())));
    await node.publishAsync('node/brief/led', '{"value":"0"}', { qos: 1 });
    await client.next(isFrame('update', 'brief', 'led'), 'value before exp');
    const started = Date.now();
    const at = await closed;
    expect(at - started).toBeLessThan(5000);
    expect(metric(g, 'broker_refused_total', 'reason="session-token-expired"')).toBe(1);
  });

  it('never processes a publish sent after exp, even before the sweep runs', async () => {
    const g = await gateway(['--token-sweep-ms', '600000']);
    const auth = await creds('late', 2);
    const exp = claimsOf(auth.password).exp as number;
    const node = await mqttClient(`mqtt://127.0.0.1:${g.mqttPort}`, { ...auth, clientId: 'late' });
    cleanups.push(() => node.endAsync(true));
    const closed = new Promise<void>((resolve) => node.once('close', () => resolve()));
    await node.publishAsync('node/late/led', '{"value":"before"}', { qos: 1 });
    await client.next(isFrame('update', 'late', 'led'), 'value before exp');
    await waitFor(() => Date.now() > exp * 1000 + 50, 'the token to expire', 5000);
    expect(node.connected).toBe(true);
    node.publish('node/late/led', '{"value":"after"}', { qos: 0 });
    await closed;
    expect(metric(g, 'broker_refused_total', 'reason="session-token-expired"')).toBe(1);
    expect(client.frames.some((f) => f.uid === 'late' && f.data === 'after')).toBe(false);
  });

  it('refuses a revoked token at CONNECT and disconnects a session whose token is revoked', async () => {
    const revoked = new Set<string>();
    const config = resolveConfig(
      mqttGatewayOptions,
      [
        ...['--broker-url', tb.ws, '--key-file', tb.keys.keyFile, '--gateway-id', 'mqtt-rev'],
        ...['--mqtt-port', '0', '--mqtt-host', '127.0.0.1', '--http-port=-1', '--token-sweep-ms', '100'],
      ],
      {},
    );
    const g = new MqttGateway(config, {
      log: silentLogger(),
      revocations: { isRevoked: (jti) => jti !== undefined && revoked.has(jti) },
    });
    gw = g;
    await g.start();
    const auth = await creds('rev');
    const jti = claimsOf(auth.password).jti as string;
    const node = await mqttClient(`mqtt://127.0.0.1:${g.mqttPort}`, { ...auth, clientId: 'rev' });
    cleanups.push(() => node.endAsync(true));
    const closed = new Promise<void>((resolve) => node.once('close', () => resolve()));
    revoked.add(jti);
    await closed;
    expect(metric(g, 'broker_refused_total', 'reason="session-token-revoked"')).toBe(1);
    await expect(mqttClient(`mqtt://127.0.0.1:${g.mqttPort}`, { ...auth, clientId: 'rev' })).rejects.toThrow();
    expect(metric(g, 'broker_refused_total', 'reason="token-revoked"')).toBe(1);
  });

  it('disconnects a session within a poll of revoked.json naming its jti, as `mycelium token revoke` writes it', async () => {
    const g = await gateway(['--token-sweep-ms', '100', '--revocation-poll-ms', '100']);
    const auth = await creds('filed');
    const node = await mqttClient(`mqtt://127.0.0.1:${g.mqttPort}`, { ...auth, clientId: 'filed' });
    cleanups.push(() => node.endAsync(true));
    const closed = new Promise<void>((resolve) => node.once('close', () => resolve()));
    const claims = claimsOf(auth.password);
    addRevocations(revocationFileFor(tb.keys.keyFile), [{ jti: claims.jti as string, exp: claims.exp as number }]);
    await closed;
    expect(metric(g, 'broker_refused_total', 'reason="session-token-revoked"')).toBe(1);
  });
});

describe('mqtt gateway: the /metrics port (finding 10)', () => {
  it('closes a connection to the HTTP port that sends nothing within --http-timeout-ms', async () => {
    const g = await gateway(['--http-timeout-ms', '300']);
    const socket = tcpConnect(g.httpPort, '127.0.0.1');
    cleanups.push(() => {
      socket.destroy();
    });
    socket.on('error', () => undefined);
    // Read what the server sends: Node's header deadline answers 408 before closing, the idle timeout closes
    // silently, and whichever fires first wins. A socket nobody reads never sees the EOF behind a 408, so it
    // would sit in CLOSE-WAIT and this test would hang (it did, one run in twenty under load).
    let received = '';
    socket.on('data', (d) => {
      received += d.toString();
    });
    const started = Date.now();
    await new Promise<void>((resolve) => socket.once('close', () => resolve()));
    expect(Date.now() - started).toBeLessThan(5000);
    expect(received === '' || received.startsWith('HTTP/1.1 408')).toBe(true);
    const headers = { authorization: `Bearer ${await tb.keys.token('viewer')}` };
    expect((await fetch(`http://127.0.0.1:${g.httpPort}/metrics`, { headers })).status).toBe(200);
  });
});

/** An MQTT 3.1.1 CONNECT packet with username and password ([MQTT-3.1]), built by hand for a raw socket. */
function connectPacket(clientId: string, username: string, password: string): Buffer {
  const str = (t: string) => {
    const b = Buffer.from(t);
    return Buffer.concat([Buffer.from([b.length >> 8, b.length & 0xff]), b]);
  };
  // Protocol name, level 4, flags: username | password | clean session, keep-alive 60 s.
  const body = Buffer.concat([str('MQTT'), Buffer.from([4, 0xc2, 0, 60]), str(clientId), str(username), str(password)]);
  const length: number[] = [];
  let n = body.length;
  do {
    let byte = n % 128;
    n = Math.floor(n / 128);
    if (n > 0) byte |= 0x80;
    length.push(byte);
  } while (n > 0);
  return Buffer.concat([Buffer.from([0x10, ...length]), body]);
}

describe('mqtt gateway: the token table of the embedded broker', () => {
  it('keeps no entry for clients that close while their token is being verified (found by the garbage run)', async () => {
    const g = await gateway(['--token-sweep-ms', '100']);
    const auth = await creds('quick');
    const packet = connectPacket('quick', auth.username, auth.password);
    const closes: Promise<void>[] = [];
    for (let i = 0; i < 50; i++) {
      const socket = tcpConnect(g.mqttPort, '127.0.0.1');
      socket.on('error', () => undefined);
      closes.push(new Promise<void>((resolve) => socket.once('close', () => resolve())));
      socket.once('connect', () => socket.end(packet, () => socket.destroy()));
    }
    await Promise.all(closes);
    // A real node afterwards is watched; it is the only one.
    const node = await mqttClient(`mqtt://127.0.0.1:${g.mqttPort}`, { ...(await creds('stays')), clientId: 'stays' });
    cleanups.push(() => node.endAsync(true));
    await waitFor(() => metric(g, 'broker_token_sessions') === 1, 'one watched session');
    await node.endAsync(true);
    await waitFor(() => metric(g, 'broker_token_sessions') === 0, 'no watched session');
  });
});
