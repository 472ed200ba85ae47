import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { startBroker, type TestBroker } from './helpers/broker.ts';
import { type Frame, TestPeer } from './helpers/ws-client.ts';
import { settle, waitFor } from './helpers/wait.ts';

let tb: TestBroker;
const peers: TestPeer[] = [];

async function gateway(sub = 'gw-a'): Promise<TestPeer> {
  const p = await TestPeer.connect(`${tb.ws}/gw`, await tb.keys.token('gateway', sub));
  peers.push(p);
  return p;
}

async function client(role: 'viewer' | 'operator' | 'admin' = 'operator'): Promise<TestPeer> {
  const p = await TestPeer.connect(`${tb.ws}/ws`, await tb.keys.token(role, `${role}-user`));
  peers.push(p);
  await p.register();
  return p;
}

const isType = (type: string, uid?: string) => (f: Frame) => f.type === type && (uid === undefined || f.uid === uid);

/** The node as GET /api/v1/nodes/:uid shows it, undefined while the broker does not know it. */
async function restNode(uid: string): Promise<Frame | undefined> {
  const res = await fetch(`${tb.http}/api/v1/nodes/${uid}`, {
    headers: { authorization: `Bearer ${await tb.keys.token('viewer')}` },
  });
  return res.status === 200 ? ((await res.json()) as Frame) : undefined;
}

/**
 * Waits until the broker has applied a gateway's frames: the gateway and client sockets are independent, so a
 * frame sent on one is not known to have arrived when something happens on the other.
 */
function nodeStatus(uid: string, status: 'online' | 'offline'): Promise<Frame> {
  return waitFor(async () => {
    const node = await restNode(uid);
    return node?.status === status ? node : undefined;
  }, `${uid} ${status} at the broker`);
}

beforeEach(async () => {
  tb = await startBroker();
});

/** Replaces this test's broker with one configured otherwise (before any peer connects). */
async function withConfig(overrides: Parameters<typeof startBroker>[0]): Promise<void> {
  await tb.stop();
  tb = await startBroker(overrides);
}
afterEach(async () => {
  for (const p of peers.splice(0)) p.close();
  await tb.stop();
});

describe('broker: authentication before the upgrade', () => {
  it.each([
    ['missing', undefined, '/ws', 'token missing'],
    ['forged', 'eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl', '/ws', 'token'],
  ])('refuses a %s token with 401', async (_name, token, path, reason) => {
    const err = await TestPeer.connect(`${tb.ws}${path}`, token).catch((e) => e);
    expect(err.status).toBe(401);
    expect(err.body).toContain(reason);
  });

  it('refuses an expired token, a token from another key and a wrong role with 401 and the reason', async () => {
    const { makeKeys } = await import('./helpers/keys.ts');
    const other = makeKeys();
    const expired = await tb.keys.token('viewer', 'v', -120);
    expect((await TestPeer.connect(`${tb.ws}/ws`, expired).catch((e) => e)).body).toBe('token expired');
    expect((await TestPeer.connect(`${tb.ws}/ws`, await other.token('viewer')).catch((e) => e)).body).toBe(
      'token bad-signature',
    );
    expect((await TestPeer.connect(`${tb.ws}/gw`, await tb.keys.token('viewer')).catch((e) => e)).body).toBe(
      'token wrong-role',
    );
    expect((await TestPeer.connect(`${tb.ws}/ws`, await tb.keys.token('gateway')).catch((e) => e)).body).toBe(
      'token wrong-role',
    );
    const metrics = await (
      await fetch(`${tb.http}/metrics`, { headers: { authorization: `Bearer ${await tb.keys.token('viewer')}` } })
    ).text();
    expect(metrics).toMatch(/mycelium_rejections_total\{reason="auth-expired"\} 1/);
    expect(metrics).toMatch(/mycelium_rejections_total\{reason="auth-wrong-role"\} 2/);
  });

  it('accepts a browser token as a subprotocol pair and echoes "bearer"', async () => {
    const token = await tb.keys.token('viewer');
    const p = await TestPeer.connect(`${tb.ws}/ws`, undefined, {}, ['bearer', token]);
    peers.push(p);
    expect(p.ws.protocol).toBe('bearer');
    await p.next(isType('hello'), 'hello');
    expect(p.frames[0]).toMatchObject({ type: 'hello', role: 'viewer' });
  });

  it('accepts a token query parameter and anonymous viewers only when enabled', async () => {
    const token = await tb.keys.token('viewer');
    const p = await TestPeer.connect(`${tb.ws}/ws?token=${token}`);
    peers.push(p);
    await p.next(isType('hello'), 'hello');
    expect((await TestPeer.connect(`${tb.ws}/ws`).catch((e) => e)).status).toBe(401);
    const anon = await startBroker({ allowAnonymousViewers: true });
    try {
      const a = await TestPeer.connect(`${anon.ws}/ws`);
      peers.push(a);
      expect((await a.next(isType('hello'), 'hello')).role).toBe('viewer');
    } finally {
      await anon.stop();
    }
  });

  it('answers 404 for an unknown WebSocket path', async () => {
    const err = await TestPeer.connect(`${tb.ws}/nope`, await tb.keys.token('viewer')).catch((e) => e);
    expect(err.status).toBe(404);
  });
});

