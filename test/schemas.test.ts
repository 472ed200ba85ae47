// One source for frame types and checks (issue 11, item 4): the TypeBox schemas of services/protocol/messages.ts
// as the server (compiled) and the dashboard (interpreted) check them, and the fields that had drifted between
// the hand-written checks and the types (out reasons, lastSeen, new.data keys), each refused by a running broker.
import fc from 'fast-check';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { MemoryBus } from '../services/bus/memory-bus.ts';
import { subjects } from '../services/bus/subjects.ts';
import { parseBrokerToClientFrame as parseInBrowser } from '../services/protocol/dashboard-frames.ts';
import { ErrorCode } from '../services/protocol/errors.ts';
import { parseBrokerToClientFrame, parseGatewayFrame } from '../services/protocol/frames.ts';
import { IDENTIFIER_PATTERN } from '../services/protocol/messages.ts';
import { isIdentifier } from '../services/protocol/schema.ts';
import { anyName, anyText, HOSTILE_NAMES, mutatedFrame } from '../utils/fuzz/arbitraries.ts';
import { propertyRuns } from '../utils/fuzz/budget.ts';
import { startBroker, type TestBroker } from './helpers/broker.ts';
import { type Frame, TestPeer } from './helpers/ws-client.ts';
import { waitFor } from './helpers/wait.ts';

describe('the schemas', () => {
  it('IDENTIFIER_PATTERN accepts exactly what isIdentifier accepts', () => {
    const pattern = new RegExp(IDENTIFIER_PATTERN);
    for (const name of HOSTILE_NAMES)
      expect(pattern.test(name), JSON.stringify(name)).toBe(isIdentifier(name) === undefined);
    fc.assert(
      fc.property(fc.oneof(anyName(), anyText(300)), (name) => {
        expect(pattern.test(name)).toBe(isIdentifier(name) === undefined);
      }),
      { numRuns: propertyRuns() },
    );
  });

  it('the compiled (server) and interpreted (dashboard) checks of broker frames agree', () => {
    const seeds = [
      { type: 'hello', client: 'c', role: 'viewer', broker: 'b' },
      { type: 'new', uid: 'n1', gateway: 'g', status: 'online', lastSeen: 1, proof: 'token' },
      { type: 'update', uid: 'n1', endpoint: 'led', data: 1 },
      { type: 'out', uid: 'n1', reason: 'timeout', lastSeen: 2 },
      { type: 'reset', uid: 'n1' },
      { type: 'result', id: 'w1', uid: 'n1', endpoint: 'led', result: 'ok' },
      { type: 'synced', nodes: 3 },
      { type: 'error', code: 'MYC_ERR_FORBIDDEN', reason: 'no' },
    ];
    for (const seed of seeds) expect(parseBrokerToClientFrame(JSON.stringify(seed)).ok, seed.type).toBe(true);
    fc.assert(
      fc.property(mutatedFrame(seeds), (frame) => {
        const text = JSON.stringify(frame);
        const [page, server] = [parseInBrowser(text), parseBrokerToClientFrame(text)];
        // The page's reason leaves out the field (dashboard-frames.ts); the verdict and the code are the same.
        expect(page.ok).toBe(server.ok);
        if (!page.ok && !server.ok) expect([page.code, page.close]).toEqual([server.code, server.close]);
      }),
      { numRuns: propertyRuns() },
    );
  });

  it.each([
    [
      'out reason not one of OUT_REASONS',
      { type: 'out', uid: 'n', reason: 'exploded', lastSeen: 1 },
      'out: reason must be one of timeout',
    ],
    ['out without lastSeen', { type: 'out', uid: 'n', reason: 'closed' }, 'out: lastSeen is required'],
    [
      'new with lastSeen as text',
      { type: 'new', uid: 'n', gateway: 'g', status: 'online', lastSeen: 'now' },
      'new: lastSeen',
    ],
    [
      'hello with an unknown role',
      { type: 'hello', client: 'c', role: 'root', broker: 'b' },
      'hello: role must be one of',
    ],
  ])('a broker frame with %s is refused with MYC_ERR_BAD_SHAPE, by server and page alike', (_what, frame, reason) => {
    const result = parseBrokerToClientFrame(JSON.stringify(frame));
    expect(result).toMatchObject({ ok: false, code: ErrorCode.BadShape, close: 1003 });
    if (!result.ok) expect(result.reason).toContain(reason);
    expect(parseInBrowser(JSON.stringify(frame))).toEqual({
      ok: false,
      code: ErrorCode.BadShape,
      close: 1003,
      reason: `${frame.type}: does not match its schema`,
    });
  });

  it('names the broken rule: a control character in a uid, a reserved name as a data key', () => {
    expect(parseGatewayFrame('{"type":"update","uid":"a\\u0001b","endpoint":"x","data":1}')).toMatchObject({
      reason: 'update: uid must not contain control characters',
    });
    expect(parseGatewayFrame('{"type":"new","uid":"n","data":{"__proto__":1}}')).toMatchObject({
      reason: 'new: data key "__proto__" must not be "__proto__"',
    });
    expect(parseGatewayFrame('{"type":"update","uid":"n","endpoint":"x"}')).toMatchObject({
      reason: 'update: data is required',
    });
  });
});

