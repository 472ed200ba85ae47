// Bounded broker tables and clients, from issue 10: --max-nodes, the resources-per-node cap and eviction of
// nodes offline longer than --offline-retention-ms (finding 4); one registration per client, the snapshot
// streamed under --client-buffer-bytes with nothing missed or doubled, and a frame rate limit (finding 5).
import type { Socket } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import type { ClientSession } from '../services/broker/client-session.ts';
import { rawSocket } from '../services/broker/fanout.ts';
import { startBroker, type TestBroker } from './helpers/broker.ts';
import { type Frame, TestPeer } from './helpers/ws-client.ts';
import { settle, waitFor } from './helpers/wait.ts';

const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function broker(overrides: Parameters<typeof startBroker>[0] = {}): Promise<TestBroker> {
  const tb = await startBroker(overrides);
  cleanups.push(() => tb.stop());
  return tb;
}

async function peer(tb: TestBroker, path: '/gw' | '/ws', token: string): Promise<TestPeer> {
  const p = await TestPeer.connect(`${tb.ws}${path}`, token);
  cleanups.push(() => p.close());
  return p;
}

const isType = (type: string, uid?: string) => (f: Frame) => f.type === type && (uid === undefined || f.uid === uid);

async function metrics(tb: TestBroker): Promise<string> {
  const auth = { authorization: `Bearer ${await tb.keys.token('viewer')}` };
  return (await fetch(`${tb.http}/metrics`, { headers: auth })).text();
}

/** The broker's sessions for its web clients (private; read here to measure what the broker buffers). */
function clientSessions(tb: TestBroker): ClientSession[] {
  return [...(tb.broker as unknown as { clients: Set<ClientSession> }).clients];
}

/** A gateway holding `count` nodes, each with one resource of `bytes` characters. */
async function fill(tb: TestBroker, count: number, bytes: number): Promise<TestPeer> {
  const gw = await peer(tb, '/gw', await tb.keys.token('gateway', 'filler'));
  const value = 'v'.repeat(bytes);
  for (let i = 0; i < count; i++) gw.send({ type: 'new', uid: `n${i}`, data: { blob: value } });
  await waitFor(() => tb.broker.table.size >= count, `${count} nodes`, 15_000);
  return gw;
}

describe('finding 4: bounded node table', () => {
  it('evicts 1,000 nodes announced then out once they are offline longer than the retention', async () => {
    const tb = await broker({ offlineRetentionMs: 100, offlineSweepMs: 50 });
    const gw = await peer(tb, '/gw', await tb.keys.token('gateway', 'spoofed'));
    for (let i = 0; i < 1000; i++) gw.send({ type: 'new', uid: `b${i}` });
    await waitFor(() => tb.broker.table.size === 1000, '1,000 nodes');
    gw.send({ type: 'new', uid: 'stays-online' });
    for (let i = 0; i < 1000; i++) gw.send({ type: 'out', uid: `b${i}`, reason: 'timeout' });
    await waitFor(() => tb.broker.table.size === 1, 'the offline nodes to be evicted');
    expect(tb.broker.table.get('stays-online')?.status).toBe('online');
    expect(await metrics(tb)).toMatch(/mycelium_nodes_evicted_total 1000/);
  });

  it('refuses new nodes beyond --max-nodes with MYC_ERR_LIMIT_REACHED, counted, and still accepts known ones', async () => {
    const tb = await broker({ maxNodes: 5 });
    const gw = await peer(tb, '/gw', await tb.keys.token('gateway', 'gw'));
    for (let i = 0; i < 7; i++) gw.send({ type: 'new', uid: `n${i}` });
    await waitFor(() => gw.frames.filter(isType('error')).length === 2, 'two refusals');
    expect(gw.frames.filter(isType('error')).map((f) => [f.code, f.uid])).toEqual([
      ['MYC_ERR_LIMIT_REACHED', 'n5'],
      ['MYC_ERR_LIMIT_REACHED', 'n6'],
    ]);
    expect(tb.broker.table.size).toBe(5);
    gw.send({ type: 'new', uid: 'n0', data: { led: '1' } });
    await waitFor(() => tb.broker.table.get('n0')?.resources.led === '1', 'a known node re-announced');
    expect(gw.closeCode).toBeUndefined();
    expect(await metrics(tb)).toMatch(/mycelium_rejections_total\{reason="max-nodes"\} 2/);
  });

  it('refuses resources beyond --max-resources-per-node in new and in update', async () => {
    const tb = await broker({ maxResourcesPerNode: 3 });
    const gw = await peer(tb, '/gw', await tb.keys.token('gateway', 'gw'));
    gw.send({ type: 'new', uid: 'fat', data: { a: 1, b: 2, c: 3, d: 4 } });
    expect(await gw.next(isType('error', 'fat'), 'refusal of new')).toMatchObject({ code: 'MYC_ERR_LIMIT_REACHED' });
    gw.send({ type: 'new', uid: 'ok', data: { a: 1, b: 2, c: 3 } });
    gw.send({ type: 'update', uid: 'ok', endpoint: 'a', data: 10 });
    gw.send({ type: 'update', uid: 'ok', endpoint: 'd', data: 4 });
    expect(await gw.next(isType('error', 'ok'), 'refusal of update')).toMatchObject({
      code: 'MYC_ERR_LIMIT_REACHED',
    });
    await waitFor(() => tb.broker.table.get('ok')?.resources.a === 10, 'the known resource updated');
    expect(Object.keys(tb.broker.table.get('ok')?.resources ?? {})).toEqual(['a', 'b', 'c']);
    expect(tb.broker.table.get('fat')).toBeUndefined();
    expect(await metrics(tb)).toMatch(/mycelium_rejections_total\{reason="max-resources-per-node"\} 2/);
  });
});

