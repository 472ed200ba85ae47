// The ownership rule and the cluster registry on their own: decide() for every case, and KvOwnership's
// compare-and-set under claims that interleave (on the in-process key-value bucket, which keeps JetStream's
// contract), plus the broker's handling of a registry that is slow or down (claims in flight, store failures).
import { afterEach, describe, expect, it } from 'vitest';
import { type ClaimResult, decide, KvOwnership, LocalOwnership } from '../services/broker/ownership.ts';
import type { Bus, BusHandler, SubscribeOptions } from '../services/bus/bus.ts';
import { type KvBucket, KvUnavailableError, MemoryBus, MemoryKv } from '../services/bus/index.ts';
import { silentLogger } from '../services/common/log.ts';
import type { NodeRecord, NodeStatus } from '../services/protocol/messages.ts';
import { startBroker, type TestBroker } from './helpers/broker.ts';
import { settle } from './helpers/wait.ts';
import { TestPeer } from './helpers/ws-client.ts';

describe('decide: the ownership rule', () => {
  it.each([
    ['an unclaimed uid', undefined, 'gw-a', undefined, undefined, 'create'],
    ['its own uid again', { gateway: 'gw-a' }, 'gw-a', undefined, 'online', 'keep'],
    ['its own uid, now proven', { gateway: 'gw-a' }, 'gw-a', 'token', 'offline', 'upgrade'],
    [
      'its own proven uid, unproven this time',
      { gateway: 'gw-a', proof: 'token' },
      'gw-a',
      undefined,
      'offline',
      'keep',
    ],
    [
      'an unproven uid of another gateway, offline',
      { gateway: 'gw-a' },
      'gw-b',
      undefined,
      'offline',
      { refuse: 'operator-required' },
    ],
    [
      'an unproven uid of another gateway, with a token',
      { gateway: 'gw-a' },
      'gw-b',
      'token',
      'offline',
      { refuse: 'operator-required' },
    ],
    [
      'a proven uid, unproven announcement, offline',
      { gateway: 'gw-a', proof: 'token' },
      'gw-b',
      undefined,
      'offline',
      { refuse: 'proof-required' },
    ],
    [
      'a proven uid, unproven announcement, online',
      { gateway: 'gw-a', proof: 'token' },
      'gw-b',
      undefined,
      'online',
      { refuse: 'proof-required' },
    ],
    [
      'a proven uid, proven announcement, online',
      { gateway: 'gw-a', proof: 'token' },
      'gw-b',
      'token',
      'online',
      { refuse: 'online' },
    ],
    [
      'a proven uid, proven announcement, offline',
      { gateway: 'gw-a', proof: 'token' },
      'gw-b',
      'token',
      'offline',
      'move',
    ],
    [
      'a proven uid not in the table (evicted)',
      { gateway: 'gw-a', proof: 'token' },
      'gw-b',
      'token',
      undefined,
      'move',
    ],
  ] as const)('%s', (_name, current, gateway, proof, status, expected) => {
    expect(decide(current, gateway, proof, status)).toEqual(expected);
  });
});

function cluster(kv: KvBucket, status: Map<string, NodeStatus> = new Map()): KvOwnership {
  return new KvOwnership(
    async () => kv,
    (uid) => status.get(uid),
    silentLogger(),
  );
}

