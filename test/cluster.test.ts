// Several broker processes sharing one real nats-server.
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { GatewayCore } from '../gateways/common/gateway-core.ts';
import { silentLogger } from '../services/common/log.ts';
import { type BrokerProcess, spawnBroker } from './helpers/broker-process.ts';
import { makeKeys } from './helpers/keys.ts';
import { type NatsServer, startNatsServer } from './helpers/nats-server.ts';
import { settle, waitFor } from './helpers/wait.ts';
import { type Frame, TestPeer } from './helpers/ws-client.ts';

const keys = makeKeys();
let nats: NatsServer;
const cleanups: Array<() => unknown> = [];

beforeAll(async () => {
  nats = await startNatsServer({ jetstream: true });
});
afterAll(async () => {
  await nats.stop();
});
afterEach(async () => {
  for (const f of cleanups.splice(0).reverse()) await f();
});

async function broker(id: string): Promise<BrokerProcess> {
  const b = await spawnBroker(id, keys.keyFile, [
    '--nats-url',
    nats.url,
    '--peer-heartbeat-ms',
    '200',
    '--gateway-grace-ms',
    '2000',
  ]);
  cleanups.push(() => b.kill());
  return b;
}

async function client(b: BrokerProcess, role: 'viewer' | 'operator' = 'operator'): Promise<TestPeer> {
  const p = await TestPeer.connect(`${b.ws}/ws`, await keys.token(role, `${role}-${b.id}`));
  cleanups.push(() => p.close());
  await p.register();
  return p;
}

function gateway(urls: string[], id = 'gw-1'): GatewayCore {
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

const updatesOf = (p: TestPeer, uid: string) => p.frames.filter((f: Frame) => f.type === 'update' && f.uid === uid);

describe('several brokers on one NATS server', () => {
  it('shows a client on broker A the nodes of a gateway on broker B, and carries its writes there', async () => {
    const a = await broker('a');
    const b = await broker('b');
    const onA = await client(a);
    const gw = gateway([b.ws]);
    gw.onWrite(async (uid, endpoint, payload) => {
      gw.nodeUpdate(uid, endpoint, payload);
      return { result: 'ok' };
    });
    await gw.start();
    await waitFor(() => gw.link.connected, 'gateway connected to b');
    gw.nodeNew('n1', { name: 'Node 1', led: '0' });
    expect(await onA.next((f) => f.type === 'new' && f.uid === 'n1', 'n1 on broker a')).toMatchObject({
      gateway: 'gw-1',
    });
    onA.send({ type: 'update', id: 'w1', data: { uid: 'n1', endpoint: 'led', payload: '1' } });
    expect(await onA.next((f) => f.type === 'result' && f.id === 'w1', 'write result on a')).toMatchObject({
      result: 'ok',
    });
    await onA.next((f) => f.type === 'update' && f.endpoint === 'led' && f.data === '1', 'new led value on a');
  });

  it('gives a broker that starts later the full current state at once', async () => {
    const a = await broker('a');
    const gw = gateway([a.ws]);
    await gw.start();
    await waitFor(() => gw.link.connected, 'gateway connected');
    gw.nodeNew('n1', { temperature: '21°C' });
    gw.nodeNew('n2', { led: '1' });
    const onA = await client(a);
    await onA.next((f) => f.type === 'update' && f.uid === 'n2', 'n2 on a');
    const late = await broker('late');
    const onLate = await client(late, 'viewer');
    const snapshot = onLate.frames.map((f) => `${f.type}:${f.uid ?? ''}:${f.data ?? ''}`);
    expect(snapshot).toEqual(expect.arrayContaining(['new:n1:', 'update:n1:21°C', 'new:n2:', 'update:n2:1']));
    const rest = await (
      await fetch(`${late.http}/api/v1/gateways`, {
        headers: { authorization: `Bearer ${await keys.token('viewer')}` },
      })
    ).json();
    expect(rest).toEqual([expect.objectContaining({ id: 'gw-1', broker: 'a' })]);
  });

  it('delivers every update exactly once and in order to clients on every broker', async () => {
    const a = await broker('a');
    const b = await broker('b');
    const onA = await client(a, 'viewer');
    const onB = await client(b, 'viewer');
    const gw = gateway([b.ws]);
    await gw.start();
    await waitFor(() => gw.link.connected, 'gateway connected');
    gw.nodeNew('seq');
    await onA.next((f) => f.type === 'new' && f.uid === 'seq', 'seq on a');
    const N = 2000;
    for (let i = 0; i < N; i++) gw.nodeUpdate('seq', 'n', i);
    for (const p of [onA, onB]) {
      await waitFor(() => updatesOf(p, 'seq').length >= N, 'all updates', 10_000);
      // Negative check for "exactly once": no duplicate may follow the last update; 200 ms bounds the wait.
      await settle(200);
      expect(updatesOf(p, 'seq').map((f) => f.data)).toEqual(Array.from({ length: N }, (_, i) => i));
    }
  });

  it('moves a gateway to another broker when its broker dies, without a lasting out', async () => {
    const a = await broker('a');
    const b = await broker('b');
    const onB = await client(b, 'viewer');
    const gw = gateway([a.ws, b.ws]);
    await gw.start();
    await waitFor(() => gw.link.connected, 'gateway connected to a');
    gw.nodeNew('n1', { v: 0 });
    await onB.next((f) => f.type === 'new' && f.uid === 'n1', 'n1 on b');
    let i = 0;
    const stream = setInterval(() => gw.nodeUpdate('n1', 'v', ++i), 10);
    cleanups.push(() => clearInterval(stream));
    await waitFor(() => updatesOf(onB, 'n1').length > 20, 'stream flowing');
    await a.kill();
    const before = i;
    await waitFor(() => gw.link.connected && gw.link.currentUrl.includes(String(b.port)), 'gateway moved to b', 5000);
    await waitFor(
      () => updatesOf(onB, 'n1').some((f) => (f.data as number) > before + 20),
      'stream flowing through b',
      5000,
    );
    // Negative check: past the dead-peer detection (3 × 200 ms) and the grace period (2 s) the node must still be
    // online, never out; no event marks "the grace period passed without an out", so the wait is a bounded one.
    await settle(2800);
    expect(onB.frames.filter((f) => f.uid === 'n1' && f.type === 'out')).toEqual([]);
    const node = await (
      await fetch(`${b.http}/api/v1/nodes/n1`, { headers: { authorization: `Bearer ${await keys.token('viewer')}` } })
    ).json();
    expect(node.status).toBe('online');
  });

  it('puts the nodes out with gateway-lost when a broker dies with its gateway', async () => {
    const a = await broker('a');
    const b = await broker('b');
    const onB = await client(b, 'viewer');
    const gw = gateway([a.ws]);
    await gw.start();
    await waitFor(() => gw.link.connected, 'gateway connected to a');
    gw.nodeNew('n1');
    await onB.next((f) => f.type === 'new' && f.uid === 'n1', 'n1 on b');
    await gw.stop();
    await a.kill();
    const out = await onB.next((f) => f.type === 'out' && f.uid === 'n1', 'out on b', 10_000);
    expect(out.reason).toBe('gateway-lost');
    // Negative check: exactly one out reaches the client; 300 ms bounds the wait for a second one.
    await settle(300);
    expect(onB.frames.filter((f) => f.type === 'out' && f.uid === 'n1')).toHaveLength(1);
  });

  it('exits 0 on SIGTERM', async () => {
    const a = await broker('a');
    expect(await a.stop()).toBe(0);
  });
});
