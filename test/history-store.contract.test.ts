// One contract, two implementations: the SQLite and the PostgreSQL history store must pass the same checks, as
// the two buses do in bus.contract.test.ts. Expected values are computed by hand in each test.
// The SQLite store is built on another branch: until services/history/store-sqlite.ts exists here, its half is
// skipped with the reason (utils/history/stores.ts, loadSqlite).
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from 'vitest';
import type { Json } from '../services/protocol/messages.ts';
import {
  AGGREGATES,
  type Aggregate,
  type EventRow,
  type HistoryStore,
  type Point,
  type ValueRow,
} from '../services/history/store.ts';
import { loadSqlite } from '../utils/history/stores.ts';
import { type PostgresCluster, postgresStoreOn, startTestPostgres } from './helpers/postgres.ts';

const sqlite = await loadSqlite();

interface Subject {
  name: string;
  /** Why this half does not run, when it cannot. */
  skip?: string;
  setup?: () => Promise<void>;
  teardown?: () => Promise<void>;
  /** A new, empty store, not opened. */
  make: () => Promise<HistoryStore>;
}

let cluster: PostgresCluster | undefined;
const SUBJECTS: Subject[] = [
  typeof sqlite === 'string'
    ? { name: 'sqlite', skip: sqlite, make: () => Promise.reject(new Error(sqlite)) }
    : {
        name: 'sqlite',
        make: async () => {
          const dir = await mkdtemp(join(tmpdir(), 'history-sqlite-'));
          onTestFinished(() => rm(dir, { recursive: true, force: true }));
          return sqlite(dir);
        },
      },
  {
    name: 'postgres',
    setup: async () => {
      cluster = await startTestPostgres();
    },
    teardown: async () => {
      await cluster?.stop();
    },
    make: () => {
      if (cluster === undefined) throw new Error('the PostgreSQL cluster did not start');
      return postgresStoreOn(cluster);
    },
  },
];

let keys = 0;
/** A value row with a fresh key. */
function v(at: number, value: Json, uid = 'node-1', resource = 'temperature'): ValueRow {
  return { at, uid, resource, value, key: `test:${++keys}` };
}

function ev(at: number, uid: string, kind: EventRow['kind'], detail: Json): EventRow {
  return { at, uid, kind, detail, key: `test-event:${++keys}` };
}

const ALL_TIME = { from: 0, to: Number.MAX_SAFE_INTEGER, limit: 1_000_000 };

async function collect(points: AsyncIterable<Point>): Promise<Point[]> {
  const out: Point[] = [];
  for await (const p of points) out.push(p);
  return out;
}