describe('broker: node state and fan-out', () => {
  it('routes new/update/out/reset from a gateway to registered clients, with reasons', async () => {
    const c = await client();
    const gw = await gateway();
    gw.send({ type: 'new', uid: 'n1', protocol: 'CoAP', data: { name: 'Node 1', led: '0' } });
    expect(await c.next(isType('new', 'n1'), 'new n1')).toMatchObject({
      gateway: 'gw-a',
      protocol: 'CoAP',
      status: 'online',
    });
    await c.next((f) => f.type === 'update' && f.endpoint === 'led' && f.data === '0', 'initial led');
    gw.send({ type: 'update', uid: 'n1', endpoint: 'temperature', data: '23.5°C' });
    await c.next((f) => f.type === 'update' && f.data === '23.5°C', 'temperature');
    gw.send({ type: 'reset', uid: 'n1' });
    await c.next(isType('reset', 'n1'), 'reset');
    gw.send({ type: 'out', uid: 'n1', reason: 'timeout' });
    expect(await c.next(isType('out', 'n1'), 'out')).toMatchObject({ reason: 'timeout' });
  });

  it('gives a new client a full snapshot at once, offline nodes included', async () => {
    const gw = await gateway();
    gw.send({ type: 'new', uid: 'n1', data: { led: '1' } });
    gw.send({ type: 'new', uid: 'n2', data: { temperature: '20°C' } });
    gw.send({ type: 'out', uid: 'n2', reason: 'closed' });
    // The snapshot is taken when the client registers: only once the broker applied all three frames is it whole.
    await nodeStatus('n1', 'online');
    const n2 = await nodeStatus('n2', 'offline');
    const c = await client('viewer');
    const types = c.frames.map((f) => `${f.type}:${f.uid ?? ''}`);
    expect(types).toEqual(['hello:', 'new:n1', 'update:n1', 'new:n2', 'update:n2', 'out:n2', 'synced:']);
    expect(n2).toMatchObject({
      uid: 'n2',
      status: 'offline',
      reason: 'closed',
      resources: { temperature: '20°C' },
    });
  });

  it('sends nothing to a client before it registers (pyaiot semantics)', async () => {
    const raw = await TestPeer.connect(`${tb.ws}/ws`, await tb.keys.token('viewer'));
    peers.push(raw);
    const gw = await gateway();
    gw.send({ type: 'new', uid: 'n1' });
    const c = await client();
    await c.next(isType('new', 'n1'), 'snapshot n1');
    // Negative check: nothing may reach the unregistered client. The registered one already has the node, so
    // anything broadcast to `raw` would have been sent by now; 100 ms bounds the wait for a frame in flight.
    await settle(100);
    expect(raw.frames.map((f) => f.type)).toEqual(['hello']);
  });

  it('refuses a duplicate uid from a second gateway and keeps the first owner', async () => {
    const c = await client();
    const a = await gateway('gw-a');
    const b = await gateway('gw-b');
    a.send({ type: 'new', uid: 'dup' });
    await c.next(isType('new', 'dup'), 'new dup');
    b.send({ type: 'new', uid: 'dup' });
    const err = await b.next(isType('error'), 'duplicate error');
    expect(err.code).toBe('MYC_ERR_DUPLICATE_UID');
    b.send({ type: 'update', uid: 'dup', endpoint: 'led', data: '1' });
    expect((await b.next((f) => f.code === 'MYC_ERR_NOT_OWNER', 'not-owner error')).uid).toBe('dup');
    // Negative check: the refused update must never reach a client. The broker answered b, so it has handled the
    // update; 100 ms bounds the wait for a broadcast in flight on the client's socket.
    await settle(100);
    expect(c.frames.filter((f) => f.uid === 'dup' && f.type !== 'new')).toEqual([]);
    // Offline is not enough for another gateway to take it (test/ownership.test.ts): only an operator's DELETE.
    a.send({ type: 'out', uid: 'dup', reason: 'closed' });
    await c.next(isType('out', 'dup'), 'out dup');
    b.send({ type: 'new', uid: 'dup' });
    await waitFor(() => b.frames.filter((f) => f.code === 'MYC_ERR_DUPLICATE_UID').length === 2, 'refused again');
  });

  it('puts the nodes of a lost gateway out with gateway-lost after the grace period', async () => {
    const c = await client();
    const gw = await gateway();
    gw.send({ type: 'new', uid: 'n1' });
    await c.next(isType('new', 'n1'), 'new');
    gw.close();
    expect(await c.next(isType('out', 'n1'), 'out after grace')).toMatchObject({ reason: 'gateway-lost' });
  });

  it('keeps nodes online without a flap when a gateway reconnects within the grace period', async () => {
    await withConfig({ gatewayGraceMs: 1000 });
    const c = await client();
    const gw = await gateway();
    gw.send({ type: 'new', uid: 'n1', data: { led: '0' } });
    await c.next(isType('update', 'n1'), 'led');
    gw.close();
    const gw2 = await gateway();
    gw2.send({ type: 'new', uid: 'n1', data: { led: '0' } });
    // Negative check: no out/new flap may reach the client. The grace timer would fire at 1000 ms; 1300 ms
    // waits past it with a margin.
    await settle(1300);
    expect(c.frames.filter((f) => f.uid === 'n1').map((f) => f.type)).toEqual(['new', 'update']);
    expect((await restNode('n1'))?.status).toBe('online');
  });

  it('drops a gateway that stops answering pings', async () => {
    const slow = await startBroker({ pingIntervalMs: 50 });
    try {
      const gw = await TestPeer.connect(`${slow.ws}/gw`, await slow.keys.token('gateway', 'mute'), { autoPong: false });
      peers.push(gw);
      await gw.closed(3000);
      const auth = { authorization: `Bearer ${await slow.keys.token('viewer')}` };
      await waitFor(
        async () =>
          ((await (await fetch(`${slow.http}/api/v1/gateways`, { headers: auth })).json()) as []).length === 0,
        'the gateway gone from the broker',
      );
    } finally {
      await slow.stop();
    }
  });
});

