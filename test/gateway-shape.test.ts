// One gateway shape (issue 11, item 1): the three protocol folders have the same file roles, each gateway builds
// its core in the constructor, the HTTP options are the same in all three, and every gateway's /healthz says
// 503 while its broker link (or its transport) is down and 200 once both are up, against a real broker.
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { CoapGateway } from '../gateways/coap/gateway.ts';
import { coapGatewayOptions } from '../gateways/coap/options.ts';
import { GatewayCore } from '../gateways/common/gateway-core.ts';
import { GATEWAY_HTTP_PORTS } from '../gateways/common/options.ts';
import { MqttGateway } from '../gateways/mqtt/gateway.ts';
import { mqttGatewayOptions } from '../gateways/mqtt/options.ts';
import { WsGateway } from '../gateways/ws/gateway.ts';
import { wsGatewayOptions } from '../gateways/ws/options.ts';
import { resolveConfig } from '../services/common/config.ts';
import { addRevocations, revocationFileFor } from '../services/common/revocations.ts';
import { silentLogger } from '../services/common/log.ts';
import { startBroker, type TestBroker } from './helpers/broker.ts';
import { coapGatewayConfig } from './helpers/coap.ts';
import { makeKeys, type TestKeys } from './helpers/keys.ts';
import { startMqttGateway } from './helpers/mqtt-gateway.ts';
import { waitFor } from './helpers/wait.ts';
import { TestPeer } from './helpers/ws-client.ts';
import { startWsGateway } from './helpers/ws-gateway.ts';

const GATEWAYS = join(import.meta.dirname, '..', 'gateways');
const PROTOCOLS = ['coap', 'mqtt', 'ws'] as const;
/** The roles every protocol folder fills, one file each (docs/gateways/README.md). */
const SHARED_ROLES = [
  'command.ts',
  'options.ts',
  'gateway.ts',
  'adapter.ts',
  'transport.ts',
  'codec.ts',
  'discovery.ts',
];

const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

describe('one gateway shape', () => {
  it('every protocol folder has the shared role files, and nothing but protocol folders sit beside common/', () => {
    for (const protocol of PROTOCOLS) {
      const missing = SHARED_ROLES.filter((f) => !existsSync(join(GATEWAYS, protocol, f)));
      expect({ protocol, missing }).toEqual({ protocol, missing: [] });
    }
    const folders = readdirSync(GATEWAYS, { withFileTypes: true }).filter((d) => d.isDirectory());
    expect(folders.map((d) => d.name).sort()).toEqual(['coap', 'common', 'mqtt', 'ws']);
  });

  it('each gateway builds its core in the constructor, with the adapter plugged in, before anything listens', () => {
    const broker = ['--broker-url', 'ws://127.0.0.1:1', '--token', 't'];
    const gateways = [
      new CoapGateway(resolveConfig(coapGatewayOptions, broker, {}), { log: silentLogger() }),
      new MqttGateway(resolveConfig(mqttGatewayOptions, broker, {}), { log: silentLogger() }),
      new WsGateway(resolveConfig(wsGatewayOptions, broker, {}), { log: silentLogger() }),
    ];
    expect(gateways.map((g) => g.core instanceof GatewayCore)).toEqual([true, true, true]);
    expect(gateways.map((g) => g.core.protocol)).toEqual(['CoAP', 'MQTT', 'WebSocket']);
    // Not started: no HTTP port, the transport reported down, no node.
    for (const g of gateways) {
      expect(g.core.httpPort).toBeUndefined();
      expect(g.core.health()).toMatchObject({ status: 'down', transport: 'down', broker: 'disconnected', nodes: 0 });
    }
  });

  it('the /metrics and /healthz options have the same names, semantics and default rule in all three', () => {
    const tables = { coap: coapGatewayOptions, mqtt: mqttGatewayOptions, ws: wsGatewayOptions };
    for (const [protocol, table] of Object.entries(tables) as [keyof typeof GATEWAY_HTTP_PORTS, typeof tables.ws][]) {
      expect(table.httpPort).toMatchObject({ type: 'number', min: -1, default: GATEWAY_HTTP_PORTS[protocol] });
      expect(table.httpHost).toMatchObject({ type: 'string', default: '127.0.0.1' });
      expect(table.httpTimeoutMs).toMatchObject({ type: 'number', default: 10000 });
      expect(table.publicMetrics).toMatchObject({ type: 'boolean', default: false });
    }
    expect(new Set(Object.values(GATEWAY_HTTP_PORTS)).size).toBe(3);
  });

  it('docker-compose.yml health-checks each gateway at its default /healthz port', () => {
    const compose = parse(readFileSync(join(import.meta.dirname, '..', 'docker-compose.yml'), 'utf8'), {
      merge: true,
    }) as { services: Record<string, { command?: string[]; healthcheck?: { test: string[] } }> };
    for (const protocol of PROTOCOLS) {
      const service = compose.services[`${protocol}-gateway`];
      expect(service.command).not.toContain('--http-port');
      expect(service.healthcheck?.test.join(' ')).toContain(`http://127.0.0.1:${GATEWAY_HTTP_PORTS[protocol]}/healthz`);
    }
  });
});

