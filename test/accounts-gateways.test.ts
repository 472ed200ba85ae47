// Device API keys at the gateways (issue 15): a real broker and accounts service on one bus over SQLite, a real
// WebSocket gateway and MQTT gateway (embedded broker) linked to it with gateway keys of organisation lab-a, and
// real nodes (ws, mqtt.js). A key is checked by the broker over the gateway link; revocation (`mycelium key
// revoke`, REST DELETE) closes the sessions it opened within 5 s; attacks are refused and the gateway keeps serving.
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import type { MqttClient } from 'mqtt';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { addUser, createKey, createOrg } from '../services/accounts/admin.ts';
import { SqliteDriver } from '../services/accounts/driver-sqlite.ts';
import { issueSecret } from '../services/accounts/secrets.ts';
import { AccountsService } from '../services/accounts/service.ts';
import { AccountsStore } from '../services/accounts/store.ts';
import { MemoryBus } from '../services/bus/memory-bus.ts';
import { Broker } from '../services/broker/broker.ts';
import { resolveConfig } from '../services/common/config.ts';
import { type Logger, silentLogger } from '../services/common/log.ts';
import { KeyCheck } from '../gateways/common/key-check.ts';
import { MqttGateway } from '../gateways/mqtt/gateway.ts';
import { mqttGatewayOptions } from '../gateways/mqtt/options.ts';
import { WsGateway } from '../gateways/ws/gateway.ts';
import { WsTestNode } from '../utils/nodes/ws-node.ts';
import { TEST_BROKER_CONFIG, type TestBroker } from './helpers/broker.ts';
import { makeKeys } from './helpers/keys.ts';
import { mqttClient } from './helpers/mqtt-gateway.ts';
import { nodeUrl, startWsGateway, wsGatewayConfig } from './helpers/ws-gateway.ts';
import { TestPeer } from './helpers/ws-client.ts';
import { waitFor } from './helpers/wait.ts';

const BIN = new URL('../bin/mycelium.js', import.meta.url).pathname;
/** Revocation must reach every path within this (the issue's promise). */
const REVOCATION_MS = 5_000;
const PASSWORD = 'adam has a long password';

/** Every log line of the broker and the gateways, at debug, to look for key text. */
const logLines: string[] = [];
const capture: Logger = pino(
  { level: 'debug' },
  new Writable({
    write(chunk, _enc, done) {
      logLines.push(chunk.toString());
      done();
    },
  }),
);

const dir = mkdtempSync(join(tmpdir(), 'myc-accounts-gw-'));
const dbFile = join(dir, 'history.db');
const keys = makeKeys();
const bus = new MemoryBus();
let service: AccountsService;
let store: AccountsStore;
let tb: TestBroker;
let orgA: string;
let orgB: string;
let ws: WsGateway;
let mqtt: MqttGateway;
const cleanups: (() => unknown)[] = [];
const cleanup = (fn: () => unknown) => cleanups.push(fn);

beforeAll(async () => {
  await bus.start();
  service = new AccountsService(
    { revocationPollMs: 100 },
    { bus, store: new AccountsStore(new SqliteDriver(dbFile)), privateKey: keys.privateKey, log: silentLogger() },
  );
  await service.start();
  // A second connection, as the CLI would have.
  store = new AccountsStore(new SqliteDriver(dbFile));
  await store.open();
  orgA = (await createOrg(store, 'lab-a')).id;
  orgB = (await createOrg(store, 'lab-b')).id;
  await addUser(store, { name: 'adam', password: PASSWORD, org: 'lab-a', role: 'admin' });
  const broker = new Broker(
    { ...TEST_BROKER_CONFIG, sessionSweepMs: 100 },
    { publicKey: keys.publicKey, log: capture, bus },
  );
  await broker.start();
  tb = {
    broker,
    keys,
    http: `http://127.0.0.1:${broker.port}`,
    ws: `ws://127.0.0.1:${broker.port}`,
    stop: () => broker.stop(),
  };
  // The gateways connect with gateway keys of lab-a: their nodes are lab-a's.
  const wsKey = (await createKey(store, { orgId: orgA, role: undefined, gateway: 'ws-a' })).text;
  // Stopped in afterAll, not after each test.
  ws = await startWsGateway(
    tb,
    () => undefined,
    { gatewayId: 'ws-a', token: wsKey, tokenSweepMs: 100 },
    { log: capture },
  );
  const mqttKey = (await createKey(store, { orgId: orgA, role: undefined, gateway: 'mqtt-a' })).text;
  const config = resolveConfig(
    mqttGatewayOptions,
    [
      ...['--broker-url', tb.ws, '--key-file', keys.keyFile, '--token', mqttKey, '--gateway-id', 'mqtt-a'],
      ...['--mqtt-port', '0', '--mqtt-host', '127.0.0.1', '--http-port=-1', '--token-sweep-ms', '100'],
    ],
    {},
  );
  mqtt = new MqttGateway(config, { log: capture });
  await mqtt.start();
  await waitFor(() => mqtt.core.link.connected, 'the MQTT gateway to reach the broker');
}, 60_000);