describe('broker: writes', () => {
  it('carries a client write to the owning gateway and the result back', async () => {
    const c = await client('operator');
    const gw = await gateway();
    gw.send({ type: 'new', uid: 'n1', data: { led: '0' } });
    await c.next(isType('new', 'n1'), 'new');
    c.send({ type: 'update', id: 'w1', data: { uid: 'n1', endpoint: 'led', payload: '1' } });
    const write = await gw.next(isType('write'), 'write at gateway');
    expect(write).toMatchObject({ uid: 'n1', endpoint: 'led', payload: '1' });
    gw.send({ type: 'result', id: write.id, result: 'ok' });
    expect(await c.next(isType('result'), 'result')).toMatchObject({
      id: 'w1',
      uid: 'n1',
      endpoint: 'led',
      result: 'ok',
    });
  });

  it('refuses writes from viewers, to unknown nodes and to offline nodes', async () => {
    const viewer = await client('viewer');
    const op = await client('operator');
    const gw = await gateway();
    gw.send({ type: 'new', uid: 'n1' });
    gw.send({ type: 'new', uid: 'gone' });
    gw.send({ type: 'out', uid: 'gone', reason: 'closed' });
    await op.next(isType('out', 'gone'), 'gone out');
    viewer.send({ type: 'update', id: 'v1', data: { uid: 'n1', endpoint: 'led', payload: '1' } });
    expect(await viewer.next(isType('error'), 'forbidden')).toMatchObject({ code: 'MYC_ERR_FORBIDDEN', id: 'v1' });
    op.send({ type: 'update', id: 'u1', data: { uid: 'nobody', endpoint: 'led', payload: '1' } });
    expect(await op.next((f) => f.id === 'u1', 'unknown')).toMatchObject({ result: 'error', reason: 'unknown-node' });
    op.send({ type: 'update', id: 'u2', data: { uid: 'gone', endpoint: 'led', payload: '1' } });
    expect(await op.next((f) => f.id === 'u2', 'offline')).toMatchObject({ result: 'error', reason: 'node-offline' });
    expect(viewer.closeCode).toBeUndefined();
  });

  it('answers REST writes: 200 with the result, 404, 409, 504, 403 for viewers, 400 for bad JSON, 401 without token', async () => {
    await withConfig({ writeTimeoutMs: 300 });
    const op = await tb.keys.token('operator');
    const put = (uid: string, body: string, token = op, type = 'application/json') =>
      fetch(`${tb.http}/api/v1/nodes/${uid}/resources/led`, {
        method: 'PUT',
        headers: { authorization: `Bearer ${token}`, 'content-type': type },
        body,
      });
    const gw = await gateway();
    gw.send({ type: 'new', uid: 'n1' });
    gw.send({ type: 'new', uid: 'off' });
    gw.send({ type: 'out', uid: 'off', reason: 'timeout' });
    await nodeStatus('n1', 'online');
    await nodeStatus('off', 'offline');
    const pending = put('n1', '"1"');
    const write = await gw.next(isType('write'), 'write');
    gw.send({ type: 'result', id: write.id, result: 'ok' });
    const ok = await pending;
    expect(ok.status).toBe(200);
    expect(await ok.json()).toMatchObject({ result: 'ok' });
    expect((await put('nobody', '"1"')).status).toBe(404);
    expect((await put('off', '"1"')).status).toBe(409);
    expect((await put('n1', '1', op, 'text/plain')).status).toBe(504);
    expect((await put('n1', '"1"', await tb.keys.token('viewer'))).status).toBe(403);
    expect((await put('n1', '{bad json')).status).toBe(400);
    const noToken = await fetch(`${tb.http}/api/v1/nodes`);
    expect(noToken.status).toBe(401);
  });
});

