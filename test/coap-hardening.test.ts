// Issue 10, CoAP side: each attack is sent over real UDP to a gateway linked to a real broker.
// Findings 2 (identity takeover), 3 (control characters in a beacon), 4 (unbounded tables), 6 (amplification).
import { createSocket, type Socket } from 'node:dgram';
import { Writable } from 'node:stream';
import { defaultTiming, updateTiming } from 'coap';
import { pino } from 'pino';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { CoapGateway, PROBE_BYTES } from '../gateways/coap/gateway.ts';
import type { CoapGatewayConfig } from '../gateways/coap/options.ts';
import { closeUdp } from '../gateways/coap/transport.ts';
import { type Logger, silentLogger } from '../services/common/log.ts';
import { type CoapNodeConfig, CoapTestNode } from '../utils/nodes/coap-node.ts';
import { startBroker, type TestBroker } from './helpers/broker.ts';
import { coapCode, coapGatewayConfig, coapMetric as metric, coapPost, coapTestNodeConfig } from './helpers/coap.ts';
import { settle, waitFor } from './helpers/wait.ts';
import { type Frame, TestPeer } from './helpers/ws-client.ts';

beforeAll(() => updateTiming({ ackTimeout: 0.125, ackRandomFactor: 1, maxRetransmit: 2 }));
afterAll(() => defaultTiming());

let tb: TestBroker;
let client: TestPeer;
let operatorToken: string;
const cleanups: Array<() => Promise<void> | void> = [];

beforeEach(async () => {
  tb = await startBroker();
  cleanups.push(() => tb.stop());
  operatorToken = await tb.keys.token('operator', 'op');
  client = await TestPeer.connect(`${tb.ws}/ws`, operatorToken);
  cleanups.push(() => client.close());
  await client.register();
});

afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()!();
});

async function startGateway(
  overrides: Partial<CoapGatewayConfig> = {},
  log: Logger = silentLogger(),
  id = 'coap-hardening',
) {
  const token = await tb.keys.token('gateway', id);
  const gw = new CoapGateway(coapGatewayConfig(tb.ws, overrides), { log, tokenSource: async () => token });
  await gw.start();
  cleanups.push(() => gw.stop());
  return gw;
}

async function startNode(gw: CoapGateway, overrides: Partial<CoapNodeConfig> = {}): Promise<CoapTestNode> {
  const node = new CoapTestNode(coapTestNodeConfig(gw, overrides), { log: silentLogger() });
  await node.start();
  cleanups.push(() => node.stop());
  return node;
}

/** A raw UDP socket that records every datagram it receives (an attacker, or the victim of a spoofed source). */
async function rawSocket(type: 'udp4' | 'udp6', host: string): Promise<{ socket: Socket; got: Buffer[] }> {
  const socket = createSocket({ type });
  const got: Buffer[] = [];
  socket.on('message', (m) => got.push(m));
  await new Promise<void>((r) => socket.bind(0, host, () => r()));
  cleanups.push(() => closeUdp(socket));
  return { socket, got };
}

const update = (uid: string, endpoint: string, data?: unknown) => (f: Frame) =>
  f.type === 'update' && f.uid === uid && f.endpoint === endpoint && (data === undefined || f.data === data);
const ofType = (type: string, uid: string) => (f: Frame) => f.type === type && f.uid === uid;
const bytes = (list: Buffer[]) => list.reduce((n, b) => n + b.length, 0);

describe('finding 2: a CoAP uid is bound to its first address (trust on first use)', () => {
  it('refuses a beacon for a bound uid from another address with 4.03, counts it, and REST writes still reach the real node', async () => {
    const gw = await startGateway();
    const node = await startNode(gw); // beacons from ::1
    await client.next(update('1234', 'led', '0'), 'legitimate node discovered');
    // The attacker: another source address (IPv4 loopback, seen as ::ffff:127.0.0.1), same uid.
    const attacker = await rawSocket('udp4', '127.0.0.1');
    attacker.socket.send(coapPost('alive', 'alive:1234', 0x0101), gw.coapPort, '127.0.0.1');
    await waitFor(() => attacker.got.length >= 1, 'answer to the attacker');
    expect(coapCode(attacker.got[0])).toBe('4.03');
    expect(metric(gw, 'bad_requests_total{reason="uid-bound-elsewhere"}')).toBe(1);
    expect(gw.nodeEndpoint('1234')?.address).toBe('::1');
    const res = await fetch(`${tb.http}/api/v1/nodes/1234/resources/led`, {
      method: 'PUT',
      headers: { authorization: `Bearer ${operatorToken}`, 'content-type': 'text/plain' },
      body: '1',
    });
    expect(res.status).toBe(200);
    expect(await res.json()).toMatchObject({ result: 'ok' });
    expect(node.writes).toEqual([{ resource: 'led', payload: '1' }]);
    // Nothing but the 4.03 ever reached the attacker.
    expect(attacker.got).toHaveLength(1);
    // A reset from the bound address still works.
    node.beacon('reset');
    await client.next(ofType('reset', '1234'), 'reset from the bound address');
    expect(client.frames.filter(ofType('out', '1234'))).toEqual([]);
  });

  it('with --allow-rebinding a known uid follows a beacon from a new address (the opt-in risk)', async () => {
    const gw = await startGateway({ allowRebinding: true });
    await startNode(gw);
    await client.next(update('1234', 'led', '0'), 'discovered');
    const other = await rawSocket('udp4', '127.0.0.1');
    other.socket.send(coapPost('alive', 'alive:1234', 0x0202), gw.coapPort, '127.0.0.1');
    await waitFor(() => other.got.find((m) => coapCode(m) === '2.04'), '2.04 to the new address');
    expect(gw.nodeEndpoint('1234')?.address).toBe('::ffff:127.0.0.1');
    await client.next(update('1234', 'ip', '127.0.0.1'), 'ip update');
    expect(metric(gw, 'rebinds_total')).toBe(1);
  });
});