afterEach(async () => {
  for (const fn of cleanups.splice(0).reverse()) await fn();
});

afterAll(async () => {
  await mqtt?.stop();
  await ws?.stop();
  await tb?.stop();
  await service?.stop();
  await store?.close();
  await bus.stop();
  rmSync(dir, { recursive: true, force: true });
});

const nodeKey = async (node: string, orgId = orgA) => createKey(store, { orgId, role: undefined, node });
const mqttUrl = () => `mqtt://127.0.0.1:${mqtt.mqttPort}`;

/** A node socket with `token` as its bearer; resolves open or rejects with the HTTP status and body. */
async function wsNode(token: string, query = ''): Promise<TestPeer> {
  const peer = await TestPeer.connect(nodeUrl(ws, query), token);
  cleanup(() => peer.close());
  return peer;
}

async function refusal(token: string, gw: WsGateway = ws): Promise<{ status: number; body: string }> {
  try {
    const peer = await TestPeer.connect(nodeUrl(gw), token);
    peer.close();
    return { status: 101, body: '' };
  } catch (err) {
    const e = err as { status?: number; body?: string };
    return { status: e.status ?? 0, body: e.body ?? '' };
  }
}

/** The CONNACK return code an MQTT CONNECT is refused with (0 when accepted). */
async function connackCode(url: string, username: string, password: string): Promise<number> {
  try {
    const client = await mqttClient(url, { username, password, clientId: username });
    client.end(true);
    return 0;
  } catch (err) {
    return (err as { code?: number }).code ?? -1;
  }
}

async function http(method: string, path: string, token?: string, body?: unknown) {
  const res = await fetch(`${tb.http}${path}`, {
    method,
    headers: {
      ...(token ? { authorization: `Bearer ${token}` } : {}),
      ...(body !== undefined ? { 'content-type': 'application/json' } : {}),
    },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  return { status: res.status, body: (text ? JSON.parse(text) : {}) as Record<string, unknown> };
}

/** Node uids the broker shows to `token` (REST, scoped by organisation). */
async function visibleNodes(token: string): Promise<string[]> {
  const res = await http('GET', '/api/v1/nodes', token);
  return (res.body as unknown as { uid: string }[]).map((n) => n.uid);
}

function mycelium(args: string[]): Promise<number> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BIN, ...args], {
      env: { ...process.env, MYCELIUM_HOME: dir, MYCELIUM_DB: `sqlite:${dbFile}` },
      stdio: 'ignore',
    });
    child.on('error', reject);
    child.on('close', (code) => resolve(code ?? -1));
  });
}