describe('broker: bad input', () => {
  it.each([
    ['invalid JSON', 'not json', 1003, 'MYC_ERR_BAD_JSON'],
    ['a JSON array', '[1]', 1003, 'MYC_ERR_BAD_SHAPE'],
  ])('closes a gateway that sends %s and keeps serving the others', async (_n, frame, code, counter) => {
    const c = await client();
    const good = await gateway('good');
    const bad = await gateway('bad');
    bad.send(frame);
    expect((await bad.closed()).code).toBe(code);
    good.send({ type: 'new', uid: 'still-fine' });
    await c.next(isType('new', 'still-fine'), 'other gateway still served');
    const metrics = await (
      await fetch(`${tb.http}/metrics`, { headers: { authorization: `Bearer ${await tb.keys.token('viewer')}` } })
    ).text();
    expect(metrics).toContain(`reason="${counter}"`);
  });

  // A bad frame about one node is refused for that node with an error frame naming it; the link stays.
  it.each([
    ['an unknown type', { type: 'explode', uid: 'x' }, 'x', 'MYC_ERR_BAD_TYPE'],
    ['a wrong field type', { type: 'update', uid: 5, endpoint: 'led', data: 1 }, '5', 'MYC_ERR_BAD_SHAPE'],
    ['an out with an unknown reason', { type: 'out', uid: 'x', reason: 'bored' }, 'x', 'MYC_ERR_BAD_SHAPE'],
  ])(
    'answers a gateway that sends %s with an error frame naming the uid and keeps its link',
    async (_n, frame, uid, code) => {
      const c = await client();
      const gw = await gateway('gw');
      gw.send(frame as Frame);
      expect(await gw.next(isType('error'), 'error frame')).toMatchObject({ code, uid });
      gw.send({ type: 'new', uid: 'still-fine' });
      await c.next(isType('new', 'still-fine'), 'the same gateway still served');
      expect(gw.closeCode).toBeUndefined();
      const metrics = await (
        await fetch(`${tb.http}/metrics`, { headers: { authorization: `Bearer ${await tb.keys.token('viewer')}` } })
      ).text();
      expect(metrics).toContain(`reason="${code}"`);
    },
  );

  it('closes a client that sends garbage with 1003 and an oversized frame with 1009', async () => {
    const small = await startBroker({ maxFrameBytes: 1024 });
    try {
      const a = await TestPeer.connect(`${small.ws}/ws`, await small.keys.token('operator'));
      const b = await TestPeer.connect(`${small.ws}/ws`, await small.keys.token('operator'));
      const ok = await TestPeer.connect(`${small.ws}/ws`, await small.keys.token('viewer'));
      peers.push(a, b, ok);
      a.send('{"type":');
      expect((await a.closed()).code).toBe(1003);
      b.send({ type: 'update', data: { uid: 'n', endpoint: 'x', payload: 'y'.repeat(2000) } });
      expect((await b.closed()).code).toBe(1009);
      ok.send({ type: 'new', data: 'client' });
      await ok.next(isType('synced'), 'others still served');
    } finally {
      await small.stop();
    }
  });
});

