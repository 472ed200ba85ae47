// The REST API's schemas against a running broker (issue 11, item 4): hostile params are a 400 with the house
// code, never a 500; responses keep every field of their schema; the OpenAPI document is served behind the token
// and lists every route. Also /metrics (item 5): process metrics, event-loop lag and the broker's histograms.
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ErrorCode } from '../services/protocol/errors.ts';
import { startBroker, type TestBroker } from './helpers/broker.ts';
import { type Frame, TestPeer } from './helpers/ws-client.ts';
import { waitFor } from './helpers/wait.ts';

let tb: TestBroker;
const peers: TestPeer[] = [];
const isType = (type: string, uid?: string) => (f: Frame) => f.type === type && (uid === undefined || f.uid === uid);

/** A request with a token of `role`, or none when `role` is null. */
async function get(path: string, role: 'viewer' | 'operator' | null = 'viewer', init: RequestInit = {}) {
  const headers: Record<string, string> = { ...(init.headers as Record<string, string>) };
  if (role !== null) headers.authorization = `Bearer ${await tb.keys.token(role)}`;
  return fetch(`${tb.http}${path}`, { ...init, headers });
}

async function connect(path: '/gw' | '/ws', role: 'gateway' | 'operator', sub?: string): Promise<TestPeer> {
  const p = await TestPeer.connect(`${tb.ws}${path}`, await tb.keys.token(role, sub));
  peers.push(p);
  return p;
}

beforeEach(async () => {
  tb = await startBroker({ writeTimeoutMs: 300 });
});
afterEach(async () => {
  for (const p of peers.splice(0)) p.close();
  await tb.stop();
});

describe('REST schemas', () => {
  it.each([
    ['a control character in the uid', '/api/v1/nodes/a%01b', 'params uid must not contain control characters'],
    ['__proto__ as the uid', '/api/v1/nodes/__proto__', 'params uid must not be "__proto__"'],
    ['constructor as the uid', '/api/v1/nodes/constructor', 'params uid must not be "constructor"'],
    ['a uid of 257 characters', `/api/v1/nodes/${'u'.repeat(257)}`, 'params uid must be at most 256 characters'],
  ])('answers GET with %s by 400 MYC_ERR_BAD_SHAPE and keeps serving', async (_what, path, message) => {
    const res = await get(path);
    expect(res.status).toBe(400);
    expect(await res.json()).toEqual({ error: ErrorCode.BadShape, message });
    expect((await get('/healthz', null)).status).toBe(200);
  });

  it('answers a write to a resource named with a C1 control character or "prototype" by 400, before any lookup', async () => {
    for (const name of ['le%C2%85d', 'prototype']) {
      const res = await get(`/api/v1/nodes/n1/resources/${name}`, 'operator', {
        method: 'PUT',
        headers: { 'content-type': 'application/json' },
        body: '1',
      });
      expect(res.status).toBe(400);
      expect(await res.json()).toMatchObject({
        error: ErrorCode.BadShape,
        message: expect.stringMatching(/^params name /),
      });
    }
    const remove = await get('/api/v1/nodes/%7F', 'operator', { method: 'DELETE' });
    expect(remove.status).toBe(400);
  });

  it('finds a node whose uid is 256 characters of 3-byte UTF-8, percent-encoded (2,304 characters of path)', async () => {
    const uid = '€'.repeat(256);
    const gw = await connect('/gw', 'gateway', 'gw-a');
    gw.send({ type: 'new', uid });
    await waitFor(() => tb.broker.table.get(uid), 'the node');
    const res = await get(`/api/v1/nodes/${encodeURIComponent(uid)}`);
    expect(res.status).toBe(200);
    expect((await res.json()).uid).toBe(uid);
  });

  it('checks the token before the schema: a hostile uid without a token is a 401', async () => {
    const res = await get('/api/v1/nodes/__proto__', null);
    expect(res.status).toBe(401);
    expect(await res.json()).toMatchObject({ error: ErrorCode.Unauthorized });
  });

  it('serializes a node through its response schema without losing a field (nested values, reason, lastSeen)', async () => {
    const gw = await connect('/gw', 'gateway', 'gw-a');
    const value = { a: [1, { b: null }], 'not an id key': true };
    gw.send({ type: 'new', uid: 'n1', protocol: 'ws', data: { conf: value, led: '0' } });
    await waitFor(() => tb.broker.table.get('n1')?.resources.led !== undefined, 'n1 with its resources');
    gw.send({ type: 'out', uid: 'n1', reason: 'closed' });
    await waitFor(() => tb.broker.table.get('n1')?.status === 'offline', 'n1 offline');
    const node = await (await get('/api/v1/nodes/n1')).json();
    expect(node).toEqual({ ...tb.broker.table.get('n1'), resources: { conf: value, led: '0' } });
    expect(node).toMatchObject({ uid: 'n1', gateway: 'gw-a', protocol: 'ws', status: 'offline', reason: 'closed' });
    expect(typeof node.lastSeen).toBe('number');
    const [listed] = await (await get('/api/v1/nodes')).json();
    expect(listed).toEqual(node);
    const [gateway] = await (await get('/api/v1/gateways')).json();
    expect(gateway).toMatchObject({ id: 'gw-a', broker: tb.broker.id, nodes: 0 });
    expect(typeof gateway.connectedAt).toBe('number');
  });
});