describe('finding 2, across gateways: the broker decides, the gateway follows', () => {
  it('a second gateway whose uid the broker refuses as a duplicate drops the node (no replay, no table entry)', async () => {
    const a = await startGateway();
    await startNode(a, { uid: 'dup' });
    await client.next(update('dup', 'led', '0'), 'dup discovered on gateway A');
    const b = await startGateway({}, silentLogger(), 'coap-second');
    const peer = await rawSocket('udp6', '::1');
    peer.socket.send(coapPost('alive', 'alive:dup', 0x0701), b.coapPort, '::1');
    await waitFor(
      () => metric(b, 'refused_by_broker_total{code="MYC_ERR_DUPLICATE_UID"}') === 1,
      'refused by the broker',
    );
    expect(b.nodeCount).toBe(0);
    expect(a.nodeEndpoint('dup')?.port).not.toBe(peer.socket.address().port);
  });
});

describe('finding 3: uids and resource names follow the identifier rule at the CoAP edge', () => {
  it('answers 4.00 to a beacon whose uid holds a control character; no node, the broker link stays up', async () => {
    const lines: Array<{ msg?: string }> = [];
    const sink = new Writable({
      write(chunk: Buffer, _enc, done) {
        for (const l of chunk.toString().split('\n')) if (l) lines.push(JSON.parse(l));
        done();
      },
    });
    const gw = await startGateway({}, pino({ level: 'debug' }, sink));
    const peer = await rawSocket('udp6', '::1');
    peer.socket.send(coapPost('alive', 'alive:x\u0001y', 0x0303), gw.coapPort, '::1');
    await waitFor(() => peer.got.length >= 1, 'answer');
    expect(coapCode(peer.got[0])).toBe('4.00');
    expect(metric(gw, 'bad_requests_total{reason="bad-uid"}')).toBe(1);
    expect(gw.nodeCount).toBe(0);
    // A C1 control character and a prototype name as a /server resource name: 4.00 as well.
    peer.socket.send(coapPost('alive', 'alive:peer', 0x0304), gw.coapPort, '::1');
    await client.next(ofType('new', 'peer'), 'a good node from the same socket');
    peer.socket.send(coapPost('server', 'a\u0085b:1', 0x0305), gw.coapPort, '::1');
    peer.socket.send(coapPost('server', '__proto__:1', 0x0306), gw.coapPort, '::1');
    await waitFor(() => metric(gw, 'bad_requests_total{reason="bad-resource"}') === 2, 'two bad names');
    // The link never dropped: one connection, no reconnect.
    expect(lines.filter((l) => l.msg === 'connected to broker')).toHaveLength(1);
    expect(lines.filter((l) => l.msg === 'broker link closed; reconnecting')).toHaveLength(0);
    expect(client.frames.filter((f) => f.type === 'new').map((f) => f.uid)).toEqual(['peer']);
  });
});