describe('drifted fields against a running broker', () => {
  let tb: TestBroker;
  let bus: MemoryBus;
  const peers: TestPeer[] = [];
  const isType = (type: string, uid?: string) => (f: Frame) => f.type === type && (uid === undefined || f.uid === uid);

  async function gateway(): Promise<TestPeer> {
    const p = await TestPeer.connect(`${tb.ws}/gw`, await tb.keys.token('gateway', 'gw-a'));
    peers.push(p);
    return p;
  }

  async function rejections(reason: string): Promise<number> {
    const text = await (
      await fetch(`${tb.http}/metrics`, { headers: { authorization: `Bearer ${await tb.keys.token('viewer')}` } })
    ).text();
    const line = text.split('\n').find((l) => l.startsWith(`mycelium_rejections_total{reason="${reason}"} `));
    return line === undefined ? 0 : Number(line.split(' ')[1]);
  }

  /** An event as a peer broker would publish it on the bus. */
  function fromPeer(event: object): void {
    bus.publish(subjects.events('peer-broker'), Buffer.from(JSON.stringify(event)));
  }

  beforeEach(async () => {
    bus = new MemoryBus();
    await bus.start();
    tb = await startBroker({}, undefined, bus);
  });
  afterEach(async () => {
    for (const p of peers.splice(0)) p.close();
    await tb.stop();
    await bus.stop();
  });

  it('refuses a gateway out whose reason is not one of OUT_REASONS with an error frame; the node stays online', async () => {
    const gw = await gateway();
    gw.send({ type: 'new', uid: 'n1' });
    await waitFor(() => tb.broker.table.get('n1'), 'n1 known');
    gw.send({ type: 'out', uid: 'n1', reason: '<img src=x onerror=alert(1)>' });
    const err = await gw.next(isType('error', 'n1'), 'the refusal');
    expect(err).toMatchObject({ code: ErrorCode.BadShape });
    expect(err.reason).toContain('out: reason must be one of timeout, closed');
    expect(tb.broker.table.get('n1')?.status).toBe('online');
    expect(gw.closeCode).toBeUndefined();
    expect(await rejections(ErrorCode.BadShape)).toBe(1);
  });

  it.each([
    ['a control character', 'a\u0001b', 'must not contain control characters'],
    ['__proto__', '__proto__', 'must not be "__proto__"'],
    ['257 characters', 'k'.repeat(257), 'must be at most 256 characters'],
  ])(
    'refuses a gateway new whose data key has %s, naming the key; the node is not created',
    async (_what, key, problem) => {
      const gw = await gateway();
      gw.send(`{"type":"new","uid":"n2","data":{"ok":1,${JSON.stringify(key)}:2}}`);
      const err = await gw.next(isType('error', 'n2'), 'the refusal');
      expect(err).toMatchObject({ code: ErrorCode.BadShape });
      expect(err.reason).toContain(problem);
      expect(tb.broker.table.get('n2')).toBeUndefined();
      gw.send({ type: 'new', uid: 'n3', data: { ok: 1 } });
      await waitFor(() => tb.broker.table.get('n3'), 'the next valid new is accepted');
    },
  );

  it.each([
    ['a new whose lastSeen is text', { type: 'new', uid: 'p1', gateway: 'g', status: 'online', lastSeen: 'yesterday' }],
    ['a new without lastSeen', { type: 'new', uid: 'p1', gateway: 'g', status: 'online' }],
    ['an out whose reason is not one of OUT_REASONS', { type: 'out', uid: 'p1', reason: 'vanished', lastSeen: 1 }],
    ['an out whose lastSeen is null', { type: 'out', uid: 'p1', reason: 'closed', lastSeen: null }],
  ])('refuses %s from a peer broker on the bus (bad-bus-event) and keeps applying good ones', async (_what, bad) => {
    fromPeer({ type: 'new', uid: 'p1', gateway: 'g', status: 'online', lastSeen: 5 });
    await waitFor(() => tb.broker.table.get('p1'), 'the good event applied');
    fromPeer(bad);
    expect(await rejections('bad-bus-event')).toBe(1);
    expect(tb.broker.table.get('p1')).toMatchObject({ status: 'online', lastSeen: 5 });
    fromPeer({ type: 'out', uid: 'p1', reason: 'closed', lastSeen: 9 });
    await waitFor(() => tb.broker.table.get('p1')?.status === 'offline', 'the next good event applied');
    // The in-process bus delivers synchronously: nothing else was refused meanwhile.
    expect(await rejections('bad-bus-event')).toBe(1);
  });
});
