// One contract, two implementations: every Bus must pass the same suite.
// "Nothing arrived" is proven without sleeping: every test subscribes on one bus (one NATS connection), and the
// server delivers to a connection in publish order, so once a later marker message arrives, any earlier message
// that was going to arrive has arrived.
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from 'vitest';
import {
  type Bus,
  BusError,
  type BusMsg,
  createBus,
  KvConflictError,
  KvUnavailableError,
  kvKey,
  MemoryBus,
  NatsBus,
} from '../services/bus/index.ts';
import { type NatsServer, startNatsServer } from './helpers/nats-server.ts';
import { DEFAULT_WAIT_MS, waitFor } from './helpers/wait.ts';

/** Long enough for replies over loopback, short enough to keep the suite fast. */
const GATHER_WINDOW_MS = 250;
/** Generous for one JetStream round trip on a loaded CI machine. */
const KV_TIMEOUT_MS = 5_000;
const RECONNECT_TIMEOUT_MS = 10_000;

type OnError = (err: unknown, subject: string) => void;
type MakeBus = (onError: OnError) => Bus;

const enc = new TextEncoder();
const dec = new TextDecoder();
const bytes = (s: string): Uint8Array => enc.encode(s);
const text = (msg: BusMsg): string => dec.decode(msg.data);

function collect(): { msgs: BusMsg[]; texts: () => string[]; handler: (msg: BusMsg) => void } {
  const msgs: BusMsg[] = [];
  return { msgs, texts: () => msgs.map(text), handler: (msg) => msgs.push(msg) };
}

async function rejection(promise: Promise<unknown>): Promise<unknown> {
  try {
    await promise;
  } catch (err) {
    return err;
  }
  throw new Error('expected the promise to reject');
}