describe('device API keys on the WebSocket gateway', { timeout: 60_000 }, () => {
  it('a device key connects its node (the key names the uid) as a node of the gateway organisation', async () => {
    const { text } = await nodeKey('dev-a1');
    const node = new WsTestNode({ gatewayUrl: nodeUrl(ws, '?id=dev-b9'), token: text });
    cleanup(() => node.stop());
    await node.start();
    await node.opened();
    const viewerA = (await createKey(store, { orgId: orgA, role: 'viewer' })).text;
    const viewerB = (await createKey(store, { orgId: orgB, role: 'viewer' })).text;
    await waitFor(async () => (await visibleNodes(viewerA)).includes('dev-a1'), 'lab-a to see dev-a1');
    expect(await visibleNodes(viewerA)).not.toContain('dev-b9');
    expect(await visibleNodes(viewerB)).not.toContain('dev-a1');
    // The answer is cached by the key's hash: a reconnect does not ask the broker again.
    expect(ws.core.keys.cacheSize).toBeGreaterThan(0);
  });

  it("on the operator's gateway (no organisation) a device key makes its node its key organisation's", async () => {
    // The gateways of `mycelium up` connect with a `mycelium token` token: no organisation. A device provisioned
    // into lab-a (a PIN, a key) must still be lab-a's there, over REST, the /ws snapshot and live frames.
    const gw = await startWsGateway(tb, cleanup, { gatewayId: 'ws-operator' });
    const { text } = await nodeKey('dev-op1');
    const viewerA = (await createKey(store, { orgId: orgA, role: 'viewer' })).text;
    const viewerB = (await createKey(store, { orgId: orgB, role: 'viewer' })).text;
    const client = async (token: string) => {
      const peer = await TestPeer.connect(`${tb.ws}/ws`, token);
      cleanup(() => peer.close());
      return peer.register();
    };
    const liveA = await client(viewerA);
    const liveB = await client(viewerB);
    const node = new WsTestNode({ gatewayUrl: nodeUrl(gw), token: text });
    cleanup(() => node.stop());
    await node.start();
    await node.opened();
    await waitFor(async () => (await visibleNodes(viewerA)).includes('dev-op1'), 'lab-a to see dev-op1');
    expect(await visibleNodes(viewerB)).not.toContain('dev-op1');
    await liveA.next((f) => f.uid === 'dev-op1', 'a live frame of dev-op1 for lab-a');
    const snapshotA = await client(viewerA);
    expect(snapshotA.frames.some((f) => f.uid === 'dev-op1')).toBe(true);
    const snapshotB = await client(viewerB);
    expect([...snapshotB.frames, ...liveB.frames].some((f) => f.uid === 'dev-op1')).toBe(false);
  });

  it('`mycelium key revoke` closes the open session with 4401 within 5 s, and the key is refused after', async () => {
    const { key, text } = await nodeKey('dev-a2');
    const peer = await wsNode(text);
    const cli = mycelium(['key', 'revoke', key.id]);
    // The moment of revocation is when the command's write lands (its process takes seconds to start under tsx).
    await waitFor(async () => (await store.apiKey(key.id))?.revoked, 'the revocation in the database', 60_000);
    const revokedAt = Date.now();
    const closed = await peer.closed(REVOCATION_MS);
    expect(closed.code).toBe(4401);
    expect(Date.now() - revokedAt).toBeLessThan(REVOCATION_MS);
    expect(await cli).toBe(0);
    expect(await refusal(text)).toMatchObject({ status: 401, body: 'key revoked' });
  });

  it('a session opened with a key that expires is closed with 4401 at its expiry', async () => {
    const { text } = await createKey(store, { orgId: orgA, role: undefined, node: 'dev-ttl', ttlSeconds: 2 });
    const peer = await wsNode(text);
    const closed = await peer.closed(REVOCATION_MS);
    expect(closed).toMatchObject({ code: 4401, reason: 'token expired' });
    expect((await refusal(text)).status).toBe(401);
  });

  it('refuses a key of another organisation, a non-device key, garbage and a huge key text', async () => {
    const other = (await nodeKey('dev-b1', orgB)).text;
    expect(await refusal(other)).toMatchObject({ status: 401, body: 'key wrong-org' });
    const viewer = (await createKey(store, { orgId: orgA, role: 'viewer' })).text;
    expect(await refusal(viewer)).toMatchObject({ status: 401, body: 'key wrong-role' });
    expect(await refusal(`myk_${'x'.repeat(8000)}`)).toMatchObject({ status: 401, body: 'key malformed' });
    expect(await refusal('myk___proto___')).toMatchObject({ status: 401, body: 'key malformed' });
    expect(await refusal(issueSecret('myk').text)).toMatchObject({ status: 401, body: 'key unknown' });
    // The gateway still serves a good key.
    await wsNode((await nodeKey('dev-a3')).text);
  });

  it('1,000 wrong keys quickly: each refused, checks in flight bounded, the link kept, a good key still served', async () => {
    const before = process.memoryUsage().heapUsed;
    const statuses = new Map<number, number>();
    let maxPending = 0;
    const sampler = setInterval(() => {
      maxPending = Math.max(maxPending, ws.core.keys.pendingCount);
    }, 1);
    const opened = ws.core.link.opened;
    try {
      for (let batch = 0; batch < 20; batch++) {
        const results = await Promise.all(
          Array.from({ length: 50 }, async () => (await refusal(issueSecret('myk').text)).status),
        );
        for (const s of results) statuses.set(s, (statuses.get(s) ?? 0) + 1);
      }
    } finally {
      clearInterval(sampler);
    }
    // 401 (unknown) or 503 (too many in flight): never let in.
    expect([...statuses.keys()].every((s) => s === 401 || s === 503)).toBe(true);
    expect([...statuses.values()].reduce((a, b) => a + b, 0)).toBe(1000);
    expect(maxPending).toBeLessThanOrEqual(256);
    expect(ws.core.keys.pendingCount).toBe(0);
    expect(ws.core.keys.cacheSize).toBeLessThanOrEqual(10_000);
    expect(ws.core.link.connected).toBe(true);
    expect(ws.core.link.opened).toBe(opened);
    await wsNode((await nodeKey('dev-a4')).text);
    // Generous: the cache holds 1,000 small entries; what must not happen is growth per key beyond that.
    expect(process.memoryUsage().heapUsed - before).toBeLessThan(50 * 1024 * 1024);
  });
});

