// What only the PostgreSQL store has: a server that can go away and come back, several stores on one database,
// and rows the server refuses. The shared behaviour is in history-store.contract.test.ts.
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from 'vitest';
import { PostgresHistoryStore, StoreUnavailableError } from '../services/history/store-postgres.ts';
import { AGGREGATES, type Aggregate, type ValueRow } from '../services/history/store.ts';
import { createDatabase, type PostgresCluster, startTestPostgres } from './helpers/postgres.ts';
import { waitFor } from './helpers/wait.ts';

/** Short, so a refused connection is reported quickly; generous for a loaded CI machine. */
const CONNECT_TIMEOUT_MS = 2_000;
const RECOVERY_TIMEOUT_MS = 20_000;

let cluster: PostgresCluster;
beforeAll(async () => {
  // The last test kills postgres and reads on after the restart: with synchronous_commit=off a commit could
  // still sit in the WAL buffers that the kill loses. (fsync=off is harmless here: the OS keeps what was written.)
  cluster = await startTestPostgres({ synchronous_commit: 'on' });
}, 120_000);
afterAll(async () => {
  await cluster?.stop();
});

let keys = 0;
function v(at: number, value: ValueRow['value'], uid = 'node-1', resource = 'temperature'): ValueRow {
  return { at, uid, resource, value, key: `pg-test:${++keys}` };
}

async function openStore(database?: string, onError?: (err: Error) => void): Promise<PostgresHistoryStore> {
  const store = new PostgresHistoryStore({
    url: cluster.url(database ?? (await createDatabase(cluster))),
    connectTimeoutMs: CONNECT_TIMEOUT_MS,
    onError,
  });
  onTestFinished(() => store.close());
  await store.open();
  return store;
}

async function rejection(promise: Promise<unknown>): Promise<unknown> {
  try {
    await promise;
  } catch (err) {
    return err;
  }
  throw new Error('expected the promise to reject');
}

const range = { uid: 'node-1', resource: 'temperature', from: 0, to: 1_000_000, limit: 1000 };

