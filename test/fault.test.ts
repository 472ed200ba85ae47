// Fault injection with the real peers (issue 10, "the suite that keeps it fixed"): kill -9 and restart
// nats-server, mosquitto, a broker and a gateway while a test node streams a numbered sequence. Afterwards the
// node is online everywhere (never left `out`), every value sent once the system is whole again arrives in
// order, and no process other than the one killed has exited.
import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { createServer } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { GatewayCore } from '../gateways/common/gateway-core.ts';
import { silentLogger } from '../services/common/log.ts';
import { MqttTestNode } from '../utils/nodes/mqtt-node.ts';
import { WsTestNode } from '../utils/nodes/ws-node.ts';
import { startBroker, type TestBroker } from './helpers/broker.ts';
import { type BrokerProcess, spawnBroker } from './helpers/broker-process.ts';
import { guard } from './helpers/child-process.ts';
import { makeKeys, type TestKeys } from './helpers/keys.ts';
import { startMosquitto } from './helpers/mosquitto.ts';
import { metric, startMqttGateway } from './helpers/mqtt-gateway.ts';
import { startNatsServer } from './helpers/nats-server.ts';
import { waitFor } from './helpers/wait.ts';
import { type Frame, TestPeer } from './helpers/ws-client.ts';

const BIN = new URL('../bin/mycelium.js', import.meta.url).pathname;
/** One value of the sequence every this often: fast enough to be mid-stream at the kill, slow enough for CI. */
const STREAM_PERIOD_MS = 20;
/** Values sent once the system is whole again; all of them must arrive. */
const AFTER_VALUES = 50;
/** Time for the system to heal after a restart (reconnect backoffs are shrunk below this). */
const HEAL_TIMEOUT_MS = 15_000;
const SCENARIO_TIMEOUT_MS = 30_000;

const cleanups: Array<() => unknown> = [];
afterEach(async () => {
  for (const f of cleanups.splice(0).reverse()) {
    try {
      await f();
    } catch {
      // cleanup of a resource a scenario already stopped
    }
  }
});

/** Processes that must stay up: an exit of any of them fails the scenario (kill -9 targets are removed first). */
class ExitWatch {
  private readonly exits: string[] = [];
  private readonly expected = new Set<ChildProcess>();
  watch(name: string, child: ChildProcess): void {
    child.once('exit', (code, signal) => {
      if (!this.expected.has(child)) this.exits.push(`${name} exited (code ${code}, signal ${signal})`);
    });
  }
  expectExit(child: ChildProcess): void {
    this.expected.add(child);
  }
  check(): void {
    expect(this.exits).toEqual([]);
  }
}

/** A numbered sequence sent by a test node; `mark()` notes the first number sent from now on. */
class Stream {
  next = 0;
  private timer?: NodeJS.Timeout;
  constructor(private readonly send: (i: number) => void) {}
  start(): void {
    this.timer = setInterval(() => this.send(this.next++), STREAM_PERIOD_MS);
    cleanups.push(() => this.stop());
  }
  stop(): void {
    clearInterval(this.timer);
  }
  mark(): number {
    return this.next;
  }
}

/** Numbers a client received as updates of `uid`/`endpoint`, in arrival order. */
function received(peer: TestPeer, uid: string, endpoint: string): number[] {
  return peer.frames
    .filter((f: Frame) => f.type === 'update' && f.uid === uid && f.endpoint === endpoint)
    .map((f: Frame) => Number(f.data))
    .filter((n) => Number.isFinite(n));
}

/**
 * Waits until the system is whole again (a value sent after `from` reached the client), then sends
 * AFTER_VALUES more and checks that every one of them arrives, in order, with nothing missing.
 */
async function expectHealed(
  peer: TestPeer,
  stream: Stream,
  uid: string,
  endpoint: string,
  from: number,
): Promise<void> {
  await waitFor(
    () => received(peer, uid, endpoint).some((n) => n >= from),
    `a value of ${uid} sent after the restart`,
    HEAL_TIMEOUT_MS,
  );
  const first = stream.mark();
  const last = first + AFTER_VALUES - 1;
  await waitFor(() => stream.next > last, `${AFTER_VALUES} more values sent`, HEAL_TIMEOUT_MS);
  await waitFor(() => received(peer, uid, endpoint).includes(last), `value ${last} at the client`, HEAL_TIMEOUT_MS);
  const after = received(peer, uid, endpoint).filter((n) => n >= first && n <= last);
  expect(after).toEqual(Array.from({ length: AFTER_VALUES }, (_, k) => first + k));
}