describe('/healthz of every gateway follows its broker link (real broker stopped and restarted)', () => {
  type Started = { httpPort: number | undefined; stop(): Promise<void> };
  const starters: Record<string, (tb: TestBroker) => Promise<Started>> = {
    CoAP: async (tb) => {
      const token = await tb.keys.token('gateway', 'coap-health');
      const config = coapGatewayConfig(tb.ws, { httpPort: 0, keyFile: tb.keys.keyFile });
      const gw = new CoapGateway(config, { log: silentLogger(), tokenSource: async () => token });
      await gw.start();
      return gw;
    },
    MQTT: (tb) => startMqttGateway(tb, ['--backoff-max-ms', '200']),
    WebSocket: (tb) => startWsGateway(tb, () => undefined, { backoffMaxMs: 200 }),
  };

  for (const [protocol, start] of Object.entries(starters)) {
    it(`${protocol}: 200 while the broker link is up, 503 naming it while it is down, 200 again after`, async () => {
      const keys: TestKeys = makeKeys();
      let tb = await startBroker({}, keys);
      const port = tb.broker.port;
      cleanups.push(() => tb.stop());
      const gw = await start(tb);
      cleanups.push(() => gw.stop());
      const url = `http://127.0.0.1:${gw.httpPort}/healthz`;
      const health = async () => {
        const res = await fetch(url);
        return { status: res.status, body: (await res.json()) as { status: string; down: string[]; protocol: string } };
      };
      await waitFor(async () => (await health()).status === 200, `${protocol} healthy`);
      expect((await health()).body).toMatchObject({ status: 'ok', protocol, transport: 'up', broker: 'connected' });

      await tb.stop();
      await waitFor(async () => (await health()).status === 503, `${protocol} unhealthy without its broker`);
      const down = (await health()).body;
      expect(down.status).toBe('down');
      expect(down.down).toEqual([`broker link (ws://127.0.0.1:${port}/gw)`]);

      tb = await startBroker({ port }, keys);
      await waitFor(async () => (await health()).status === 200, `${protocol} healthy again`, 10_000);
    });
  }

  it('MQTT: 503 naming the MQTT broker while an external one cannot be reached', async () => {
    const tb = await startBroker();
    cleanups.push(() => tb.stop());
    // Port 1 on loopback: connection refused at once, and again at every reconnect.
    const gw = await startMqttGateway(tb, ['--mqtt-url', 'mqtt://127.0.0.1:1', '--mqtt-reconnect-ms', '50']);
    cleanups.push(() => gw.stop());
    const res = await fetch(`http://127.0.0.1:${gw.httpPort}/healthz`);
    expect(res.status).toBe(503);
    expect(await res.json()).toMatchObject({
      status: 'down',
      transport: 'down',
      broker: 'connected',
      down: ['MQTT mqtt://127.0.0.1:1 not connected'],
    });
  });
});

