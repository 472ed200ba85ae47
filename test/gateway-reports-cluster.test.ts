// Gateway reports and actions across brokers (issue 11, item 7): two broker processes on one real nats-server; the
// gateway on broker B is seen, queried and acted on through broker A.
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { GatewayCore } from '../gateways/common/gateway-core.ts';
import { silentLogger } from '../services/common/log.ts';
import { type BrokerProcess, spawnBroker } from './helpers/broker-process.ts';
import { makeKeys } from './helpers/keys.ts';
import { type NatsServer, startNatsServer } from './helpers/nats-server.ts';
import { waitFor } from './helpers/wait.ts';
import { TestPeer } from './helpers/ws-client.ts';

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
    '--gateway-report-min-interval-ms',
    '0',
  ]);
  cleanups.push(() => b.kill());
  return b;
}

describe('gateway reports on several brokers', () => {
  it('a client on broker A sees, queries and acts on a gateway connected to broker B', async () => {
    const a = await broker('a');
    const b = await broker('b');
    const onA = await TestPeer.connect(`${a.ws}/ws`, await keys.token('operator', 'op-a'));
    cleanups.push(() => onA.close());
    await onA.register();

    const rediscovered: (string | undefined)[] = [];
    const gw = new GatewayCore({
      protocol: 'test',
      urls: [b.ws],
      token: () => keys.token('gateway', 'gw-b'),
      log: silentLogger(),
      backoffInitialMs: 50,
      backoffMaxMs: 200,
      statusIntervalMs: 100,
      listen: () => ['test://here'],
    });
    gw.onAction({
      rediscover: (uid) => {
        rediscovered.push(uid);
        return { result: 'ok', detail: { nodes: 1 } };
      },
      forget: () => ({ result: 'error', reason: 'not here' }),
      setLogLevel: () => ({ result: 'ok' }),
    });
    cleanups.push(() => gw.stop());
    await gw.start();
    gw.nodeNew('n1', { led: '0' });
    gw.noteIn(); // a bare core counts no messages itself: an adapter would, for the frame that announced n1

    const report = await onA.next(
      (f) => f.type === 'gateway' && f.id === 'gw-b' && f.status?.messages.in >= 1,
      'the report of the gateway on b, on a',
    );
    expect(report).toMatchObject({ broker: 'b', inventory: { protocol: 'test', listen: ['test://here'] } });
    expect(report).not.toHaveProperty('session');

    const headers = { authorization: `Bearer ${await keys.token('operator', 'op-a')}` };
    const one = await waitFor(async () => {
      const r = await fetch(`${a.http}/api/v1/gateways/gw-b`, { headers });
      const body = r.status === 200 ? await r.json() : undefined;
      return body?.history?.length >= 2 ? body : undefined;
    }, 'a history of reports on a');
    expect(one).toMatchObject({ id: 'gw-b', broker: 'b', inventory: { protocol: 'test' } });

    const res = await fetch(`${a.http}/api/v1/gateways/gw-b/actions/rediscover`, {
      method: 'POST',
      headers: { ...headers, 'content-type': 'application/json' },
      body: JSON.stringify({ uid: 'n1' }),
    });
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ id: 'gw-b', result: 'ok', detail: { nodes: 1 } });
    expect(rediscovered).toEqual(['n1']);

    await gw.stop();
    await onA.next((f) => f.type === 'gateway-gone' && f.id === 'gw-b', 'gateway-gone on a');
    // REST also lists the gateways of peers' heartbeats: b's next one (every 200 ms) no longer names it.
    await waitFor(
      async () => (await fetch(`${a.http}/api/v1/gateways/gw-b`, { headers })).status === 404,
      '404 on a once b no longer lists the gateway',
    );
  });
});