async function statusOn(http: string, keys: TestKeys, uid: string): Promise<string | undefined> {
  const res = await fetch(`${http}/api/v1/nodes/${uid}`, {
    headers: { authorization: `Bearer ${await keys.token('viewer', 'fault-viewer')}` },
  }).catch(() => undefined);
  if (res === undefined || res.status !== 200) return undefined;
  return ((await res.json()) as { status?: string }).status;
}

async function expectOnline(http: string, keys: TestKeys, uid: string): Promise<void> {
  await waitFor(
    async () => (await statusOn(http, keys, uid)) === 'online',
    `${uid} online at ${http}`,
    HEAL_TIMEOUT_MS,
  );
}

async function viewer(ws: string, keys: TestKeys): Promise<TestPeer> {
  const p = await TestPeer.connect(`${ws}/ws`, await keys.token('viewer', 'fault-viewer'));
  cleanups.push(() => p.close());
  await p.register();
  return p;
}

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolve(port));
    });
  });
}

function gatewayCore(keys: TestKeys, urls: string[], id: string): GatewayCore {
  const core = new GatewayCore({
    protocol: 'test',
    urls,
    token: () => keys.token('gateway', id),
    log: silentLogger(),
    backoffInitialMs: 50,
    backoffMaxMs: 200,
    pingIntervalMs: 200,
  });
  cleanups.push(() => core.stop());
  return core;
}

async function clusterBroker(id: string, keys: TestKeys, natsUrl: string, exits: ExitWatch): Promise<BrokerProcess> {
  const b = await spawnBroker(id, keys.keyFile, [
    '--nats-url',
    natsUrl,
    '--peer-heartbeat-ms',
    '200',
    '--gateway-grace-ms',
    '5000',
  ]);
  guard(b.child);
  exits.watch(`broker ${id}`, b.child);
  cleanups.push(() => b.kill());
  return b;
}