describe('broker: REST and health', () => {
  it('lists nodes and gateways, serves /healthz without a token and /metrics with one', async () => {
    const gw = await gateway('gw-x');
    gw.send({ type: 'new', uid: 'n1', protocol: 'MQTT', data: { name: 'one' } });
    await nodeStatus('n1', 'online');
    const auth = { authorization: `Bearer ${await tb.keys.token('viewer')}` };
    const nodes = await (await fetch(`${tb.http}/api/v1/nodes`, { headers: auth })).json();
    expect(nodes).toEqual([
      expect.objectContaining({
        uid: 'n1',
        gateway: 'gw-x',
        protocol: 'MQTT',
        status: 'online',
        resources: { name: 'one' },
      }),
    ]);
    const gws = await (await fetch(`${tb.http}/api/v1/gateways`, { headers: auth })).json();
    expect(gws).toEqual([expect.objectContaining({ id: 'gw-x', nodes: 1 })]);
    expect((await fetch(`${tb.http}/api/v1/nodes/zzz`, { headers: auth })).status).toBe(404);
    expect((await (await fetch(`${tb.http}/healthz`)).json()).status).toBe('ok');
    expect((await fetch(`${tb.http}/metrics`)).status).toBe(401);
    const metrics = await (await fetch(`${tb.http}/metrics`, { headers: auth })).text();
    expect(metrics).toMatch(/mycelium_connections\{kind="gateway"\} 1/);
    expect(metrics).toMatch(/mycelium_messages_in_total\{from="gateway"\} 1/);
  });
});
