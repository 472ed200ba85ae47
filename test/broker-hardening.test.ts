// Attacks on the broker from issue 10, each against a running broker: deep JSON (finding 1), one bad per-node
// frame from a gateway (finding 3), `__proto__` as a resource name (finding 9), handshakes that never finish and
// too many connections from one address (finding 10), a gateway token whose subject is not an identifier (12).
import { connect, type Socket } from 'node:net';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { startBroker, type TestBroker } from './helpers/broker.ts';
import { type Frame, TestPeer } from './helpers/ws-client.ts';
import { settle, waitFor } from './helpers/wait.ts';

let tb: TestBroker;
const peers: TestPeer[] = [];
const sockets: Socket[] = [];

const isType = (type: string, uid?: string) => (f: Frame) => f.type === type && (uid === undefined || f.uid === uid);
const deep = (levels: number) => `${'['.repeat(levels)}1${']'.repeat(levels)}`;

async function gateway(b: TestBroker = tb, sub = 'gw-a'): Promise<TestPeer> {
  const p = await TestPeer.connect(`${b.ws}/gw`, await b.keys.token('gateway', sub));
  peers.push(p);
  return p;
}

async function client(b: TestBroker = tb, role: 'viewer' | 'operator' = 'operator'): Promise<TestPeer> {
  const p = await TestPeer.connect(`${b.ws}/ws`, await b.keys.token(role, `${role}-user`));
  peers.push(p);
  await p.register();
  return p;
}

async function healthy(b: TestBroker = tb): Promise<void> {
  expect((await (await fetch(`${b.http}/healthz`)).json()).status).toBe('ok');
}

beforeEach(async () => {
  tb = await startBroker();
});
afterEach(async () => {
  for (const p of peers.splice(0)) p.close();
  for (const s of sockets.splice(0)) s.destroy();
  await tb.stop();
});

describe('finding 1: deep JSON never crashes the broker', () => {
  it('closes a /ws client whose write payload nests 6,000 levels with 1003 and keeps serving', async () => {
    const gw = await gateway();
    gw.send({ type: 'new', uid: 'n1', data: { led: '0' } });
    const op = await TestPeer.connect(`${tb.ws}/ws`, await tb.keys.token('operator'));
    peers.push(op);
    op.send(`{"type":"update","data":{"uid":"n1","endpoint":"led","payload":${deep(6000)}}}`);
    expect((await op.closed()).code).toBe(1003);
    await healthy();
    const c = await client();
    await c.next(isType('new', 'n1'), 'a later client is served');
  });

  it('answers a REST write whose body nests 6,000 levels with 400 MYC_ERR_TOO_DEEP, and a body over the limit with 413', async () => {
    const gw = await gateway();
    gw.send({ type: 'new', uid: 'n1', data: { led: '0' } });
    await waitFor(() => tb.broker.table.get('n1'), 'n1 known');
    const headers = {
      authorization: `Bearer ${await tb.keys.token('operator')}`,
      'content-type': 'application/json',
    };
    const url = `${tb.http}/api/v1/nodes/n1/resources/led`;
    const tooDeep = await fetch(url, { method: 'PUT', headers, body: deep(6000) });
    expect(tooDeep.status).toBe(400);
    expect((await tooDeep.json()).error).toBe('MYC_ERR_TOO_DEEP');
    const tooBig = await fetch(url, { method: 'PUT', headers, body: JSON.stringify('x'.repeat(70_000)) });
    expect(tooBig.status).toBe(413);
    const bad = await fetch(url, { method: 'PUT', headers, body: '{"a":' });
    expect(bad.status).toBe(400);
    expect((await bad.json()).error).toBe('MYC_ERR_BAD_JSON');
    await healthy();
  });

  it('refuses a gateway update nesting 6,000 levels, and the next client snapshot still works', async () => {
    const gw = await gateway();
    gw.send({ type: 'new', uid: 'n1', data: { led: '0' } });
    await waitFor(() => tb.broker.table.get('n1'), 'n1 known');
    gw.send(`{"type":"update","uid":"n1","endpoint":"deep","data":${deep(6000)}}`);
    await waitFor(() => gw.closeCode !== undefined || gw.frames.some(isType('error')), 'the refusal');
    await healthy();
    const c = await client();
    expect(c.frames.filter((f) => f.uid === 'n1').map((f) => `${f.type}:${f.endpoint ?? ''}`)).toEqual([
      'new:',
      'update:led',
    ]);
  });
});