describe('fault injection with real peers (kill -9, restart, mid-stream)', () => {
  it(
    'nats-server killed and restarted: the node stays online on both brokers and every later update arrives',
    async () => {
      const keys = makeKeys();
      const exits = new ExitWatch();
      const nats = await startNatsServer({ jetstream: true });
      cleanups.push(() => nats.stop());
      const [a, b] = await Promise.all([
        clusterBroker('fa', keys, nats.url, exits),
        clusterBroker('fb', keys, nats.url, exits),
      ]);
      const onA = await viewer(a.ws, keys);
      const gw = gatewayCore(keys, [b.ws], 'gw-nats');
      await gw.start();
      await waitFor(() => gw.link.connected, 'gateway connected to broker b');
      gw.nodeNew('seq-nats', { n: 0 });
      const stream = new Stream((i) => gw.nodeUpdate('seq-nats', 'n', i));
      stream.start();
      await waitFor(() => received(onA, 'seq-nats', 'n').length > 5, 'the stream on broker a');

      await nats.crash();
      await nats.restart();
      const from = stream.mark();

      await expectHealed(onA, stream, 'seq-nats', 'n', from);
      await expectOnline(a.http, keys, 'seq-nats');
      await expectOnline(b.http, keys, 'seq-nats');
      // A short bus outage is within the gateway grace period: clients never saw the node go out.
      expect(onA.frames.some((f: Frame) => f.type === 'out' && f.uid === 'seq-nats')).toBe(false);
      exits.check();
    },
    SCENARIO_TIMEOUT_MS,
  );

  it(
    'mosquitto killed and restarted: the MQTT node comes back online and every later update arrives',
    async () => {
      const tb: TestBroker = await startBroker();
      cleanups.push(() => tb.stop());
      const mq = await startMosquitto();
      cleanups.push(() => mq.stop());
      const gw = await startMqttGateway(tb, ['--mqtt-url', mq.url, '--mqtt-reconnect-ms', '50']);
      cleanups.push(() => gw.stop());
      await waitFor(() => metric(gw, 'mqtt_connected') === 1, 'gateway connected to mosquitto');
      const client = await viewer(tb.ws, tb.keys);
      const node = new MqttTestNode(
        { mqttUrl: mq.url, id: 'seq-mqtt', reconnectMs: 50, checkIntervalMs: 500 },
        silentLogger(),
      );
      await node.start();
      cleanups.push(() => node.stop());
      await client.next((f) => f.type === 'new' && f.uid === 'seq-mqtt', 'seq-mqtt announced');
      const stream = new Stream((i) => node.publishValue('temperature', i));
      stream.start();
      await waitFor(() => received(client, 'seq-mqtt', 'temperature').length > 5, 'the stream at the client');

      await mq.crash();
      await mq.restart();
      const from = stream.mark();
      await waitFor(
        () => node.connected && metric(gw, 'mqtt_connected') === 1,
        'node and gateway reconnected',
        HEAL_TIMEOUT_MS,
      );

      await expectHealed(client, stream, 'seq-mqtt', 'temperature', from);
      await expectOnline(tb.http, tb.keys, 'seq-mqtt');
    },
    SCENARIO_TIMEOUT_MS,
  );

  it(
    'a broker killed mid-stream: the gateway moves to the other broker, the node stays online, updates arrive',
    async () => {
      const keys = makeKeys();
      const exits = new ExitWatch();
      const nats = await startNatsServer({ jetstream: true });
      cleanups.push(() => nats.stop());
      const [a, b] = await Promise.all([
        clusterBroker('ka', keys, nats.url, exits),
        clusterBroker('kb', keys, nats.url, exits),
      ]);
      const onA = await viewer(a.ws, keys);
      const gw = gatewayCore(keys, [b.ws, a.ws], 'gw-failover');
      await gw.start();
      await waitFor(() => gw.link.connected, 'gateway connected');
      gw.nodeNew('seq-broker', { n: 0 });
      const stream = new Stream((i) => gw.nodeUpdate('seq-broker', 'n', i));
      stream.start();
      await waitFor(() => received(onA, 'seq-broker', 'n').length > 5, 'the stream on broker a');

      exits.expectExit(b.child);
      await b.kill();
      const from = stream.mark();
      // The killed broker comes back while the gateway heals on the other one.
      const [b2] = await Promise.all([
        clusterBroker('kb', keys, nats.url, exits),
        expectHealed(onA, stream, 'seq-broker', 'n', from),
      ]);
      await expectOnline(a.http, keys, 'seq-broker');
      await expectOnline(b2.http, keys, 'seq-broker');
      exits.check();
    },
    SCENARIO_TIMEOUT_MS,
  );

  it(
    'a WebSocket gateway process killed and restarted: its node reconnects, is online, and updates arrive',
    async () => {
      const tb: TestBroker = await startBroker({ gatewayGraceMs: 5000 });
      cleanups.push(() => tb.stop());
      const exits = new ExitWatch();
      const port = await freePort();
      // /healthz is on the gateway's own HTTP port (docs/gateways/README.md), kept across the restart too.
      const httpPort = await freePort();
      const startGateway = async (): Promise<ChildProcess> => {
        const child = spawn(
          process.execPath,
          [
            BIN,
            'ws-gateway',
            '--port',
            String(port),
            '--host',
            '127.0.0.1',
            '--broker-url',
            tb.ws,
            '--key-file',
            tb.keys.keyFile,
            '--gateway-id',
            'ws-fault',
            '--http-port',
            String(httpPort),
            '--backoff-initial-ms',
            '50',
            // The stream runs at 50 values/s, above the default per-node rate (10/s) that closes a node (1008).
            '--rate-limit',
            '1000',
            '--rate-burst',
            '1000',
            '--log-level',
            'error',
          ],
          { stdio: ['ignore', 'ignore', 'inherit'] },
        );
        guard(child);
        exits.watch('ws-gateway', child);
        cleanups.push(() => {
          child.kill('SIGKILL');
        });
        await waitFor(
          async () => (await fetch(`http://127.0.0.1:${httpPort}/healthz`).catch(() => undefined))?.status === 200,
          'the ws gateway listening',
          HEAL_TIMEOUT_MS,
        );
        return child;
      };
      const first = await startGateway();
      const client = await viewer(tb.ws, tb.keys);
      const node = new WsTestNode({
        gatewayUrl: `ws://127.0.0.1:${port}/node`,
        token: await tb.keys.token('node', 'seq-ws'),
        backoffInitialMs: 50,
        backoffMaxMs: 300,
      });
      await node.start();
      cleanups.push(() => node.stop());
      await node.opened();
      const stream = new Stream((i) => node.report({ temperature: i }));
      stream.start();
      await waitFor(() => received(client, 'seq-ws', 'temperature').length > 5, 'the stream at the client');

      exits.expectExit(first);
      first.kill('SIGKILL');
      await once(first, 'exit');
      const from = stream.mark();
      await startGateway();
      await waitFor(() => node.connected, 'the node reconnected to the new gateway', HEAL_TIMEOUT_MS);

      await expectHealed(client, stream, 'seq-ws', 'temperature', from);
      await expectOnline(tb.http, tb.keys, 'seq-ws');
      exits.check();
    },
    SCENARIO_TIMEOUT_MS,
  );
});