describe('bounds under a flood of keys', { timeout: 60_000 }, () => {
  it('the broker answers a burst of 200 checks on one link, `busy` beyond 64 in flight, and keeps the link', async () => {
    const gw = await TestPeer.connect(`${tb.ws}/gw`, await keys.token('gateway', 'gw-flood'));
    cleanup(() => gw.close());
    for (let i = 0; i < 200; i++) gw.send({ type: 'verify-key', id: `f${i}`, key: issueSecret('myk').text });
    const answers = await waitFor(() => {
      const got = gw.frames.filter((f) => f.type === 'key-verified');
      return got.length === 200 ? got : undefined;
    }, '200 answers');
    expect(answers.some((a) => a.ok)).toBe(false);
    expect(answers.filter((a) => a.reason === 'busy').length).toBeGreaterThan(0);
    expect(answers.filter((a) => a.reason === 'unknown').length).toBeGreaterThanOrEqual(64);
    expect(gw.closeCode).toBeUndefined();
  });

  it('the gateway side keeps at most maxPending checks and maxEntries answers, whatever it is asked', async () => {
    const sent: { id: string }[] = [];
    const link = { connected: true, send: (frame: string) => sent.push(JSON.parse(frame) as { id: string }) > 0 };
    const check = new KeyCheck(link, silentLogger(), { maxPending: 16, maxEntries: 100, timeoutMs: 60_000 });
    const results = Array.from({ length: 1000 }, () => check.verifyNodeKey(issueSecret('myk').text));
    expect(check.pendingCount).toBe(16);
    expect(sent.length).toBe(16);
    // The broker answers the 16; the 984 others were refused at once as unavailable (503 / CONNACK 3).
    for (const { id } of sent) check.answer({ type: 'key-verified', id, ok: false, reason: 'unknown' });
    const settled = await Promise.all(results);
    expect(settled.filter((r) => !r.ok && r.unavailable).length).toBe(984);
    expect(check.pendingCount).toBe(0);
    for (let i = 0; i < 300; i++) {
      const pending = check.verifyNodeKey(issueSecret('myk').text);
      const { id } = sent[sent.length - 1];
      check.answer({ type: 'key-verified', id, ok: false, reason: 'unknown' });
      await pending;
    }
    expect(check.cacheSize).toBe(100);
    // The link drops: nothing waits, nothing stays cached.
    const waiting = check.verifyNodeKey(issueSecret('myk').text);
    check.linkDown();
    expect(await waiting).toMatchObject({ ok: false, unavailable: true });
    expect(check.cacheSize).toBe(0);
  });
});