describe('KvOwnership: one decision for the cluster', () => {
  it('gives an unclaimed uid claimed by two registries at once to exactly one of them', async () => {
    const kv = new MemoryKv();
    const [r1, r2] = [cluster(kv), cluster(kv)];
    await Promise.all([r1.start(), r2.start()]);
    for (let i = 0; i < 20; i++) {
      const outcomes = await Promise.all([r1.claim(`u${i}`, 'gw-1', undefined), r2.claim(`u${i}`, 'gw-2', undefined)]);
      expect(outcomes.filter((o) => o.ok)).toHaveLength(1);
      const owner = (await r1.owner(`u${i}`))?.gateway;
      const loser = outcomes.find((o) => !o.ok) as Extract<ClaimResult, { ok: false }>;
      expect(loser.owner).toBe(owner);
    }
  });

  it('moves an offline proven uid to only one of two proven gateways claiming it at once', async () => {
    const kv = new MemoryKv();
    const status = new Map<string, NodeStatus>([['p', 'offline']]);
    const [r1, r2, r3] = [cluster(kv, status), cluster(kv, status), cluster(kv, status)];
    await Promise.all([r1.start(), r2.start(), r3.start()]);
    expect(await r1.claim('p', 'gw-0', 'token')).toMatchObject({ ok: true });
    const [x, y] = await Promise.all([r2.claim('p', 'gw-1', 'token'), r3.claim('p', 'gw-2', 'token')]);
    expect([x.ok, y.ok].filter(Boolean)).toHaveLength(1);
    const winner = x.ok ? x : y;
    const loser = x.ok ? y : x;
    expect(winner).toMatchObject({ moved: { from: 'gw-0' } });
    expect(loser).toMatchObject({ ok: false, why: 'lost-race' });
  });

  it('keeps proof sticky and releases only on the conditions given', async () => {
    const r = cluster(new MemoryKv());
    await r.start();
    await r.claim('n', 'gw-a', 'token');
    expect(await r.claim('n', 'gw-a', undefined)).toEqual({ ok: true, claim: { gateway: 'gw-a', proof: 'token' } });
    await r.release('n', { owner: 'gw-b' });
    await r.release('n', { owner: 'gw-a', unproven: true });
    expect(await r.owner('n')).toEqual({ gateway: 'gw-a', proof: 'token' });
    await r.release('n', { owner: 'gw-a' });
    expect(await r.owner('n')).toBeUndefined();
  });

  it('LocalOwnership with --local-ownership judges a uid it holds no claim for by the node table (a peer node)', () => {
    const table = new Map<string, NodeRecord>([
      ['peer-node', { uid: 'peer-node', gateway: 'gw-on-peer', status: 'offline', lastSeen: 0, resources: {} }],
    ]);
    const local = new LocalOwnership((uid) => table.get(uid)?.status, {
      log: silentLogger(),
      recordOf: (uid) => table.get(uid),
    });
    expect(local.claim('peer-node', 'gw-here', undefined)).toEqual({
      ok: false,
      owner: 'gw-on-peer',
      why: 'operator-required',
    });
    expect(local.claim('fresh', 'gw-here', undefined)).toMatchObject({ ok: true });
  });

  it('LocalOwnership applies the same rule synchronously', () => {
    const local = new LocalOwnership(() => 'offline');
    expect(local.claim('n', 'gw-a', undefined)).toEqual({ ok: true, claim: { gateway: 'gw-a' } });
    expect(local.claim('n', 'gw-b', 'token')).toEqual({ ok: false, owner: 'gw-a', why: 'operator-required' });
  });
});

/** A key-value bucket the test holds: operations wait for `open()`, or fail while `failing`. */
class GatedKv implements KvBucket {
  failing = false;
  private readonly inner = new MemoryKv();
  private waiters: Array<() => void> = [];
  private gateOpen = true;
  close(): void {
    this.gateOpen = false;
  }
  open(): void {
    this.gateOpen = true;
    for (const w of this.waiters.splice(0)) w();
  }
  private async gate(): Promise<void> {
    if (this.failing) throw new KvUnavailableError('test store down');
    if (!this.gateOpen) await new Promise<void>((r) => this.waiters.push(r));
  }
  async get(key: string) {
    await this.gate();
    return this.inner.get(key);
  }
  async create(key: string, value: Uint8Array) {
    await this.gate();
    return this.inner.create(key, value);
  }
  async update(key: string, value: Uint8Array, revision: number) {
    await this.gate();
    return this.inner.update(key, value, revision);
  }
  async delete(key: string, revision?: number) {
    await this.gate();
    return this.inner.delete(key, revision);
  }
}