describe('GET /api/v1/openapi.json', () => {
  it('needs a token, and describes every route with its parameters and answers', async () => {
    expect((await get('/api/v1/openapi.json', null)).status).toBe(401);
    const res = await get('/api/v1/openapi.json');
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^application\/json/);
    const doc = await res.json();
    expect(doc.openapi).toBe('3.0.3');
    expect(Object.keys(doc.paths).sort()).toEqual([
      '/api/v1/audit', // [console]
      '/api/v1/exec', // [console]
      '/api/v1/gateways',
      '/api/v1/gateways/{id}',
      '/api/v1/gateways/{id}/actions/{name}',
      '/api/v1/invitations',
      '/api/v1/invitations/accept',
      '/api/v1/keys',
      '/api/v1/keys/{id}',
      '/api/v1/login',
      '/api/v1/logout',
      '/api/v1/nodes',
      '/api/v1/nodes/{uid}',
      '/api/v1/nodes/{uid}/events',
      '/api/v1/nodes/{uid}/exec', // [console]
      '/api/v1/nodes/{uid}/resources/{name}',
      '/api/v1/nodes/{uid}/resources/{name}/history',
      '/api/v1/nodes/{uid}/resources/{name}/settings',
      '/api/v1/openapi.json',
      '/api/v1/orgs',
      '/api/v1/pins',
      '/api/v1/pins/{pin}',
      '/api/v1/pins/{pin}/claim',
      '/api/v1/refresh',
      '/api/v1/rules',
      '/api/v1/rules/{name}',
      '/api/v1/rules/{name}/disable',
      '/api/v1/rules/{name}/enable',
      '/api/v1/rules/{name}/source',
      '/api/v1/users',
      '/api/v1/users/{name}/disabled',
      '/api/v1/users/{name}/password', // [accounts-rest]
      '/api/v1/users/{name}/role', // [accounts-rest]
      '/healthz',
      '/metrics',
    ]);
    const put = doc.paths['/api/v1/nodes/{uid}/resources/{name}'].put;
    expect(put.parameters.map((p: { name: string }) => p.name).sort()).toEqual(['name', 'uid']);
    expect(Object.keys(put.responses).sort()).toEqual(['200', '400', '401', '403', '404', '409', '413', '502', '504']);
    expect(doc.paths['/healthz'].get.security).toEqual([]);
  });
});

describe('/metrics', () => {
  async function scrape(): Promise<string> {
    return (await get('/metrics')).text();
  }
  const sample = (text: string, name: string): number => {
    const line = text.split('\n').find((l) => l.startsWith(`${name} `));
    return line === undefined ? Number.NaN : Number(line.slice(name.length + 1));
  };

  it('has process metrics, event-loop lag, the counters, and the message latency and write round-trip histograms', async () => {
    const client = await connect('/ws', 'operator');
    await client.register();
    const gw = await connect('/gw', 'gateway', 'gw-a');
    gw.send({ type: 'new', uid: 'n1', data: { led: '0' } });
    await client.next(isType('update', 'n1'), 'n1 announced');
    gw.send({ type: 'update', uid: 'n1', endpoint: 'led', data: '1' });
    await client.next((f) => f.type === 'update' && f.data === '1', 'the update');
    // A write the gateway never answers: it times out (300 ms) and is timed all the same.
    const write = await get('/api/v1/nodes/n1/resources/led', 'operator', {
      method: 'PUT',
      body: '1',
      headers: { 'content-type': 'text/plain' },
    });
    expect(write.status).toBe(504);

    const text = await scrape();
    expect(text).toMatch(/^# TYPE mycelium_process_cpu_user_seconds_total counter$/m);
    expect(sample(text, 'mycelium_process_resident_memory_bytes')).toBeGreaterThan(0);
    expect(text).toMatch(/^mycelium_nodejs_eventloop_lag_p99_seconds \d/m);
    expect(sample(text, 'mycelium_messages_in_total{from="gateway"}')).toBe(2);
    expect(text).toMatch(/^# TYPE mycelium_message_latency_seconds histogram$/m);
    // `new` publishes after its ownership claim (not timed); its initial value and the update are.
    expect(sample(text, 'mycelium_message_latency_seconds_count')).toBeGreaterThanOrEqual(1);
    expect(sample(text, 'mycelium_message_latency_seconds_bucket{le="+Inf"}')).toBe(
      sample(text, 'mycelium_message_latency_seconds_count'),
    );
    expect(sample(text, 'mycelium_write_duration_seconds_count')).toBe(1);
    expect(sample(text, 'mycelium_write_duration_seconds_sum')).toBeGreaterThanOrEqual(0.29);
    expect(sample(text, 'mycelium_write_duration_seconds_bucket{le="0.25"}')).toBe(0);
    expect(sample(text, 'mycelium_write_duration_seconds_bucket{le="0.5"}')).toBe(1);
  });
});
