// Organisation scoping with two organisations over every path: two real WebSocket gateways, each connected with
// its organisation's gateway API key, one node behind each, and clients of organisation A. A viewer or operator
// of A never sees, reads or writes anything of B (REST lists and pages, writes, removal, history, gateways, the
// /ws snapshot, live frames, /ws writes and gateway actions); a system-wide token sees both.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { addUser, createKey, createOrg } from '../services/accounts/admin.ts';
import { SqliteDriver } from '../services/accounts/driver-sqlite.ts';
import { AccountsService } from '../services/accounts/service.ts';
import { AccountsStore } from '../services/accounts/store.ts';
import { MemoryBus } from '../services/bus/memory-bus.ts';
import { silentLogger } from '../services/common/log.ts';
import { canSee } from '../services/broker/scope.ts';
import { startBroker, type TestBroker } from './helpers/broker.ts';
import { makeKeys } from './helpers/keys.ts';
import { settle } from './helpers/wait.ts';
import { type Frame, TestPeer } from './helpers/ws-client.ts';
import { is, rawNode, startWsGateway } from './helpers/ws-gateway.ts';

const PASSWORD = 'a long enough password';
const dir = mkdtempSync(join(tmpdir(), 'myc-accounts-scope-'));
const keys = makeKeys();
const bus = new MemoryBus();
let store: AccountsStore;
let service: AccountsService;
let tb: TestBroker;
let orgA: string;
const cleanups: Array<() => unknown> = [];
const cleanup = (fn: () => unknown) => cleanups.push(fn);
let nodeA: TestPeer;
let nodeB: TestPeer;

beforeAll(async () => {
  await bus.start();
  store = new AccountsStore(new SqliteDriver(join(dir, 'history.db')));
  await store.open();
  service = new AccountsService(
    { revocationPollMs: 100 },
    {
      bus,
      store: new AccountsStore(new SqliteDriver(join(dir, 'history.db'))),
      privateKey: keys.privateKey,
      log: silentLogger(),
    },
  );
  await service.start();
  orgA = (await createOrg(store, 'lab-a')).id;
  const orgB = (await createOrg(store, 'lab-b')).id;
  await addUser(store, { name: 'va', password: PASSWORD, org: 'lab-a', role: 'viewer' });
  await addUser(store, { name: 'oa', password: PASSWORD, org: 'lab-a', role: 'operator' });
  tb = await startBroker({ sessionSweepMs: 100 }, keys, bus);
  const gwKeyA = (await createKey(store, { orgId: orgA, role: undefined, gateway: 'gw-a' })).text;
  const gwKeyB = (await createKey(store, { orgId: orgB, role: undefined, gateway: 'gw-b' })).text;
  const gwA = await startWsGateway(tb, cleanup, { token: gwKeyA, gatewayId: 'gw-a' });
  const gwB = await startWsGateway(tb, cleanup, { token: gwKeyB, gatewayId: 'gw-b' });
  const admin = await client(await tb.keys.token('admin', 'root'));
  nodeA = await rawNode(gwA, cleanup, await tb.keys.token('node', 'node-a'));
  nodeB = await rawNode(gwB, cleanup, await tb.keys.token('node', 'node-b'));
  nodeA.send({ type: 'update', data: { led: '0' } });
  nodeB.send({ type: 'update', data: { led: '0' } });
  await admin.next(is('update', 'node-a'), 'node-a online');
  await admin.next(is('update', 'node-b'), 'node-b online');
}, 60_000);

afterAll(async () => {
  for (const fn of cleanups.reverse()) await fn();
  await tb?.stop();
  await service?.stop();
  await store?.close();
  await bus.stop();
  rmSync(dir, { recursive: true, force: true });
});

const sockets: TestPeer[] = [];
afterEach(() => {
  for (const s of sockets.splice(0)) s.close();
});

async function client(token: string): Promise<TestPeer> {
  const peer = await TestPeer.connect(`${tb.ws}/ws`, token);
  sockets.push(peer);
  await peer.register();
  return peer;
}

async function signIn(username: string): Promise<string> {
  const res = await fetch(`${tb.http}/api/v1/login`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ username, password: PASSWORD }),
  });
  return ((await res.json()) as { accessToken: string }).accessToken;
}

async function rest(method: string, path: string, token: string, body?: string) {
  const res = await fetch(`${tb.http}${path}`, {
    method,
    headers: { authorization: `Bearer ${token}`, ...(body !== undefined ? { 'content-type': 'text/plain' } : {}) },
    body,
  });
  const text = await res.text();
  return { status: res.status, text };
}

const uids = (frames: Frame[]) => new Set(frames.filter((f) => typeof f.uid === 'string').map((f) => f.uid));