describe('device API keys on the embedded MQTT broker', { timeout: 60_000 }, () => {
  it('accepts a device key as the password of its own node id only; REST DELETE disconnects it within 5 s', async () => {
    const { key, text } = await nodeKey('dev-m1');
    expect(await connackCode(mqttUrl(), 'dev-m2', text)).toBe(5);
    const client: MqttClient = await mqttClient(mqttUrl(), { username: 'dev-m1', password: text, clientId: 'dev-m1' });
    cleanup(() => client.end(true));
    let closedAt = 0;
    client.on('close', () => {
      closedAt ||= Date.now();
    });
    const admin = await http('POST', '/api/v1/login', undefined, { username: 'adam', password: PASSWORD });
    const token = admin.body.accessToken as string;
    expect((await http('DELETE', `/api/v1/keys/${key.id}`, token)).status).toBeLessThan(300);
    const revokedAt = Date.now();
    await waitFor(() => closedAt > 0, 'the MQTT client to be disconnected', REVOCATION_MS);
    expect(closedAt - revokedAt).toBeLessThan(REVOCATION_MS);
    expect(await connackCode(mqttUrl(), 'dev-m1', text)).toBe(4);
  });

  it('refuses a key of another organisation, garbage and an unknown key', async () => {
    expect(await connackCode(mqttUrl(), 'dev-mb', (await nodeKey('dev-mb', orgB)).text)).toBe(5);
    expect(await connackCode(mqttUrl(), 'dev-mx', `myk_${'y'.repeat(5000)}`)).toBe(4);
    expect(await connackCode(mqttUrl(), 'dev-mx', issueSecret('myk').text)).toBe(4);
    expect(await connackCode(mqttUrl(), 'dev-m3', (await nodeKey('dev-m3')).text)).toBe(0);
  });
});

describe('with the broker link down, key logins are refused (fail closed)', { timeout: 60_000 }, () => {
  it('WebSocket answers 503 "server unavailable", MQTT CONNACK 3', async () => {
    const text = (await nodeKey('dev-down')).text;
    // Broker URLs nothing listens on: the links never open.
    const deadWs = new WsGateway(wsGatewayConfig(tb, { gatewayId: 'ws-down', brokerUrl: ['ws://127.0.0.1:1'] }), {
      log: silentLogger(),
    });
    cleanup(() => deadWs.stop());
    await deadWs.start();
    expect(await refusal(text, deadWs)).toMatchObject({ status: 503, body: 'server unavailable' });
    const config = resolveConfig(
      mqttGatewayOptions,
      [
        ...['--broker-url', 'ws://127.0.0.1:1', '--key-file', keys.keyFile, '--gateway-id', 'mqtt-down'],
        ...['--mqtt-port', '0', '--mqtt-host', '127.0.0.1', '--http-port=-1'],
      ],
      {},
    );
    const deadMqtt = new MqttGateway(config, { log: silentLogger() });
    cleanup(() => deadMqtt.stop());
    await deadMqtt.start();
    expect(await connackCode(`mqtt://127.0.0.1:${deadMqtt.mqttPort}`, 'dev-down', text)).toBe(3);
  });
});

describe('secrets', () => {
  it('no log line of the broker or the gateways holds key text', () => {
    expect(logLines.length).toBeGreaterThan(10);
    // `myk_` followed by the 16-hex id: key ids alone (`keyId`) are not secret, the text after them is.
    expect(logLines.filter((l) => /myk_[0-9a-f]{16}_/.test(l))).toEqual([]);
  });
});