describe('PostgreSQL history store', () => {
  it('uses plain tables when TimescaleDB is not available (Debian postgresql has none)', async () => {
    const store = await openStore();
    expect(store.usesTimescale).toBe(false);
  });

  it('two stores on one database create the same new series at once without an error or a duplicate', async () => {
    const database = await createDatabase(cluster);
    const [a, b] = await Promise.all([openStore(database), openStore(database)]);
    const rows = (offset: number) =>
      Array.from({ length: 50 }, (_, i) => v(offset + i, i, `node-${i % 5}`, `resource-${i % 7}`));
    await Promise.all([a.insert(rows(0), []), b.insert(rows(1000), []), a.insert(rows(2000), [])]);
    expect((await a.stats()).values).toBe(150);
    expect(await b.query({ ...range, uid: 'node-0', resource: 'resource-0', limit: 10 })).toHaveLength(6);
  });

  it('a batch the server refuses fails alone: the store keeps serving and the batch stored nothing', async () => {
    const store = await openStore();
    // A uid is an identifier the broker validated; U+0000 is the one character PostgreSQL text cannot hold.
    const err = await rejection(store.insert([v(1, 1), v(2, 2, 'bad\u0000uid')], []));
    expect(err).toBeInstanceOf(Error);
    expect(err).not.toBeInstanceOf(StoreUnavailableError);
    await store.insert([v(3, 3)], []);
    expect(await store.query(range)).toEqual([{ at: 3, value: 3 }]);
  });

  it('refuses a bucket step, a time or a limit that is not a whole number before asking the server', async () => {
    const store = await openStore();
    for (const step of [0, -5, 1.5, Number.NaN]) {
      await expect(store.query({ ...range, step })).rejects.toThrow(RangeError);
    }
    for (const bad of [1.5, Number.NaN, 1e300, Number.POSITIVE_INFINITY]) {
      await expect(store.query({ ...range, from: bad })).rejects.toThrow(RangeError);
      await expect(store.query({ ...range, limit: bad })).rejects.toThrow(RangeError);
      await expect(store.events('node-1', 0, bad, 10)).rejects.toThrow(RangeError);
      await expect(
        store
          .stream({ ...range, to: bad })
          [Symbol.asyncIterator]()
          .next(),
      ).rejects.toThrow(RangeError);
    }
    expect(await store.query(range)).toEqual([]);
  });

  it('every aggregate answers the same whether it probes each bucket (few buckets) or groups the range (many)', async () => {
    const store = await openStore();
    // Values every 7 ms, every fifth one text, and two rows sharing a timestamp now and then (the larger key
    // wins a `last` tie).
    const rows = Array.from({ length: 3000 }, (_, i) => ({ ...v(i * 7, i % 5 === 0 ? `t${i}` : i / 4), key: `k${i}` }));
    rows.push({ ...v(7 * 10, 'tie-winner'), key: 'kz' });
    await store.insert(rows, []);
    const expected = (agg: Aggregate, from: number, to: number, step: number) => {
      const buckets = new Map<number, typeof rows>();
      for (const r of rows) {
        if (r.at < from || r.at >= to) continue;
        const b = from + Math.floor((r.at - from) / step) * step;
        buckets.set(b, [...(buckets.get(b) ?? []), r]);
      }
      const points: { at: number; value: unknown }[] = [];
      for (const [at, inBucket] of [...buckets.entries()].sort(([a], [b]) => a - b)) {
        const nums = inBucket.map((r) => r.value).filter((x): x is number => typeof x === 'number');
        const newest = inBucket.reduce((a, b) => (b.at > a.at || (b.at === a.at && b.key > a.key) ? b : a));
        const value = {
          avg: nums.length === 0 ? undefined : nums.reduce((a, b) => a + b, 0) / nums.length,
          min: nums.length === 0 ? undefined : Math.min(...nums),
          max: nums.length === 0 ? undefined : Math.max(...nums),
          count: inBucket.length,
          last: newest.value,
        }[agg];
        if (value !== undefined) points.push({ at, value });
      }
      return points;
    };
    for (const agg of AGGREGATES) {
      const few = { ...range, from: 5, to: 21_000, step: 1000, agg, limit: 100_000 };
      const fewGot = await store.query(few);
      expect(fewGot.map((p) => p.at)).toEqual(expected(agg, 5, 21_000, 1000).map((p) => p.at));
      for (const [i, p] of expected(agg, 5, 21_000, 1000).entries()) {
        if (typeof p.value === 'number') expect(fewGot[i].value).toBeCloseTo(p.value, 9);
        else expect(fewGot[i].value).toEqual(p.value);
      }
      // 21,000 buckets of 1 ms: past the probe limit, so the grouping path answers.
      const many = await store.query({ ...few, step: 1 });
      expect(many).toEqual(expected(agg, 5, 21_000, 1));
    }
    expect(
      (await store.query({ ...range, from: 0, to: 21_000, step: 1, agg: 'last' })).find((p) => p.at === 70),
    ).toEqual({ at: 70, value: 'tie-winner' });
  });

  it('stores a 1 MiB string and a 10,000-row batch in one call', async () => {
    const store = await openStore();
    const big = 'x'.repeat(1 << 20);
    await store.insert([v(1, big), ...Array.from({ length: 10_000 }, (_, i) => v(10 + i, i))], []);
    const [first] = await store.query({ ...range, limit: 1 });
    expect(first.value).toBe(big);
    expect((await store.stats()).values).toBe(10_001);
  });

  it('refuses a session setting that would smuggle more into the connection options', () => {
    const hostile: Record<string, string>[] = [
      { work_mem: '1MB -c search_path=evil' },
      { 'work_mem=1MB -c x': '1' },
      { jit: "'off'" },
    ];
    for (const session of hostile) {
      expect(() => new PostgresHistoryStore({ url: cluster.url(), session })).toThrow(RangeError);
    }
  });

  it('close() twice is harmless; a closed store rejects', async () => {
    const store = await openStore();
    await store.close();
    await store.close();
    expect(await rejection(store.query(range))).toBeInstanceOf(Error);
  });

  // Last: it takes the server down and brings it back.
  it('a lost server: calls reject with code "unavailable", the pool error is reported, and it recovers', async () => {
    const poolErrors: Error[] = [];
    const store = await openStore(undefined, (err) => poolErrors.push(err));
    await store.insert([v(1, 1)], []);
    // Several idle pooled connections, so the crash drops connections nobody is using (the pool's 'error').
    await Promise.all([store.query(range), store.query(range), store.query(range)]);

    await cluster.crash();
    await waitFor(() => poolErrors.length > 0, 'the pool to report its dropped idle connections');
    for (const call of [
      () => store.query(range),
      () => store.insert([v(2, 2)], []),
      () => store.insert([v(3, 3)], [{ at: 3, uid: 'node-1', kind: 'new', detail: {}, key: 'e1' }]),
      () => store.stats(),
      () => store.prune(10, 5, 100),
    ]) {
      const err = await rejection(call());
      expect(err).toBeInstanceOf(StoreUnavailableError);
      expect(err).toMatchObject({ code: 'unavailable' });
    }
    const streamed = rejection(
      (async () => {
        for await (const _ of store.stream(range)) {
          // Nothing to read: the server is gone.
        }
      })(),
    );
    expect(await streamed).toMatchObject({ code: 'unavailable' });

    await cluster.restart();
    await waitFor(
      async () => {
        try {
          await store.insert([{ ...v(4, 4), key: 'after-restart' }], []);
          return true;
        } catch (err) {
          if ((err as { code?: unknown }).code !== 'unavailable') throw err;
          return false;
        }
      },
      'the store to write again after the restart',
      RECOVERY_TIMEOUT_MS,
    );
    expect(await store.query(range)).toEqual([
      { at: 1, value: 1 },
      { at: 4, value: 4 },
    ]);
  });
});