function busContract(name: string, makeBus: MakeBus): void {
  describe(name, () => {
    /** A started bus, stopped after the test; handler errors fail the test unless `onError` is given. */
    async function openBus(onError?: OnError): Promise<Bus> {
      const unexpected: unknown[] = [];
      const bus = makeBus(onError ?? ((err) => unexpected.push(err)));
      onTestFinished(async () => {
        await bus.stop();
        expect(unexpected).toEqual([]);
      });
      await bus.start();
      return bus;
    }

    it('delivers to exact subjects only', async () => {
      const bus = await openBus();
      const a = collect();
      const b = collect();
      bus.subscribe('ex.a', a.handler);
      bus.subscribe('ex.b', b.handler);
      await bus.flush();
      bus.publish('ex.a', bytes('1'));
      bus.publish('ex.a.c', bytes('2'));
      bus.publish('ex', bytes('3'));
      bus.publish('ex.b', bytes('marker'));
      await waitFor(() => b.msgs.length === 1, 'the marker on ex.b');
      expect(a.texts()).toEqual(['1']);
      expect(a.msgs[0].subject).toBe('ex.a');
      expect(a.msgs[0].reply).toBeUndefined();
    });

    it('matches `*` to exactly one token and `>` to one or more trailing tokens', async () => {
      const bus = await openBus();
      const star = collect();
      const midStar = collect();
      const tail = collect();
      bus.subscribe('wc.*', star.handler);
      bus.subscribe('wc.*.x', midStar.handler);
      bus.subscribe('wc.>', tail.handler);
      await bus.flush();
      for (const subject of ['wc', 'wc.a', 'wc.a.b', 'wc.a.x', 'wc.a.b.x', 'other.a', 'wc.end']) {
        bus.publish(subject, bytes(subject));
      }
      await waitFor(
        () => star.msgs.at(-1)?.subject === 'wc.end' && tail.msgs.at(-1)?.subject === 'wc.end',
        'the marker',
      );
      expect(star.texts()).toEqual(['wc.a', 'wc.end']);
      expect(midStar.texts()).toEqual(['wc.a.x']);
      expect(tail.texts()).toEqual(['wc.a', 'wc.a.b', 'wc.a.x', 'wc.a.b.x', 'wc.end']);
    });

    it('stops delivery after unsubscribe', async () => {
      const bus = await openBus();
      const gone = collect();
      const stays = collect();
      const sub = bus.subscribe('un.x', gone.handler);
      bus.subscribe('un.x', stays.handler);
      await bus.flush();
      bus.publish('un.x', bytes('1'));
      await waitFor(() => gone.msgs.length === 1 && stays.msgs.length === 1, 'the first message');
      sub.unsubscribe();
      sub.unsubscribe();
      await bus.flush();
      bus.publish('un.x', bytes('2'));
      await waitFor(() => stays.msgs.length === 2, 'the second message');
      expect(gone.texts()).toEqual(['1']);
    });

    it('gives each message to exactly one member of a queue group', async () => {
      const bus = await openBus();
      // Two members: with NATS's random choice, 20 messages all landing on one of them has odds of 2 in a million.
      const members = [collect(), collect()];
      const plain = collect();
      for (const m of members) bus.subscribe('qg.work', m.handler, { queue: 'workers' });
      bus.subscribe('qg.work', plain.handler);
      await bus.flush();
      for (let i = 0; i < 20; i++) bus.publish('qg.work', bytes(String(i)));
      const total = (): number => members.reduce((n, m) => n + m.msgs.length, 0);
      await waitFor(() => plain.msgs.length === 20, '20 messages for the plain subscriber');
      await waitFor(() => total() >= 20, '20 messages across the group');
      expect(total()).toBe(20);
      for (const m of members) expect(m.msgs.length).toBeGreaterThan(0);
      const seen = members.flatMap((m) => m.texts()).sort((x, y) => Number(x) - Number(y));
      expect(seen).toEqual(Array.from({ length: 20 }, (_, i) => String(i)));
    });

    it('round-trips a request and its reply', async () => {
      const bus = await openBus();
      bus.subscribe('rr.echo', (msg) => {
        if (msg.reply !== undefined) bus.publish(msg.reply, bytes(`echo:${text(msg)}`));
      });
      await bus.flush();
      const reply = await bus.request('rr.echo', bytes('hi'), DEFAULT_WAIT_MS);
      expect(text(reply)).toBe('echo:hi');
    });

    it('shows a reply to a subscriber of `>` too, and a late second reply to nobody', async () => {
      const bus = await openBus();
      const seen: string[] = [];
      bus.subscribe('>', (msg) => {
        if (msg.subject.startsWith('_INBOX.')) seen.push(text(msg));
      });
      bus.subscribe('rr.twice', (msg) => {
        if (msg.reply === undefined) return;
        bus.publish(msg.reply, bytes('first'));
        bus.publish(msg.reply, bytes('second'));
      });
      await bus.flush();
      const reply = await bus.request('rr.twice', bytes('?'), DEFAULT_WAIT_MS);
      expect(text(reply)).toBe('first');
      await waitFor(() => seen.length === 2, 'the `>` subscriber to see both replies');
      expect(seen).toEqual(['first', 'second']);
    });

    it('rejects a request nobody listens to with no-responders, before the timeout', async () => {
      const bus = await openBus();
      const started = Date.now();
      const err = await rejection(bus.request('rr.nobody', bytes('?'), DEFAULT_WAIT_MS));
      expect(err).toBeInstanceOf(BusError);
      expect((err as BusError).code).toBe('no-responders');
      expect(Date.now() - started).toBeLessThan(DEFAULT_WAIT_MS);
    });

    it('rejects a request whose responder stays silent with timeout', async () => {
      const bus = await openBus();
      bus.subscribe('rr.silent', () => {});
      await bus.flush();
      const err = await rejection(bus.request('rr.silent', bytes('?'), 100));
      expect(err).toBeInstanceOf(BusError);
      expect((err as BusError).code).toBe('timeout');
    });

    it('gathers every reply within the window with requestMany', async () => {
      const bus = await openBus();
      for (const id of ['r1', 'r2', 'r3']) {
        bus.subscribe('rm.state', (msg) => {
          if (msg.reply !== undefined) bus.publish(msg.reply, bytes(id));
        });
      }
      await bus.flush();
      const replies = await bus.requestMany('rm.state', bytes('sync'), GATHER_WINDOW_MS);
      expect(replies.map(text).sort()).toEqual(['r1', 'r2', 'r3']);
    });

    it('returns no replies from requestMany when nobody listens', async () => {
      const bus = await openBus();
      await expect(bus.requestMany('rm.nobody', bytes('sync'), GATHER_WINDOW_MS)).resolves.toEqual([]);
    });

    it('keeps the order of 1000 messages from one publisher', async () => {
      const bus = await openBus();
      const got = collect();
      bus.subscribe('ord.x', got.handler);
      await bus.flush();
      for (let i = 0; i < 1000; i++) bus.publish('ord.x', bytes(String(i)));
      await bus.flush();
      await waitFor(() => got.msgs.length >= 1000, '1000 messages');
      expect(got.texts()).toEqual(Array.from({ length: 1000 }, (_, i) => String(i)));
    });

    it('passes binary payloads unchanged, including an empty one', async () => {
      const bus = await openBus();
      const got = collect();
      bus.subscribe('bin.x', got.handler);
      await bus.flush();
      const all = Uint8Array.from({ length: 256 }, (_, i) => i);
      bus.publish('bin.x', all);
      bus.publish('bin.x', new Uint8Array(0));
      await waitFor(() => got.msgs.length === 2, 'both payloads');
      expect(Array.from(got.msgs[0].data)).toEqual(Array.from(all));
      expect(got.msgs[1].data.length).toBe(0);
    });

    it('keeps delivering when a handler throws, and reports the error', async () => {
      const errors: { err: unknown; subject: string }[] = [];
      const bus = await openBus((err, subject) => errors.push({ err, subject }));
      let thrown = 0;
      const healthy = collect();
      bus.subscribe('th.x', () => {
        thrown++;
        throw new Error('boom');
      });
      bus.subscribe('th.x', healthy.handler);
      await bus.flush();
      bus.publish('th.x', bytes('1'));
      bus.publish('th.x', bytes('2'));
      await waitFor(() => healthy.msgs.length === 2 && errors.length === 2, 'both messages and both errors');
      expect(healthy.texts()).toEqual(['1', '2']);
      expect(thrown).toBe(2);
      expect(errors.map((e) => e.subject)).toEqual(['th.x', 'th.x']);
      expect((errors[0].err as Error).message).toBe('boom');
    });

    it('rejects invalid subjects', async () => {
      const bus = await openBus();
      for (const subject of ['', 'a b', 'a..b', '.a', 'a.*', 'a.>', 'a*']) {
        expect(() => bus.publish(subject, bytes('x')), subject).toThrow(/invalid subject/);
        await expect(bus.request(subject, bytes('x'), 100), subject).rejects.toThrow(/invalid subject/);
        await expect(bus.requestMany(subject, bytes('x'), 100), subject).rejects.toThrow(/invalid subject/);
      }
      for (const subject of ['', 'a b', 'a..b', 'a.>.b', 'a*', '>>']) {
        expect(() => bus.subscribe(subject, () => {}), subject).toThrow(/invalid subject/);
      }
    });

    it('can be stopped twice, then ignores publishes and refuses requests', async () => {
      const bus = makeBus(() => {});
      onTestFinished(() => bus.stop());
      await bus.start();
      await Promise.all([bus.stop(), bus.stop()]);
      await bus.stop();
      expect(() => bus.publish('st.x', bytes('late'))).not.toThrow();
      await expect(bus.flush()).resolves.toBeUndefined();
      const err = await rejection(bus.request('st.x', bytes('?'), 100));
      expect(err).toBeInstanceOf(BusError);
      expect((err as BusError).code).toBe('closed');
    });

    it('key-value: create only when absent, update and delete only at the revision read (compare-and-set)', async () => {
      const bus = await openBus();
      const kv = await bus.keyValue(`kv-cas-${Date.now()}`, { timeoutMs: KV_TIMEOUT_MS });
      expect(await kv.get('k')).toBeUndefined();
      const r1 = await kv.create('k', bytes('one'));
      expect(await rejection(kv.create('k', bytes('two')))).toBeInstanceOf(KvConflictError);
      const got = await kv.get('k');
      expect(got?.revision).toBe(r1);
      expect(dec.decode(got?.value)).toBe('one');
      const r2 = await kv.update('k', bytes('three'), r1);
      expect(r2).toBeGreaterThan(r1);
      expect(await rejection(kv.update('k', bytes('stale'), r1))).toBeInstanceOf(KvConflictError);
      expect(await rejection(kv.delete('k', r1))).toBeInstanceOf(KvConflictError);
      expect(dec.decode((await kv.get('k'))?.value)).toBe('three');
      await kv.delete('k', r2);
      expect(await kv.get('k')).toBeUndefined();
      // A deleted key can be created again.
      await kv.create('k', bytes('four'));
      expect(dec.decode((await kv.get('k'))?.value)).toBe('four');
      await kv.delete('k');
      expect(await kv.get('k')).toBeUndefined();
    });

    it('key-value: of 10 creates of one key at the same moment exactly one wins', async () => {
      const bus = await openBus();
      const kv = await bus.keyValue(`kv-race-${Date.now()}`, { timeoutMs: KV_TIMEOUT_MS });
      const outcomes = await Promise.allSettled(Array.from({ length: 10 }, (_, i) => kv.create('race', bytes(`${i}`))));
      const won = outcomes.filter((o) => o.status === 'fulfilled');
      expect(won).toHaveLength(1);
      for (const o of outcomes) if (o.status === 'rejected') expect(o.reason).toBeInstanceOf(KvConflictError);
    });

    it('key-value: kvKey keeps device-chosen ids apart, dots, wildcards and non-ASCII included', async () => {
      const bus = await openBus();
      const kv = await bus.keyValue(`kv-keys-${Date.now()}`, { timeoutMs: KV_TIMEOUT_MS });
      const ids = ['plain-id_1', 'a.b', 'a=2eb', '*', '>', '.lead', 'trail.', 'é', 'sp ace', 'x/y'];
      expect(new Set(ids.map(kvKey)).size).toBe(ids.length);
      for (const id of ids) await kv.create(kvKey(id), bytes(id));
      for (const id of ids) expect(dec.decode((await kv.get(kvKey(id)))?.value)).toBe(id);
    });
  });
}