/** The in-process bus dressed as a cluster bus, so the broker uses the key-value registry over `kv`. */
class ClusterBus implements Bus {
  readonly kind = 'nats' as const;
  private readonly inner = new MemoryBus();
  constructor(private readonly kv: KvBucket) {}
  start = () => this.inner.start();
  stop = () => this.inner.stop();
  flush = () => this.inner.flush();
  publish = (subject: string, data: Uint8Array, reply?: string) => this.inner.publish(subject, data, reply);
  subscribe = (subject: string, handler: BusHandler, options?: SubscribeOptions) =>
    this.inner.subscribe(subject, handler, options);
  request = (subject: string, data: Uint8Array, timeoutMs: number) => this.inner.request(subject, data, timeoutMs);
  requestMany = (subject: string, data: Uint8Array, windowMs: number) =>
    this.inner.requestMany(subject, data, windowMs);
  keyValue = async () => this.kv;
}

describe('broker: claims in flight and a store that fails', () => {
  let tb: TestBroker | undefined;
  let bus: ClusterBus | undefined;
  const peers: TestPeer[] = [];
  afterEach(async () => {
    for (const p of peers.splice(0)) p.close();
    await tb?.stop();
    await bus?.stop();
  });

  async function setup(kv: KvBucket, maxClaimQueue?: number): Promise<TestPeer> {
    bus = new ClusterBus(kv);
    await bus.start();
    tb = await startBroker({ stateSyncMs: 0, maxClaimQueue }, undefined, bus);
    const gw = await TestPeer.connect(`${tb.ws}/gw`, await tb.keys.token('gateway', 'gw-a'));
    peers.push(gw);
    return gw;
  }

  it('holds the frames sent after new while the claim is decided, then forwards them in order', async () => {
    const kv = new GatedKv();
    const gw = await setup(kv);
    kv.close();
    gw.send({ type: 'new', uid: 'n1', data: { v: -1 } });
    for (let i = 0; i < 5; i++) gw.send({ type: 'update', uid: 'n1', endpoint: 'v', data: i });
    gw.send({ type: 'out', uid: 'n1', reason: 'closed' });
    // Negative check: with the store down, nothing about n1 may reach the table.
    await settle(100);
    expect(tb?.broker.table.get('n1')).toBeUndefined();
    const seen: unknown[] = [];
    const c = await TestPeer.connect(`${tb?.ws}/ws`, await tb?.keys.token('viewer'));
    peers.push(c);
    await c.register();
    kv.open();
    await c.next((f) => f.type === 'out' && f.uid === 'n1', 'n1 new, updates, then out at the client');
    for (const f of c.frames) if (f.uid === 'n1') seen.push(f.type === 'update' ? f.data : f.type);
    expect(seen).toEqual(['new', -1, 0, 1, 2, 3, 4, 'out']);
    expect(gw.frames.filter((f) => f.type === 'error')).toEqual([]);
  });

  it('closes the gateway link with 1013 when more frames wait for claims than --max-claim-queue', async () => {
    const kv = new GatedKv();
    const gw = await setup(kv, 3);
    kv.close();
    gw.send({ type: 'new', uid: 'n1' });
    for (let i = 0; i < 5; i++) gw.send({ type: 'update', uid: 'n1', endpoint: 'v', data: i });
    expect((await gw.closed()).code).toBe(1013);
    kv.open();
  });

  it('closes the gateway link with 1013 when the ownership store fails, and counts it', async () => {
    const kv = new GatedKv();
    const gw = await setup(kv);
    kv.failing = true;
    gw.send({ type: 'new', uid: 'n1' });
    expect((await gw.closed()).code).toBe(1013);
    const metrics = await (
      await fetch(`${tb?.http}/metrics`, { headers: { authorization: `Bearer ${await tb?.keys.token('viewer')}` } })
    ).text();
    expect(metrics).toMatch(/mycelium_rejections_total\{reason="ownership-unavailable"\} 1/);
    expect(tb?.broker.table.get('n1')).toBeUndefined();
  });
});
