// Node ownership across brokers (issue 10, finding 11): on NATS, the claim on a uid is decided once for the whole
// cluster (a JetStream key-value bucket with compare-and-set), so two gateways on two brokers announcing one uid at
// the same moment cannot both win. Real broker processes, a real nats-server with JetStream, raw gateway sockets.
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import { connect } from 'nats';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { OWNERSHIP_BUCKET } from '../services/broker/ownership.ts';
import { type BrokerProcess, spawnBroker } from './helpers/broker-process.ts';
import { guard, terminate } from './helpers/child-process.ts';
import { makeKeys } from './helpers/keys.ts';
import { type NatsServer, startNatsServer } from './helpers/nats-server.ts';
import { settle, waitFor } from './helpers/wait.ts';
import { type Frame, TestPeer } from './helpers/ws-client.ts';

const BIN = fileURLToPath(new URL('../bin/mycelium.js', import.meta.url));
/** Uids raced per run: enough that a check that passes by luck of timing would be caught. */
const RACES = 20;
/** A broker process that refuses to start does so once it has tried the bucket: well within this. */
const EXIT_TIMEOUT_MS = 15_000;

const keys = makeKeys();
let nats: NatsServer;
/** Two brokers shared by the cluster tests (each test uses its own gateway ids and uids). */
let a: BrokerProcess;
let b: BrokerProcess;
const cleanups: Array<() => unknown> = [];

beforeAll(async () => {
  nats = await startNatsServer({ jetstream: true });
  // A 2 s store timeout: the bucket-loss test waits out one timed-out read before the bucket is opened again.
  const args = ['--nats-url', nats.url, '--peer-heartbeat-ms', '200', '--ownership-timeout-ms', '2000'];
  [a, b] = await Promise.all([spawnBroker('own-a', keys.keyFile, args), spawnBroker('own-b', keys.keyFile, args)]);
});
afterAll(async () => {
  await Promise.all([a?.kill(), b?.kill()]);
  await nats.stop();
});
afterEach(async () => {
  for (const f of cleanups.splice(0).reverse()) await f();
});

async function gateway(b: BrokerProcess, sub: string): Promise<TestPeer> {
  const p = await TestPeer.connect(`${b.ws}/gw`, await keys.token('gateway', sub));
  cleanups.push(() => p.close());
  return p;
}

async function client(b: BrokerProcess): Promise<TestPeer> {
  const p = await TestPeer.connect(`${b.ws}/ws`, await keys.token('viewer', `viewer-${b.id}`));
  cleanups.push(() => p.close());
  await p.register();
  return p;
}

async function rest(b: BrokerProcess, path: string, method = 'GET', role: 'viewer' | 'operator' = 'viewer') {
  return fetch(`${b.http}/api/v1${path}`, {
    method,
    headers: { authorization: `Bearer ${await keys.token(role, `${role}-user`)}` },
  });
}

async function owners(b: BrokerProcess): Promise<Map<string, string>> {
  const nodes = (await (await rest(b, '/nodes')).json()) as { uid: string; gateway: string }[];
  return new Map(nodes.map((n) => [n.uid, n.gateway]));
}

const duplicates = (p: TestPeer) =>
  new Set(p.frames.filter((f: Frame) => f.code === 'MYC_ERR_DUPLICATE_UID').map((f: Frame) => f.uid as string));