busContract('MemoryBus', (onError) => new MemoryBus(onError));

describe('NatsBus', () => {
  let server: NatsServer;
  beforeAll(async () => {
    server = await startNatsServer({ jetstream: true });
  });
  afterAll(() => server?.stop());

  busContract('contract', (onError) => new NatsBus({ servers: server.url, name: 'contract-test', onError }));

  it('refuses a key-value bucket with KvUnavailableError naming JetStream when the server has none', async () => {
    const plain = await startNatsServer();
    onTestFinished(() => plain.stop());
    const bus = new NatsBus({ servers: plain.url });
    onTestFinished(() => bus.stop());
    await bus.start();
    const err = await rejection(bus.keyValue('kv-none', { timeoutMs: KV_TIMEOUT_MS }));
    expect(err).toBeInstanceOf(KvUnavailableError);
    expect((err as Error).message).toMatch(/JetStream is not enabled/);
  });

  it('rejects start() with a clear error when no server listens', async () => {
    const gone = await startNatsServer();
    await gone.stop();
    const bus = new NatsBus({ servers: gone.url });
    onTestFinished(() => bus.stop());
    await expect(bus.start()).rejects.toThrow(`cannot connect to NATS at ${gone.url}`);
  });

  it('resubscribes after the server restarts', async () => {
    const own = await startNatsServer();
    onTestFinished(() => own.stop());
    const errors: unknown[] = [];
    const bus = new NatsBus({ servers: own.url, reconnectTimeWaitMs: 50, onError: (err) => errors.push(err) });
    onTestFinished(() => bus.stop());
    await bus.start();
    const got = collect();
    bus.subscribe('rs.x', got.handler);
    await bus.flush();
    bus.publish('rs.x', bytes('before'));
    await waitFor(() => got.msgs.length === 1, 'the message before the restart');

    await own.restart();
    // The new server knows no subscriptions: delivery proves the client re-sent them on reconnect.
    await waitFor(
      () => {
        // Republished on every poll, so some copies are sent after the reconnect, not only buffered before it.
        bus.publish('rs.x', bytes('after'));
        return got.texts().includes('after');
      },
      'a message after the restart',
      RECONNECT_TIMEOUT_MS,
    );
    expect(errors).toEqual([]);
  });
});

describe('createBus', () => {
  it('builds an in-process bus without a NATS URL and a NATS bus with one', () => {
    expect(createBus({}).kind).toBe('memory');
    expect(createBus({ natsUrl: '  ' }).kind).toBe('memory');
    expect(createBus({ natsUrl: 'nats://127.0.0.1:4222' }).kind).toBe('nats');
  });
});