describe('finding 3: one bad per-node frame does not cut the gateway off', () => {
  it('answers new with uid "x\\u0001y" with an error frame naming the uid and accepts the next valid frame', async () => {
    const c = await client();
    const gw = await gateway();
    gw.send('{"type":"new","uid":"x\\u0001y"}');
    const err = await gw.next(isType('error'), 'error frame');
    expect(err).toMatchObject({ code: 'MYC_ERR_BAD_SHAPE', uid: 'x\u0001y' });
    gw.send({ type: 'new', uid: 'good' });
    await c.next(isType('new', 'good'), 'the next valid frame is accepted');
    expect(gw.closeCode).toBeUndefined();
  });

  it('bounds the uid it echoes and still closes with 1003 on a frame that is not a JSON object', async () => {
    const gw = await gateway();
    gw.send({ type: 'update', uid: `${'u'.repeat(5000)}`, endpoint: 'x', data: 1 });
    const err = await gw.next(isType('error'), 'error frame');
    expect(err.uid.length).toBeLessThanOrEqual(256);
    gw.send({ type: 'out', uid: { not: 'a string' }, reason: 'closed' });
    expect((await gw.next((f) => f.type === 'error' && f !== err, 'second error')).uid).toBe('{"not":"a string"}');
    gw.send('[1,2,3]');
    expect((await gw.closed()).code).toBe(1003);
  });
});

describe('finding 9: __proto__ as a resource name', () => {
  it('refuses update endpoint __proto__ and the snapshot shows no phantom resources', async () => {
    const gw = await gateway();
    gw.send({ type: 'new', uid: 'n1', data: { led: '0' } });
    await waitFor(() => tb.broker.table.get('n1'), 'n1 known');
    gw.send('{"type":"update","uid":"n1","endpoint":"__proto__","data":{"phantom":"boo"}}');
    await waitFor(() => gw.closeCode !== undefined || gw.frames.some(isType('error')), 'the refusal');
    const c = await client();
    const updates = c.frames.filter(isType('update', 'n1')).map((f) => f.endpoint);
    expect(updates).toEqual(['led']);
    const node = await (
      await fetch(`${tb.http}/api/v1/nodes/n1`, {
        headers: { authorization: `Bearer ${await tb.keys.token('viewer')}` },
      })
    ).json();
    expect(node.resources).toEqual({ led: '0' });
  });
});

describe('finding 10: handshakes and connections per address', () => {
  it('closes a TCP connection that sends nothing within the handshake timeout', async () => {
    const b = await startBroker({ handshakeTimeoutMs: 300 });
    try {
      const s = connect(b.broker.port, '127.0.0.1');
      sockets.push(s);
      // Consume what the broker sends (a 408 when the header deadline fires first): an unread response would
      // hold back the EOF behind it and the socket would never close.
      s.resume();
      const started = Date.now();
      await new Promise<void>((resolve) => s.once('close', () => resolve()));
      expect(Date.now() - started).toBeLessThan(5000);
    } finally {
      await b.stop();
    }
  });

  it('closes a connection that dribbles an unfinished upgrade request within the handshake timeout', async () => {
    const b = await startBroker({ handshakeTimeoutMs: 300 });
    try {
      const s = connect(b.broker.port, '127.0.0.1');
      sockets.push(s);
      // The broker closing the socket while a header is in flight surfaces here as EPIPE or ECONNRESET: that
      // close is what the test waits for, not a failure.
      s.on('error', () => undefined);
      s.resume();
      s.write('GET /ws HTTP/1.1\r\nHost: x\r\n');
      const timer = setInterval(() => s.writable && s.write('X-Slow: 1\r\n'), 100);
      try {
        await new Promise<void>((resolve) => s.once('close', () => resolve()));
      } finally {
        clearInterval(timer);
      }
    } finally {
      await b.stop();
    }
  });

  it('refuses the connection beyond --max-connections-per-address with 429 and counts it', async () => {
    const b = await startBroker({ maxConnectionsPerAddress: 3 });
    try {
      for (let i = 0; i < 3; i++) peers.push(await TestPeer.connect(`${b.ws}/ws`, await b.keys.token('viewer')));
      const err = await TestPeer.connect(`${b.ws}/ws`, await b.keys.token('viewer')).catch((e) => e);
      expect(err.status).toBe(429);
      // A connection slot is given back when its socket closes.
      peers.shift()?.close();
      await waitFor(
        () =>
          TestPeer.connect(`${b.ws}/ws`, undefined)
            .then(() => false)
            .catch((e) => e.status === 401),
        'a slot to free up',
      );
      const metrics = await (
        await fetch(`${b.http}/metrics`, { headers: { authorization: `Bearer ${await b.keys.token('viewer')}` } })
      ).text();
      expect(metrics).toMatch(/mycelium_rejections_total\{reason="too-many-connections"\} [1-9]/);
    } finally {
      await b.stop();
    }
  });
});

describe('finding 12: the gateway token subject', () => {
  it.each([
    ['a control character', 'gw\u0001x'],
    ['__proto__', '__proto__'],
    ['257 characters', 'g'.repeat(257)],
  ])('refuses a gateway token whose sub has %s with 400 and the reason', async (_name, sub) => {
    const err = await TestPeer.connect(`${tb.ws}/gw`, await tb.keys.token('gateway', sub)).catch((e) => e);
    expect(err.status).toBe(400);
    expect(err.body).toMatch(/^gateway id \(token sub\) /);
    // Negative check: no gateway session may appear after the refusal.
    await settle(20);
    expect(tb.broker.gateways.size).toBe(0);
  });
});
