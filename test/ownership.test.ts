// Node ownership in one broker (issue 10, finding 2, broker side): a uid never moves between gateways without the
// operator, except a token-proven uid whose node reconnects, token-proven, through another gateway while it is
// offline. A proven uid is never taken by an unproven announcement (a CoAP beacon). `DELETE /api/v1/nodes/:uid`
// releases a uid.
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { startBroker, type TestBroker } from './helpers/broker.ts';
import { settle, waitFor } from './helpers/wait.ts';
import { type Frame, TestPeer } from './helpers/ws-client.ts';

let tb: TestBroker;
const peers: TestPeer[] = [];

async function gateway(sub: string): Promise<TestPeer> {
  const p = await TestPeer.connect(`${tb.ws}/gw`, await tb.keys.token('gateway', sub));
  peers.push(p);
  return p;
}

async function client(role: 'viewer' | 'operator' | 'admin' = 'viewer'): Promise<TestPeer> {
  const p = await TestPeer.connect(`${tb.ws}/ws`, await tb.keys.token(role, `${role}-user`));
  peers.push(p);
  await p.register();
  return p;
}

async function remove(uid: string, role: 'viewer' | 'operator' | 'admin' = 'operator'): Promise<Response> {
  return fetch(`${tb.http}/api/v1/nodes/${encodeURIComponent(uid)}`, {
    method: 'DELETE',
    headers: { authorization: `Bearer ${await tb.keys.token(role, `${role}-user`)}` },
  });
}

const isType = (type: string, uid?: string) => (f: Frame) => f.type === type && (uid === undefined || f.uid === uid);
const errorsOf = (p: TestPeer, uid: string) => p.frames.filter((f) => f.type === 'error' && f.uid === uid);
const ownerOf = (uid: string) => tb.broker.table.get(uid)?.gateway;

beforeEach(async () => {
  tb = await startBroker();
});
afterEach(async () => {
  for (const p of peers.splice(0)) p.close();
  await tb.stop();
});