describe('two organisations', { timeout: 60_000 }, () => {
  it('canSee: a system-wide caller sees every org; an org caller only its own, never the unknown', () => {
    expect(canSee({}, 'a')).toBe(true);
    expect(canSee({}, undefined)).toBe(true);
    expect(canSee({ org: 'a' }, 'a')).toBe(true);
    expect(canSee({ org: 'a' }, 'b')).toBe(false);
    expect(canSee({ org: 'a' }, undefined)).toBe(false);
  });

  it('REST: lists, node pages, history and gateway pages of B are invisible to a viewer of A', async () => {
    const va = await signIn('va');
    const nodes = await rest('GET', '/api/v1/nodes', va);
    expect(nodes.status).toBe(200);
    expect(nodes.text).toContain('node-a');
    expect(nodes.text).not.toContain('node-b');
    expect((await rest('GET', '/api/v1/nodes/node-a', va)).status).toBe(200);
    const other = await rest('GET', '/api/v1/nodes/node-b', va);
    expect(other.status).toBe(404);
    expect(other.text).toContain('MYC_ERR_UNKNOWN_NODE');
    // History of B: 404 before the history is asked; A's is the history's answer (no service here: 503).
    expect((await rest('GET', '/api/v1/nodes/node-b/resources/led/history', va)).status).toBe(404);
    expect((await rest('GET', '/api/v1/nodes/node-b/events', va)).status).toBe(404);
    expect((await rest('GET', '/api/v1/nodes/node-a/resources/led/history', va)).status).toBe(503);
    const gateways = await rest('GET', '/api/v1/gateways', va);
    expect(gateways.text).toContain('gw-a');
    expect(gateways.text).not.toContain('gw-b');
    expect((await rest('GET', '/api/v1/gateways/gw-b', va)).status).toBe(404);
    expect((await rest('GET', '/api/v1/gateways/gw-a', va)).status).toBe(200);
    // /metrics: an organisation token gets its organisation's series only (accounts-metrics.test.ts).
    const metrics = await rest('GET', '/metrics', va);
    expect(metrics.status).toBe(200);
    expect(metrics.text).not.toContain('gw-b');
    expect(metrics.text).not.toMatch(/^mycelium_messages_in_total/m);
    expect((await rest('GET', '/metrics', await tb.keys.token('viewer', 'everyone'))).status).toBe(200);
  });

  it("REST: an operator of A cannot write, remove, or act on B's node and gateway", async () => {
    const oa = await signIn('oa');
    expect((await rest('PUT', '/api/v1/nodes/node-b/resources/led', oa, '1')).status).toBe(404);
    expect((await rest('DELETE', '/api/v1/nodes/node-b', oa)).status).toBe(404);
    expect((await rest('POST', '/api/v1/gateways/gw-b/actions/rediscover', oa)).status).toBe(404);
    expect(nodeB.frames.some((f) => f.endpoint === 'led')).toBe(false);
    // Its own node it may write: the node receives the write and acknowledges it.
    const own = rest('PUT', '/api/v1/nodes/node-a/resources/led', oa, '1');
    const write = await nodeA.next((f) => f.endpoint === 'led', 'the write on node-a');
    nodeA.send({ type: 'ack', id: write.id, result: 'ok' });
    expect((await own).status).toBe(200);
  });

  it('/ws: the snapshot and live frames hold only A; writes and actions on B answer as if B did not exist', async () => {
    const va = await client(await signIn('va'));
    const wide = await client(await tb.keys.token('viewer', 'everyone'));
    expect(uids(va.frames).has('node-a')).toBe(true);
    expect(uids(va.frames).has('node-b')).toBe(false);
    expect(va.frames.some((f) => f.type === 'gateway' && f.id === 'gw-b')).toBe(false);
    expect(uids(wide.frames).has('node-b')).toBe(true);
    nodeB.send({ type: 'update', data: { temperature: 21 } });
    nodeA.send({ type: 'update', data: { temperature: 19 } });
    await va.next(
      is('update', 'node-a', (f) => f.endpoint === 'temperature'),
      'live A',
    );
    await wide.next(
      is('update', 'node-b', (f) => f.endpoint === 'temperature'),
      'live B on the system-wide client',
    );
    await settle(200);
    expect(uids(va.frames).has('node-b')).toBe(false);
    const oa = await client(await signIn('oa'));
    oa.send({ type: 'update', id: 'w1', data: { uid: 'node-b', endpoint: 'led', payload: '1' } });
    expect(await oa.next((f) => f.type === 'result' && f.id === 'w1', 'the write result')).toMatchObject({
      result: 'error',
      reason: 'unknown-node',
    });
    oa.send({ type: 'gateway-action', id: 'a1', gateway: 'gw-b', name: 'rediscover' });
    expect(await oa.next((f) => f.type === 'action-result' && f.id === 'a1', 'the action result')).toMatchObject({
      result: 'unreachable',
    });
    // Every frame A's clients got, as text: nothing of B anywhere (but the echo of their own requests about it).
    const all = JSON.stringify([...va.frames, ...oa.frames.filter((f) => f.id !== 'w1' && f.id !== 'a1')]);
    expect(all).not.toContain('node-b');
    expect(all).not.toContain('gw-b');
  });
});