describe('finding 5: bounded clients', () => {
  it('answers a second new with MYC_ERR_ALREADY_REGISTERED and sends one snapshot only', async () => {
    const tb = await broker();
    const gw = await peer(tb, '/gw', await tb.keys.token('gateway', 'gw'));
    gw.send({ type: 'new', uid: 'n1', data: { led: '0' } });
    await waitFor(() => tb.broker.table.get('n1'), 'n1');
    const c = await peer(tb, '/ws', await tb.keys.token('viewer'));
    await c.register();
    c.send({ type: 'new', data: 'client' });
    expect(await c.next(isType('error'), 'error')).toMatchObject({ code: 'MYC_ERR_ALREADY_REGISTERED' });
    // Negative check: a second snapshot must not follow; give it a bounded moment to (not) arrive.
    await settle(100);
    expect(c.frames.filter(isType('synced'))).toHaveLength(1);
    expect(c.frames.filter(isType('new', 'n1'))).toHaveLength(1);
  });

  it('keeps what it buffers for a client that never reads and sends 200 new under --client-buffer-bytes', async () => {
    const limit = 65_536;
    // About 8 MB of snapshot: more than the loopback socket buffers absorb, so the broker must hold back.
    const tb = await broker({ clientBufferBytes: limit });
    const gw = await fill(tb, 2000, 4000);
    const attacker = await peer(tb, '/ws', await tb.keys.token('viewer', 'attacker'));
    (rawSocket(attacker.ws) as Socket).pause(); // never reads again
    for (let i = 0; i < 200; i++) attacker.send({ type: 'new', data: 'client' });
    const session = await waitFor(() => clientSessions(tb)[0], 'the session');
    const socket = rawSocket(session.ws) as Socket;
    await waitFor(() => tb.broker.counters.clientFramesIn.value >= 200, 'the 200 frames handled', 15_000);
    let most = socket.writableLength;
    const until = Date.now() + 500;
    while (Date.now() < until) {
      await settle(10);
      most = Math.max(most, socket.writableLength);
    }
    // At most the limit plus one snapshot frame (~4 KB) plus the small error frames.
    expect(most).toBeLessThan(limit + 64 * 1024);
    expect(session.live).toBe(false); // the snapshot waits for the client to read
    // Live events for a client stalled in its snapshot are queued up to the same limit, then it is dropped.
    for (let i = 0; i < 40; i++) gw.send({ type: 'update', uid: 'n0', endpoint: 'blob', data: 'w'.repeat(4000) });
    await waitFor(async () => /reason="slow-client"\} [1-9]/.test(await metrics(tb)), 'the stalled client dropped');
    // Everyone else is still served.
    const c = await peer(tb, '/ws', await tb.keys.token('viewer'));
    c.send({ type: 'new', data: 'client' });
    await c.next(isType('synced'), 'a fresh client gets its snapshot', 15_000);
  });

  it('streams a large snapshot and the live stream after it with nothing missed or doubled', async () => {
    const tb = await broker({ clientBufferBytes: 16_384 });
    const gw = await fill(tb, 2000, 4000);
    gw.send({ type: 'new', uid: 'seq', data: { n: 0 } });
    await waitFor(() => tb.broker.table.get('seq'), 'seq');
    let n = 0;
    const ticker = setInterval(() => {
      for (let i = 0; i < 5; i++) gw.send({ type: 'update', uid: 'seq', endpoint: 'n', data: ++n });
    }, 2);
    cleanups.push(() => clearInterval(ticker));
    // The client registers while the stream is flowing, so events arrive during its snapshot.
    await waitFor(() => Number(tb.broker.table.get('seq')?.resources.n) >= 10, 'the live stream running');
    const c = await peer(tb, '/ws', await tb.keys.token('viewer'));
    c.send({ type: 'new', data: 'client' });
    await c.next(isType('synced'), 'the snapshot', 15_000);
    const last = n;
    await c.next((f) => f.type === 'update' && f.uid === 'seq' && f.data >= last + 20, 'live updates after it');
    clearInterval(ticker);
    const values = c.frames.filter((f) => f.uid === 'seq' && f.type === 'update').map((f) => f.data as number);
    const synced = c.frames.findIndex(isType('synced'));
    const seqNew = c.frames.findIndex(isType('new', 'seq'));
    expect(seqNew).toBeLessThan(synced);
    // One value from the snapshot, then every later value exactly once, in order.
    for (let i = 1; i < values.length; i++) expect(values[i]).toBe(values[i - 1] + 1);
    expect(values.length).toBeGreaterThan(20);
  });

  it('answers a client flooding frames with MYC_ERR_RATE_LIMITED, then closes it with 1008', async () => {
    const tb = await broker({ clientFramesPerSecond: 10, clientFrameBurst: 20 });
    const c = await peer(tb, '/ws', await tb.keys.token('operator'));
    for (let i = 0; i < 100; i++) c.send({ type: 'update', data: { uid: 'none', endpoint: 'x', payload: i } });
    expect(await c.next(isType('error'), 'rate-limit error')).toMatchObject({ code: 'MYC_ERR_RATE_LIMITED' });
    expect((await c.closed()).code).toBe(1008);
    expect(c.frames.filter((f) => f.code === 'MYC_ERR_RATE_LIMITED')).toHaveLength(1);
    expect(await metrics(tb)).toMatch(/mycelium_rejections_total\{reason="rate-limited"\} [1-9]/);
  });
});