describe('ownership: a token-proven uid', () => {
  it('is refused to an unproven gateway (a CoAP beacon) after its node went offline, and stays with its proven node', async () => {
    const c = await client();
    const ws = await gateway('ws-gw');
    const coap = await gateway('coap-gw');
    ws.send({ type: 'new', uid: 'lamp', protocol: 'WebSocket', data: { led: '0' }, proof: 'token' });
    await c.next(isType('new', 'lamp'), 'lamp online');
    ws.send({ type: 'out', uid: 'lamp', reason: 'closed' });
    await c.next(isType('out', 'lamp'), 'lamp offline');

    // The attack: one unauthenticated announcement of the uid through another gateway.
    coap.send({ type: 'new', uid: 'lamp', protocol: 'CoAP', data: { led: '1' } });
    const err = await coap.next(isType('error', 'lamp'), 'the CoAP gateway refused');
    expect(err.code).toBe('MYC_ERR_DUPLICATE_UID');
    expect(ownerOf('lamp')).toBe('ws-gw');
    expect(tb.broker.table.get('lamp')).toMatchObject({ status: 'offline', proof: 'token' });

    // The real node comes back with its token: accepted, no error.
    ws.send({ type: 'new', uid: 'lamp', protocol: 'WebSocket', data: { led: '0' }, proof: 'token' });
    await c.next(
      (f) => f.type === 'new' && f.uid === 'lamp' && f.status === 'online' && c.frames.indexOf(f) > 3,
      'back',
    );
    await waitFor(() => tb.broker.table.get('lamp')?.status === 'online', 'lamp online again');
    expect(ownerOf('lamp')).toBe('ws-gw');
    expect(errorsOf(ws, 'lamp')).toEqual([]);
    expect(c.frames.filter((f) => f.uid === 'lamp' && f.type === 'new').map((f) => f.gateway)).toEqual([
      'ws-gw',
      'ws-gw',
    ]);
  });

  it('is refused to an unproven gateway while its node is online, too', async () => {
    const ws = await gateway('ws-gw');
    const coap = await gateway('coap-gw');
    ws.send({ type: 'new', uid: 'lamp', proof: 'token' });
    await waitFor(() => ownerOf('lamp'), 'lamp known');
    coap.send({ type: 'new', uid: 'lamp' });
    expect((await coap.next(isType('error', 'lamp'), 'refused')).code).toBe('MYC_ERR_DUPLICATE_UID');
    coap.send({ type: 'update', uid: 'lamp', endpoint: 'led', data: '1' });
    expect((await coap.next((f) => f.code === 'MYC_ERR_NOT_OWNER', 'not owner')).uid).toBe('lamp');
    expect(tb.broker.table.get('lamp')?.resources.led).toBeUndefined();
  });

  it('moves to another gateway when its node is offline and the new announcement is token-proven too', async () => {
    const c = await client();
    const w1 = await gateway('ws-w1');
    const w2 = await gateway('ws-w2');
    w1.send({ type: 'new', uid: 'phone', proof: 'token', data: { battery: 90 } });
    await c.next(isType('new', 'phone'), 'phone on w1');
    w1.send({ type: 'out', uid: 'phone', reason: 'closed' });
    await c.next(isType('out', 'phone'), 'phone offline');
    w2.send({ type: 'new', uid: 'phone', proof: 'token', data: { battery: 89 } });
    await c.next((f) => f.type === 'new' && f.uid === 'phone' && f.gateway === 'ws-w2', 'phone on w2');
    w2.send({ type: 'update', uid: 'phone', endpoint: 'battery', data: 88 });
    await waitFor(() => tb.broker.table.get('phone')?.resources.battery === 88, 'w2 may update it');
    expect(ownerOf('phone')).toBe('ws-w2');
    expect(errorsOf(w2, 'phone')).toEqual([]);
    // The old gateway lost it: its frames for the uid are refused.
    w1.send({ type: 'update', uid: 'phone', endpoint: 'battery', data: 1 });
    await w1.next((f) => f.code === 'MYC_ERR_NOT_OWNER', 'w1 no longer owns it');
    expect(tb.broker.table.get('phone')?.resources.battery).toBe(88);
  });

  it('does not move while its node is online on another gateway, even to a token-proven announcement', async () => {
    const w1 = await gateway('ws-w1');
    const w2 = await gateway('ws-w2');
    w1.send({ type: 'new', uid: 'phone', proof: 'token' });
    await waitFor(() => ownerOf('phone'), 'phone known');
    w2.send({ type: 'new', uid: 'phone', proof: 'token' });
    expect((await w2.next(isType('error', 'phone'), 'refused')).code).toBe('MYC_ERR_DUPLICATE_UID');
    expect(ownerOf('phone')).toBe('ws-w1');
  });
});

describe('ownership: an unproven uid', () => {
  it('does not move to another gateway when its node goes offline: the newcomer is refused', async () => {
    const c = await client();
    const a = await gateway('coap-a');
    const b = await gateway('coap-b');
    a.send({ type: 'new', uid: 'sensor' });
    await c.next(isType('new', 'sensor'), 'sensor on a');
    a.send({ type: 'out', uid: 'sensor', reason: 'timeout' });
    await c.next(isType('out', 'sensor'), 'sensor offline');
    b.send({ type: 'new', uid: 'sensor' });
    expect((await b.next(isType('error', 'sensor'), 'refused')).code).toBe('MYC_ERR_DUPLICATE_UID');
    // A token does not help either: the uid was never proven, so only the operator can hand it over.
    b.send({ type: 'new', uid: 'sensor', proof: 'token' });
    await waitFor(() => errorsOf(b, 'sensor').length === 2, 'second refusal');
    expect(ownerOf('sensor')).toBe('coap-a');
    // Its own gateway gets it back.
    a.send({ type: 'new', uid: 'sensor' });
    await waitFor(() => tb.broker.table.get('sensor')?.status === 'online', 'sensor back on a');
    expect(errorsOf(a, 'sensor')).toEqual([]);
  });
});