describe('core.stats(): what a status report reads, from one place', () => {
  it('counts messages, errors by kind, nodes by status and the broker link', async () => {
    const tb = await startBroker();
    cleanups.push(() => tb.stop());
    const gw = await startWsGateway(tb, (fn) => cleanups.push(fn), { allowAnonymousNodes: true });
    const node = await TestPeer.connect(`ws://127.0.0.1:${gw.port}/node?id=s1`);
    cleanups.push(() => node.close());
    node.send({ type: 'update', data: { led: '1' } });
    await waitFor(() => gw.core.resources('s1')?.led === '1', 'the update');
    await fetch(`http://127.0.0.1:${gw.httpPort}/metrics`);
    const stats = gw.core.stats();
    expect(stats).toMatchObject({
      protocol: 'WebSocket',
      nodes: { online: 1, discovering: 0, unverified: 0 },
      brokerLinkConnected: true,
      brokerLinkReconnects: 0,
      errors: { 'metrics-auth-missing': 1 },
    });
    expect(stats.messagesIn).toBeGreaterThanOrEqual(1);
    expect(stats.messagesOut).toBeGreaterThanOrEqual(1);
  });
});

describe('the shared /metrics and /healthz endpoint against hostile requests', () => {
  it('refuses bad, foreign-role and revoked tokens with 401 JSON, other methods and paths with 404, and keeps serving', async () => {
    const tb = await startBroker();
    cleanups.push(() => tb.stop());
    const token = await tb.keys.token('gateway', 'coap-hostile');
    const config = coapGatewayConfig(tb.ws, { httpPort: 0, keyFile: tb.keys.keyFile, revocationPollMs: 20 });
    const gw = new CoapGateway(config, { log: silentLogger(), tokenSource: async () => token });
    await gw.start();
    cleanups.push(() => gw.stop());
    const base = `http://127.0.0.1:${gw.httpPort}`;
    const metrics = (auth?: string, init: RequestInit = {}) =>
      fetch(`${base}/metrics`, { ...init, headers: auth === undefined ? {} : { authorization: auth } });

    const cases: [string, string][] = [
      ['Bearer not.a.jwt', 'token malformed'],
      [`Bearer ${'A'.repeat(8000)}`, 'token malformed'],
      [`Bearer ${await tb.keys.token('node', '__proto__')}`, 'token wrong-role'],
      [`Bearer ${await tb.keys.token('gateway', 'g')}`, 'token wrong-role'],
      ['Basic dXNlcjpwYXNz', 'token missing'],
    ];
    for (const [auth, message] of cases) {
      const res = await metrics(auth);
      expect({ auth: auth.slice(0, 20), status: res.status }).toEqual({ auth: auth.slice(0, 20), status: 401 });
      expect(await res.json()).toEqual({ error: 'unauthorized', message });
    }
    expect((await metrics(undefined, { method: 'POST', body: 'x' })).status).toBe(404);
    expect((await fetch(`${base}/metrics/../healthz%00`)).status).toBe(404);
    expect((await fetch(`${base}/healthz?__proto__=1`)).status).toBe(200);

    const viewer = await tb.keys.token('viewer', 'v');
    expect((await metrics(`Bearer ${viewer}`)).status).toBe(200);
    const claims = JSON.parse(Buffer.from(viewer.split('.')[1], 'base64url').toString()) as {
      jti: string;
      exp: number;
    };
    addRevocations(revocationFileFor(tb.keys.keyFile), [{ jti: claims.jti, exp: claims.exp }]);
    await waitFor(async () => (await metrics(`Bearer ${viewer}`)).status === 401, 'the revoked viewer token refused');
    expect((await fetch(`${base}/healthz`)).status).toBe(200);
  });
});