describe('finding 4: bounded tables', () => {
  it('1,000 spoofed fresh-uid beacons from one socket leave at most --new-nodes-per-minute nodes; the rest get 4.29', async () => {
    const perMinute = 20;
    const gw = await startGateway({ newNodesPerMinute: perMinute, requestTimeoutMs: 100 });
    const peer = await rawSocket('udp6', '::1');
    const started = Date.now();
    for (let i = 0; i < 1000; i++) {
      peer.socket.send(coapPost('alive', `alive:spoof-${i}`, i + 1), gw.coapPort, '::1');
      if (i % 100 === 99) await new Promise((r) => setImmediate(r)); // let the gateway drain its socket
    }
    const acks = () => peer.got.filter((m) => ((m[0] >> 4) & 3) === 2); // answers (probes are NON requests)
    await waitFor(() => acks().length >= 1000, '1000 answers', 15_000);
    const answers = acks();
    const refill = Math.ceil(((Date.now() - started) / 60_000) * perMinute);
    expect(gw.nodeCount).toBeLessThanOrEqual(perMinute + refill);
    expect(gw.nodeCount).toBeGreaterThanOrEqual(perMinute);
    expect(answers.filter((m) => coapCode(m) === '4.29').length).toBe(1000 - gw.nodeCount);
    expect(metric(gw, 'bad_requests_total{reason="new-node-rate"}')).toBe(1000 - gw.nodeCount);
    // The broker saw only the accepted ones.
    await waitFor(() => client.frames.filter((f) => f.type === 'new').length === gw.nodeCount, 'news');
  });

  it('refuses a new node beyond --max-nodes with 5.03 and counts it', async () => {
    const gw = await startGateway({ maxNodes: 3 });
    const peer = await rawSocket('udp6', '::1');
    for (let i = 0; i < 5; i++) peer.socket.send(coapPost('alive', `alive:cap-${i}`, 0x400 + i), gw.coapPort, '::1');
    await waitFor(() => peer.got.filter((m) => ((m[0] >> 4) & 3) === 2).length >= 5, 'five answers');
    const codes = peer.got.filter((m) => ((m[0] >> 4) & 3) === 2).map(coapCode);
    expect(codes.filter((c) => c === '5.03')).toHaveLength(2);
    expect(gw.nodeCount).toBe(3);
    expect(metric(gw, 'node_refusals_total{reason="max-nodes"}')).toBe(2);
  });

  it('does not GET more resources than --max-resources-per-node allows', async () => {
    const gw = await startGateway({ maxResourcesPerNode: 4 });
    const node = new CoapTestNode(
      coapTestNodeConfig(gw, { uid: 'many', temperature: true, pressure: true, robot: true, version: true }),
      { log: silentLogger() },
    );
    await node.start();
    cleanups.push(() => node.stop());
    // protocol and ip take two of the four: only two links are read.
    await waitFor(() => metric(gw, 'node_refusals_total{reason="max-resources"}') === 1, 'cap reached');
    const gets = [...node.seen.entries()].filter(([k]) => k.startsWith('GET /') && k !== 'GET /.well-known/core');
    expect(gets.filter(([k]) => k !== 'GET /')).toHaveLength(2);
  });
});

describe('finding 6: no amplification towards an unverified address', () => {
  it('one beacon draws no more bytes than it carried: an empty 2.04 and one 8-byte NON probe, nothing more', async () => {
    // The "victim" whose address a beacon could carry; it never answers. The fallback port is another silent
    // socket, so a second probe would be seen there.
    const fallback = await rawSocket('udp6', '::1');
    const gw = await startGateway({ requestTimeoutMs: 150, fallbackNodePort: fallback.socket.address().port });
    const victim = await rawSocket('udp6', '::1');
    const beacon = coapPost('alive', 'alive:victim-1', 0x0501);
    victim.socket.send(beacon, gw.coapPort, '::1');
    await waitFor(() => victim.got.length >= 2, 'answer and probe');
    await waitFor(() => metric(gw, 'probes_total{result="timeout"}') === 1, 'probe timed out');
    await settle(300); // room for anything else the gateway might send (it must not)
    expect(victim.got).toHaveLength(2);
    const ack = victim.got.find((m) => ((m[0] >> 4) & 3) === 2)!;
    const probe = victim.got.find((m) => ((m[0] >> 4) & 3) === 1)!; // NON
    expect(coapCode(ack)).toBe('2.04');
    expect(ack.length).toBe(4 + 2); // header and token: no payload echo
    expect(coapCode(probe)).toBe('0.01'); // GET
    expect(probe.length).toBe(PROBE_BYTES);
    expect(bytes(victim.got)).toBeLessThanOrEqual(beacon.length);
    expect(fallback.got).toHaveLength(0);
  });

  it('rate-limits discoveries per source address (--discoveries-per-minute)', async () => {
    const gw = await startGateway({ discoveriesPerMinute: 2 });
    const nodes = [];
    for (const uid of ['d1', 'd2', 'd3']) nodes.push(await startNode(gw, { uid }));
    await waitFor(() => metric(gw, 'discovery_total{result="rate-limited"}') >= 1, 'one deferred');
    await waitFor(() => metric(gw, 'discovery_total{result="ok"}') === 2, 'two discovered');
    expect(nodes.filter((n) => n.seen.get('GET /.well-known/core') === 1)).toHaveLength(2);
  });
});
