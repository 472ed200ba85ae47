// The accounts service and two brokers on a real nats-server, each with its own connection, as separate processes
// would be: sign-in through either broker, an API key verified on both, and a revocation that closes a session on
// the other broker with 4401 within 5 s (the service's broadcast crosses NATS).
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { addUser, createKey, createOrg } from '../services/accounts/admin.ts';
import { SqliteDriver } from '../services/accounts/driver-sqlite.ts';
import { AccountsService } from '../services/accounts/service.ts';
import { AccountsStore } from '../services/accounts/store.ts';
import type { Bus } from '../services/bus/bus.ts';
import { createBus } from '../services/bus/index.ts';
import { silentLogger } from '../services/common/log.ts';
import { subjects } from '../services/bus/subjects.ts';
import { WsTestNode } from '../utils/nodes/ws-node.ts';
import { startBroker, type TestBroker } from './helpers/broker.ts';
import { nodeUrl, startWsGateway } from './helpers/ws-gateway.ts';
import { waitFor } from './helpers/wait.ts';
import { makeKeys } from './helpers/keys.ts';
import { type NatsServer, startNatsServer } from './helpers/nats-server.ts';
import { TestPeer } from './helpers/ws-client.ts';

const PASSWORD = 'a long enough password';
const dir = mkdtempSync(join(tmpdir(), 'myc-accounts-nats-'));
const keys = makeKeys();
let nats: NatsServer;
const buses: Bus[] = [];
let service: AccountsService;
let store: AccountsStore;
let brokers: TestBroker[] = [];
let orgA: string;

async function bus(name: string): Promise<Bus> {
  const b = createBus({ natsUrl: nats.url, name });
  await b.start();
  buses.push(b);
  return b;
}

beforeAll(async () => {
  nats = await startNatsServer({ jetstream: true });
  store = new AccountsStore(new SqliteDriver(join(dir, 'history.db')));
  await store.open();
  orgA = (await createOrg(store, 'lab-a')).id;
  await addUser(store, { name: 'alice', password: PASSWORD, org: 'lab-a', role: 'viewer' });
  service = new AccountsService(
    { revocationPollMs: 200 },
    {
      bus: await bus('accounts'),
      store: new AccountsStore(new SqliteDriver(join(dir, 'history.db'))),
      privateKey: keys.privateKey,
      log: silentLogger(),
    },
  );
  await service.start();
  brokers = [
    await startBroker({ sessionSweepMs: 100 }, keys, await bus('broker-1')),
    await startBroker({ sessionSweepMs: 100 }, keys, await bus('broker-2')),
  ];
}, 60_000);

afterAll(async () => {
  for (const b of brokers) await b.stop();
  await service?.stop();
  await store?.close();
  for (const b of buses) await b.stop();
  await nats?.stop();
  rmSync(dir, { recursive: true, force: true });
});

describe('accounts on NATS', { timeout: 60_000 }, () => {
  it('signs in through either broker and verifies a key on both; a revocation reaches the other broker', async () => {
    for (const b of brokers) {
      const res = await fetch(`${b.http}/api/v1/login`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ username: 'alice', password: PASSWORD }),
      });
      expect(res.status).toBe(200);
    }
    const { key, text } = await createKey(store, { orgId: orgA, role: 'viewer' });
    for (const b of brokers) {
      const res = await fetch(`${b.http}/api/v1/nodes`, { headers: { authorization: `Bearer ${text}` } });
      expect(res.status).toBe(200);
    }
    const peer = await TestPeer.connect(`${brokers[1].ws}/ws`, text);
    await peer.register();
    // Revoked through broker 1's REST route by a system-wide admin: the session on broker 2 closes.
    const revoke = await fetch(`${brokers[0].http}/api/v1/keys/${key.id}`, {
      method: 'DELETE',
      headers: { authorization: `Bearer ${await keys.token('admin', 'root')}` },
    });
    expect(revoke.status).toBe(200);
    expect((await peer.closed(5_000)).code).toBe(4401);
    const after = await fetch(`${brokers[1].http}/api/v1/nodes`, { headers: { authorization: `Bearer ${text}` } });
    expect(after.status).toBe(401);
  });

  it('publishes node events under their organisation: a subscriber of one organisation gets only its own', async () => {
    const orgB = (await createOrg(store, 'lab-b')).id;
    const cleanups: (() => unknown)[] = [];
    try {
      const seen: Record<string, Set<string>> = { a: new Set(), b: new Set(), none: new Set() };
      const watcher = await bus('org-watcher');
      // The uids whose events (new, update) each subscription gets.
      const record = (into: Set<string>) => (msg: { data: Uint8Array }) =>
        into.add((JSON.parse(Buffer.from(msg.data).toString()) as { uid: string }).uid);
      watcher.subscribe(subjects.orgEvents(orgA), record(seen.a));
      watcher.subscribe(subjects.orgEvents(orgB), record(seen.b));
      watcher.subscribe(`myc.events._.*`, record(seen.none));
      await watcher.flush();
      for (const [org, gatewayId, uid] of [
        [orgA, 'gw-a', 'sensor-a'],
        [orgB, 'gw-b', 'sensor-b'],
      ] as const) {
        const gatewayKey = (await createKey(store, { orgId: org, role: undefined, gateway: gatewayId })).text;
        const gw = await startWsGateway(brokers[0], (fn) => cleanups.push(fn), { gatewayId, token: gatewayKey });
        const deviceKey = (await createKey(store, { orgId: org, role: undefined, node: uid })).text;
        const node = new WsTestNode({ gatewayUrl: nodeUrl(gw), token: deviceKey });
        cleanups.push(() => node.stop());
        await node.start();
        await node.opened();
        node.report({ temperature: 21 });
      }
      await waitFor(() => seen.a.has('sensor-a') && seen.b.has('sensor-b'), 'each organisation its events');
      expect([...seen.a]).toEqual(['sensor-a']);
      expect([...seen.b]).toEqual(['sensor-b']);
      expect(seen.none.has('sensor-a') || seen.none.has('sensor-b')).toBe(false);
    } finally {
      for (const fn of cleanups.reverse()) await fn();
    }
  });

  it("a keyed device on a broker's operator gateway is its organisation's on the other broker too", async () => {
    // The gateway has no organisation (a `mycelium token` token, as in `mycelium up`): only broker 1 verified the
    // device's key. Broker 2 learns the organisation from the event's subject.
    const cleanups: (() => unknown)[] = [];
    try {
      const gw = await startWsGateway(brokers[0], (fn) => cleanups.push(fn), { gatewayId: 'gw-operator' });
      const deviceKey = (await createKey(store, { orgId: orgA, role: undefined, node: 'sensor-op' })).text;
      const node = new WsTestNode({ gatewayUrl: nodeUrl(gw), token: deviceKey });
      cleanups.push(() => node.stop());
      await node.start();
      await node.opened();
      node.report({ temperature: 22 });
      const viewerA = (await createKey(store, { orgId: orgA, role: 'viewer' })).text;
      const onBroker2 = async () => {
        const res = await fetch(`${brokers[1].http}/api/v1/nodes`, { headers: { authorization: `Bearer ${viewerA}` } });
        return ((await res.json()) as { uid: string }[]).map((n) => n.uid);
      };
      await waitFor(async () => (await onBroker2()).includes('sensor-op'), 'lab-a to see sensor-op on broker 2');
    } finally {
      for (const fn of cleanups.reverse()) await fn();
    }
  });
});