describe('ownership: DELETE /api/v1/nodes/:uid', () => {
  it('is refused to a viewer with 403 and answers 404 for an unknown uid', async () => {
    const a = await gateway('coap-a');
    a.send({ type: 'new', uid: 'sensor' });
    await waitFor(() => ownerOf('sensor'), 'sensor known');
    const viewer = await remove('sensor', 'viewer');
    expect(viewer.status).toBe(403);
    expect((await viewer.json()).error).toBe('MYC_ERR_FORBIDDEN');
    expect(ownerOf('sensor')).toBe('coap-a');
    const unknown = await remove('nobody');
    expect(unknown.status).toBe(404);
    expect((await unknown.json()).error).toBe('MYC_ERR_UNKNOWN_NODE');
  });

  it('releases the uid: clients see out/removed, the node is gone, and another gateway may take it', async () => {
    const c = await client();
    const a = await gateway('coap-a');
    const b = await gateway('coap-b');
    a.send({ type: 'new', uid: 'sensor', data: { t: 20 } });
    await c.next(isType('new', 'sensor'), 'sensor on a');
    a.send({ type: 'out', uid: 'sensor', reason: 'timeout' });
    b.send({ type: 'new', uid: 'sensor' });
    await b.next(isType('error', 'sensor'), 'b refused before the release');

    const res = await remove('sensor');
    expect(res.status).toBe(200);
    expect(await res.json()).toMatchObject({ uid: 'sensor', removed: true });
    expect(
      await c.next((f) => f.type === 'out' && f.uid === 'sensor' && f.reason === 'removed', 'removed'),
    ).toBeDefined();
    const gone = await fetch(`${tb.http}/api/v1/nodes/sensor`, {
      headers: { authorization: `Bearer ${await tb.keys.token('viewer')}` },
    });
    expect(gone.status).toBe(404);
    const late = await client();
    expect(late.frames.filter((f) => f.uid === 'sensor')).toEqual([]);

    b.send({ type: 'new', uid: 'sensor', data: { t: 21 } });
    await c.next((f) => f.type === 'new' && f.uid === 'sensor' && f.gateway === 'coap-b', 'sensor on b');
    expect(ownerOf('sensor')).toBe('coap-b');
    expect(tb.broker.table.get('sensor')?.resources).toEqual({ t: 21 });
  });

  it('releases an online node too: its gateway is told MYC_ERR_NODE_REMOVED and may no longer update it', async () => {
    const a = await gateway('ws-a');
    a.send({ type: 'new', uid: 'lamp', proof: 'token' });
    await waitFor(() => ownerOf('lamp'), 'lamp known');
    expect((await remove('lamp', 'admin')).status).toBe(200);
    expect((await a.next(isType('error', 'lamp'), 'told')).code).toBe('MYC_ERR_NODE_REMOVED');
    a.send({ type: 'update', uid: 'lamp', endpoint: 'led', data: '1' });
    await a.next((f) => f.code === 'MYC_ERR_NOT_OWNER', 'no longer the owner');
    // Negative check: the refused update must not bring the removed node back.
    await settle(50);
    expect(tb.broker.table.get('lamp')).toBeUndefined();
  });
});

describe('ownership: eviction after --offline-retention-ms', () => {
  it('releases an evicted unproven uid, but keeps the claim of an evicted proven one (DELETE still releases it)', async () => {
    await tb.stop();
    tb = await startBroker({ offlineRetentionMs: 0, offlineSweepMs: 20 });
    const a = await gateway('gw-a');
    const b = await gateway('gw-b');
    a.send({ type: 'new', uid: 'beacon' });
    a.send({ type: 'new', uid: 'phone', proof: 'token' });
    a.send({ type: 'out', uid: 'beacon', reason: 'timeout' });
    a.send({ type: 'out', uid: 'phone', reason: 'closed' });
    await waitFor(() => tb.broker.counters.evicted.value >= 2 && tb.broker.table.size === 0, 'both evicted');
    b.send({ type: 'new', uid: 'beacon' });
    b.send({ type: 'new', uid: 'phone' });
    expect((await b.next(isType('error', 'phone'), 'phone refused')).code).toBe('MYC_ERR_DUPLICATE_UID');
    expect(ownerOf('beacon')).toBe('gw-b');
    expect(errorsOf(b, 'beacon')).toEqual([]);
    expect((await remove('phone')).status).toBe(200);
    b.send({ type: 'new', uid: 'phone' });
    await waitFor(() => ownerOf('phone') === 'gw-b', 'phone released by DELETE');
  });
});