function contract(subject: Subject): void {
  describe(`${subject.name} history store`, () => {
    beforeAll(async () => {
      await subject.setup?.();
    }, 120_000);
    afterAll(async () => {
      await subject.teardown?.();
    });

    async function openStore(): Promise<HistoryStore> {
      const store = await subject.make();
      onTestFinished(() => store.close());
      await store.open();
      return store;
    }

    it('returns numbers as numbers, text as text and anything else as the same JSON', async () => {
      const store = await openStore();
      const values: Json[] = [
        0,
        -17.25,
        Number.MAX_SAFE_INTEGER,
        1e-300,
        '',
        '23.5',
        'text with "quotes", \\backslashes\\, emoji 🍄 and a\u0000NUL, \u0001\u001f\u007f\u0085 controls',
        null,
        true,
        false,
        [1, 'two', null, { three: [3] }],
        { nested: { deep: [true, null] }, '': 'empty key' },
        JSON.parse('{"__proto__": {"polluted": true}, "constructor": 1}') as Json,
        '\u0000',
      ];
      await store.insert(
        values.map((value, i) => v(1000 + i, value)),
        [],
      );
      const got = await store.query({ uid: 'node-1', resource: 'temperature', ...ALL_TIME });
      expect(got.map((p) => p.at)).toEqual(values.map((_, i) => 1000 + i));
      expect(got.map((p) => p.value)).toStrictEqual(values);
      expect(typeof got[5].value).toBe('string');
      expect(Object.hasOwn(got[12].value as object, '__proto__')).toBe(true);
      expect(({} as Record<string, unknown>).polluted).toBeUndefined();
    });

    it('stores a key once: a batch delivered twice, a partial overlap, a duplicate inside one batch', async () => {
      const store = await openStore();
      const batch = [v(1, 1), v(2, 2), v(3, 3)];
      await store.insert(batch, []);
      await store.insert(batch, []);
      await store.insert([batch[2], v(4, 4)], []);
      await store.insert(
        [
          { ...v(5, 5), key: 'same-in-batch' },
          { ...v(5, 5), key: 'same-in-batch' },
        ],
        [],
      );
      const got = await store.query({ uid: 'node-1', resource: 'temperature', ...ALL_TIME });
      expect(got).toEqual([1, 2, 3, 4, 5].map((n) => ({ at: n, value: n })));
      expect((await store.stats()).values).toBe(5);
    });

    it('answers [from, to): from included, to excluded, in time order, the first `limit` points', async () => {
      const store = await openStore();
      // Inserted out of order: the store orders by time.
      await store.insert([v(200, 'to'), v(100, 'from'), v(99, 'before'), v(199, 'last in'), v(150, 'middle')], []);
      await store.insert([v(150, 'other resource', 'node-1', 'humidity'), v(150, 'other node', 'node-2')], []);
      const q = { uid: 'node-1', resource: 'temperature', from: 100, to: 200 };
      expect(await store.query({ ...q, limit: 100 })).toEqual([
        { at: 100, value: 'from' },
        { at: 150, value: 'middle' },
        { at: 199, value: 'last in' },
      ]);
      expect(await store.query({ ...q, limit: 2 })).toEqual([
        { at: 100, value: 'from' },
        { at: 150, value: 'middle' },
      ]);
      expect(await store.query({ ...q, from: 200, to: 300, limit: 100 })).toEqual([{ at: 200, value: 'to' }]);
      expect(await store.query({ ...q, resource: 'missing', limit: 100 })).toEqual([]);
    });

    describe('buckets [from + k·step, from + (k+1)·step) stamped at their start', () => {
      // from = 1000, step = 100. Buckets: 1000: 1, 3, 'text'; 1100: 10, 20; 1200: only text; 1300: 7.
      // Outside the range: 999 and 1400.
      const rows = (): ValueRow[] => [
        v(999, 1000),
        v(1000, 1),
        v(1050, 3),
        v(1099, 'text'),
        v(1100, 10),
        v(1150, 20),
        v(1250, 'only text'),
        v(1399, 7),
        v(1400, 1000),
      ];
      const expected: Record<Aggregate, Point[]> = {
        avg: [
          { at: 1000, value: 2 },
          { at: 1100, value: 15 },
          { at: 1300, value: 7 },
        ],
        min: [
          { at: 1000, value: 1 },
          { at: 1100, value: 10 },
          { at: 1300, value: 7 },
        ],
        max: [
          { at: 1000, value: 3 },
          { at: 1100, value: 20 },
          { at: 1300, value: 7 },
        ],
        last: [
          { at: 1000, value: 'text' },
          { at: 1100, value: 20 },
          { at: 1200, value: 'only text' },
          { at: 1300, value: 7 },
        ],
        count: [
          { at: 1000, value: 3 },
          { at: 1100, value: 2 },
          { at: 1200, value: 1 },
          { at: 1300, value: 1 },
        ],
      };
      for (const agg of AGGREGATES) {
        it(`${agg}${agg === 'last' || agg === 'count' ? '' : ' (non-numeric values ignored, empty buckets left out)'}`, async () => {
          const store = await openStore();
          await store.insert(rows(), []);
          const q = { uid: 'node-1', resource: 'temperature', from: 1000, to: 1400, step: 100, agg };
          expect(await store.query({ ...q, limit: 100 })).toEqual(expected[agg]);
          expect(await store.query({ ...q, limit: 2 })).toEqual(expected[agg].slice(0, 2));
        });
      }

      it('avg is the default aggregate', async () => {
        const store = await openStore();
        await store.insert(rows(), []);
        const q = { uid: 'node-1', resource: 'temperature', from: 1000, to: 1400, step: 100, limit: 100 };
        expect(await store.query(q)).toEqual(expected.avg);
      });

      it('starts buckets at `from`, not at a multiple of the step', async () => {
        const store = await openStore();
        await store.insert(rows(), []);
        const q = { uid: 'node-1', resource: 'temperature', from: 1030, to: 1230, step: 100, agg: 'count' as const };
        // [1030, 1130): 1050, 1099, 1100 -> 3; [1130, 1230): 1150 -> 1.
        expect(await store.query({ ...q, limit: 100 })).toEqual([
          { at: 1030, value: 3 },
          { at: 1130, value: 1 },
        ]);
      });
    });

    it('streams every point of a range in time order, across many chunks, with equal timestamps at the seams', async () => {
      const store = await openStore();
      // Three values per millisecond, so rows with one timestamp straddle any chunk size that is not a
      // multiple of three; 12,345 rows are more than two chunks of any store here.
      const total = 12_345;
      for (let start = 0; start < total; start += 1000) {
        const batch: ValueRow[] = [];
        for (let i = start; i < Math.min(total, start + 1000); i++) batch.push(v(10_000 + Math.floor(i / 3), i));
        await store.insert(batch, []);
      }
      await store.insert([v(9_999, -1), v(10_000 + total, -2)], []);
      const got = await collect(
        store.stream({ uid: 'node-1', resource: 'temperature', from: 10_000, to: 10_000 + Math.ceil(total / 3) }),
      );
      expect(got).toHaveLength(total);
      for (let i = 1; i < got.length; i++) expect(got[i].at).toBeGreaterThanOrEqual(got[i - 1].at);
      const seen = got.map((p) => p.value as number).sort((a, b) => a - b);
      expect(seen).toEqual(Array.from({ length: total }, (_, i) => i));
      for (const p of got) expect(p.at).toBe(10_000 + Math.floor((p.value as number) / 3));
    });

    it('streams an empty range and an unknown resource as nothing', async () => {
      const store = await openStore();
      await store.insert([v(5, 5)], []);
      expect(await collect(store.stream({ uid: 'node-1', resource: 'temperature', from: 6, to: 100 }))).toEqual([]);
      expect(await collect(store.stream({ uid: 'nobody', resource: 'temperature', from: 0, to: 100 }))).toEqual([]);
    });

    it('keeps events per node, oldest first, within [from, to), at most `limit`, each key once', async () => {
      const store = await openStore();
      const events = [
        ev(300, 'node-1', 'write', { by: 'alice', resource: 'led', payload: { on: true }, result: 'ok' }),
        ev(100, 'node-1', 'new', { protocol: 'coap', resources: ['temperature', 'led'] }),
        ev(200, 'node-1', 'out', { reason: 'timeout' }),
        ev(250, 'node-2', 'new', {}),
        ev(400, 'node-1', 'reset', JSON.parse('{"__proto__": "x", "weird\\u0000": "\\u0000"}') as Json),
      ];
      await store.insert([], events);
      await store.insert([v(100, 1)], events);
      const got = await store.events('node-1', 100, 400, 100);
      expect(got).toEqual([events[1], events[2], events[0]]);
      expect(await store.events('node-1', 0, 1000, 2)).toEqual([events[1], events[2]]);
      const [reset] = await store.events('node-1', 400, 401, 10);
      expect(reset).toStrictEqual(events[4]);
      expect(await store.events('node-2', 0, 1000, 10)).toEqual([events[3]]);
      expect(await store.events('node-3', 0, 1000, 10)).toEqual([]);
      expect((await store.stats()).events).toBe(5);
    });

    it('round-trips settings per resource; a second put replaces the first', async () => {
      const store = await openStore();
      expect(await store.getSettings('node-1', 'temperature')).toBeUndefined();
      const settings = { maxHistory: 10, retentionMs: 86_400_000, minIntervalMs: 500, units: '°C', decimals: 2 };
      await store.putSettings('node-1', 'temperature', settings);
      expect(await store.getSettings('node-1', 'temperature')).toEqual(settings);
      expect(await store.getSettings('node-1', 'humidity')).toBeUndefined();
      await store.putSettings('node-1', 'temperature', { units: 'K' });
      expect(await store.getSettings('node-1', 'temperature')).toEqual({ units: 'K' });
      // Settings of a resource that has values, and values of a resource that has settings.
      await store.insert([v(1, 1, 'node-1', 'temperature')], []);
      expect(await store.getSettings('node-1', 'temperature')).toEqual({ units: 'K' });
    });

    it('prunes by age: each resource its own retention, the default otherwise, events by the default', async () => {
      const store = await openStore();
      const at = [1000, 2000, 3000, 4000, 5000, 6000, 7000, 8000, 9000];
      await store.putSettings('node-1', 'short', { retentionMs: 2000 });
      await store.insert(
        [...at.map((t) => v(t, t, 'node-1', 'default')), ...at.map((t) => v(t, t, 'node-1', 'short'))],
        [ev(1000, 'node-1', 'new', {}), ev(7000, 'node-1', 'out', { reason: 'gone' })],
      );
      // now = 10,000, default retention 5,000: 'default' keeps at >= 5,000 (4 deleted), 'short' keeps
      // at >= 8,000 (7 deleted), the event at 1,000 goes: 12 rows in all, taken 5 at a time.
      const rounds: number[] = [];
      for (let i = 0; i < 10; i++) {
        const n = await store.prune(10_000, 5000, 5);
        rounds.push(n);
        if (n === 0) break;
      }
      expect(rounds.every((n) => n <= 5)).toBe(true);
      expect(rounds.reduce((a, b) => a + b, 0)).toBe(12);
      const atOf = async (resource: string) =>
        (await store.query({ uid: 'node-1', resource, ...ALL_TIME })).map((p) => p.at);
      expect(await atOf('default')).toEqual([5000, 6000, 7000, 8000, 9000]);
      expect(await atOf('short')).toEqual([8000, 9000]);
      expect((await store.events('node-1', 0, 100_000, 10)).map((e) => e.kind)).toEqual(['out']);
    });

    it('prunes by maxHistory: the newest values stay', async () => {
      const store = await openStore();
      await store.putSettings('node-1', 'capped', { maxHistory: 3 });
      await store.insert(
        Array.from({ length: 10 }, (_, i) => v(1000 + i, i, 'node-1', 'capped')),
        [],
      );
      let total = 0;
      for (let n = -1; n !== 0; total += n) n = await store.prune(2000, 86_400_000, 4);
      expect(total).toBe(7);
      expect(await store.query({ uid: 'node-1', resource: 'capped', ...ALL_TIME })).toEqual([
        { at: 1007, value: 7 },
        { at: 1008, value: 8 },
        { at: 1009, value: 9 },
      ]);
    });

    it('treats prototype names, quotes, SQL and separators in uids and resources as plain data', async () => {
      const store = await openStore();
      const names: [string, string][] = [
        ['__proto__', 'constructor'],
        ['constructor', '__proto__'],
        ["x'); DROP TABLE history_values; --", 'hasOwnProperty'],
        ['a', 'b/c'],
        ['a/b', 'c'],
        ['a b', 'c'],
        ['a', 'b c'],
        ['🍄 node', 'température'],
        ['%', '_'],
      ];
      await store.insert(
        names.map(([uid, resource], i) => v(1, i, uid, resource)),
        [],
      );
      for (const [i, [uid, resource]] of names.entries()) {
        expect(await store.query({ uid, resource, ...ALL_TIME })).toEqual([{ at: 1, value: i }]);
      }
      await store.putSettings('__proto__', '__proto__', { units: 'x' });
      expect(await store.getSettings('__proto__', '__proto__')).toEqual({ units: 'x' });
      expect(Object.getPrototypeOf(await store.getSettings('__proto__', '__proto__'))).toBe(Object.prototype);
      expect(await store.query({ uid: '%', resource: '%', ...ALL_TIME })).toEqual([]);
      expect((await store.stats()).values).toBe(names.length);
    });

    it('counts values and events and reports the bytes on disk', async () => {
      const store = await openStore();
      const empty = await store.stats();
      expect(empty).toMatchObject({ values: 0, events: 0 });
      expect(empty.bytes).toBeGreaterThan(0);
      const rows = Array.from({ length: 5000 }, (_, i) => v(i, i * 1.5));
      await store.insert(rows, [ev(1, 'node-1', 'new', {})]);
      const full = await store.stats();
      expect(full).toMatchObject({ values: 5000, events: 1 });
      expect(full.bytes).toBeGreaterThan(empty.bytes);
    });

    it('opens twice on the same database without harm (schema creation is idempotent)', async () => {
      const store = await openStore();
      await store.insert([v(1, 1)], []);
      await store.open();
      expect(await store.query({ uid: 'node-1', resource: 'temperature', ...ALL_TIME })).toEqual([{ at: 1, value: 1 }]);
    });
  });
}

for (const subject of SUBJECTS) {
  if (subject.skip === undefined) contract(subject);
  else {
    describe(`${subject.name} history store`, () => {
      it.skip(`not run: ${subject.skip}`, () => {});
    });
  }
}