describe('node ownership across brokers (JetStream)', () => {
  it(`gives each of ${RACES} uids announced at the same moment by gateways on two brokers to exactly one of them`, async () => {
    const ga = await gateway(a, 'gw-a');
    const gb = await gateway(b, 'gw-b');
    const uids = Array.from({ length: RACES }, (_, i) => `race-${Date.now()}-${i}`);
    // Both frames of a pair leave in the same tick, so both brokers decide at once.
    for (const uid of uids) {
      ga.send({ type: 'new', uid, data: { v: 'a' } });
      gb.send({ type: 'new', uid, data: { v: 'b' } });
    }
    await waitFor(
      () => duplicates(ga).size + duplicates(gb).size >= RACES,
      'one refusal per uid (before the fix both gateways were accepted)',
      10_000,
    );
    const lostA = duplicates(ga);
    const lostB = duplicates(gb);
    for (const uid of uids) expect(lostA.has(uid) !== lostB.has(uid), `${uid}: exactly one loser`).toBe(true);
    // Both brokers agree, and the owner is the gateway that was not refused.
    const known = async (br: BrokerProcess) => {
      const map = await owners(br);
      return uids.every((u) => map.has(u));
    };
    await waitFor(async () => (await known(a)) && (await known(b)), 'every raced uid in both tables');
    await settle(300); // a late second `new` (the old bug) would flip an owner here
    const [onA, onB] = [await owners(a), await owners(b)];
    for (const uid of uids) {
      const winner = lostA.has(uid) ? 'gw-b' : 'gw-a';
      expect(onA.get(uid), uid).toBe(winner);
      expect(onB.get(uid), uid).toBe(winner);
    }
    // The losers' updates are refused, so no value of theirs reaches a node.
    const sample = uids.find((u) => lostB.has(u));
    if (sample !== undefined) {
      gb.send({ type: 'update', uid: sample, endpoint: 'v', data: 'b2' });
      await gb.next((f) => f.code === 'MYC_ERR_NOT_OWNER' && f.uid === sample, 'loser may not update');
    }
  });

  it('forwards updates sent right after new, in order, while the cluster decides the claim', async () => {
    const onB = await client(b);
    const ga = await gateway(a, 'gw-burst');
    const N = 200;
    ga.send({ type: 'new', uid: 'burst', proof: 'token' });
    for (let i = 0; i < N; i++) ga.send({ type: 'update', uid: 'burst', endpoint: 'n', data: i });
    const values = () => onB.frames.filter((f) => f.type === 'update' && f.uid === 'burst').map((f) => f.data);
    await waitFor(() => values().length >= N, 'every update on broker b', 10_000);
    expect(values()).toEqual(Array.from({ length: N }, (_, i) => i));
    expect(ga.frames.filter((f) => f.type === 'error')).toEqual([]);
    expect(onB.frames.find((f) => f.type === 'new' && f.uid === 'burst')).toMatchObject({ proof: 'token' });
    // Broker b learned the proof from broker a's event: its own table (and REST) carries it.
    expect(await (await rest(b, '/nodes/burst')).json()).toMatchObject({ gateway: 'gw-burst', proof: 'token' });
  });

  it('keeps a proven uid from an unproven gateway on another broker, moves it to a proven one, and releases it on DELETE', async () => {
    const onB = await client(b);
    const ws1 = await gateway(a, 'ws-1');
    const coap = await gateway(b, 'coap-1');
    const ws2 = await gateway(b, 'ws-2');
    ws1.send({ type: 'new', uid: 'lamp', proof: 'token' });
    ws1.send({ type: 'out', uid: 'lamp', reason: 'closed' });
    await onB.next((f) => f.type === 'out' && f.uid === 'lamp', 'lamp offline on b');
    coap.send({ type: 'new', uid: 'lamp' });
    expect((await coap.next((f) => f.uid === 'lamp', 'coap refused')).code).toBe('MYC_ERR_DUPLICATE_UID');
    ws2.send({ type: 'new', uid: 'lamp', proof: 'token' });
    await onB.next((f) => f.type === 'new' && f.uid === 'lamp' && f.gateway === 'ws-2', 'lamp moved to ws-2');
    await waitFor(async () => (await owners(a)).get('lamp') === 'ws-2', 'broker a agrees');

    // An operator on broker a releases it: both tables forget it, its gateway on broker b is told.
    expect((await rest(a, '/nodes/lamp', 'DELETE', 'viewer')).status).toBe(403);
    const res = await rest(a, '/nodes/lamp', 'DELETE', 'operator');
    expect(res.status).toBe(200);
    expect((await ws2.next((f) => f.type === 'error' && f.uid === 'lamp', 'ws-2 told')).code).toBe(
      'MYC_ERR_NODE_REMOVED',
    );
    await onB.next((f) => f.type === 'out' && f.uid === 'lamp' && f.reason === 'removed', 'removed on b');
    await waitFor(async () => (await rest(b, '/nodes/lamp')).status === 404, 'gone from broker b');
    expect((await rest(a, '/nodes/lamp')).status).toBe(404);
    // Free now, even for an unproven gateway.
    coap.send({ type: 'new', uid: 'lamp' });
    await onB.next((f) => f.type === 'new' && f.uid === 'lamp' && f.gateway === 'coap-1', 'coap-1 took it');
  });
});

describe('node ownership when the bucket is lost', () => {
  it('creates the bucket again when JetStream lost it (a server back without its store) and goes on deciding', async () => {
    const nc = await connect({ servers: nats.url });
    cleanups.push(() => nc.close());
    const jsm = await nc.jetstreamManager();
    expect(await jsm.streams.delete(`KV_${OWNERSHIP_BUCKET}`)).toBe(true);
    const g = await gateway(a, 'gw-after-loss');
    g.send({ type: 'new', uid: 'after-loss' });
    await waitFor(async () => (await rest(b, '/nodes/after-loss')).status === 200, 'claimed after the loss', 10_000);
    expect(g.closeCode).toBeUndefined();
    expect(g.frames.filter((f) => f.type === 'error')).toEqual([]);
    // The bucket is back and holds the claim: another gateway is refused.
    const other = await gateway(b, 'gw-other');
    other.send({ type: 'new', uid: 'after-loss' });
    expect((await other.next((f) => f.uid === 'after-loss', 'refused')).code).toBe('MYC_ERR_DUPLICATE_UID');
  });
});

describe('node ownership without JetStream', () => {
  it('refuses to start a broker on a NATS server without JetStream, with a message naming -js and --local-ownership', async () => {
    const plain = await startNatsServer();
    cleanups.push(() => plain.stop());
    const child = spawn(
      process.execPath,
      [BIN, 'broker', '--port', '0', '--host', '127.0.0.1', '--key-file', keys.keyFile, '--nats-url', plain.url],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    );
    guard(child);
    cleanups.push(() => terminate(child, 2000));
    let stderr = '';
    child.stderr?.on('data', (c: Buffer) => {
      stderr += c.toString();
    });
    const timer = setTimeout(() => child.kill('SIGKILL'), EXIT_TIMEOUT_MS);
    const [code] = await once(child, 'exit');
    clearTimeout(timer);
    expect(code).toBe(2);
    expect(stderr).toMatch(/JetStream/);
    expect(stderr).toMatch(/-js/);
    expect(stderr).toMatch(/--local-ownership/);
  });

  it('starts with --local-ownership on a NATS server without JetStream', async () => {
    const plain = await startNatsServer();
    cleanups.push(() => plain.stop());
    const b = await spawnBroker('local-own', keys.keyFile, ['--nats-url', plain.url, '--local-ownership']);
    cleanups.push(() => b.kill());
    const g = await TestPeer.connect(`${b.ws}/gw`, await keys.token('gateway', 'gw-l'));
    cleanups.push(() => g.close());
    g.send({ type: 'new', uid: 'n1' });
    await waitFor(async () => (await rest(b, '/nodes/n1')).status === 200, 'n1 accepted');
  });
});
